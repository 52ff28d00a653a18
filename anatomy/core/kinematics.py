"""Kinematic trees and batched forward kinematics, one step per tree depth level.

A tree is given by ``parents``: ``parents[0] == -1`` (the root) and
``parents[j] < j`` for every other joint (topological order). Joints at the same
depth are composed together in one batched matrix product, so the Python loop runs
over the depth of the tree (6 for a hand), not over its joints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .checks import check_finite, check_floating, check_like, check_shape
from .errors import ParameterError, ShapeError


@dataclass(frozen=True)
class KinematicTree:
    """Validated parents plus the per-depth grouping used by :func:`forward_kinematics`."""

    parents: tuple[int, ...]
    levels: tuple[tuple[int, ...], ...]

    @property
    def num_joints(self) -> int:
        return len(self.parents)

    @classmethod
    def from_parents(cls, parents: Sequence[int]) -> KinematicTree:
        parents_t = tuple(int(p) for p in parents)
        if not parents_t:
            raise ParameterError("parents is empty; a kinematic tree needs at least the root joint (-1).")
        if parents_t[0] != -1:
            raise ParameterError(f"parents[0] must be -1 (the root), got {parents_t[0]}.")
        depth = [0] * len(parents_t)
        for j, p in enumerate(parents_t[1:], start=1):
            if not 0 <= p < j:
                raise ParameterError(
                    f"parents[{j}] = {p} is invalid: every non-root joint needs a parent with a "
                    f"smaller index (0 <= parent < {j}); reorder the joints topologically."
                )
            depth[j] = depth[p] + 1
        levels = tuple(
            tuple(j for j in range(len(parents_t)) if depth[j] == d) for d in range(max(depth) + 1)
        )
        return cls(parents_t, levels)


@dataclass(frozen=True)
class _LevelIndex:
    parents: torch.Tensor  # (J,) parent of each joint, the root mapped to itself
    has_parent: torch.Tensor  # (1, J, 1) False for the root
    levels: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # (joints, their parents) per depth >= 1


_INDEX_CACHE: dict[tuple[tuple[int, ...], str], _LevelIndex] = {}


def _level_index(tree: KinematicTree, device: torch.device) -> _LevelIndex:
    """Index tensors of a tree on a device, built once and cached (they are tiny)."""
    key = (tree.parents, str(device))
    cached = _INDEX_CACHE.get(key)
    if cached is None:
        parents = torch.tensor([max(p, 0) for p in tree.parents], device=device)
        has_parent = torch.tensor([p >= 0 for p in tree.parents], device=device)[None, :, None]
        levels = tuple(
            (torch.tensor(level, device=device), torch.tensor([tree.parents[j] for j in level], device=device))
            for level in tree.levels[1:]
        )
        cached = _LevelIndex(parents, has_parent, levels)
        if len(_INDEX_CACHE) > 64:
            _INDEX_CACHE.clear()
        _INDEX_CACHE[key] = cached
    return cached


@dataclass(frozen=True)
class Kinematics:
    """Result of forward kinematics.

    * ``rotations (B, J, 3, 3)`` and ``positions (B, J, 3)``: global joint frames.
    * ``transforms (B, J, 3, 4)``: rest -> posed affine maps used by skinning
      (``x_posed = A[:, :3] x_rest + A[:, 3]`` for a point rigidly attached to the joint).
    """

    rotations: torch.Tensor
    positions: torch.Tensor
    transforms: torch.Tensor


def forward_kinematics(
    rotations: torch.Tensor,
    joints: torch.Tensor,
    tree: KinematicTree,
    offsets: torch.Tensor | None = None,
    *,
    scale: torch.Tensor | None = None,
    translation: torch.Tensor | None = None,
) -> Kinematics:
    """Pose a kinematic tree.

    Args:
        rotations: ``(B, J, 3, 3)`` local rotation of each joint (about its own centre).
        joints: ``(B, J, 3)`` rest joint centres (e.g. regressed from shaped vertices).
        tree: the validated :class:`KinematicTree`.
        offsets: optional ``(B, J, 3)`` translation added to each joint's position
            relative to its parent, in the parent's frame, before composing the chain
            (the jaw's condylar glide). For the root it moves the whole model.
        scale: optional ``(B,)`` uniform scale applied about the model origin after posing.
        translation: optional ``(B, 3)`` applied last.
    """
    sizes = check_shape(rotations, "rotations", ["B", "J", 3, 3])
    check_shape(joints, "joints", ["B", "J", 3], sizes)
    check_floating(rotations, "rotations")
    check_like(joints, "joints", rotations, "rotations")
    if sizes["J"] != tree.num_joints:
        raise ShapeError(
            f"rotations has {sizes['J']} joints but the kinematic tree has {tree.num_joints}; "
            f"pass one rotation per joint."
        )
    index = _level_index(tree, joints.device)
    rel = joints - joints[:, index.parents] * index.has_parent
    if offsets is not None:
        check_shape(offsets, "offsets", ["B", "J", 3], sizes)
        check_like(offsets, "offsets", rotations, "rotations")
        check_finite(offsets, "offsets")
        rel = rel + offsets

    # level by level: every joint of a level is composed with its (already global) parent at once
    glob_r, glob_t = rotations, rel
    for idx, pidx in index.levels:
        parent_r = glob_r[:, pidx]
        new_r = parent_r @ glob_r[:, idx]
        new_t = (parent_r @ rel[:, idx, :, None])[..., 0] + glob_t[:, pidx]
        glob_r = glob_r.index_copy(1, idx, new_r)
        glob_t = glob_t.index_copy(1, idx, new_t)
    if scale is not None:
        check_shape(scale, "scale", ["B"], sizes)
        check_like(scale, "scale", rotations, "rotations")
        glob_t = glob_t * scale[:, None, None]
        glob_r_scaled = glob_r * scale[:, None, None, None]
    else:
        glob_r_scaled = glob_r
    if translation is not None:
        check_shape(translation, "translation", ["B", 3], sizes)
        check_like(translation, "translation", rotations, "rotations")
        glob_t = glob_t + translation[:, None]
    # rest -> posed: x' = s R (x - j) + t_global  (t_global already scaled/translated)
    trans = glob_t - (glob_r_scaled @ joints[..., None])[..., 0]
    transforms = torch.cat([glob_r_scaled, trans[..., None]], -1)
    return Kinematics(rotations=glob_r, positions=glob_t, transforms=transforms)
