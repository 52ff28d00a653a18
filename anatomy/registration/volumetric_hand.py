"""Volumetric registration of the hand's soft tissue: muscles, then the skin volume.

:func:`register_hand_soft_tissue` starts from a hand layer's skinned (LBS) output at the fitted
pose and shape, whose bones are taken as registered, and runs :func:`.volumetric.register_volume`
twice, with the rig of :mod:`anatomy.models.hand_soft_rig` (shared with the elastic phantoms: which
node follows which bone or muscle triangle, classified on the rest pose of the shape):

1. **muscles**: nodes within ``attach_mm`` of a bone at rest move rigidly with it (hard
   attachments), the muscle surface is fitted to ``targets["muscles"]``, the bones are obstacles;
2. **skin volume**: inner boundary nodes within ``inner_mm`` of a bone follow it, those nearer a
   muscle follow the *registered* muscle surface; the outer skin is fitted to ``targets["skin"]``;
   bones and registered muscles are obstacles.

Attachments that would invert one of their tets at the start (two bones meeting in a crease) are
left free, as in the phantom. Elastic rest states are those of the shape (repaired like the
phantom's when the shape inverts rest tets).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from ..core.elastic import StableNeoHookean
from ..core.errors import ParameterError
from ..models import hand_soft_rig as rig
from .volumetric import VolumetricResult, VolumetricWeights, register_volume

if TYPE_CHECKING:
    from ..models.output import ModelOutput

__all__ = ["HAND_WEIGHTS", "HandSoftTissueResult", "register_hand_soft_tissue"]

#: default weights for the hand: data springs 30x softer than :class:`.volumetric.VolumetricWeights`'
#: defaults and a tighter robust scale, so the elastic energy smooths scanner noise. Measured on an
#: elastic phantom (CUDA, one case; 30 % cut, 10 % outliers, 2 mm RMS noise): mean muscle error
#: 0.44 -> 0.19 mm on damaged targets for 0.046 -> 0.057 mm on clean ones (skin 0.57 -> 0.42,
#: 0.30 -> 0.34 mm); the price is a looser fit where the target disagrees with the elastic prior.
#: Noisy targets soften the data terms further (``noise_reference``: a clean 30 k-point sampling of the
#: hand's muscles or skin reads 0.13-0.17 mm, with 2 mm RMS noise 0.43 (muscles) and 0.76 mm (skin),
#: i.e. data terms 2x and 6.5x softer; measured muscles 0.20 -> 0.16 mm on one damaged case)
HAND_WEIGHTS = VolumetricWeights(data=0.003, back=0.03, robust_scale=1.5, noise_reference=0.3)


@dataclass(frozen=True)
class HandSoftTissueResult:
    """``output``: the fitted output with registered muscle and skin nodes (batch 1, detached);
    ``muscles`` / ``skin``: the :class:`~.volumetric.VolumetricResult` of each registration;
    ``seconds``: wall time of the whole call (classification included)."""

    output: ModelOutput
    muscles: VolumetricResult
    skin: VolumetricResult
    seconds: float


def _target(targets: Mapping[str, Any], name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    value = targets.get(name) if isinstance(targets, Mapping) else None
    if value is None:
        raise ParameterError(f"targets must map 'muscles' and 'skin' to (M, 3) target points (or (points, normals) "
                             f"pairs); {name!r} is missing.")
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise ParameterError(f"targets[{name!r}] must be points (M, 3) or a pair (points, normals).")
        return value[0], value[1]
    return value, None


def register_hand_soft_tissue(
    model: torch.nn.Module,
    fitted: ModelOutput | Mapping[str, torch.Tensor | None],
    targets: Mapping[str, Any],
    *,
    shape: torch.Tensor | None = None,
    attach_mm: float = 1.5,
    inner_mm: float = 1.0,
    muscle: StableNeoHookean | None = None,
    skin: StableNeoHookean | None = None,
    weights: VolumetricWeights | None = None,
    collisions: bool = True,
    iterations: int = 10,
    inner_steps: int = 30,
    presolve: int = 1500,
    device: torch.device | str | None = None,
) -> HandSoftTissueResult:
    """Register the muscles, then the skin volume of a hand layer to target surfaces.

    Args:
        model: a hand layer with tetrahedral muscles and skin (``anatomy.Nimble()``).
        fitted: its output at the fitted pose and shape (batch 1; its bones count as registered),
            or the keyword parameters of ``model.forward`` (``pose``, ``shape``, ...) to make it.
        targets: ``{"muscles": points (M, 3), "skin": points (K, 3)}``; a value may also be a pair
            ``(points, normals)``. Skin points lie on the outer skin.
        shape: the shape coefficients ``fitted`` was made with (read from ``fitted`` when it is a
            mapping); ``None`` is the mean shape.
        attach_mm, inner_mm: attachment distances at rest (see :mod:`anatomy.models.hand_soft_rig`).
        muscle, skin: materials (defaults those of the phantom).
        weights: :class:`~.volumetric.VolumetricWeights` for both registrations (default
            :data:`HAND_WEIGHTS`).
        collisions: keep muscles out of bones and the skin volume out of bones and muscles.
        iterations, inner_steps, device: as in :func:`~.volumetric.register_volume`.
    """
    clock = time.perf_counter()
    if isinstance(fitted, Mapping):
        shape = fitted.get("shape", shape)
        with torch.no_grad():
            out = model.forward(**fitted)
    else:
        out = fitted
    bone_joint = rig.check_hand(model, out)
    if out.batch_size != 1:
        raise ParameterError(f"register_hand_soft_tissue registers one hand; fitted has batch {out.batch_size} "
                             f"(call it once per sample).")
    m_pts, m_nrm = _target(targets, "muscles")
    s_pts, s_nrm = _target(targets, "skin")
    muscle = rig.MUSCLE if muscle is None else muscle
    skin = rig.SKIN if skin is None else skin
    with torch.no_grad():
        rest = model.forward(None, shape)
    if rest.batch_size != 1:
        raise ParameterError(f"shape must hold one sample, got batch {rest.batch_size}.")
    shaped, tets = rig.shaped_rest(model, rest, muscle, skin)
    s = replace(rig.soft_tissue_rig(shaped, bone_joint, attach_mm, inner_mm), tets=tets)
    transforms = out.transforms[0].detach().double().cpu()
    k = float(torch.linalg.det(transforms[:, :, :3]).mean()) ** (1.0 / 3.0)
    bones = (out.tissue("bones")[0].detach().double().cpu(), out.faces("bones").cpu())
    muscle_faces = out.faces("muscles").cpu()
    lbs = {name: out.tissue(name)[0].detach().double().cpu() for name in ("muscles", "skin")}
    options: dict[str, Any] = {"weights": HAND_WEIGHTS if weights is None else weights, "iterations": iterations,
                               "inner_steps": inner_steps, "presolve": presolve, "device": device}

    def attachments(name: str, follows: list[tuple[Any, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.zeros(lbs[name].shape[0], dtype=torch.bool)
        pos = torch.zeros_like(lbs[name])
        for follow, p in follows:
            mask[follow.nodes] = True
            pos[follow.nodes] = p
        mask = rig.release_inverting(mask, pos, lbs[name], tets[name])
        ids = torch.nonzero(mask).flatten()
        return ids, pos[ids]

    ids, pos = attachments("muscles", [(s.muscle_bone, rig.move_rigid(s.muscle_bone, transforms))])
    res_m = register_volume(k * s.rest_muscles, tets["muscles"], lbs["muscles"], m_pts, m_nrm,
                            surface_faces=muscle_faces, attach_ids=ids, attach_positions=pos,
                            obstacles=[bones] if collisions else [], material=muscle, **options)
    m_new = res_m.nodes.detach().double().cpu()
    ids, pos = attachments("skin", [(s.skin_bone, rig.move_rigid(s.skin_bone, transforms)),
                                    (s.skin_muscle, rig.move_on_surface(s.skin_muscle, m_new, k))])
    res_s = register_volume(k * s.rest_skin, tets["skin"], lbs["skin"], s_pts, s_nrm,
                            surface_faces=out.faces("skin").cpu(), attach_ids=ids, attach_positions=pos,
                            obstacles=[bones, (m_new, muscle_faces)] if collisions else [], material=skin,
                            **options)
    verts = out.vertices.detach().clone()
    lay = {t.name: t for t in out.layout}
    for name, new in (("muscles", res_m.nodes), ("skin", res_s.nodes)):
        verts[0, lay[name].start:lay[name].stop] = new.to(verts)
    return HandSoftTissueResult(output=replace(out, vertices=verts), muscles=res_m, skin=res_s,
                                seconds=time.perf_counter() - clock)
