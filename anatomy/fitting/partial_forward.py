"""The layer's forward pass restricted to what a fit looks at: joints / keypoints and a subset of vertices.

A keypoint fit needs no vertex at all (the joints are regressed from the shape coefficients through the
precomputed joint basis, then posed by forward kinematics), and a point-cloud fit only the surface of one
tissue. :class:`PartialForward` evaluates exactly the layer's formulas (blend shapes, pose correctives,
LBS) on those rows, with the elementwise kernels of :mod:`.small_rotations`, so a batch of 1,024 keypoint
fits costs a few kinematic chains per step instead of 1,024 posed meshes of 25,000 vertices. Tests check
it against the full layer.
"""

from __future__ import annotations

import torch

from ..core.blend import pose_features
from ..core.skinning import skin_vertices
from ..models.articulated import ArticulatedModel
from .small_rotations import Chain, mv3

__all__ = ["PartialForward"]


class PartialForward:
    """Joints and the vertices ``vertex_ids`` of ``model`` (an :class:`ArticulatedModel`), on its device/dtype."""

    def __init__(self, model: ArticulatedModel, vertex_ids: torch.Tensor | None = None) -> None:
        self.model = model
        ref = model.template
        self.ids = (torch.zeros(0, dtype=torch.long) if vertex_ids is None else vertex_ids.long()).to(ref.device)
        n = self.ids.numel()
        self.rest = ref[self.ids]
        rows = model.basis if model.basis is not None else (None if model.basis_t is None else model.basis_t.t())
        self.basis = None  # (K + P, 3n) vertex-major rows of the selected vertices
        if rows is not None:
            self.basis = rows.reshape(rows.shape[0], -1, 3)[:, self.ids].reshape(rows.shape[0], 3 * n)
        weights = model.weights.to_dense() if model.weights.layout != torch.strided else model.weights
        self.weights = weights[self.ids]
        self.num_coeffs = model.num_coeffs
        self.chain = Chain(model.tree, ref.device)

    def __call__(self, rotations: torch.Tensor, coeffs: torch.Tensor | None, *, scale: torch.Tensor | None = None,
                 transl: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``rotations (B, J, 3, 3)`` local (root already composed with the global orientation), stacked
        ``coeffs (B, K)`` -> ``(joints (B, J, 3), vertices (B, n, 3))`` posed."""
        m = self.model
        batch = rotations.shape[0]
        rest_joints = m.joint_template.expand(batch, -1, -1)
        if m.joint_basis is not None and coeffs is not None:
            rest_joints = rest_joints + (coeffs @ m.joint_basis).view(batch, -1, 3)
        pos, glob = self.chain(rotations, rest_joints, scale=scale, transl=transl)
        if self.ids.numel() == 0:
            return pos, rotations.new_zeros(batch, 0, 3)
        parts = []
        if self.num_coeffs:
            parts.append(coeffs if coeffs is not None else rotations.new_zeros(batch, self.num_coeffs))
        if m.pose_feature_joints:
            parts.append(pose_features(rotations, m.pose_feature_joints))
        points = self.rest.expand(batch, -1, -1)
        if self.basis is not None and parts:
            points = points + (torch.cat(parts, 1) @ self.basis).view(batch, -1, 3)
        scaled = glob if scale is None else glob * scale[:, None, None, None]
        transforms = torch.cat([scaled, (pos - mv3(scaled, rest_joints))[..., None]], -1)
        return pos, skin_vertices(points, transforms, self.weights)
