"""Nearest neighbours, chamfer distance and exact closest points on a mesh.

Neighbour *search* runs in scipy's KD-tree on detached CPU copies (only integer indices
travel back); every returned distance and point is recomputed in torch from the inputs, so it
is differentiable w.r.t. the floating inputs, and no dense ``N x M`` matrix is ever built.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from ._geometry_common import (
    _LEAFSIZE,
    _NEAREST_VERTICES,
    _PAIRS_PER_CHUNK,
    Reduction,
    _check_faces,
    _check_points,
    _check_reduction,
    _check_weights,
    _reduce,
    _safe_div,
    _safe_sqrt,
    _to_numpy,
    _workers,
)
from .checks import (
    check_like,
)
from .errors import ParameterError

# --------------------------------------------------------------------------------------
# nearest neighbours and Chamfer
# --------------------------------------------------------------------------------------


def _kdtree_query(points: torch.Tensor, query: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """KD-tree k-NN on detached CPU copies: ``(distances (N, k), indices (N, k))`` as numpy."""
    tree = cKDTree(_to_numpy(points), leafsize=_LEAFSIZE)
    q_np = _to_numpy(query)
    dist, idx = tree.query(q_np, k=k, workers=_workers(len(q_np)))
    return np.asarray(dist).reshape(-1, k), np.asarray(idx, dtype=np.int64).reshape(-1, k)


def knn(
    query: torch.Tensor, points: torch.Tensor, k: int = 1, *, squared: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest ``points`` of every ``query`` point.

    The search runs in a scipy ``cKDTree`` on detached CPU copies (all cores); the distances
    are then recomputed in torch from the gathered points, so they are differentiable with
    respect to both ``query`` and ``points`` (the neighbour choice itself is piecewise
    constant). No dense ``N x M`` matrix is built.

    Args:
        query: ``(N, 3)`` float.
        points: ``(M, 3)`` float, same dtype/device.
        k: neighbours per query, ``1 <= k <= M``.
        squared: return squared distances (smooth at zero).

    Returns:
        ``(distances (N, k), indices (N, k) int64)``, nearest first. A zero distance has a
        zero (finite) gradient.
    """
    query = _check_points(query, "query", batched=False)
    points = _check_points(points, "points", batched=False)
    check_like(query, "query", points, "points")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= points.shape[0]:
        raise ParameterError(f"k must be an int in [1, M={points.shape[0]}], got {k!r}.")
    _, idx_np = _kdtree_query(points, query, k)
    idx = torch.from_numpy(idx_np).to(points.device)
    diff = query[:, None, :] - points[idx]
    sq = (diff * diff).sum(-1)
    return (sq if squared else _safe_sqrt(sq)), idx


@dataclass(frozen=True)
class ChamferResult:
    """Chamfer terms between point sets ``a (N, 3)`` and ``b (M, 3)``.

    ``a_to_b``/``b_to_a`` are the reduced nearest-neighbour terms (or per-point ``(N,)``/``(M,)``
    with ``reduction="none"``); ``total = a_to_b + b_to_a`` (with ``"none"`` it is their
    concatenation ``(N + M,)``, so ``total.sum()`` equals the ``"sum"`` total).
    ``a_index (N,)``/``b_index (M,)`` are the nearest neighbours in the other set.
    """

    a_to_b: torch.Tensor
    b_to_a: torch.Tensor
    total: torch.Tensor
    a_index: torch.Tensor
    b_index: torch.Tensor


def chamfer_distance(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    reduction: Reduction = "mean",
    squared: bool = True,
    weights_a: torch.Tensor | None = None,
    weights_b: torch.Tensor | None = None,
    truncate: float | None = None,
) -> ChamferResult:
    """Symmetric Chamfer distance between two point sets, built on :func:`knn`.

    Args:
        a: ``(N, 3)`` float.  b: ``(M, 3)`` float, same dtype/device.
        reduction: ``"mean"`` (weighted mean if weights are given), ``"sum"`` or ``"none"``.
        squared: use squared nearest-neighbour distances (the usual Chamfer) or plain ones.
        weights_a / weights_b: optional non-negative per-point weights ``(N,)`` / ``(M,)``.
        truncate: a distance (mm); each per-point distance is clamped to it (to its square when
            ``squared``), so outliers farther away contribute a constant with zero gradient.

    One pair of sets only; for a batch, loop (the KD-tree search is per pair anyway).
    """
    _check_reduction(reduction)
    if truncate is not None and not (math.isfinite(truncate) and truncate > 0):
        raise ParameterError(f"truncate must be a positive finite distance or None, got {truncate!r}.")
    da, ia = knn(a, b, 1, squared=squared)
    db, ib = knn(b, a, 1, squared=squared)
    da, db = da[:, 0], db[:, 0]
    wa = None if weights_a is None else _check_weights(weights_a, "weights_a", a.shape[0], a)
    wb = None if weights_b is None else _check_weights(weights_b, "weights_b", b.shape[0], b)
    if truncate is not None:
        cap = float(truncate) ** 2 if squared else float(truncate)
        da, db = da.clamp_max(cap), db.clamp_max(cap)
    ra, rb = _reduce(da, reduction, wa), _reduce(db, reduction, wb)
    total = torch.cat([ra, rb]) if reduction == "none" else ra + rb
    return ChamferResult(a_to_b=ra, b_to_a=rb, total=total, a_index=ia[:, 0], b_index=ib[:, 0])


# --------------------------------------------------------------------------------------
# closest points on a triangle mesh
# --------------------------------------------------------------------------------------


Vec3 = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _dot(x: Vec3, y: Vec3) -> torch.Tensor:
    return x[0] * y[0] + x[1] * y[1] + x[2] * y[2]


def _closest_on_triangles(
    ap: Vec3,
    ab: Vec3,
    ac: Vec3,
    s_ab: torch.Tensor,
    s_x: torch.Tensor,
    s_ac: torch.Tensor,
    recip: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Barycentric weights ``(v, w)`` of ``b`` and ``c`` (``u = 1 - v - w``) of the point of
    triangle ``abc`` closest to ``p``.

    Region-based closest point on a triangle (Ericson, "Real-Time Collision Detection",
    2005, section 5.1.5), vectorised: every Voronoi-region test is evaluated for all pairs,
    then the first matching region (in Ericson's order) is selected with masks.

    Arguments are broadcastable tensors, vectors kept planar (x, y, z triples; reductions over
    a trailing axis of size 3 are slow in torch): ``ap = p - a``, ``ab = b - a``, ``ac = c - a``
    and the per-face products ``s_ab = ab.ab``, ``s_x = ab.ac``, ``s_ac = ac.ac``. Ericson's
    ``d3..d6`` follow from them (``bp = ap - ab``, ``cp = ap - ac``).

    ``recip`` (search path, no gradient): precomputed safe reciprocals of ``|ab|^2``,
    ``|ac|^2``, ``|bc|^2`` and ``|ab x ac|^2`` (0 for degenerate faces). Without it the
    divisions are guarded so that neither value nor gradient holds inf/NaN, also for
    degenerate (zero-area) triangles.
    """
    d1, d2 = _dot(ab, ap), _dot(ac, ap)
    d3, d4 = d1 - s_ab, d2 - s_x
    d5, d6 = d1 - s_x, d2 - s_ac
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    e43, e56 = d4 - d3, d5 - d6

    # Voronoi regions in Ericson's early-return order; each mask excludes the earlier ones.
    taken = (d1 <= 0) & (d2 <= 0)  # vertex a
    m_b = (d3 >= 0) & (d4 <= d3) & ~taken  # vertex b
    taken = taken | m_b
    m_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0) & ~taken  # edge ab
    taken = taken | m_ab
    m_c = (d6 >= 0) & (d5 <= d6) & ~taken  # vertex c
    taken = taken | m_c
    m_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0) & ~taken  # edge ac
    taken = taken | m_ac
    m_bc = (va <= 0) & (e43 >= 0) & (e56 >= 0) & ~taken  # edge bc
    m_in = ~(taken | m_bc)  # face interior

    if recip is not None:
        r_ab, r_ac, r_bc, r_in = recip
        t_ab, t_ac, t_bc = d1 * r_ab, d2 * r_ac, e43 * r_bc
        v_in, w_in = vb * r_in, vc * r_in
    else:

        def frac(num: torch.Tensor, den: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            # an unselected region's denominator is replaced by 1, so its (zero) upstream
            # gradient never meets a huge 1/den^2 (0 * inf = NaN)
            return _safe_div(num, torch.where(mask, den, torch.ones_like(den)))

        t_ab = frac(d1, d1 - d3, m_ab)
        t_ac = frac(d2, d2 - d6, m_ac)
        t_bc = frac(e43, e43 + e56, m_bc)
        den = va + vb + vc
        v_in, w_in = frac(vb, den, m_in), frac(vc, den, m_in)

    # vertex a is the remaining default: v = w = 0
    v = torch.where(m_in, v_in, m_b.to(d1.dtype))
    w = torch.where(m_in, w_in, m_c.to(d1.dtype))
    v = torch.where(m_ab, t_ab, torch.where(m_bc, 1 - t_bc, v))
    w = torch.where(m_ac, t_ac, torch.where(m_bc, t_bc, w))
    return v, w


def _planar(x: torch.Tensor) -> Vec3:
    return (x[..., 0], x[..., 1], x[..., 2])


def _face_table(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Per-face search terms ``(16, F)``: a, ab, ac (planar), ab.ab, ab.ac, ac.ac and the safe
    reciprocals of |ab|^2, |ac|^2, |bc|^2, |ab x ac|^2 (0 where zero). No gradient."""
    tri = vertices[faces]
    a, ab, ac = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    s_ab, s_x, s_ac = (ab * ab).sum(-1), (ab * ac).sum(-1), (ac * ac).sum(-1)
    dens = torch.stack([s_ab, s_ac, s_ab - 2 * s_x + s_ac, s_ab * s_ac - s_x * s_x], -1)
    ok = dens > 0
    recip = torch.where(ok, 1 / torch.where(ok, dens, torch.ones_like(dens)), torch.zeros_like(dens))
    return torch.cat([a, ab, ac, torch.stack([s_ab, s_x, s_ac], -1), recip], -1).t().contiguous()


def _squared_distance_to_faces(points: torch.Tensor, table: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Squared distances ``(N, K)`` from ``points`` to the candidate faces ``cand (N, K)`` (no grad)."""
    out = points.new_empty(cand.shape)
    pt = points.t()
    step = max(1, _PAIRS_PER_CHUNK // max(1, cand.shape[1]))
    for s in range(0, cand.shape[0], step):
        c = cand[s:s + step]
        t = table.index_select(1, c.reshape(-1)).view(table.shape[0], *c.shape)  # (16, n, K)
        p = pt[:, s:s + step, None]
        ap: Vec3 = (p[0] - t[0], p[1] - t[1], p[2] - t[2])
        ab: Vec3 = (t[3], t[4], t[5])
        ac: Vec3 = (t[6], t[7], t[8])
        v, w = _closest_on_triangles(ap, ab, ac, t[9], t[10], t[11], (t[12], t[13], t[14], t[15]))
        dx = v * ab[0] + w * ac[0] - ap[0]
        dy = v * ab[1] + w * ac[1] - ap[1]
        dz = v * ab[2] + w * ac[2] - ap[2]
        out[s:s + step] = dx * dx + dy * dy + dz * dz
    return out


def _vertex_face_table(faces_np: np.ndarray, n_vertices: int, max_valence: int) -> np.ndarray:
    """``(V, D)`` table of faces incident to each vertex, padded with -1, D <= max_valence."""
    flat = faces_np.reshape(-1)
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=n_vertices)
    width = int(min(max(int(counts.max()), 1), max_valence))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(flat.size) - np.repeat(starts, counts)
    keep = rank < width
    table = np.full((n_vertices, width), -1, dtype=np.int64)
    table[flat[order][keep], rank[keep]] = order[keep] // 3
    return table


@dataclass(frozen=True)
class ClosestPoints:
    """Closest points on a mesh for each query point.

    Attributes:
        closest: ``(N, 3)`` the closest surface points.
        face_index: ``(N,)`` int64 the face each lies on.
        barycentric: ``(N, 3)`` their weights for the face's three vertices (sum 1, >= 0).
        distance: ``(N,)`` Euclidean distance from the query point.
    """

    closest: torch.Tensor
    face_index: torch.Tensor
    barycentric: torch.Tensor
    distance: torch.Tensor

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Unpack as ``closest, face_index, barycentric, distance = result``."""
        return iter((self.closest, self.face_index, self.barycentric, self.distance))


def closest_points_on_mesh(
    points: torch.Tensor,
    vertices: torch.Tensor,
    faces: torch.Tensor,
    k_candidates: int = 8,
    *,
    exact: bool = False,
    max_valence: int = 64,
    search_eps: float = 0.0,
) -> ClosestPoints:
    """Closest point on the triangle mesh ``(vertices, faces)`` to every point.

    Candidate faces per point are (1) the ``k_candidates`` faces whose centroids are nearest
    (KD-tree over centroids) and (2) the faces incident to the nearest vertex (KD-tree over
    vertices; at most ``max_valence`` faces per vertex). The exact closest point on each
    candidate triangle is computed with Ericson's region test, and the nearest one is kept.

    The candidate set is a *heuristic*: a large triangle whose centroid and vertices are all
    far away can still be the closest one (e.g. a big floor triangle under a cluster of small
    ones). With ``exact=True`` the result is certified: any face outside the candidates is
    at distance >= ``d_k - r_max`` (``d_k`` the k-th nearest centroid distance, ``r_max`` the
    largest centroid-to-vertex radius), and points whose best distance exceeds that bound are
    searched again with 4x as many centroids, up to all faces.

    The search runs without gradient; the final closest point is recomputed in torch on the
    chosen face, so ``closest`` and ``distance`` are differentiable w.r.t. ``points`` and
    ``vertices`` (the face choice and region are piecewise constant).

    Args:
        points: ``(N, 3)`` float.  vertices: ``(V, 3)`` float, same dtype/device.
        faces: ``(F, 3)`` integer vertex indices.
        k_candidates: nearest centroids tested per point (clipped to F).
        exact: certify the result as described above. Cheap for points near a fine mesh;
            for points far from the surface relative to the mesh size, or meshes with a few
            very large triangles, it can cost up to all ``F`` faces per point.
        max_valence: cap on incident faces taken per nearest vertex.
        search_eps: relative slack of the KD-tree searches (scipy's ``eps``): a neighbour
            returned as k-th is at most ``1 + search_eps`` times farther than the true k-th.
            The KD-tree is slow for points far from the surface relative to the mesh size
            (e.g. deep inside a closed surface, where many faces are nearly equidistant and
            the search visits most of them); ``search_eps=0.5`` makes those several times
            faster at the price of rougher candidates (``exact=True`` stays exact).

    Returns:
        :class:`ClosestPoints` (also unpacks as a 4-tuple).
    """
    points = _check_points(points, "points", batched=False)
    vertices = _check_points(vertices, "vertices", batched=False)
    check_like(points, "points", vertices, "vertices")
    faces = _check_faces(faces, "faces", vertices.shape[0], vertices)
    if isinstance(k_candidates, bool) or not isinstance(k_candidates, int) or k_candidates < 1:
        raise ParameterError(f"k_candidates must be a positive int, got {k_candidates!r}.")
    if isinstance(max_valence, bool) or not isinstance(max_valence, int) or max_valence < 1:
        raise ParameterError(f"max_valence must be a positive int, got {max_valence!r}.")
    if not (math.isfinite(search_eps) and search_eps >= 0):
        raise ParameterError(f"search_eps must be a finite number >= 0, got {search_eps!r}.")
    n_faces = faces.shape[0]
    n_verts = vertices.shape[0]
    dev = vertices.device
    k = min(k_candidates, n_faces)

    with torch.no_grad():
        v_det, p_det = vertices.detach(), points.detach()
        faces_np = faces.cpu().numpy()
        v_np, p_np = _to_numpy(v_det), _to_numpy(p_det)
        tri_np = v_np[faces_np]  # (F, 3, 3)
        centroids = tri_np.mean(1)
        c_tree = cKDTree(centroids, leafsize=_LEAFSIZE)
        c_dist, c_idx = c_tree.query(p_np, k=k, eps=search_eps, workers=_workers(len(p_np)))
        c_dist = np.asarray(c_dist).reshape(-1, k)
        c_idx = np.asarray(c_idx, dtype=np.int64).reshape(-1, k)

        kv = min(_NEAREST_VERTICES, n_verts)
        v_tree = cKDTree(v_np, leafsize=_LEAFSIZE)
        _, v_idx = v_tree.query(p_np, k=kv, eps=search_eps, workers=_workers(len(p_np)))
        v_idx = np.asarray(v_idx, dtype=np.int64).reshape(-1, kv)
        inc = _vertex_face_table(faces_np, n_verts, max_valence)[v_idx].reshape(len(p_np), -1)
        inc = np.where(inc < 0, c_idx[:, :1], inc)  # isolated vertices: reuse a centroid candidate
        cand_np = np.concatenate([c_idx, inc], 1)

        cand = torch.from_numpy(cand_np).to(dev)
        table = _face_table(v_det, faces)
        sq = _squared_distance_to_faces(p_det, table, cand)
        best_sq, arg = sq.min(1)
        best_face = cand.gather(1, arg[:, None])[:, 0]

        if exact and k < n_faces:
            r_max = float(np.sqrt(((tri_np - centroids[:, None, :]) ** 2).sum(-1)).max())
            best = best_sq.cpu().numpy().astype(np.float64)
            face_np = best_face.cpu().numpy()
            # conservative relative slack for the rounding of the computed distances
            slack = 1e-9 if vertices.dtype == torch.float64 else 1e-5
            kk = k
            # with eps, every centroid not returned is at least d_k / (1 + eps) away (a KD-tree
            # node is pruned only when (1 + eps) * its distance exceeds the current k-th best)
            shrink = 1.0 / (1.0 + search_eps)
            bound = c_dist[:, -1] * shrink - r_max
            todo = np.nonzero(np.sqrt(best) * (1 + slack) > bound)[0]
            while todo.size and kk < n_faces:
                kk = min(4 * kk, n_faces)
                d_new, i_new = c_tree.query(p_np[todo], k=kk, eps=search_eps, workers=_workers(len(todo)))
                d_new = np.asarray(d_new).reshape(-1, kk)
                i_new = np.asarray(i_new, dtype=np.int64).reshape(-1, kk)
                sub = torch.from_numpy(i_new).to(dev)
                sq2 = _squared_distance_to_faces(p_det[torch.from_numpy(todo).to(dev)], table, sub)
                b2, a2 = sq2.min(1)
                b2_np = b2.cpu().numpy().astype(np.float64)
                f2_np = sub.gather(1, a2[:, None])[:, 0].cpu().numpy()
                better = b2_np < best[todo]
                best[todo[better]] = b2_np[better]
                face_np[todo[better]] = f2_np[better]
                if kk >= n_faces:
                    break
                still = np.sqrt(best[todo]) * (1 + slack) > d_new[:, -1] * shrink - r_max
                todo = todo[still]
            best_face = torch.from_numpy(face_np).to(dev)

    tri = vertices[faces[best_face]]  # (N, 3, 3), differentiable
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    ab, ac = _planar(b - a), _planar(c - a)
    v, w = _closest_on_triangles(_planar(points - a), ab, ac, _dot(ab, ab), _dot(ab, ac), _dot(ac, ac))
    bary = torch.stack([1 - v - w, v, w], -1)
    closest = a + v[:, None] * (b - a) + w[:, None] * (c - a)
    diff = points - closest
    dist = _safe_sqrt((diff * diff).sum(-1))
    return ClosestPoints(closest=closest, face_index=best_face, barycentric=bary, distance=dist)


def point_to_surface_distance(
    points: torch.Tensor,
    vertices: torch.Tensor,
    faces: torch.Tensor,
    squared: bool = True,
    reduction: Reduction = "mean",
    *,
    k_candidates: int = 8,
    exact: bool = False,
    search_eps: float = 0.0,
) -> torch.Tensor:
    """Distance from each point to the mesh surface, reduced (see :func:`closest_points_on_mesh`).

    Returns a scalar for ``"mean"``/``"sum"`` and ``(N,)`` for ``"none"``; squared distances
    when ``squared`` (smooth at zero). Differentiable w.r.t. ``points`` and ``vertices``.
    """
    _check_reduction(reduction)
    res = closest_points_on_mesh(points, vertices, faces, k_candidates, exact=exact, search_eps=search_eps)
    if squared:
        diff = points - res.closest
        d = (diff * diff).sum(-1)
    else:
        d = res.distance
    return _reduce(d, reduction)
