"""Volumetric registration of a tetrahedral solid to a target surface, with elasticity.

:func:`register_volume` moves the nodes ``x (N, 3)`` of a tet mesh so that its boundary surface
matches a target point cloud while the solid stays physically plausible. It minimises

* the stable Neo-Hookean elastic energy against the rest shape (:mod:`anatomy.core.elastic`,
  Smith, de Goes & Kim 2018);
* a robust data term in both directions, correspondences re-paired by KD-trees at every outer
  iteration: each surface node against its ``neighbours`` nearest target points (point-to-plane
  along their normals, plus a little point-to-point, Chen & Medioni 1992; averaging over several
  points smooths scanner noise), and each target point against its closest point on the current
  surface triangles; pairs whose normals differ by more than ``max_normal_angle`` are dropped, the
  others weighted by Geman-McClure IRLS weights scaled by the median residual, and surface nodes
  whose nearest target point lies on the rim of a hole are not pulled (as in :mod:`.nonrigid`);
* attachments: given nodes at given positions, hard (Dirichlet, removed from the unknowns) or
  soft (springs);
* a collision penalty pushing nodes out of closed obstacle meshes (bones, already registered
  muscles): a node found inside (or within ``collision_band`` of the surface) at the pairing step
  pays ``(margin - n . (x - c))_+^2`` against the tangent plane at its closest point ``c``.

Every term except elasticity is a spring weighted relative to the node's elastic stiffness
(``(mu + lambda) sum_t vol_t |grad N_i|^2``, the Jacobi diagonal of
:class:`~anatomy.core.elastic.TetRest`), so the weights are dimensionless and do not depend on the
Young's modulus or the mesh resolution. For fixed pairs the energy is minimised by L-BFGS (strong
Wolfe) on Jacobi-scaled unknowns; the elastic forces come from the sparse assembly of
:mod:`anatomy.core.elastic`, the other terms from autograd. Torch on the inputs' device (CPU or
CUDA); KD-tree searches on CPU copies.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from scipy.spatial import cKDTree

from ..core._geometry_common import _check_faces, _check_points, _to_numpy, _workers
from ..core.checks import check_index_range, check_shape, check_tensor
from ..core.elastic import StableNeoHookean, _Forces, inverted_tets, solve_quasistatic, tet_rest_data
from ..core.errors import ParameterError, ShapeError
from ..core.nearest import closest_points_on_mesh
from ..core.signed_distance import signed_distance_to_faces
from ..core.surface import vertex_normals
from .nonrigid import _robust_weights, boundary_points, estimate_noise, estimate_normals

__all__ = ["VolumetricLog", "VolumetricResult", "VolumetricWeights", "boundary_faces", "register_volume"]


@dataclass(frozen=True)
class VolumetricWeights:
    """Weights of :func:`register_volume`, relative to each node's elastic stiffness.

    Attributes:
        data: surface node -> its ``neighbours`` nearest target points.
        back: target point -> closest point of the surface (the other Chamfer direction).
        point_to_point: share of the point-to-point distance in both data terms.
        attach: soft attachments (ignored when ``hard_attach``).
        collision: obstacle penalty.
        neighbours: target points averaged per surface node.
        max_normal_angle: pairs whose normals differ by more (degrees) are ignored.
        robust_scale: Geman-McClure scale in units of the median residual (at least 0.5 mm);
            ``None``: plain least squares.
        collision_margin: distance (mm) nodes are kept outside the obstacles.
        collision_band: nodes closer than this (mm) to an obstacle surface get the one-sided
            penalty too, so they cannot cross it between two pairings.
        noise_reference: per-axis target noise (mm) the weights are meant for, or ``None`` (off).
            When the target's estimated noise ``sigma`` (:func:`.nonrigid.estimate_noise`) is
            larger, ``data`` and ``back`` are divided by ``(sigma / noise_reference)^2``: the data
            terms count in units of the noise, so the elastic prior carries more of a noisy scan.
    """

    data: float = 0.1
    back: float = 1.0
    point_to_point: float = 0.01
    attach: float = 100.0
    collision: float = 10.0
    neighbours: int = 8
    max_normal_angle: float = 60.0
    robust_scale: float | None = 3.0
    collision_margin: float = 0.0
    collision_band: float = 1.0
    noise_reference: float | None = None

    def __post_init__(self) -> None:
        for name in ("data", "back", "point_to_point", "attach", "collision", "collision_margin", "collision_band"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ParameterError(f"VolumetricWeights.{name} must be a finite number >= 0, got {value!r}.")
        if isinstance(self.neighbours, bool) or not isinstance(self.neighbours, int) or self.neighbours < 1:
            raise ParameterError(f"VolumetricWeights.neighbours must be a positive int, got {self.neighbours!r}.")
        if not (isinstance(self.max_normal_angle, int | float) and 0 < self.max_normal_angle <= 180):
            raise ParameterError(f"VolumetricWeights.max_normal_angle must be in (0, 180] degrees, "
                                 f"got {self.max_normal_angle!r}.")
        for name in ("robust_scale", "noise_reference"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not math.isfinite(value) or value <= 0):
                raise ParameterError(f"VolumetricWeights.{name} must be a positive number or None, got {value!r}.")


@dataclass(frozen=True)
class VolumetricLog:
    """One outer iteration: energies at its end (kPa mm^3; ``terms``: elastic, data, back, attach,
    collision), the mean distance of the surface nodes to their nearest target point (mm), nodes in
    collision at its start, inverted tets at its end and L-BFGS evaluations."""

    energy: float
    terms: dict[str, float]
    mean_residual: float
    colliding: int
    inverted: int
    evaluations: int


@dataclass(frozen=True)
class VolumetricResult:
    """Output of :func:`register_volume`.

    Attributes:
        nodes: ``(N, 3)`` registered nodes (input dtype and device, detached).
        log: one :class:`VolumetricLog` per outer iteration.
        inverted: tets with signed volume ``<= 0`` at the end.
        residual: ``(S,)`` distance of each surface node to its nearest target point (mm).
        surface_nodes: ``(S,)`` the node ids of the data surface (order of ``residual``).
        seconds: wall time.
        noise: the target's estimated per-axis noise (mm; 0 without ``noise_reference``).
        softening: the factor ``data`` and ``back`` were divided by for that noise (>= 1).
    """

    nodes: torch.Tensor
    log: tuple[VolumetricLog, ...]
    inverted: int
    residual: torch.Tensor
    surface_nodes: torch.Tensor
    seconds: float
    noise: float = 0.0
    softening: float = 1.0


def boundary_faces(tets: torch.Tensor, num_nodes: int | None = None) -> torch.Tensor:
    """Outward triangles ``(F, 3)`` of the boundary of a positively oriented tet mesh (faces of one tet)."""
    check_tensor(tets, "tets")
    check_shape(tets, "tets", ["T", 4])
    t = tets.long()
    n = int(t.max()) + 1 if num_nodes is None else num_nodes
    # faces opposite nodes 0..3, wound so their normal points away from the opposite node
    tri = torch.cat([t[:, [1, 2, 3]], t[:, [0, 3, 2]], t[:, [0, 1, 3]], t[:, [0, 2, 1]]])
    key = tri.sort(1).values
    packed = (key[:, 0] * n + key[:, 1]) * n + key[:, 2]
    _, inverse, counts = torch.unique(packed, return_inverse=True, return_counts=True)
    return tri[counts[inverse] == 1]


@dataclass(frozen=True)
class _Pairs:
    """Correspondences and collision planes of one outer iteration (fixed while L-BFGS runs)."""

    fit_node: torch.Tensor  # (S,) node ids, repeated per neighbour: (S * k,)
    fit_point: torch.Tensor
    fit_normal: torch.Tensor
    fit_weight: torch.Tensor
    back_face: torch.Tensor  # (M, 3) node ids of the closest surface triangle
    back_bary: torch.Tensor
    back_point: torch.Tensor
    back_normal: torch.Tensor
    back_weight: torch.Tensor
    hit_node: torch.Tensor  # (C,) nodes near or inside an obstacle
    hit_point: torch.Tensor
    hit_normal: torch.Tensor
    hit_weight: torch.Tensor
    colliding: int  # nodes inside an obstacle (or closer than the margin) at pairing


def _plane_p2p(d: torch.Tensor, normal: torch.Tensor, p2p: float) -> torch.Tensor:
    return (d * normal).sum(-1) ** 2 + p2p * (d * d).sum(-1)


def _terms(x: torch.Tensor, pairs: _Pairs, w: VolumetricWeights, soft: tuple[torch.Tensor, torch.Tensor,
           torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """The non-elastic energies at nodes ``x`` for fixed pairs (differentiable in ``x``)."""
    out = {"data": (pairs.fit_weight * _plane_p2p(x[pairs.fit_node] - pairs.fit_point, pairs.fit_normal,
                                                  w.point_to_point)).sum()}
    on_surface = (pairs.back_bary[:, :, None] * x[pairs.back_face]).sum(1)
    out["back"] = (pairs.back_weight * _plane_p2p(on_surface - pairs.back_point, pairs.back_normal,
                                                  w.point_to_point)).sum()
    if soft is not None:
        ids, pos, k = soft
        out["attach"] = (k * ((x[ids] - pos) ** 2).sum(-1)).sum()
    depth = w.collision_margin - ((x[pairs.hit_node] - pairs.hit_point) * pairs.hit_normal).sum(-1)
    out["collision"] = (pairs.hit_weight * torch.relu(depth) ** 2).sum()
    return out


def _on(t: object, dev: torch.device) -> object:
    """``t`` moved to ``dev`` when it is a tensor (checks name anything else)."""
    return t.to(dev) if isinstance(t, torch.Tensor) else t


def _check_obstacles(obstacles: Sequence[tuple[torch.Tensor, torch.Tensor]], ref: torch.Tensor
                     ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if not isinstance(obstacles, list | tuple):
        raise ParameterError(f"obstacles must be a list of (vertices (V, 3), faces (F, 3)) pairs, "
                             f"got {type(obstacles).__name__}.")
    out = []
    for i, item in enumerate(obstacles):
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise ParameterError(f"obstacles[{i}] must be a pair (vertices (V, 3), faces (F, 3)) of a closed, "
                                 f"outward-wound mesh.")
        v = _check_points(item[0], f"obstacles[{i}] vertices", batched=False).detach().to(ref)
        out.append((v, _check_faces(_on(item[1], v.device), f"obstacles[{i}] faces", v.shape[0], v)))
    return out


def _check_attach(ids: torch.Tensor | None, pos: torch.Tensor | None, n: int, ref: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor] | None:
    if ids is None and pos is None:
        return None
    if ids is None or pos is None:
        raise ParameterError("attach_ids and attach_positions go together: pass both (K,) ids and (K, 3) "
                             "positions, or neither.")
    check_tensor(ids, "attach_ids")
    check_shape(ids, "attach_ids", ["K"])
    check_index_range(ids, "attach_ids", n)
    p = _check_points(pos, "attach_positions", batched=False)
    if p.shape[0] != ids.shape[0]:
        raise ShapeError(f"attach_ids has {ids.shape[0]} ids but attach_positions has {p.shape[0]} rows; "
                         f"pass one position per id.")
    ids = ids.long().to(ref.device)
    if torch.unique(ids).numel() != ids.numel():
        raise ParameterError("attach_ids has repeated node ids; attach each node once.")
    return ids, p.detach().to(ref)


def register_volume(
    rest_nodes: torch.Tensor,
    tets: torch.Tensor,
    start_nodes: torch.Tensor,
    target_points: torch.Tensor,
    target_normals: torch.Tensor | None = None,
    *,
    surface_faces: torch.Tensor | None = None,
    attach_ids: torch.Tensor | None = None,
    attach_positions: torch.Tensor | None = None,
    hard_attach: bool = True,
    obstacles: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
    material: StableNeoHookean | None = None,
    weights: VolumetricWeights | None = None,
    iterations: int = 10,
    inner_steps: int = 30,
    presolve: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> VolumetricResult:
    """Register the tet mesh ``(start_nodes, tets)`` to the surface sampled by ``target_points``.

    Args:
        rest_nodes: ``(N, 3)`` rest shape of the elastic energy (mm); every tet positive.
        tets: ``(T, 4)`` node indices.
        start_nodes: ``(N, 3)`` initial guess, roughly aligned with the target (e.g. skinning).
        target_points: ``(M, 3)`` points on the target surface (any sampling; holes, outliers).
        target_normals: ``(M, 3)`` outward normals, or ``None`` to estimate them (local PCA,
            oriented like the nearest start surface normal).
        surface_faces: ``(F, 3)`` outward triangles of the solid's boundary that the target sees
            (e.g. the outer skin of a skin volume); default every boundary face of the tets.
        attach_ids, attach_positions: ``(K,)`` nodes and ``(K, 3)`` where they must be.
        hard_attach: attached nodes fixed (default) or held by springs of weight ``weights.attach``.
        obstacles: closed, outward-wound meshes ``(vertices (V, 3), faces (F, 3))`` the nodes must
            stay out of.
        material: :class:`StableNeoHookean` (default ``E = 10 kPa, nu = 0.45``).
        weights: :class:`VolumetricWeights`.
        iterations: outer iterations (re-pairings).  inner_steps: L-BFGS iterations per outer one.
        presolve: before fitting, at most this many iterations of the elastic equilibrium with the
            hard attachments alone (:func:`~anatomy.core.elastic.solve_quasistatic`, ``rtol=1e-2``):
            a physical initial guess, e.g. soft tissue following the bones; 0 skips it.
        device: where to compute (default: that of ``start_nodes``).  dtype: compute dtype.

    Returns:
        :class:`VolumetricResult` (nodes in the dtype and on the device of ``start_nodes``).
    """
    clock = time.perf_counter()
    x_in = _check_points(start_nodes, "start_nodes", batched=False)
    dev = torch.device(device) if device is not None else x_in.device
    rest = _check_points(rest_nodes, "rest_nodes", batched=False).detach().to(dev, dtype)
    if rest.shape != x_in.shape:
        raise ShapeError(f"rest_nodes {tuple(rest.shape)} and start_nodes {tuple(x_in.shape)} must have the same "
                         f"shape (N, 3).")
    n = rest.shape[0]
    data = tet_rest_data(rest, check_tensor(tets, "tets").to(dev))
    target = _check_points(target_points, "target_points", batched=False).detach().to(dev, dtype)
    faces = boundary_faces(data.tets, n) if surface_faces is None else \
        _check_faces(_on(surface_faces, dev), "surface_faces", n, rest)
    material = StableNeoHookean() if material is None else material
    w = VolumetricWeights() if weights is None else weights
    if not isinstance(w, VolumetricWeights):
        raise ParameterError(f"weights must be a VolumetricWeights or None, got {type(w).__name__}.")
    for name, value, least in (("iterations", iterations, 1), ("inner_steps", inner_steps, 1),
                               ("presolve", presolve, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ParameterError(f"{name} must be an int >= {least}, got {value!r}.")
    attach = _check_attach(attach_ids, attach_positions, n, rest)
    obst = _check_obstacles(obstacles, rest)
    x = x_in.detach().to(dev, dtype).clone()

    surf = torch.unique(faces)
    k_node = (material.mu + material.lam) * data.stiffness  # Jacobi diagonal of the elastic energy
    k_surf = float(k_node[surf].mean())
    if target_normals is not None:
        tn = _check_points(target_normals, "target_normals", batched=False).detach().to(dev, dtype)
        if tn.shape != target.shape:
            raise ShapeError(f"target_normals has shape {tuple(tn.shape)} but target_points has "
                             f"{tuple(target.shape)}; pass one normal per target point.")
        tn = torch.nn.functional.normalize(tn, dim=-1)
    else:
        tn = estimate_normals(target)
        _, near = cKDTree(_to_numpy(x[surf])).query(_to_numpy(target), workers=_workers(target.shape[0]))
        vn = vertex_normals(x, faces)[surf[torch.from_numpy(near).to(dev)]]
        tn = torch.where(((tn * vn).sum(-1) < 0)[:, None], -tn, tn)
    rim = boundary_points(target, tn)
    noise, soften = 0.0, 1.0
    if w.noise_reference is not None:
        noise = estimate_noise(target)
        soften = max(1.0, (noise / w.noise_reference) ** 2)
        w = replace(w, data=w.data / soften, back=w.back / soften)
    tree = cKDTree(_to_numpy(target))
    cos_max = math.cos(math.radians(w.max_normal_angle)) - 1e-12
    kk = min(w.neighbours, target.shape[0])

    fixed = torch.zeros(n, dtype=torch.bool, device=dev)
    soft = None
    if attach is not None:
        if hard_attach:
            fixed[attach[0]] = True
            x[attach[0]] = attach[1]
        else:
            soft = (attach[0], attach[1], w.attach * k_node[attach[0]])
    if presolve > 0 and bool(fixed.any()):
        x = solve_quasistatic(rest, data.tets, x, fixed, x, material=material, rtol=1e-2,
                              max_iter=presolve).positions.to(dtype)
    free = torch.nonzero(~fixed).flatten()
    # Jacobi scaling: elastic diagonal plus the data springs the surface nodes carry
    diag = k_node.clone()
    diag[surf] += (w.data + w.back) * k_surf
    if soft is not None:
        diag[soft[0]] += soft[2]
    scale = diag[free].clamp_min(1e-300).rsqrt()[:, None]
    forces = _Forces(data, material)
    logs: list[VolumetricLog] = []
    for _ in range(iterations):
        pairs = _pair(x, faces, surf, target, tn, rim, tree, kk, cos_max, w, k_node, k_surf, obst, fixed)
        x, evals = _minimise(x, free, scale, pairs, w, soft, forces, inner_steps)
        with torch.no_grad():
            e_el = forces(x)[0]
            terms = {"elastic": float(e_el)} | {k: float(v) for k, v in _terms(x, pairs, w, soft).items()}
            dist, _ = tree.query(_to_numpy(x[surf]), workers=_workers(len(surf)))
        logs.append(VolumetricLog(energy=sum(terms.values()), terms=terms, mean_residual=float(dist.mean()),
                                  colliding=pairs.colliding,
                                  inverted=int(inverted_tets(x, data)), evaluations=evals))
    dist, _ = tree.query(_to_numpy(x[surf]), workers=_workers(len(surf)))
    return VolumetricResult(nodes=x.to(x_in.device, x_in.dtype), log=tuple(logs), inverted=logs[-1].inverted,
                            residual=torch.from_numpy(dist).to(x_in.device, x_in.dtype),
                            surface_nodes=surf.to(x_in.device),
                            seconds=time.perf_counter() - clock, noise=noise, softening=soften)


def _minimise(x: torch.Tensor, free: torch.Tensor, scale: torch.Tensor, pairs: _Pairs, w: VolumetricWeights,
              soft: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, forces: _Forces, steps: int
              ) -> tuple[torch.Tensor, int]:
    """L-BFGS (strong Wolfe) over the free nodes for fixed pairs; returns the nodes and the evaluations.

    The unknowns are the free coordinates divided by ``scale`` (Jacobi scaling); the elastic
    forces come without autograd and enter the backward pass as ``g . x``.
    """
    y = (x[free] / scale).requires_grad_(True)
    opt = torch.optim.LBFGS([y], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-14)
    evals = 0

    def closure() -> torch.Tensor:
        nonlocal evals
        evals += 1
        opt.zero_grad()
        xx = x.index_put((free,), y * scale)
        e_el, g_el = forces(xx.detach())
        other = torch.stack(list(_terms(xx, pairs, w, soft).values())).sum()
        (other + (g_el * xx).sum()).backward()
        return (e_el + other).detach()

    opt.step(closure)
    return x.index_put((free,), y.detach() * scale), evals


def _pair(x: torch.Tensor, faces: torch.Tensor, surf: torch.Tensor, target: torch.Tensor, tn: torch.Tensor,
          rim: torch.Tensor, tree: cKDTree, kk: int, cos_max: float, w: VolumetricWeights, k_node: torch.Tensor,
          k_surf: float, obst: list[tuple[torch.Tensor, torch.Tensor]], fixed: torch.Tensor) -> _Pairs:
    """Correspondences (both directions) and collision planes at the current nodes ``x``."""
    dev = x.device
    with torch.no_grad():
        vn = vertex_normals(x, faces)
        # surface node -> kk nearest target points
        _, idx = tree.query(_to_numpy(x[surf]), k=kk, workers=_workers(len(surf)))
        idx_t = torch.from_numpy(idx.reshape(len(surf), kk)).to(dev)
        q, qn = target[idx_t], tn[idx_t]
        res2 = ((x[surf][:, None] - q) ** 2).sum(-1)
        ok = (vn[surf][:, None] * qn).sum(-1) >= cos_max
        near_rim = rim[idx_t[:, 0]] & (res2[:, 0] > res2[ok].median() if bool(ok.any()) else res2[:, 0] > 0)
        ok &= ~near_rim[:, None]
        wf = _robust_weights(res2, ok, w.robust_scale)
        wf = wf / kk * (w.data * k_node[surf])[:, None]
        # target point -> closest point on the current surface
        cp = closest_points_on_mesh(target, x, faces)
        fn = torch.nn.functional.normalize(
            torch.linalg.cross(x[faces[cp.face_index, 1]] - x[faces[cp.face_index, 0]],
                               x[faces[cp.face_index, 2]] - x[faces[cp.face_index, 0]], dim=-1), dim=-1)
        ok_b = (fn * tn).sum(-1) >= cos_max
        wb = _robust_weights(cp.distance ** 2, ok_b, w.robust_scale) * (w.back * k_surf * len(surf) / len(target))
        # collisions: free nodes inside an obstacle or within the band of its surface
        hit_node, hit_point, hit_normal = [], [], []
        colliding = 0
        for verts, ofaces in obst:
            cand = torch.nonzero(~fixed).flatten()
            lo, hi = verts.min(0).values - w.collision_band, verts.max(0).values + w.collision_band
            cand = cand[((x[cand] >= lo) & (x[cand] <= hi)).all(-1)]
            if not len(cand):
                continue
            sd = signed_distance_to_faces(x[cand][None], verts[None], ofaces, confirm_inside=False)
            near = sd.distance[0] < w.collision_margin + w.collision_band
            colliding += int((sd.distance[0] < w.collision_margin).sum())
            hit_node.append(cand[near])
            hit_point.append(sd.closest[0][near])
            hit_normal.append(sd.normal[0][near])
        if hit_node:
            hn = torch.cat(hit_node)
            hp, hnm = torch.cat(hit_point), torch.cat(hit_normal)
        else:
            hn = torch.zeros(0, dtype=torch.long, device=dev)
            hp = hnm = torch.zeros(0, 3, dtype=x.dtype, device=dev)
        hw = w.collision * k_node[hn]
    return _Pairs(fit_node=surf.repeat_interleave(kk), fit_point=q.reshape(-1, 3), fit_normal=qn.reshape(-1, 3),
                  fit_weight=wf.reshape(-1), back_face=faces[cp.face_index], back_bary=cp.barycentric.detach(),
                  back_point=target, back_normal=tn, back_weight=wb, hit_node=hn, hit_point=hp, hit_normal=hnm,
                  hit_weight=hw, colliding=colliding)
