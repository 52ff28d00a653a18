"""The free parameters of a batch of fits, per model, and what they predict.

* Hand (:class:`~anatomy.models.Nimble`, axis-angle or PCA pose mode): ``global_orient (B, 3)``,
  ``transl (B, 3)``, ``pose`` (``(B, 19, 3)`` axis-angle of bones 1..19, the root row being the
  global orientation; or ``(B, k)`` PCA coefficients), ``shape (B, K)``, optionally ``log_scale (B,)``.
  Predictions go through :class:`~.partial_forward.PartialForward` (joints, one tissue's surface).
* Head (:class:`~anatomy.models.Sculptor`): ``global_orient``, ``transl``, ``shape``, ``trait``,
  ``expression``, ``jaw_pose (B, 3)``, optionally ``log_scale``; predictions from the full layer.

Stages free groups of them: ``global`` (orientation, translation, scale), ``pose`` (+ articulation:
hand pose, jaw, expression), ``shape`` (+ shape and trait spaces).
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.errors import ParameterError
from ..models.nimble import Nimble
from ..models.sculptor import Sculptor
from .partial_forward import PartialForward
from .small_rotations import limit_penalty, rodrigues

__all__ = ["FitVariables", "model_kind", "surface_ids"]

STAGES = ("global", "pose", "shape")
_STAGE_GROUPS = {
    "global": ("global_orient", "transl", "log_scale"),
    "pose": ("global_orient", "transl", "log_scale", "pose", "jaw_pose", "expression"),
    "shape": ("global_orient", "transl", "log_scale", "pose", "jaw_pose", "expression", "shape", "trait"),
}
#: Adam step sizes: radians for rotations, normalised units for coefficients, mm for translation
LEARNING_RATES = {"global_orient": 0.03, "pose": 0.05, "jaw_pose": 0.02, "shape": 0.1, "trait": 0.1,
                  "expression": 0.05, "transl": 2.0, "log_scale": 0.01}


def model_kind(model: Any) -> str:
    if isinstance(model, Sculptor):
        return "head"
    if isinstance(model, Nimble):
        return "hand"
    raise ParameterError(f"fit needs a Nimble (hand) or Sculptor (head) layer, got {type(model).__name__}.")


def surface_ids(model: Any, tissue: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack indices of the surface vertices of ``tissue`` (those used by its faces) and its faces indexed
    into them."""
    for t in model.layout:
        if t.name == tissue:
            faces = t.faces.cpu()
            ids = torch.unique(faces)
            return ids + t.start, torch.searchsorted(ids, faces)
    raise ParameterError(f"this model has no tissue {tissue!r}; its tissues are {[t.name for t in model.layout]}.")


class FitVariables:
    """Free parameters of ``batch`` fits of ``model`` (see the module text), on its device and dtype."""

    def __init__(self, model: Any, batch: int, *, fit_scale: bool, tissue: str | None) -> None:
        self.model, self.kind, self.batch = model, model_kind(model), batch
        ref = model.template
        z = {"dtype": ref.dtype, "device": ref.device}
        self.values: dict[str, torch.Tensor] = {"global_orient": torch.zeros(batch, 3, **z),
                                                "transl": torch.zeros(batch, 3, **z)}
        if fit_scale:
            self.values["log_scale"] = torch.zeros(batch, **z)
        for name, size in model.space_sizes.items():
            self.values[name] = torch.zeros(batch, size, **z)
        self.part_ids: torch.Tensor | None = None
        self.part_faces: torch.Tensor | None = None
        if self.kind == "hand":
            self.values["pose"] = (torch.zeros(batch, model.num_pose_pca, **z) if model.pose_mode == "pca"
                                   else torch.zeros(batch, 19, 3, **z))
            self.part_ids, self.part_faces = (surface_ids(model, tissue) if tissue else (None, None))
            self.partial = PartialForward(model, self.part_ids)
            # joint j's local rotation: bone rotation perm[j] (< 20) or the identity (the fingertip joints)
            bone_of = {int(j): b for b, j in enumerate(model._bone_joints.tolist())}
            extra = iter(range(20, 20 + model.num_joints - 20))
            self.joint_perm = torch.tensor([bone_of[j] if j in bone_of else next(extra)
                                            for j in range(model.num_joints)], device=ref.device)
            self.eye = torch.eye(3, **z).expand(batch, model.num_joints - 20, 3, 3)
            limits = model.joint_limits() if model.has_joint_limits else None
            self.limits = None if limits is None else (limits.frames, limits.lower, limits.upper)
        else:
            self.values["jaw_pose"] = torch.zeros(batch, 3, **z)
            self.part_ids, self.part_faces = (surface_ids(model, tissue) if tissue else (None, None))
        self.tissue = tissue

    def free(self, stage: str) -> list[tuple[str, torch.Tensor]]:
        return [(k, v) for k, v in self.values.items() if k in _STAGE_GROUPS[stage]]

    def scale(self) -> torch.Tensor | None:
        s = self.values.get("log_scale")
        return None if s is None else s.exp()

    def hand_pose(self) -> torch.Tensor:
        """The layer's pose input: ``(B, 20, 3)`` axis-angle with a zero root row, or PCA coefficients."""
        pose = self.values["pose"]
        if self.model.pose_mode == "pca":
            return pose
        return torch.cat([pose.new_zeros(pose.shape[0], 1, 3), pose], 1)

    def params(self) -> dict[str, torch.Tensor]:
        """The layer's keyword arguments of the current values (detached)."""
        v = {k: t.detach().clone() for k, t in self.values.items() if k not in ("log_scale", "pose")}
        if "log_scale" in self.values:
            v["scale"] = self.values["log_scale"].detach().exp()
        if self.kind == "hand":
            v["pose"] = self.hand_pose().detach().clone()
        return v

    def predict(self) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
        """``(keypoints or landmarks (B, L, 3), surface vertices of the fitted tissue (B, n, 3) or None,
        the full output or None)`` of the current values, differentiable."""
        m, v = self.model, self.values
        verts: torch.Tensor | None
        if self.kind == "hand":
            bones = self.bone_rotations()
            root = rodrigues(v["global_orient"])[:, None]  # bone 0's own rotation is the identity here
            rot = torch.cat([root, bones[:, 1:], self.eye], 1)[:, self.joint_perm]
            coeffs = torch.cat([v[k] for k in m.space_sizes], 1) if m.space_sizes else None
            joints, verts = self.partial(rot, coeffs, scale=self.scale(), transl=v["transl"])
            return joints[:, m._keypoint_joints], (verts if self.tissue else None), None
        out = self.full_output()
        verts = None if self.part_ids is None else out.vertices[:, self.part_ids.to(out.vertices.device)]
        assert out.landmarks is not None, "the head model has no landmarks"
        return out.landmarks, verts, out

    def full_output(self) -> Any:
        """The layer's output for the current values (differentiable)."""
        v = self.values
        kw = {k: t for k, t in v.items() if k not in ("log_scale", "pose")}
        if self.kind == "hand":
            return self.model(self.hand_pose(), **kw, scale=self.scale())
        return self.model(**kw, scale=self.scale(), jaw_range="ignore")

    def bone_rotations(self) -> torch.Tensor:
        """The hand's bone rotations ``(B, 20, 3, 3)`` (root row: identity), as ``Nimble.bone_rotations``."""
        m, pose = self.model, self.values["pose"]
        if m.pose_mode == "pca":
            pose = (pose @ m.pca_scaled_basis + m.pca_offset).view(-1, 19, 3)
        return rodrigues(torch.cat([pose.new_zeros(pose.shape[0], 1, 3), pose], 1))

    def limit_penalty(self) -> torch.Tensor | None:
        """``(B,)`` joint-limit penalty of the hand's pose (rad^2), or ``None`` without limits."""
        if self.kind != "hand" or self.limits is None:
            return None
        return limit_penalty(*self.limits, self.bone_rotations())

    def names(self) -> tuple[str, ...]:
        return tuple(self.model.keypoint_names) if self.kind == "hand" else tuple(self.model.landmark_names)
