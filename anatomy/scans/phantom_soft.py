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
puts it (:func:`_repair_rest`; a node moves up to about 3 mm); the rare tets still inverted then are
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
from ..core.nearest import closest_points_on_mesh

if TYPE_CHECKING:
    from ..models.output import ModelOutput, TissueLayout

Output = TypeVar("Output", bound="ModelOutput")

__all__ = ["SoftTissueReport", "TissueSolve", "settle_soft_tissue", "settle_soft_tissue_report", "soft_tissue_changes"]

#: defaults: soft tissue is nearly incompressible; only the Poisson ratio matters (Dirichlet only)
MUSCLE = StableNeoHookean(young=10.0, poisson=0.45)
SKIN = StableNeoHookean(young=10.0, poisson=0.45)


@dataclass(frozen=True)
class _Follow:
    """Rest-pose attachment of some nodes: ``nodes (K,)`` local ids and what they follow."""

    nodes: torch.Tensor
    rest: torch.Tensor  # (K, 3) float64 rest positions of those nodes


@dataclass(frozen=True)
class _BoneFollow(_Follow):
    joint: torch.Tensor  # (K,) joint whose transform moves the bone each node follows


@dataclass(frozen=True)
class _SurfaceFollow(_Follow):
    face: torch.Tensor  # (K, 3) muscle-local node ids of the closest muscle triangle
    bary: torch.Tensor  # (K, 3) barycentric coordinates of the closest point
    local: torch.Tensor  # (K, 3) offset to the closest point in the rest triangle frame


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


def _bone_follow(nodes: torch.Tensor, rest_nodes: torch.Tensor, bones: torch.Tensor, bone_faces: torch.Tensor,
                 bone_joint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances of ``rest_nodes[nodes]`` to the bone surface and the joint of the nearest bone."""
    cp = closest_points_on_mesh(rest_nodes[nodes], bones, bone_faces)
    return cp.distance.detach(), bone_joint[bone_faces[cp.face_index, 0]]


def _frame(tri: torch.Tensor) -> torch.Tensor:
    """Orthonormal frames ``(..., 3, 3)`` (rows: edge, normal x edge, normal) of triangles ``(..., 3, 3)``."""
    e1 = tri[..., 1, :] - tri[..., 0, :]
    n = torch.linalg.cross(e1, tri[..., 2, :] - tri[..., 0, :])
    e1 = e1 / e1.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    return torch.stack([e1, torch.linalg.cross(n, e1), n], -2)


def _move_rigid(follow: _BoneFollow, transforms: torch.Tensor) -> torch.Tensor:
    """Positions ``(K, 3)`` of bone-attached nodes under per-joint transforms ``(J, 3, 4)``."""
    t = transforms[follow.joint]
    return (t[:, :, :3] @ follow.rest[:, :, None])[:, :, 0] + t[:, :, 3]


def _move_on_surface(follow: _SurfaceFollow, surface_nodes: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Positions ``(K, 3)`` of nodes attached to a deformed surface ``surface_nodes (M, 3)`` (offsets
    times ``scale``, the global scale of the output)."""
    tri = surface_nodes[follow.face]
    closest = (follow.bary[:, :, None] * tri).sum(1)
    return closest + scale * (follow.local[:, None, :] @ _frame(tri))[:, 0]


def _boundary_nodes(tets: torch.Tensor, n: int) -> torch.Tensor:
    """Bool ``(n,)``: nodes on the boundary of the tet mesh (on a triangle used by one tet only)."""
    tri = torch.cat([tets[:, [1, 2, 3]], tets[:, [0, 2, 3]], tets[:, [0, 1, 3]], tets[:, [0, 1, 2]]]).long()
    key = tri.sort(1).values
    packed = (key[:, 0] * n + key[:, 1]) * n + key[:, 2]  # one int64 per triangle (n^3 < 2^63)
    uniq, counts = torch.unique(packed, return_counts=True)
    once = uniq[counts == 1]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.cat([once // (n * n), once // n % n, once % n])] = True
    return mask


@dataclass(frozen=True)
class _Setup:
    muscle_bone: _BoneFollow
    skin_bone: _BoneFollow
    skin_muscle: _SurfaceFollow
    rest_bones: torch.Tensor
    rest_muscles: torch.Tensor
    rest_skin: torch.Tensor
    tets: dict[str, torch.Tensor]  # per tissue, the tets in the energy (all but any left inverted by _repair_rest)


def _setup(rest: ModelOutput, bone_joint: torch.Tensor, attach_mm: float, inner_mm: float) -> _Setup:
    """Which muscle / skin nodes follow which bone or muscle triangle, from the rest output."""
    lay = {t.name: t for t in rest.layout}
    bones = rest.tissue("bones")[0].detach().double().cpu()
    muscles = rest.tissue("muscles")[0].detach().double().cpu()
    skin = rest.tissue("skin")[0].detach().double().cpu()
    bone_faces = rest.faces("bones").cpu()
    bones_lay: TissueLayout = lay["bones"]
    assert bones_lay.part_ids is not None
    vertex_joint = bone_joint[bones_lay.part_ids.cpu()]

    all_m = torch.arange(muscles.shape[0])
    dist, joint = _bone_follow(all_m, muscles, bones, bone_faces, vertex_joint)
    keep = dist <= attach_mm
    muscle_bone = _BoneFollow(nodes=all_m[keep], rest=muscles[keep], joint=joint[keep])

    skin_tets = rest.tets("skin")
    assert skin_tets is not None
    outer = torch.zeros(skin.shape[0], dtype=torch.bool)
    outer[rest.faces("skin").cpu().flatten()] = True
    inner = torch.nonzero(_boundary_nodes(skin_tets.cpu(), skin.shape[0]) & ~outer).flatten()
    db, jb = _bone_follow(inner, skin, bones, bone_faces, vertex_joint)
    muscle_faces = rest.faces("muscles").cpu()
    cm = closest_points_on_mesh(skin[inner], muscles, muscle_faces)
    dm = cm.distance.detach()
    to_bone = (db <= inner_mm) & (db <= dm)
    to_muscle = (dm <= inner_mm) & (dm < db)
    skin_bone = _BoneFollow(nodes=inner[to_bone], rest=skin[inner[to_bone]], joint=jb[to_bone])
    face = muscle_faces[cm.face_index[to_muscle]]
    offset = skin[inner[to_muscle]] - cm.closest.detach()[to_muscle]
    local = (_frame(muscles[face]) @ offset[:, :, None])[:, :, 0]
    skin_muscle = _SurfaceFollow(nodes=inner[to_muscle], rest=skin[inner[to_muscle]], face=face,
                                 bary=cm.barycentric.detach()[to_muscle], local=local)
    return _Setup(muscle_bone, skin_bone, skin_muscle, bones, muscles, skin,
                  {"muscles": _tets(rest, "muscles"), "skin": skin_tets.cpu()})


def _repair_rest(reference: torch.Tensor, nodes: torch.Tensor, tets: torch.Tensor, material: StableNeoHookean,
                 rounds: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """A shaped rest state without inverted tets: ``nodes`` (the shape's blend-shape positions) relaxed
    against the mean-shape ``reference``, boundary nodes held where the shape puts them except those
    of inverted tets and, each further round, of the tets next to the ones still inverted. Returns the
    nodes and the tets with positive volume (the rare ones still inverted are left out of the energy)."""
    fixed = _release(_boundary_nodes(tets, nodes.shape[0]), nodes, nodes, tets)
    x = nodes
    for _ in range(rounds):
        x = solve_quasistatic(reference, tets, x, fixed, nodes, material=material, rtol=1e-3, max_iter=2000).positions
        bad = tet_volumes(x, tets) <= 0
        if not bool(bad.any()):
            break
        touched = torch.zeros(nodes.shape[0], dtype=torch.bool)
        touched[tets[bad].flatten()] = True
        fixed[tets[touched[tets].any(1)].flatten()] = False
    return x, tets[tet_volumes(x, tets) > 0]


def _tets(output: ModelOutput, name: str) -> torch.Tensor:
    tets = output.tets(name)
    assert tets is not None  # _check_hand
    return tets.cpu()


def _shaped_rest(model: torch.nn.Module, rest: ModelOutput, muscle: StableNeoHookean, skin: StableNeoHookean
                 ) -> tuple[ModelOutput, dict[str, torch.Tensor]]:
    """``rest`` (batch 1) and its tets per tissue; when the shape inverts rest tets (blend shapes move the
    two sides of a thin tet apart), muscles and skin volume relaxed by :func:`_repair_rest`."""
    tets = {name: _tets(rest, name) for name in ("muscles", "skin")}
    nodes = {name: rest.tissue(name)[0].detach().double().cpu() for name in tets}
    if not any(bool((tet_volumes(nodes[n], tets[n]) <= 0).any()) for n in tets):
        return rest, tets
    with torch.no_grad():
        mean = model.forward(None, None)
    lay = {t.name: t for t in rest.layout}
    verts = rest.vertices.detach().clone()
    for name, material in (("muscles", muscle), ("skin", skin)):
        reference = mean.tissue(name)[0].detach().double().cpu()
        fixed_nodes, tets[name] = _repair_rest(reference, nodes[name], tets[name], material)
        verts[0, lay[name].start:lay[name].stop] = fixed_nodes.to(verts)
    return replace(rest, vertices=verts), tets


def _check_hand(model: torch.nn.Module, output: ModelOutput) -> torch.Tensor:
    """The bone -> joint map of a hand layer; errors for other models or outputs without the tissues."""
    bones, joints = getattr(model, "bone_names", None), getattr(model, "joint_names", None)
    if not isinstance(bones, tuple | list) or not isinstance(joints, tuple | list) \
            or not all(b in joints for b in bones):
        raise ParameterError(f"settle_soft_tissue needs a hand layer (anatomy.Nimble), got {type(model).__name__}.")
    names = output.tissue_names
    for need in ("bones", "muscles", "skin"):
        if need not in names:
            raise ParameterError(f"settle_soft_tissue needs tissue {need!r}; the output has {list(names)}.")
    if output.tets("muscles") is None or output.tets("skin") is None:
        raise ParameterError("settle_soft_tissue needs tetrahedral 'muscles' and 'skin' tissues "
                             "(the default hand has them; the official NIMBLE surfaces do not).")
    return torch.tensor([list(joints).index(b) for b in bones])  # each bone moves with its joint's transform


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
    bone_joint = _check_hand(model, output)
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
    assert bone_ids is not None  # _check_hand
    bone_joint_of_vertex = bone_joint[bone_ids.cpu()]
    verts = output.vertices.detach().clone()
    samples: list[dict[str, TissueSolve]] = []
    setups: dict[int, _Setup] = {}
    for b in range(output.batch_size):
        r = 0 if rest.batch_size == 1 else b
        if r not in setups:
            shaped, tets = _shaped_rest(model, _sample(rest, r), muscle, skin)
            setups[r] = replace(_setup(shaped, bone_joint, attach_mm, inner_mm), tets=tets)
        s = setups[r]
        transforms = output.transforms[b].detach().double().cpu()
        moved = _move_rigid(_BoneFollow(nodes=bone_ids, rest=s.rest_bones, joint=bone_joint_of_vertex), transforms)
        err = float((moved - output.tissue("bones")[b].detach().double().cpu()).abs().max())
        if err > 1e-2:
            raise ParameterError(f"the posed bones of sample {b} are {err:.3g} mm away from the rest bones moved by "
                                 f"output.transforms; pass the shape the output was made with (shape=...).")
        lbs = {name: output.tissue(name)[b].detach().double().cpu() for name in ("muscles", "skin")}
        # a global scale (forward(..., scale=...)) is part of the transforms: the rest state scales with it
        k = float(torch.linalg.det(transforms[:, :, :3]).mean()) ** (1.0 / 3.0)
        m_new, m_rep = _solve_tissue(k * s.rest_muscles, s.tets["muscles"], lbs["muscles"],
                                     [(s.muscle_bone, _move_rigid(s.muscle_bone, transforms))], [],
                                     muscle, release, rtol, max_iter)
        s_new, s_rep = _solve_tissue(k * s.rest_skin, s.tets["skin"], lbs["skin"],
                                     [(s.skin_bone, _move_rigid(s.skin_bone, transforms))],
                                     [(s.skin_muscle, _move_on_surface(s.skin_muscle, m_new, k))],
                                     skin, release, rtol, max_iter)
        for name, new in (("muscles", m_new), ("skin", s_new)):
            verts[b, lay[name].start:lay[name].stop] = new.to(verts)
        samples.append({"muscles": m_rep, "skin": s_rep})
    return replace(output, vertices=verts), SoftTissueReport(samples=tuple(samples))


def _solve_tissue(rest: torch.Tensor, tets: torch.Tensor, x0: torch.Tensor,
                  to_bone: list[tuple[_Follow, torch.Tensor]], to_muscle: list[tuple[_Follow, torch.Tensor]],
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
        mask = _release(mask, fixed, x0, tets)
    res = solve_quasistatic(rest, tets, x0, mask, fixed, material=material, rtol=rtol, max_iter=max_iter)
    report = TissueSolve(solve=res.reports[0], fixed=mask, to_bone=sum(len(f.nodes) for f, _ in to_bone),
                         to_muscle=sum(len(f.nodes) for f, _ in to_muscle), released=attached - int(mask.sum()))
    return res.positions, report


def _release(mask: torch.Tensor, fixed: torch.Tensor, x0: torch.Tensor, tets: torch.Tensor) -> torch.Tensor:
    """``mask`` without the fixed nodes of tets that the fixed positions invert (so the solve can undo it)."""
    x = torch.where(mask[:, None], fixed, x0)
    bad = tet_volumes(x, tets) <= 0
    out = mask.clone()
    out[tets[bad].flatten()] = False
    return out


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
