"""The hand's soft-tissue rig: which muscle and skin-volume nodes follow which bone or muscle.

Shared by the elastic hand phantoms (:mod:`anatomy.scans.phantom_soft`) and the volumetric
registration of a hand (:mod:`anatomy.registration.volumetric_hand`), which pose the same rig:

* muscle tet nodes within ``attach_mm`` of a bone at rest move rigidly with that bone (the bone's
  joint transform of ``output.transforms``);
* nodes of the skin volume's inner boundary within ``inner_mm`` of a bone or of a muscle surface at
  rest follow the nearer one: rigidly with the bone, or with the deformed muscle (the offset to the
  closest point on the muscle surface is kept in that triangle's frame).

A shape whose blend shapes invert some rest tets first gets a valid rest state (:func:`shaped_rest`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from ..core.elastic import StableNeoHookean, solve_quasistatic, tet_volumes
from ..core.errors import ParameterError
from ..core.nearest import closest_points_on_mesh

if TYPE_CHECKING:
    from .output import ModelOutput, TissueLayout

__all__ = ["MUSCLE", "SKIN", "BoneFollow", "Follow", "SoftTissueRig", "SurfaceFollow", "boundary_nodes", "check_hand",
           "move_on_surface", "move_rigid", "release_inverting", "repair_rest", "shaped_rest", "soft_tissue_rig"]

#: defaults: soft tissue is nearly incompressible; only the Poisson ratio matters (Dirichlet only)
MUSCLE = StableNeoHookean(young=10.0, poisson=0.45)
SKIN = StableNeoHookean(young=10.0, poisson=0.45)


@dataclass(frozen=True)
class Follow:
    """Rest-pose attachment of some nodes: ``nodes (K,)`` local ids and what they follow."""

    nodes: torch.Tensor
    rest: torch.Tensor  # (K, 3) float64 rest positions of those nodes


@dataclass(frozen=True)
class BoneFollow(Follow):
    joint: torch.Tensor  # (K,) joint whose transform moves the bone each node follows


@dataclass(frozen=True)
class SurfaceFollow(Follow):
    face: torch.Tensor  # (K, 3) muscle-local node ids of the closest muscle triangle
    bary: torch.Tensor  # (K, 3) barycentric coordinates of the closest point
    local: torch.Tensor  # (K, 3) offset to the closest point in the rest triangle frame


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


def move_rigid(follow: BoneFollow, transforms: torch.Tensor) -> torch.Tensor:
    """Positions ``(K, 3)`` of bone-attached nodes under per-joint transforms ``(J, 3, 4)``."""
    t = transforms[follow.joint]
    return (t[:, :, :3] @ follow.rest[:, :, None])[:, :, 0] + t[:, :, 3]


def move_on_surface(follow: SurfaceFollow, surface_nodes: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Positions ``(K, 3)`` of nodes attached to a deformed surface ``surface_nodes (M, 3)`` (offsets
    times ``scale``, the global scale of the output)."""
    tri = surface_nodes[follow.face]
    closest = (follow.bary[:, :, None] * tri).sum(1)
    return closest + scale * (follow.local[:, None, :] @ _frame(tri))[:, 0]


def boundary_nodes(tets: torch.Tensor, n: int) -> torch.Tensor:
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
class SoftTissueRig:
    muscle_bone: BoneFollow
    skin_bone: BoneFollow
    skin_muscle: SurfaceFollow
    rest_bones: torch.Tensor
    rest_muscles: torch.Tensor
    rest_skin: torch.Tensor
    tets: dict[str, torch.Tensor]  # per tissue, the tets in the energy (all but any left inverted by repair_rest)


def soft_tissue_rig(rest: ModelOutput, bone_joint: torch.Tensor, attach_mm: float, inner_mm: float) -> SoftTissueRig:
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
    muscle_bone = BoneFollow(nodes=all_m[keep], rest=muscles[keep], joint=joint[keep])

    skin_tets = rest.tets("skin")
    assert skin_tets is not None
    outer = torch.zeros(skin.shape[0], dtype=torch.bool)
    outer[rest.faces("skin").cpu().flatten()] = True
    inner = torch.nonzero(boundary_nodes(skin_tets.cpu(), skin.shape[0]) & ~outer).flatten()
    db, jb = _bone_follow(inner, skin, bones, bone_faces, vertex_joint)
    muscle_faces = rest.faces("muscles").cpu()
    cm = closest_points_on_mesh(skin[inner], muscles, muscle_faces)
    dm = cm.distance.detach()
    to_bone = (db <= inner_mm) & (db <= dm)
    to_muscle = (dm <= inner_mm) & (dm < db)
    skin_bone = BoneFollow(nodes=inner[to_bone], rest=skin[inner[to_bone]], joint=jb[to_bone])
    face = muscle_faces[cm.face_index[to_muscle]]
    offset = skin[inner[to_muscle]] - cm.closest.detach()[to_muscle]
    local = (_frame(muscles[face]) @ offset[:, :, None])[:, :, 0]
    skin_muscle = SurfaceFollow(nodes=inner[to_muscle], rest=skin[inner[to_muscle]], face=face,
                                 bary=cm.barycentric.detach()[to_muscle], local=local)
    return SoftTissueRig(muscle_bone, skin_bone, skin_muscle, bones, muscles, skin,
                  {"muscles": _tets(rest, "muscles"), "skin": skin_tets.cpu()})


def repair_rest(reference: torch.Tensor, nodes: torch.Tensor, tets: torch.Tensor, material: StableNeoHookean,
                 rounds: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """A shaped rest state without inverted tets: ``nodes`` (the shape's blend-shape positions) relaxed
    against the mean-shape ``reference``, boundary nodes held where the shape puts them except those
    of inverted tets and, each further round, of the tets next to the ones still inverted. Returns the
    nodes and the tets with positive volume (the rare ones still inverted are left out of the energy)."""
    fixed = release_inverting(boundary_nodes(tets, nodes.shape[0]), nodes, nodes, tets)
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
    assert tets is not None  # check_hand
    return tets.cpu()


def shaped_rest(model: torch.nn.Module, rest: ModelOutput, muscle: StableNeoHookean, skin: StableNeoHookean
                 ) -> tuple[ModelOutput, dict[str, torch.Tensor]]:
    """``rest`` (batch 1) and its tets per tissue; when the shape inverts rest tets (blend shapes move the
    two sides of a thin tet apart), muscles and skin volume relaxed by :func:`repair_rest`."""
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
        fixed_nodes, tets[name] = repair_rest(reference, nodes[name], tets[name], material)
        verts[0, lay[name].start:lay[name].stop] = fixed_nodes.to(verts)
    return replace(rest, vertices=verts), tets


def check_hand(model: torch.nn.Module, output: ModelOutput) -> torch.Tensor:
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

def release_inverting(mask: torch.Tensor, fixed: torch.Tensor, x0: torch.Tensor, tets: torch.Tensor) -> torch.Tensor:
    """``mask`` without the fixed nodes of tets that the fixed positions invert (so the solve can undo it)."""
    x = torch.where(mask[:, None], fixed, x0)
    bad = tet_volumes(x, tets) <= 0
    out = mask.clone()
    out[tets[bad].flatten()] = False
    return out
