"""Penetration tools wired to the hand layer: building them, the skin fix-up, separating bones.

The geometry lives in :mod:`anatomy.constraints.penetration`; this module only knows where the
hand's tissues sit in its vertex stack and how to optimise a pose.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

import torch

from ..constraints.penetration import TissuePenetration
from ..core.checks import check_shape
from ..core.errors import ParameterError
from ..core.rotations import axis_angle_to_matrix
from .output import ModelOutput, TissueLayout

if TYPE_CHECKING:
    from .nimble import Nimble

Output = TypeVar("Output", bound=ModelOutput)


def build_penetration(layout: tuple[TissueLayout, ...], template: torch.Tensor,
                      skin_surface: torch.Tensor | None) -> TissuePenetration:
    """A :class:`TissuePenetration` from the rest vertex stack: ``bones`` (with part ids) and,
    when present, ``skin`` and ``muscles``."""
    lay = {t.name: t for t in layout}
    bones = lay.get("bones")
    if bones is None or bones.part_ids is None:
        raise ParameterError("penetration needs a 'bones' tissue with per-bone part ids.")
    rest = template.detach()
    skin = lay.get("skin")
    muscles = lay.get("muscles") if skin is not None else None
    return TissuePenetration(
        rest[bones.start:bones.stop], bones.faces, bones.part_ids,
        None if skin is None else rest[skin.start:skin.stop], None if skin is None else skin.faces,
        skin_surface if skin is not None else None,
        None if muscles is None else rest[muscles.start:muscles.stop], None if muscles is None else muscles.faces,
    )


def push_skin_out(pen: TissuePenetration, output: Output, *, margin: float = 0.5, iterations: int = 12) -> Output:
    """``output`` with its skin surface moved out of muscles and bones (no gradient on the skin)."""
    lay = {t.name: t for t in output.layout}
    if "skin" not in lay:
        raise ParameterError("this model has no skin tissue to fix.")
    skin = pen.push_skin_out(output.tissue("bones"), output.tissue("skin"),
                             output.tissue("muscles") if "muscles" in lay else None,
                             margin=margin, iterations=iterations)
    t = lay["skin"]
    verts = torch.cat([output.vertices[:, :t.start], skin, output.vertices[:, t.stop:]], 1)
    return replace(output, vertices=verts)


def separate_bones(
    model: Nimble,
    pose: torch.Tensor,
    shape: torch.Tensor | None = None,
    *,
    steps: int = 40,
    lr: float = 0.02,
    margin: float = 0.3,
    tolerance: float = 0.5,
    limit_weight: float = 100.0,
) -> torch.Tensor:
    """Poses whose bones interpenetrate by more than ``tolerance`` mm, moved until they do not
    (others returned unchanged; articular surfaces of the rest pose may touch by a few tenths).

    Minimises the differentiable bone-bone penalty (``margin`` mm of clearance) plus
    ``limit_weight`` times the joint-limit penalty with Adam (``steps`` steps of size ``lr``
    rad) over the non-root rows of the axis-angle ``pose (B, 20, 3)``; the root stays fixed.
    Vectorised over the colliding poses of the batch. Returns a new pose without gradient.
    """
    if model.pose_mode != "axis_angle":
        raise ParameterError("separate_bones works on axis-angle poses; build the layer with pose_mode='axis_angle'.")
    check_shape(pose, "pose", ["B", 20, 3])
    if steps < 1 or not lr > 0:
        raise ParameterError(f"steps must be >= 1 and lr > 0, got {steps} and {lr}.")
    pen = model.penetration()
    limits = model.joint_limits() if model.has_joint_limits else None
    pose = pose.detach().clone()
    with torch.no_grad():
        todo = pen.depths(model(pose, shape).bones).bone_bone.amax(1) > tolerance
    if not bool(todo.any()):
        return pose
    sub_shape = shape[todo] if shape is not None and shape.shape[0] == pose.shape[0] else shape
    x = pose[todo].requires_grad_()
    opt = torch.optim.Adam([x], lr=lr)
    keep_root = torch.ones_like(x)
    keep_root[:, 0] = 0
    for _ in range(steps):
        opt.zero_grad()
        loss = pen.penalty(model(x, sub_shape).bones, margin=margin)
        if limits is not None:
            loss = loss + limit_weight * limits.penalty(axis_angle_to_matrix(x))
        loss.sum().backward()
        assert x.grad is not None
        x.grad.mul_(keep_root)
        opt.step()
    pose[todo] = x.detach()
    return pose
