"""Differentiable geometry on triangle meshes and point sets.

Pure torch (plus scipy's KD-tree for neighbour *search*): every returned value is
recomputed in torch from the inputs, so it is differentiable with respect to the
floating inputs, and dtype/device follow the inputs (the KD-tree works on detached
CPU copies; only integer indices travel back).

Contents
--------
* :func:`face_normals`, :func:`vertex_normals` -- batched ``(..., V, 3)``.
* :func:`procrustes` -> :class:`Similarity` -- weighted Kabsch/Umeyama, batched.
* :func:`knn`, :func:`chamfer_distance` -> :class:`ChamferResult` -- one pair of sets.
* :func:`closest_points_on_mesh` -> :class:`ClosestPoints`, :func:`point_to_surface_distance`.
* :func:`barycentric_interpolate` -- landmarks embedded in faces, batched.

Conventions (DESIGN.md section 3): points are rows ``(..., 3)``, rotation matrices act
on column vectors, so a point set ``X (N, 3)`` is rotated as ``X @ R.T``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.spatial import cKDTree

from .checks import (
    check_finite,
    check_floating,
    check_index_range,
    check_like,
    check_shape,
    check_tensor,
)
from .errors import DeviceError, ParameterError, ShapeError

__all__ = [
    "ChamferResult",
    "ClosestPoints",
    "Similarity",
    "barycentric_interpolate",
    "chamfer_distance",
    "closest_points_on_mesh",
    "face_normals",
    "knn",
    "point_to_surface_distance",
    "procrustes",
    "vertex_normals",
]

Reduction = Literal["mean", "sum", "none"]

# Point/candidate pairs evaluated per chunk in the closest-point search (bounds memory).
_PAIRS_PER_CHUNK = 1 << 16
# KD-tree leaf size: larger leaves cut the search overhead for points far from the data.
_LEAFSIZE = 32
# Faces incident to this many nearest vertices join the closest-point candidates.
_NEAREST_VERTICES = 1


# --------------------------------------------------------------------------------------
# input checks and small safe primitives
# --------------------------------------------------------------------------------------


def _check_points(x: object, name: str, batched: bool) -> torch.Tensor:
    """A finite floating tensor of shape ``(..., P, 3)`` (or ``(P, 3)``) with ``P >= 1``."""
    t = check_tensor(x, name)
    check_shape(t, name, ["...", None, 3] if batched else [None, 3])
    check_floating(t, name)
    if t.numel() == 0:
        raise ParameterError(
            f"{name} is empty (shape {tuple(t.shape)}); pass at least one point and a non-empty batch."
        )
    check_finite(t, name)
    return t


def _check_faces(faces: object, name: str, n_vertices: int, ref: torch.Tensor) -> torch.Tensor:
    """Integer ``(F, 3)`` indices into ``n_vertices`` vertices, on ``ref``'s device; returns int64."""
    f = check_tensor(faces, name)
    check_shape(f, name, [None, 3])
    check_index_range(f, name, n_vertices)
    if f.shape[0] == 0:
        raise ParameterError(f"{name} has no faces (shape {tuple(f.shape)}); pass at least one face.")
    if f.device != ref.device:
        raise DeviceError(
            f"{name} is on {f.device} but the vertices are on {ref.device}; "
            f"move one of them with .to({str(ref.device)!r})."
        )
    return f.long()


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ParameterError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")


def _check_weights(w: object, name: str, n: int, ref: torch.Tensor) -> torch.Tensor:
    t = check_tensor(w, name)
    check_shape(t, name, [n])
    check_like(t, name, ref, "the points")
    check_finite(t, name)
    if bool((t < 0).any()):
        raise ParameterError(f"{name} has negative entries; weights must be >= 0.")
    if not bool((t > 0).any()):
        raise ParameterError(f"{name} are all zero; give at least one point a positive weight.")
    return t


def _safe_sqrt(sq: torch.Tensor) -> torch.Tensor:
    """``sqrt`` with value 0 and gradient 0 (not inf/NaN) where ``sq == 0``."""
    pos = sq > 0
    return torch.where(pos, torch.where(pos, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


def _safe_normalize(x: torch.Tensor) -> torch.Tensor:
    """Unit vectors along the last axis; zero (value and gradient) for zero-length vectors."""
    sq = (x * x).sum(-1, keepdim=True)
    ok = sq > torch.finfo(x.dtype).tiny
    norm = torch.where(ok, sq, torch.ones_like(sq)).sqrt()
    return torch.where(ok, x / norm, torch.zeros_like(x))


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` with 0 where ``den == 0`` (no inf/NaN in value or gradient)."""
    zero = den == 0
    return torch.where(zero, torch.zeros_like(num), num / torch.where(zero, torch.ones_like(den), den))


def _reduce(x: torch.Tensor, reduction: str, weights: torch.Tensor | None = None) -> torch.Tensor:
    if weights is not None:
        if reduction == "mean":
            return (x * weights).sum() / weights.sum()
        if reduction == "sum":
            return (x * weights).sum()
        return x * weights
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    return x


def _workers(n_queries: int) -> int:
    """KD-tree query threads: all cores for large queries, one for small ones (thread start-up)."""
    return -1 if n_queries >= 4096 else 1


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float64).numpy()


# --------------------------------------------------------------------------------------
# normals
# --------------------------------------------------------------------------------------


def face_normals(vertices: torch.Tensor, faces: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Normals of the triangles ``faces`` of ``vertices``.

    Args:
        vertices: ``(..., V, 3)`` float.
        faces: ``(F, 3)`` integer vertex indices, counter-clockwise seen from outside.
        normalize: unit normals if True; else ``(b - a) x (c - a)``, whose length is twice
            the triangle area.

    Returns:
        ``(..., F, 3)``. A degenerate (zero-area) face gets a zero unit normal with a zero,
        finite gradient.
    """
    vertices = _check_points(vertices, "vertices", batched=True)
    faces = _check_faces(faces, "faces", vertices.shape[-2], vertices)
    tri = vertices[..., faces, :]  # (..., F, 3, 3)
    n = torch.linalg.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :], dim=-1)
    return _safe_normalize(n) if normalize else n


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals: the normalised sum of the (unnormalised) incident face normals.

    Args:
        vertices: ``(..., V, 3)`` float.
        faces: ``(F, 3)`` integer vertex indices.

    Returns:
        ``(..., V, 3)`` unit normals. A vertex used by no face (or whose incident normals
        cancel) gets a zero normal, with a finite (zero) gradient.
    """
    vertices = _check_points(vertices, "vertices", batched=True)
    faces = _check_faces(faces, "faces", vertices.shape[-2], vertices)
    fn = face_normals(vertices, faces, normalize=False)  # (..., F, 3), length = 2 * area
    lead = fn.shape[:-2]
    n_faces, n_verts = faces.shape[0], vertices.shape[-2]
    flat = fn.reshape(-1, n_faces, 1, 3).expand(-1, n_faces, 3, 3).reshape(-1, 3 * n_faces, 3)
    acc = fn.new_zeros(flat.shape[0], n_verts, 3).index_add(1, faces.reshape(-1), flat)
    return _safe_normalize(acc).reshape(*lead, n_verts, 3)


# --------------------------------------------------------------------------------------
# Procrustes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Similarity:
    """A similarity transform ``x -> scale * R x + t`` acting on row points.

    Attributes:
        rotation: ``(..., 3, 3)`` proper rotation (det +1).
        translation: ``(..., 3)``.
        scale: ``(...)``; ones when the fit had ``scale=False``.
    """

    rotation: torch.Tensor
    translation: torch.Tensor
    scale: torch.Tensor

    def apply(self, points: torch.Tensor) -> torch.Tensor:
        """Transform ``points (..., P, 3)`` (batch dims broadcast with the transform's)."""
        rotated = points @ self.rotation.transpose(-1, -2)
        return self.scale[..., None, None] * rotated + self.translation[..., None, :]

    def as_matrix(self) -> torch.Tensor:
        """The ``(..., 4, 4)`` homogeneous matrix acting on column vectors."""
        top = torch.cat([self.scale[..., None, None] * self.rotation, self.translation[..., :, None]], -1)
        bottom = torch.zeros_like(top[..., :1, :])
        bottom[..., 0, 3] = 1
        return torch.cat([top, bottom], -2)

    def inverse(self) -> Similarity:
        """The inverse transform ``y -> R^T (y - t) / scale``."""
        rt = self.rotation.transpose(-1, -2)
        inv_s = 1.0 / self.scale
        t = -inv_s[..., None] * (rt @ self.translation[..., :, None])[..., 0]
        return Similarity(rotation=rt, translation=t, scale=inv_s)


def procrustes(
    source: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    scale: bool = False,
) -> Similarity:
    """Weighted least-squares similarity (or rigid) transform taking ``source`` onto ``target``.

    Minimises ``sum_i w_i |s R x_i + t - y_i|^2`` over rotations ``R`` (det +1), ``t`` and,
    when ``scale`` is True, ``s > 0`` (else ``s = 1``): the Kabsch algorithm with Umeyama's
    scale and reflection correction (Umeyama 1991, "Least-squares estimation of transformation
    parameters between two point patterns", eqs. 38-42, with weights).

    Args:
        source: ``(..., N, 3)`` float, ``N >= 3``.
        target: ``(..., N, 3)``, same dtype/device; batch dims broadcast with ``source``.
        weights: optional ``(..., N)`` non-negative weights (not all zero per batch entry).
        scale: also fit a uniform scale.

    Returns:
        :class:`Similarity` with ``apply(source) ~= target``.

    Degenerate cases (documented, not checked, because they depend on values):
        * collinear or coincident points (cross-covariance rank < 2): the rotation about the
          line is not determined; an arbitrary valid rotation is returned.
        * the gradient goes through ``torch.linalg.svd``; it is finite only when the singular
          values of the weighted cross-covariance are distinct (e.g. not for point sets with a
          rotational symmetry such as the vertices of a regular polygon), and it is inf/NaN
          when two of them coincide.
        * all source points equal with ``scale=True``: the variance is clamped to ``tiny``,
          which gives a huge scale; avoid it.
        * fewer than 3 points with non-zero weight behaves like the collinear case.
    """
    source = _check_points(source, "source", batched=True)
    target = _check_points(target, "target", batched=True)
    check_like(target, "target", source, "source")
    n = source.shape[-2]
    if target.shape[-2] != n:
        raise ShapeError(
            f"target must have as many points as source (N={n}), got shape {tuple(target.shape)}; "
            f"pass corresponding points."
        )
    if n < 3:
        raise ShapeError(
            f"procrustes needs at least 3 corresponding points, got N={n} (source shape "
            f"{tuple(source.shape)}); a rotation is not determined by fewer."
        )
    try:
        batch = torch.broadcast_shapes(source.shape[:-2], target.shape[:-2])
    except RuntimeError as exc:
        raise ShapeError(
            f"the batch dims of source {tuple(source.shape)} and target {tuple(target.shape)} "
            f"do not broadcast; make them equal."
        ) from exc
    if weights is None:
        w = source.new_full((*batch, n), 1.0 / n)
    else:
        w = check_tensor(weights, "weights")
        check_shape(w, "weights", ["...", n])
        check_like(w, "weights", source, "source")
        check_finite(w, "weights")
        if bool((w < 0).any()):
            raise ParameterError("weights has negative entries; weights must be >= 0.")
        total = w.sum(-1, keepdim=True)
        if bool((total <= 0).any()):
            raise ParameterError(
                "weights are all zero for at least one batch entry; give each entry a positive weight."
            )
        w = w / total
    w3 = w[..., :, None]
    mu_x = (w3 * source).sum(-2)
    mu_y = (w3 * target).sum(-2)
    xc = source - mu_x[..., None, :]
    yc = target - mu_y[..., None, :]
    cov = (yc * w3).transpose(-1, -2) @ xc  # (..., 3, 3) = sum_i w_i y_i x_i^T
    u, sv, vh = torch.linalg.svd(cov)
    det = torch.linalg.det(u) * torch.linalg.det(vh)
    sign = torch.where(det < 0, -torch.ones_like(det), torch.ones_like(det))
    d = torch.stack([torch.ones_like(sign), torch.ones_like(sign), sign], -1)
    rot = u @ (d[..., :, None] * vh)
    if scale:
        var_x = (w * (xc * xc).sum(-1)).sum(-1)
        s = (sv * d).sum(-1) / var_x.clamp_min(torch.finfo(var_x.dtype).tiny)
    else:
        s = torch.ones_like(sign)
    t = mu_y - s[..., None] * (rot @ mu_x[..., :, None])[..., 0]
    return Similarity(rotation=rot, translation=t, scale=s)


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


# --------------------------------------------------------------------------------------
# landmarks
# --------------------------------------------------------------------------------------


def barycentric_interpolate(
    vertices: torch.Tensor, face_vertex_ids: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Points given by barycentric ``weights`` on triangles ``face_vertex_ids`` (e.g. landmarks).

    Args:
        vertices: ``(..., V, 3)`` float.
        face_vertex_ids: ``(L, 3)`` integer vertex indices of each landmark's triangle.
        weights: ``(L, 3)`` float barycentric weights (not required to sum to 1), same
            dtype/device as ``vertices``.

    Returns:
        ``(..., L, 3)`` = ``sum_j weights[l, j] * vertices[..., ids[l, j], :]``.
    """
    vertices = _check_points(vertices, "vertices", batched=True)
    ids = _check_faces(face_vertex_ids, "face_vertex_ids", vertices.shape[-2], vertices)
    w = check_tensor(weights, "weights")
    check_shape(w, "weights", [ids.shape[0], 3])
    check_like(w, "weights", vertices, "vertices")
    check_finite(w, "weights")
    return (vertices[..., ids, :] * w[:, :, None]).sum(-2)
