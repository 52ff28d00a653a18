"""Soft tissue that follows the bones physically: a quasi-static elastic solve for hand phantoms.

:func:`settle_soft_tissue` replaces the skinned (LBS) muscle and skin-volume nodes of a posed hand
by the equilibrium of a stable Neo-Hookean solid (:mod:`anatomy.core.elastic`) whose boundary
follows the rigid bones:

1. **Muscles**: tet nodes within ``attach_mm`` of a bone at rest move rigidly with that bone
   (the bones are rigid per part, the part's joint transform of ``output.transforms``); all other
   muscle nodes are free. All muscle groups are solved together (they share no nodes).
2. **Skin volume**: nodes of its inner boundary (the envelope of bones and muscles) within
   ``inner_mm`` of a bone or of a muscle surface at rest follow the nearer one: rigidly with the
   bone, or with the *solved* muscle (the offset to the closest point on the muscle surface is
   kept in that triangle's frame). The outer skin, the Steiner points and the rest of the inner
   boundary are free.

Attached nodes whose prescribed positions would invert one of their tets (two bones meeting in a
flexion crease, a muscle sliding past a bone) are released (left free) so the solve can undo it.
The LBS positions are the initial guess. Classification (which node follows what) is done on the
rest pose of ``shape``; pass the shape the output was made with. A shape whose blend shapes invert
some rest tets (a few of the 82k, where a thin tet's sides move apart) first gets a valid rest state:
muscles and skin volume relaxed against the mean-shape rest with their boundary held where the shape
puts it (:func:`repair_rest`; a node moves up to about 3 mm); the rare tets still inverted then are
left out of the energy. The rest pose of such a shape returns that repaired state. A global ``scale`` of the output
(it is part of ``output.transforms``) scales the rest state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from ..core.checks import check_shape
from ..core.elastic import QuasiStaticReport, StableNeoHookean, solve_quasistatic, tet_volumes
from ..core.errors import ParameterError
from ..models.hand_soft_rig import (
    MUSCLE,
    SKIN,
    BoneFollow,
    Follow,
    SoftTissueRig,
    check_hand,
    move_on_surface,
    move_rigid,
    release_inverting,
    shaped_rest,
    soft_tissue_rig,
)

if TYPE_CHECKING:
    from ..models.output import ModelOutput

Output = TypeVar("Output", bound="ModelOutput")

__all__ = ["SoftTissueReport", "TissueSolve", "settle_soft_tissue", "settle_soft_tissue_report", "soft_tissue_changes"]


@dataclass(frozen=True)
class TissueSolve:
    """One tissue of one sample: the :class:`~anatomy.core.elastic.QuasiStaticReport` of its solve,
    ``fixed (N,)`` the Dirichlet nodes actually used, how many nodes followed a bone / a muscle, and
    how many attached nodes were ``released`` (freed because their attachment inverted a tet)."""

    solve: QuasiStaticReport
    fixed: torch.Tensor
    to_bone: int
    to_muscle: int
    released: int


@dataclass(frozen=True)
class SoftTissueReport:
    """Per sample, ``{"muscles": TissueSolve, "skin": TissueSolve}``."""

    samples: tuple[dict[str, TissueSolve], ...]



def settle_soft_tissue(model: torch.nn.Module, output: Output, **options: Any) -> Output:
    """``output`` of a hand layer with its ``muscles`` and ``skin`` nodes moved to elastic equilibrium.

    Muscle nodes within ``attach_mm`` (mm) of a bone at rest follow that bone rigidly; the muscles
    are solved, then the skin volume with its inner boundary nodes within ``inner_mm`` of a bone
    or a muscle following them (see the module docstring). With ``release``, attached nodes of
    tets that their prescribed positions would invert (e.g. skin nodes on two bones meeting in a
    flexion crease) are left free instead. Materials are stable Neo-Hookean
    (:class:`~anatomy.core.elastic.StableNeoHookean`, default ``nu = 0.45``; with Dirichlet
    conditions only the Poisson ratio changes the result). Each solve stops when the largest
    free nodal force fell to ``rtol`` times its value at the LBS guess, or after ``max_iter``
    L-BFGS iterations.

    Args (the keyword ``options`` are those of :func:`settle_soft_tissue_report`):
        model: the hand layer that made ``output`` (``anatomy.Nimble()``: tetrahedral muscles and skin).
        output: its forward output ``(B, ...)`` (any pose; samples are solved one after the other).
        shape: the shape coefficients ``output`` was made with (``None`` = mean shape); the rest
            state is ``model.forward(None, shape)``. Posed bones that do not match it raise.

    Returns:
        a new output of the same type: bones, joints, landmarks and transforms unchanged, muscle
        and skin vertices replaced (same dtype and device, detached: the solve carries no
        gradient). The rest pose is a fixed point. :func:`settle_soft_tissue_report` also returns
        what each solve did.
    """
    return settle_soft_tissue_report(model, output, **options)[0]


def settle_soft_tissue_report(
    model: torch.nn.Module,
    output: Output,
    *,
    shape: torch.Tensor | None = None,
    attach_mm: float = 1.5,
    inner_mm: float = 1.0,
    muscle: StableNeoHookean = MUSCLE,
    skin: StableNeoHookean = SKIN,
    release: bool = True,
    rtol: float = 1e-2,
    max_iter: int = 1500,
) -> tuple[Output, SoftTissueReport]:
    """:func:`settle_soft_tissue` and a :class:`SoftTissueReport` of its solves."""
    bone_joint = check_hand(model, output)
    for name, v in (("attach_mm", attach_mm), ("inner_mm", inner_mm)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < float("inf"):
            raise ParameterError(f"{name} must be a finite distance >= 0 in mm, got {v!r}.")
    with torch.no_grad():
        rest = model.forward(None, shape)
    if rest.batch_size not in (1, output.batch_size):
        raise ParameterError(f"shape has batch {rest.batch_size} but output has {output.batch_size}; pass one shape "
                             f"per sample or one for all.")
    check_shape(output.vertices, "output.vertices", [None, rest.vertices.shape[1], 3])
    lay = {t.name: t for t in output.layout}
    bone_ids = lay["bones"].part_ids
    assert bone_ids is not None  # check_hand
    bone_joint_of_vertex = bone_joint[bone_ids.cpu()]
    verts = output.vertices.detach().clone()
    samples: list[dict[str, TissueSolve]] = []
    setups: dict[int, SoftTissueRig] = {}
    for b in range(output.batch_size):
        r = 0 if rest.batch_size == 1 else b
        if r not in setups:
            shaped, tets = shaped_rest(model, _sample(rest, r), muscle, skin)
            setups[r] = replace(soft_tissue_rig(shaped, bone_joint, attach_mm, inner_mm), tets=tets)
        s = setups[r]
        transforms = output.transforms[b].detach().double().cpu()
        moved = move_rigid(BoneFollow(nodes=bone_ids, rest=s.rest_bones, joint=bone_joint_of_vertex), transforms)
        err = float((moved - output.tissue("bones")[b].detach().double().cpu()).abs().max())
        if err > 1e-2:
            raise ParameterError(f"the posed bones of sample {b} are {err:.3g} mm away from the rest bones moved by "
                                 f"output.transforms; pass the shape the output was made with (shape=...).")
        lbs = {name: output.tissue(name)[b].detach().double().cpu() for name in ("muscles", "skin")}
        # a global scale (forward(..., scale=...)) is part of the transforms: the rest state scales with it
        k = float(torch.linalg.det(transforms[:, :, :3]).mean()) ** (1.0 / 3.0)
        m_new, m_rep = _solve_tissue(k * s.rest_muscles, s.tets["muscles"], lbs["muscles"],
                                     [(s.muscle_bone, move_rigid(s.muscle_bone, transforms))], [],
                                     muscle, release, rtol, max_iter)
        s_new, s_rep = _solve_tissue(k * s.rest_skin, s.tets["skin"], lbs["skin"],
                                     [(s.skin_bone, move_rigid(s.skin_bone, transforms))],
                                     [(s.skin_muscle, move_on_surface(s.skin_muscle, m_new, k))],
                                     skin, release, rtol, max_iter)
        for name, new in (("muscles", m_new), ("skin", s_new)):
            verts[b, lay[name].start:lay[name].stop] = new.to(verts)
        samples.append({"muscles": m_rep, "skin": s_rep})
    return replace(output, vertices=verts), SoftTissueReport(samples=tuple(samples))


def _solve_tissue(rest: torch.Tensor, tets: torch.Tensor, x0: torch.Tensor,
                  to_bone: list[tuple[Follow, torch.Tensor]], to_muscle: list[tuple[Follow, torch.Tensor]],
                  material: StableNeoHookean, release: bool, rtol: float, max_iter: int
                  ) -> tuple[torch.Tensor, TissueSolve]:
    """Equilibrium of one tissue with the attached nodes at the given positions."""
    mask = torch.zeros(rest.shape[0], dtype=torch.bool)
    fixed = torch.zeros_like(rest)
    for follow, pos in to_bone + to_muscle:
        mask[follow.nodes] = True
        fixed[follow.nodes] = pos
    attached = int(mask.sum())
    if release:
        mask = release_inverting(mask, fixed, x0, tets)
    res = solve_quasistatic(rest, tets, x0, mask, fixed, material=material, rtol=rtol, max_iter=max_iter)
    report = TissueSolve(solve=res.reports[0], fixed=mask, to_bone=sum(len(f.nodes) for f, _ in to_bone),
                         to_muscle=sum(len(f.nodes) for f, _ in to_muscle), released=attached - int(mask.sum()))
    return res.positions, report


def _sample(output: ModelOutput, b: int) -> ModelOutput:
    """Sample ``b`` of an output as a batch of one."""
    return replace(output, vertices=output.vertices[b:b + 1])


def soft_tissue_changes(output: ModelOutput, rest: ModelOutput) -> dict[str, torch.Tensor]:
    """Per sample: inverted tets and mean relative volume change ``mean |dV / V|`` of the
    ``muscles`` and ``skin`` tets of ``output`` against ``rest`` (keys ``"<tissue>_inverted"``,
    ``"<tissue>_dvol"``), and per muscle group ``"muscles/<group>_dvol"``."""
    out: dict[str, torch.Tensor] = {}
    for name in ("muscles", "skin"):
        tets = output.tets(name)
        if tets is None:
            continue
        v0 = tet_volumes(rest.tissue(name).detach().double(), tets)
        v1 = tet_volumes(output.tissue(name).detach().double(), tets)
        rel = ((v1 - v0) / v0).abs()
        out[f"{name}_inverted"] = (v1 <= 0).sum(-1)
        out[f"{name}_dvol"] = rel.mean(-1)
        t = {x.name: x for x in output.layout}[name]
        if t.part_ids is not None and t.part_names:
            tet_part = t.part_ids.to(tets.device)[tets[:, 0]]
            for k, part in enumerate(t.part_names):
                sel = tet_part == k
                if bool(sel.any()):
                    out[f"{name}/{part}_dvol"] = rel[..., sel].mean(-1)
    return out
