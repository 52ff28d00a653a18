"""Non-rigid registration of a template mesh to a target surface (points, optional normals).

Coarse-to-fine embedded deformation (Sumner, Schmid & Pauly 2007, see :mod:`.deformation`): each
level builds a deformation graph with more nodes on the current surface and optimises its node
affines with L-BFGS against

* a template -> target term: each deformed vertex against its nearest target point, point-to-plane
  along the target normal plus a small point-to-point part (Chen & Medioni 1992; the mix as in
  Li, Adams, Guibas & Pauly 2009);
* a target -> template term: each target point against its nearest deformed vertex (the other half
  of a symmetric Chamfer), point-to-plane along the target normal;
* an optional landmark term (template vertex ids and the target points they must reach);
* the rigidity and smoothness regularisers of the graph.

Correspondences are found by KD-trees (scipy, on CPU copies; only indices travel back), recomputed
at every outer iteration; pairs whose normals differ by more than ``max_normal_angle`` are dropped
and the rest are weighted with Geman-McClure IRLS weights (Geman & McClure 1987) whose scale
follows the median residual, which keeps outliers, noise and missing parts of the target from
pulling the template. On a noisy target (noise estimated from the points' local planes) the
regularisers are stiffened by the noise variance and a coarser level runs first, so noise and missing
parts are bridged by the smooth deformation rather than followed (measured on the embedded
templates: ``benchmarks/registration_nonrigid.py``). Everything else is torch on the inputs' device
(CPU or CUDA, unchanged code); on CPU the optimisation runs in float64 unless ``dtype`` says otherwise.

One template per call: the KD-tree searches and the L-BFGS line search are per problem, so a batch
is a loop over calls.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from scipy.spatial import cKDTree

from ..core._geometry_common import _check_faces, _check_points, _to_numpy, _workers
from ..core.checks import check_index_range, check_like, check_shape, check_tensor
from ..core.errors import ParameterError, ShapeError
from ..core.surface import vertex_normals
from .deformation import DeformationGraph, build_graph, deform, rigidity_energy, smoothness_energy

_MIN_SCALE_MM = 0.5  # floor of the robust scale: residuals below it always count fully
_DEFAULT_LEVELS = (64, 256, 1024)
_NOISY_COARSE_LEVEL = 16  # prepended on noisy targets (measured on the skull: 1.43 -> 1.27 mm damaged)


@dataclass(frozen=True)
class NonRigidWeights:
    """Weights of the energy terms (each term is a mean, data terms in mm^2).

    Attributes:
        fit: template -> target (point-to-plane + ``point_to_point`` x point-to-point).
        back: target -> template (the other Chamfer direction).
        point_to_point: share of the point-to-point distance in both data terms.
        landmark: landmark term (mean squared distance).
        rigidity: Sumner's ``Rot`` per node.
        smooth: Sumner's ``Reg`` per edge (mm^2); divided by ``relax`` at each finer level.
        relax: factor by which ``smooth`` and ``rigidity`` drop from one level to the next.
        max_normal_angle: pairs whose normals differ by more (degrees) are ignored.
        robust_scale: the Geman-McClure scale is ``robust_scale`` x the median residual
            (at least 0.5 mm); ``None`` turns the robust weights off (plain least squares).
        noise_reference: per-axis noise (mm) the weights are tuned for. The target's noise
            ``sigma`` is estimated (:func:`estimate_noise`); when it is larger, ``rigidity`` and
            ``smooth`` are multiplied by ``(sigma / noise_reference)^2``, i.e. the data terms count
            as least squares in units of the noise (a MAP weighting), so a noisy scan is followed
            less closely; ``None`` turns this off.
    """

    fit: float = 1.0
    back: float = 1.0
    point_to_point: float = 0.01
    landmark: float = 1.0
    rigidity: float = 10.0
    smooth: float = 1.0
    relax: float = 2.0
    max_normal_angle: float = 60.0
    robust_scale: float | None = 3.0
    noise_reference: float | None = 0.6

    def __post_init__(self) -> None:
        for name in ("fit", "back", "point_to_point", "landmark", "rigidity", "smooth"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ParameterError(f"NonRigidWeights.{name} must be a finite number >= 0, got {value!r}.")
        if not (math.isfinite(self.relax) and self.relax >= 1):
            raise ParameterError(f"NonRigidWeights.relax must be >= 1, got {self.relax!r}.")
        if not 0 < self.max_normal_angle <= 180:
            raise ParameterError(
                f"NonRigidWeights.max_normal_angle must be in (0, 180] degrees, got {self.max_normal_angle!r}."
            )
        for name in ("robust_scale", "noise_reference"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ParameterError(f"NonRigidWeights.{name} must be a positive number or None, got {value!r}.")


@dataclass(frozen=True)
class LevelLog:
    """One level: its node count, outer iterations run and the energy at the start of each."""

    nodes: int
    iterations: int
    energies: tuple[float, ...]


@dataclass(frozen=True)
class NonRigidResult:
    """Output of :func:`nonrigid_register`.

    Attributes:
        vertices: ``(V, 3)`` the registered template, in the input dtype and device.
        residual: ``(V,)`` distance of each registered vertex to its nearest target point (mm).
        inlier: ``(V,)`` bool, vertices whose last correspondence passed the normal test.
        levels: per level :class:`LevelLog`.
        seconds: wall time of the call.
        noise: the target's estimated per-axis noise (mm; 0 when ``noise_reference`` is ``None``).
        stiffening: the factor the regularisers were multiplied by for that noise (>= 1).
    """

    vertices: torch.Tensor
    residual: torch.Tensor
    inlier: torch.Tensor
    levels: tuple[LevelLog, ...] = field(default_factory=tuple)
    seconds: float = 0.0
    noise: float = 0.0
    stiffening: float = 1.0


def estimate_normals(points: torch.Tensor, neighbours: int = 20) -> torch.Tensor:
    """Unoriented unit normals ``(N, 3)`` of a point cloud: the least-variance axis of each point's
    ``neighbours`` nearest points (local PCA, Hoppe et al. 1992). The sign is arbitrary."""
    return _local_planes(points, neighbours)[0]


def _local_planes(points: torch.Tensor, neighbours: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per point, the least-squares plane of its ``neighbours`` nearest points: ``(normals, centroids)``."""
    from ..core.nearest import knn

    k = min(neighbours, points.shape[0])
    _, idx = knn(points, points, k)
    nb = points[idx]
    centroid = nb.mean(1)
    centred = nb - centroid[:, None]
    cov = centred.transpose(1, 2) @ centred
    _, vecs = torch.linalg.eigh(cov)
    return vecs[..., 0], centroid


def estimate_noise(points: torch.Tensor, neighbours: int = 20) -> float:
    """Per-axis noise (mm) of a sampled surface: the median distance of each point to the plane of its
    ``neighbours`` nearest points, divided by 0.6745 (the median of ``|N(0, 1)|``), a robust estimate
    of the Gaussian noise along the normal. On a clean sampling it is the local curvature's sag
    (about 0.05-0.3 mm on the embedded templates at 20-30 k points); outliers barely move the median.
    An underestimate where the neighbourhoods are not much wider than the noise (sparse samplings)."""
    normals, centroid = _local_planes(points, neighbours)
    return float(((points - centroid) * normals).sum(-1).abs().median()) / 0.6745


def boundary_points(points: torch.Tensor, normals: torch.Tensor, neighbours: int = 30,
                    threshold: float = 0.33) -> torch.Tensor:
    """``(N,)`` bool: points on the rim of a sampled surface (a hole, a cut, the edge of a sheet).

    A point is on the rim when the centroid of its ``neighbours`` nearest points, projected on its
    tangent plane, lies more than ``threshold`` times their farthest distance away from it (inside
    a surface the neighbours surround the point; on a rim they lie on one side, the centroid of a
    half disc is 0.42 radii off). Correspondences to rim points are rejected, as in Turk & Levoy
    1994, so parts of the template over a missing region are not dragged to its edge.
    """
    from ..core.nearest import knn

    k = min(neighbours, points.shape[0])
    dist, idx = knn(points, points, k)
    off = points[idx].mean(1) - points
    off = off - (off * normals).sum(-1, keepdim=True) * normals
    return off.norm(dim=-1) > threshold * dist[:, -1]


def _robust_weights(res2: torch.Tensor, ok: torch.Tensor, scale: float | None) -> torch.Tensor:
    """Geman-McClure IRLS weights ``(s^2 / (s^2 + r^2))^2`` on the compatible pairs, 0 elsewhere."""
    w = ok.to(res2.dtype)
    if scale is None or not bool(ok.any()):
        return w
    med = res2[ok].sqrt().median()
    s2 = torch.clamp(scale * med, min=_MIN_SCALE_MM) ** 2
    return w * (s2 / (s2 + res2)) ** 2


def _pair_terms(src: torch.Tensor, dst: torch.Tensor, normal: torch.Tensor, w: torch.Tensor,
                p2p: float) -> torch.Tensor:
    """Weighted mean of point-to-plane (along ``normal``) + ``p2p`` x point-to-point squared distances."""
    d = src - dst
    plane = (d * normal).sum(-1) ** 2
    return (w * (plane + p2p * (d * d).sum(-1))).sum() / w.sum().clamp_min(1e-12)


@dataclass(frozen=True)
class _Pairs:
    """The correspondences of one outer iteration (fixed while L-BFGS runs)."""

    fit_points: torch.Tensor
    fit_normals: torch.Tensor
    fit_weights: torch.Tensor
    back_vertex: torch.Tensor
    back_points: torch.Tensor
    back_normals: torch.Tensor
    back_weights: torch.Tensor
    landmark_ids: torch.Tensor | None
    landmark_points: torch.Tensor | None


def _energy(graph: DeformationGraph, base: torch.Tensor, affine: torch.Tensor, trans: torch.Tensor,
            pairs: _Pairs, w: NonRigidWeights, relax: float) -> torch.Tensor:
    """The total energy of one level for fixed correspondences (differentiable in ``affine``, ``trans``)."""
    m = deform(graph, base, affine, trans)
    e = w.fit * _pair_terms(m, pairs.fit_points, pairs.fit_normals, pairs.fit_weights, w.point_to_point)
    if w.back > 0:
        e = e + w.back * _pair_terms(m[pairs.back_vertex], pairs.back_points, pairs.back_normals,
                                     pairs.back_weights, w.point_to_point)
    if pairs.landmark_ids is not None and pairs.landmark_points is not None and w.landmark > 0:
        e = e + w.landmark * ((m[pairs.landmark_ids] - pairs.landmark_points) ** 2).sum(-1).mean()
    e = e + (w.rigidity / relax) * rigidity_energy(affine) / graph.num_nodes
    n_edges = max(int(graph.edges.shape[0]), 1)
    return e + (w.smooth / relax) * smoothness_energy(graph, affine, trans) / n_edges


def _minimise(graph: DeformationGraph, base: torch.Tensor, affine: torch.Tensor, trans: torch.Tensor,
              pairs: _Pairs, w: NonRigidWeights, relax: float, steps: int) -> float:
    """Run L-BFGS (strong Wolfe) on ``affine``, ``trans`` in place; returns the energy before the run.

    A fresh optimiser per correspondence set: the curvature history of the old pairs would mislead it.
    """
    opt = torch.optim.LBFGS([affine, trans], lr=1.0, max_iter=steps, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        e = _energy(graph, base, affine, trans, pairs, w, relax)
        e.backward()
        return e

    return float(opt.step(closure).detach())


def _check_levels(levels: Sequence[int], iterations: int | Sequence[int]) -> tuple[list[int], list[int]]:
    lv = list(levels)
    if not lv or any(isinstance(n, bool) or not isinstance(n, int) or n < 2 for n in lv):
        raise ParameterError(f"levels must be a non-empty sequence of node counts >= 2, got {levels!r}.")
    it = [iterations] * len(lv) if isinstance(iterations, int) else list(iterations)
    if len(it) != len(lv) or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in it):
        raise ParameterError(
            f"iterations must be a positive int or one positive int per level ({len(lv)}), got {iterations!r}."
        )
    return lv, it


def _check_landmarks(landmarks: object, n_verts: int, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    if landmarks is None:
        return None
    if not (isinstance(landmarks, (tuple, list)) and len(landmarks) == 2):
        raise ParameterError(
            "landmarks must be a pair (template vertex ids (L,), target points (L, 3)), "
            f"got {type(landmarks).__name__}."
        )
    ids = check_tensor(landmarks[0], "landmarks[0]")
    check_shape(ids, "landmarks[0]", ["L"])
    check_index_range(ids, "landmarks[0]", n_verts)
    pts = _check_points(landmarks[1], "landmarks[1]", batched=False)
    check_like(pts, "landmarks[1]", ref, "target_points")
    if pts.shape[0] != ids.shape[0]:
        raise ShapeError(
            f"landmarks has {ids.shape[0]} vertex ids but {pts.shape[0]} target points; pass one point per id."
        )
    return ids.to(ref.device).long(), pts


def nonrigid_register(
    template_vertices: torch.Tensor,
    template_faces: torch.Tensor,
    target_points: torch.Tensor,
    target_normals: torch.Tensor | None = None,
    *,
    landmarks: tuple[torch.Tensor, torch.Tensor] | None = None,
    weights: NonRigidWeights | None = None,
    levels: Sequence[int] | None = None,
    iterations: int | Sequence[int] = 8,
    inner_steps: int = 20,
    orient_normals: bool = True,
    dtype: torch.dtype | None = None,
) -> NonRigidResult:
    """Deform ``template_vertices`` onto the surface sampled by ``target_points``.

    The template must already be roughly aligned (e.g. by a rigid/similarity registration).

    Args:
        template_vertices: ``(V, 3)`` float, mm.  template_faces: ``(F, 3)`` integer, CCW outward.
        target_points: ``(N, 3)`` points on the target surface, same dtype/device as the template;
            they need not correspond to the template vertices (any sampling, holes, outliers).
        target_normals: ``(N, 3)`` outward unit normals, or ``None`` to estimate unoriented ones
            by local PCA (the normal test then ignores the sign).
        landmarks: optional ``(ids (L,), points (L, 3))``: template vertex ``ids[i]`` should land on
            ``points[i]``.
        weights: :class:`NonRigidWeights` (defaults tuned on the embedded head and hand).
        levels: node counts of the deformation graphs, coarse to fine (clipped to V); ``None``:
            64, 256, 1024, preceded by a 16-node level when the target is noisy (stiffened, see
            :class:`NonRigidWeights`), which carries the coarse shape over missing parts; the
            regularisers then drop by ``relax^(2/3)`` per level, so the finest level keeps its weight.
        iterations: outer iterations (correspondence updates) per level, one int or one per level
            (with ``levels=None``: three, the first repeated for the 16-node level).
        inner_steps: L-BFGS iterations per outer iteration.
        orient_normals: when normals are estimated, orient them like the nearest template vertex
            normals (then the normal test uses the sign); ``False`` keeps them unoriented.
        dtype: optimisation dtype; default float64 on CPU, the input dtype elsewhere.

    Returns:
        :class:`NonRigidResult` (vertices in the input dtype, detached).
    """
    start = time.perf_counter()
    verts_in = _check_points(template_vertices, "template_vertices", batched=False)
    faces = _check_faces(template_faces, "template_faces", verts_in.shape[0], verts_in)
    target_in = _check_points(target_points, "target_points", batched=False)
    check_like(target_in, "target_points", verts_in, "template_vertices")
    normals_in = None
    if target_normals is not None:
        normals_in = _check_points(target_normals, "target_normals", batched=False)
        check_like(normals_in, "target_normals", target_in, "target_points")
        if normals_in.shape != target_in.shape:
            raise ShapeError(
                f"target_normals has shape {tuple(normals_in.shape)} but target_points has "
                f"{tuple(target_in.shape)}; pass one normal per target point."
            )
    lm = _check_landmarks(landmarks, verts_in.shape[0], target_in)
    lv, its = _check_levels(_DEFAULT_LEVELS if levels is None else levels, iterations)
    if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < 1:
        raise ParameterError(f"inner_steps must be a positive int, got {inner_steps!r}.")
    w = NonRigidWeights() if weights is None else weights
    if not isinstance(w, NonRigidWeights):
        raise ParameterError(f"weights must be a NonRigidWeights or None, got {type(w).__name__}.")

    work = dtype or (torch.float64 if verts_in.device.type == "cpu" else verts_in.dtype)
    verts = verts_in.detach().to(work)
    target = target_in.detach().to(work)
    oriented = normals_in is not None
    if normals_in is not None:
        tnormals = torch.nn.functional.normalize(normals_in.detach().to(work), dim=-1)
    else:
        tnormals = estimate_normals(target)
        if orient_normals:
            # point each estimated normal like the nearest template vertex's normal, so the normal
            # test can tell the two sides of thin walls apart (the template is roughly aligned)
            _, near = cKDTree(_to_numpy(verts)).query(_to_numpy(target), workers=_workers(target.shape[0]))
            tv = vertex_normals(verts, faces)[torch.from_numpy(near).to(verts.device)]
            tnormals = torch.where(((tnormals * tv).sum(-1) < 0)[:, None], -tnormals, tnormals)
            oriented = True
    rim = boundary_points(target, tnormals)
    noise, stiff = 0.0, 1.0
    if w.noise_reference is not None:
        noise = estimate_noise(target)
        stiff = max(1.0, (noise / w.noise_reference) ** 2)
    w_eff = replace(w, rigidity=w.rigidity * stiff, smooth=w.smooth * stiff)
    drop = [w.relax**level for level in range(len(lv))]
    if levels is None and stiff > 1.0:
        lv, its = [_NOISY_COARSE_LEVEL, *lv], [its[0], *its]
        drop = [w.relax ** (level * (len(lv) - 2) / (len(lv) - 1)) for level in range(len(lv))]
    lm_ids, lm_pts = (None, None) if lm is None else (lm[0], lm[1].detach().to(work))
    cos_max = math.cos(math.radians(w.max_normal_angle))
    target_tree = cKDTree(_to_numpy(target))
    dev = verts.device

    def compatible(cos: torch.Tensor) -> torch.Tensor:
        return (cos if oriented else cos.abs()) >= cos_max - 1e-12

    logs: list[LevelLog] = []
    current = verts
    ok_fit = torch.ones(verts.shape[0], dtype=torch.bool, device=dev)
    for level, (count, n_outer) in enumerate(zip(lv, its)):
        graph = build_graph(current, count)
        affine = torch.zeros(graph.num_nodes, 3, 3, dtype=work, device=dev, requires_grad=True)
        trans = torch.zeros(graph.num_nodes, 3, dtype=work, device=dev, requires_grad=True)
        energies: list[float] = []
        for _ in range(n_outer):
            with torch.no_grad():
                moved = deform(graph, current, affine, trans)
                vn = vertex_normals(moved, faces)
                _, fi = target_tree.query(_to_numpy(moved), workers=_workers(moved.shape[0]))
                fi_t = torch.from_numpy(fi).to(dev)
                q, qn = target[fi_t], tnormals[fi_t]
                res2 = ((moved - q) ** 2).sum(-1)
                ok_fit = compatible((vn * qn).sum(-1))
                # a rim match farther than the median pair is taken as a vertex over a missing part
                ok_fit &= ~(rim[fi_t] & (res2 > res2[ok_fit].median() if bool(ok_fit.any()) else res2 > 0))
                w_fit = _robust_weights(res2, ok_fit, w.robust_scale)
                _, bi = cKDTree(_to_numpy(moved)).query(_to_numpy(target), workers=_workers(target.shape[0]))
                bi_t = torch.from_numpy(bi).to(dev)
                ok_back = compatible((vn[bi_t] * tnormals).sum(-1))
                w_back = _robust_weights(((moved[bi_t] - target) ** 2).sum(-1), ok_back, w.robust_scale)

            pairs = _Pairs(q, qn, w_fit, bi_t, target, tnormals, w_back, lm_ids, lm_pts)
            energies.append(_minimise(graph, current, affine, trans, pairs, w_eff, drop[level], inner_steps))
        with torch.no_grad():
            current = deform(graph, current, affine, trans)
        logs.append(LevelLog(nodes=graph.num_nodes, iterations=n_outer, energies=tuple(energies)))

    dist, _ = target_tree.query(_to_numpy(current), workers=_workers(current.shape[0]))
    out = current.to(verts_in.dtype)
    return NonRigidResult(
        vertices=out,
        residual=torch.from_numpy(dist).to(device=dev, dtype=verts_in.dtype),
        inlier=ok_fit.clone(),
        levels=tuple(logs),
        seconds=time.perf_counter() - start,
        noise=noise,
        stiffening=stiff,
    )


# --------------------------------------------------------------------------------------
# synthetic targets (tests, benchmarks, robustness checks)
# --------------------------------------------------------------------------------------


def sample_surface(vertices: torch.Tensor, faces: torch.Tensor, count: int,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` points drawn uniformly by area on the mesh, with their face normals ``(count, 3)`` each.

    The points are not in correspondence with the vertices: a re-meshed stand-in for a scanned surface.
    """
    vertices = _check_points(vertices, "vertices", batched=False)
    faces = _check_faces(faces, "faces", vertices.shape[0], vertices)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ParameterError(f"count must be a positive int, got {count!r}.")
    tri = vertices[faces]
    cross = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    area = cross.norm(dim=-1)
    if not bool((area > 0).any()):
        raise ParameterError("the mesh has zero area; pass a mesh with at least one non-degenerate face.")
    gen_dev = generator.device if generator is not None else torch.device("cpu")
    face = torch.multinomial(area.to(gen_dev, torch.float64), count, replacement=True, generator=generator)
    uv = torch.rand(count, 2, generator=generator, device=gen_dev, dtype=torch.float64)
    flip = uv.sum(1) > 1
    uv = torch.where(flip[:, None], 1 - uv, uv).to(vertices.device, vertices.dtype)
    face = face.to(vertices.device)
    t = tri[face]
    points = t[:, 0] + uv[:, :1] * (t[:, 1] - t[:, 0]) + uv[:, 1:] * (t[:, 2] - t[:, 0])
    normals = torch.nn.functional.normalize(cross[face], dim=-1)
    return points, normals


def corrupt_target(points: torch.Tensor, *, missing: float = 0.3, outliers: float = 0.1, noise: float = 2.0,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A damaged copy of a sampled surface: a region cut away, noise added, outliers mixed in.

    Returns ``(points (M, 3), kept (K,))``: the damaged points (the ``K`` kept ones first, then the
    outliers) and the indices of the input points that were kept.

    * ``missing``: share of the points removed as one region, those farthest along a random direction
      (a missing part, not a thinning);
    * ``noise``: RMS length (mm) of the isotropic Gaussian displacement of every kept point;
    * ``outliers``: points added, as a share of the kept ones, uniform in the points' bounding box
      grown by 10 %.
    """
    points = _check_points(points, "points", batched=False)
    for name, value in (("missing", missing), ("outliers", outliers), ("noise", noise)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ParameterError(f"{name} must be a finite number >= 0, got {value!r}.")
    if missing >= 1:
        raise ParameterError(f"missing must be below 1 (a share of the points), got {missing!r}.")
    gen_dev = generator.device if generator is not None else torch.device("cpu")

    def draw(*shape: int, normal: bool = False) -> torch.Tensor:
        fn = torch.randn if normal else torch.rand
        return fn(*shape, generator=generator, device=gen_dev, dtype=torch.float64).to(points.device, points.dtype)

    direction = torch.nn.functional.normalize(draw(3, normal=True), dim=0)
    along = (points - points.mean(0)) @ direction
    keep = along.argsort()[: max(1, round(points.shape[0] * (1 - missing)))]
    kept = points[keep] + draw(len(keep), 3, normal=True) * (noise / math.sqrt(3))
    lo, hi = points.min(0).values, points.max(0).values
    pad = 0.1 * (hi - lo)
    n_out = round(len(keep) * outliers)
    extra = lo - pad + draw(n_out, 3) * (hi - lo + 2 * pad)
    return torch.cat([kept, extra]), keep
