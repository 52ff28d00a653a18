"""The blend-shape + linear-blend-skinning forward pass, from precomputed buffers.

:func:`prepare` turns a model's arrays into :class:`LbsBuffers` once (one stacked,
transposed basis for every linear space and the pose correctives, joint regression
folded into the bases); :func:`blend_skin` is the per-call forward pass. :func:`lbs`
does both for one-off use.

Inside, points are kept **batch-last** ``(V, 3, B)``: the blend step is then one GEMM
``basis_t (3V, K + P) @ coeffs.T (K + P, B)`` and skinning works on the same layout
(see :mod:`anatomy.core.skinning`), which writes the ``(B, V, 3)`` output block by block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .blend import blend_batch_last, pose_features
from .checks import check_finite, check_floating, check_like, check_shape
from .errors import ShapeError
from .kinematics import KinematicTree, forward_kinematics
from .regress import precompute_joint_regression
from .skinning import DEFAULT_BLOCK_BYTES, skin_batch_last


@dataclass(frozen=True)
class LbsBuffers:
    """Precomputed tensors of one model (all on one device and dtype).

    * ``template (V, 3)``
    * ``basis_t (3V, K + P)``: linear spaces then pose correctives as columns, rows in
      vertex-major order (x, y, z of vertex 0, then vertex 1...); ``None`` when the
      model has neither. ``basis (K + P, 3V)``: the same in row layout, kept for small
      batches where it is several times faster (see :func:`~anatomy.core.blend.blend_batch_last`).
    * ``num_coeffs``: K, the number of linear-space coefficients.
    * ``joint_template (J, 3)`` and ``joint_basis (K, 3J)`` (``None`` when K = 0).
    * ``weights (V, J)``: skinning weights (dense, or sparse COO).
    * ``pose_feature_joints``: joints whose ``R - I`` drive the correctives.
    """

    template: torch.Tensor
    basis_t: torch.Tensor | None
    basis: torch.Tensor | None
    num_coeffs: int
    joint_template: torch.Tensor
    joint_basis: torch.Tensor | None
    weights: torch.Tensor
    tree: KinematicTree
    pose_feature_joints: tuple[int, ...]


@dataclass(frozen=True)
class LbsOutput:
    """``vertices (B, V, 3)``, ``joints (B, J, 3)`` posed, ``rest_joints (B, J, 3)``,
    ``rotations (B, J, 3, 3)`` global, ``transforms (B, J, 3, 4)`` rest -> posed."""

    vertices: torch.Tensor
    joints: torch.Tensor
    rest_joints: torch.Tensor
    rotations: torch.Tensor
    transforms: torch.Tensor


def prepare(
    template: torch.Tensor,
    skinning_weights: torch.Tensor,
    joint_regressor: torch.Tensor,
    parents: Sequence[int],
    *,
    space_bases: torch.Tensor | None = None,
    pose_basis: torch.Tensor | None = None,
    pose_feature_joints: Sequence[int] = (),
    small_batch_layout: bool = True,
) -> LbsBuffers:
    """Precompute :class:`LbsBuffers`.

    Args:
        template: ``(V, 3)``.
        skinning_weights: ``(V, J)`` dense or sparse.
        joint_regressor: ``(J, V)`` dense or sparse.
        parents: kinematic tree (validated here).
        space_bases: ``(K, V, 3)`` all linear spaces stacked (shape, trait, expression...).
        pose_basis: ``(P, V, 3)`` correctives with ``P = 9 * len(pose_feature_joints)``.
        small_batch_layout: also keep the stacked basis in row layout (twice the basis
            memory) for fast small-batch forward and backward passes.
    """
    sizes = check_shape(template, "template", ["V", 3])
    check_floating(template, "template")
    tree = KinematicTree.from_parents(parents)
    sizes["J"] = tree.num_joints
    check_shape(skinning_weights, "skinning_weights", ["V", "J"], sizes)
    check_shape(joint_regressor, "joint_regressor", ["J", "V"], sizes)
    blocks = []
    num_coeffs = 0
    if space_bases is not None and space_bases.shape[0] > 0:
        check_shape(space_bases, "space_bases", [None, "V", 3], sizes)
        check_like(space_bases, "space_bases", template, "template")
        num_coeffs = space_bases.shape[0]
        blocks.append(space_bases.reshape(num_coeffs, -1))
    feature_joints = tuple(int(j) for j in pose_feature_joints)
    if pose_basis is not None:
        check_shape(pose_basis, "pose_basis", [9 * len(feature_joints), "V", 3], sizes)
        check_like(pose_basis, "pose_basis", template, "template")
        blocks.append(pose_basis.reshape(pose_basis.shape[0], -1))
    stacked = torch.cat(blocks, 0).contiguous() if blocks else None
    joint_template, joint_basis = precompute_joint_regression(
        joint_regressor.to(template.dtype), template, space_bases if num_coeffs else None
    )
    if skinning_weights.layout == torch.strided:
        weights = skinning_weights.contiguous().to(template.dtype)
    else:
        weights = skinning_weights.coalesce().to(template.dtype)
    return LbsBuffers(
        template=template,
        basis_t=stacked.t().contiguous() if stacked is not None else None,
        basis=stacked if small_batch_layout else None,
        num_coeffs=num_coeffs,
        joint_template=joint_template,
        joint_basis=joint_basis,
        weights=weights,
        tree=tree,
        pose_feature_joints=feature_joints if pose_basis is not None else (),
    )


def blend_skin(
    buffers: LbsBuffers,
    rotations: torch.Tensor,
    coeffs: torch.Tensor | None = None,
    *,
    offsets: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    translation: torch.Tensor | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> LbsOutput:
    """Forward pass: blend shapes, joint regression, forward kinematics and skinning.

    Args:
        buffers: from :func:`prepare`.
        rotations: ``(B, J, 3, 3)`` local joint rotations (root first).
        coeffs: ``(B, K)`` coefficients of the stacked linear spaces (``None`` = zeros).
        offsets, scale, translation: see :func:`anatomy.core.kinematics.forward_kinematics`.
    """
    template = buffers.template
    sizes = check_shape(rotations, "rotations", ["B", buffers.tree.num_joints, 3, 3])
    check_like(rotations, "rotations", template, "model buffers")
    check_finite(rotations, "rotations")
    batch = sizes["B"]
    parts = []
    if buffers.num_coeffs:
        if coeffs is None:
            coeffs = template.new_zeros(batch, buffers.num_coeffs)
        check_shape(coeffs, "coeffs", ["B", buffers.num_coeffs], sizes)
        check_like(coeffs, "coeffs", template, "model buffers")
        check_finite(coeffs, "coeffs")
        parts.append(coeffs)
    elif coeffs is not None and coeffs.numel():
        raise ShapeError(f"this model has no linear spaces but coeffs of shape {tuple(coeffs.shape)} came; pass None.")
    if buffers.pose_feature_joints:
        parts.append(pose_features(rotations, buffers.pose_feature_joints))

    if buffers.basis_t is not None and parts:
        weights = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        points = blend_batch_last(template, buffers.basis_t, weights, buffers.basis)
    else:
        points = template[:, :, None]

    rest_joints = buffers.joint_template.expand(batch, -1, -1)
    if buffers.joint_basis is not None and coeffs is not None:
        rest_joints = rest_joints + (coeffs @ buffers.joint_basis).view(batch, -1, 3)
    kin = forward_kinematics(
        rotations, rest_joints, buffers.tree, offsets, scale=scale, translation=translation
    )
    skinned = skin_batch_last(points, kin.transforms, buffers.weights, block_bytes=block_bytes)
    return LbsOutput(
        vertices=skinned,
        joints=kin.positions,
        rest_joints=rest_joints,
        rotations=kin.rotations,
        transforms=kin.transforms,
    )


def lbs(
    template: torch.Tensor,
    rotations: torch.Tensor,
    skinning_weights: torch.Tensor,
    joint_regressor: torch.Tensor,
    parents: Sequence[int],
    *,
    space_bases: torch.Tensor | None = None,
    coeffs: torch.Tensor | None = None,
    pose_basis: torch.Tensor | None = None,
    pose_feature_joints: Sequence[int] = (),
    offsets: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    translation: torch.Tensor | None = None,
) -> LbsOutput:
    """One-off forward pass: :func:`prepare` then :func:`blend_skin`.

    Differentiable in every float input, including the model arrays (useful when
    learning them); layers call :func:`prepare` once instead.
    """
    buffers = prepare(
        template, skinning_weights, joint_regressor, parents,
        space_bases=space_bases, pose_basis=pose_basis, pose_feature_joints=pose_feature_joints,
        small_batch_layout=False,
    )
    return blend_skin(buffers, rotations, coeffs, offsets=offsets, scale=scale, translation=translation)
