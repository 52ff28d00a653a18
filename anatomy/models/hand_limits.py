"""Anatomical joint frames and limits of the hand, from per-joint axes and ranges.

A hand model file may carry ``extras['joint_axes'] (25, 2, 3)`` (flexion and abduction
axes in the rest frame), ``extras['joint_ranges'] (25, 2, 2)`` (radians) and
``extras['joint_dof_mask'] (25, 2)`` (which of the two a joint has); the embedded default
hand takes them from the MyoHand model of myo-sim. They become one
:class:`~anatomy.constraints.JointLimits` row per **bone** (the layer's pose rows): frame
columns = flexion axis, abduction axis made orthogonal to it, and their cross product
(roughly along the bone, the twist axis).
"""

from __future__ import annotations

import math

import torch

from ..constraints import JointLimits
from ..core.errors import ParameterError

# Axial twist allowed at every finger joint (passive rotation of a few degrees; the MyoHand
# model has none, so this is a small tolerance rather than a measured range).
TWIST_TOLERANCE = math.radians(5.0)
KEYS = ("joint_axes", "joint_ranges", "joint_dof_mask")


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm().clamp_min(1e-12)


def _orthogonal_to(f: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
    """A unit vector orthogonal to ``f``, as close to ``hint`` as possible (any if degenerate)."""
    a = hint - (hint @ f) * f
    if float(a.norm()) < 1e-6:
        other = torch.zeros_like(f)
        other[int(f.abs().argmin())] = 1.0
        a = other - (other @ f) * f
    return _unit(a)


def hand_joint_limits(
    extras: dict[str, torch.Tensor], rest_joints: torch.Tensor, bone_joints: tuple[int, ...], parents: tuple[int, ...]
) -> JointLimits:
    """Per-bone limits ``(20 rows)``; row 0 (the root) is unlimited. See the module docstring."""
    missing = [k for k in KEYS if k not in extras]
    if missing:
        raise ParameterError(
            f"this hand model has no joint axes/ranges (missing extras {missing}); joint limits are available "
            f"for the embedded default hand, or add those extras to your model file."
        )
    axes = extras["joint_axes"].double()
    ranges = extras["joint_ranges"].double()
    mask = extras["joint_dof_mask"].bool()
    joints = rest_joints.double()
    children = {p: j for j, p in reversed(list(enumerate(parents))) if p >= 0}
    frames, lower, upper = [], [], []
    for b, j in enumerate(bone_joints):
        if b == 0:
            frames.append(torch.eye(3, dtype=torch.float64))
            lower.append(torch.full((3,), -math.pi, dtype=torch.float64))
            upper.append(torch.full((3,), math.pi, dtype=torch.float64))
            continue
        along = _unit(joints[children[j]] - joints[j]) if j in children else torch.tensor([0.0, 1.0, 0.0]).double()
        f = _unit(axes[j, 0]) if bool(mask[j, 0]) else _orthogonal_to(along, torch.tensor([1.0, 0.0, 0.0]).double())
        a = _orthogonal_to(f, axes[j, 1] if bool(mask[j, 1]) else torch.linalg.cross(along, f))
        frames.append(torch.stack([f, a, torch.linalg.cross(f, a)], 1))
        lo = torch.tensor([ranges[j, k, 0] if bool(mask[j, k]) else 0.0 for k in (0, 1)] + [-TWIST_TOLERANCE])
        hi = torch.tensor([ranges[j, k, 1] if bool(mask[j, k]) else 0.0 for k in (0, 1)] + [TWIST_TOLERANCE])
        lower.append(lo.double())
        upper.append(hi.double())
    return JointLimits(torch.stack(frames), torch.stack(lower), torch.stack(upper))
