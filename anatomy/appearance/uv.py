"""UV layouts: charts cut from a triangle mesh, flattened without flips, packed into the unit square.

The unwrap is deterministic and runs at load time (about a second for the embedded models):

1. **Charts.** Faces carry a chart label (e.g. finger x dorsal/palmar side for the hand; one
   label for the face); each label's edge-connected components are candidate charts. A candidate
   that is not a disc is cut in two by a plane through its median along its longest principal
   axis, recursively. Inner boundary loops of a genus-0 chart with holes (the mouth slit of the
   face) are filled by virtual fans for the flattening only, so the chart stays in one piece.
2. **Flattening.** Least-squares conformal maps (LSCM; Lévy et al. 2002, "Least squares conformal
   maps for automatic texture atlas generation", SIGGRAPH), solved by sparse normal equations
   with two pinned boundary vertices. If any triangle flips, the chart falls back to Tutte's
   embedding with Floater's mean-value weights (Floater 2003, "Mean value coordinates", CAGD 20)
   and the boundary on a circle, which cannot flip (positive weights, convex boundary).
3. **Packing.** Each chart is scaled to its 3D area, turned to its principal axes, and the
   bounding boxes are packed in shelves into ``[0, 1]^2`` with a gutter between charts.

UV convention: OBJ's, origin at the bottom left, ``v`` up; image row 0 is ``v = 1``. A seam
splits a mesh vertex into several UV vertices: ``uv_faces`` index ``uv`` and
``vertex_of_uv`` maps a UV vertex back to its mesh vertex.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import spsolve

from ..core.errors import ParameterError, ShapeError

__all__ = ["UVLayout", "area_distortion", "signed_uv_areas", "unwrap"]


@dataclass(frozen=True)
class UVLayout:
    """A UV layout of one tissue's surface.

    * ``uv (V_uv, 2)`` float64 in ``[0, 1]``; ``uv_faces (F, 3)`` int64 indices into ``uv`` (same
      face order as the mesh's ``faces``); ``vertex_of_uv (V_uv,)`` the mesh vertex (tissue-local)
      of each UV vertex; ``chart_of_face (F,)`` the chart of each face.
    """

    uv: np.ndarray
    uv_faces: np.ndarray
    vertex_of_uv: np.ndarray
    chart_of_face: np.ndarray

    @property
    def num_charts(self) -> int:
        return int(self.chart_of_face.max()) + 1 if len(self.chart_of_face) else 0


# --------------------------------------------------------------------------------------
# measures (used by the unwrap and by tests)
# --------------------------------------------------------------------------------------


def signed_uv_areas(uv: np.ndarray, uv_faces: np.ndarray) -> np.ndarray:
    """Signed area of every UV triangle ``(F,)``: positive when counter-clockwise in ``(u, v)``."""
    a, b, c = (uv[uv_faces[:, i]] for i in range(3))
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def _areas3d(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def area_distortion(vertices: np.ndarray, faces: np.ndarray, layout: UVLayout) -> np.ndarray:
    """Per-face area distortion ``(F,)``: (UV area / 3D area) over its area-weighted mean, so 1 is
    an even texel density; ``max(r, 1/r)`` of it is the usual symmetric measure."""
    a3 = _areas3d(np.asarray(vertices, dtype=np.float64), faces)
    a2 = signed_uv_areas(layout.uv, layout.uv_faces)
    ratio = a2 / np.maximum(a3, 1e-300)
    return ratio / (a2.sum() / a3.sum())


# --------------------------------------------------------------------------------------
# mesh topology helpers
# --------------------------------------------------------------------------------------


def _edge_keys(faces: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges ``(3F, 2)`` (i -> j per face corner) and their undirected keys."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return e, np.minimum(e[:, 0], e[:, 1]) * n + np.maximum(e[:, 0], e[:, 1])


def _face_components(faces: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Component id per face: faces sharing an edge and a label are connected."""
    f = len(faces)
    _, keys = _edge_keys(faces, n)
    face_of = np.tile(np.arange(f), 3)
    order = np.argsort(keys, kind="stable")
    ks, fs = keys[order], face_of[order]
    same = ks[1:] == ks[:-1]
    a, b = fs[:-1][same], fs[1:][same]
    keep = labels[a] == labels[b]
    graph = sp.coo_matrix((np.ones(int(keep.sum())), (a[keep], b[keep])), shape=(f, f))
    return connected_components(graph, directed=False)[1]


def _boundary_loops(faces: np.ndarray, n: int) -> list[np.ndarray]:
    """Boundary loops (vertex ids in order) of a manifold triangle set; raises on a non-manifold rim."""
    e, keys = _edge_keys(faces, n)
    uniq, counts = np.unique(keys, return_counts=True)
    if (counts > 2).any():
        raise ShapeError("the surface has edges shared by more than two faces; UV unwrapping needs a manifold "
                         "mesh (repair it first).")
    border = np.isin(keys, uniq[counts == 1])
    nxt: dict[int, int] = {}
    for i, j in e[border]:
        if int(i) in nxt:
            raise ShapeError("the surface has a vertex where two boundary loops touch; UV unwrapping needs a "
                             "manifold boundary (repair the mesh first).")
        nxt[int(i)] = int(j)
    loops = []
    while nxt:
        start = min(nxt)
        loop = [start]
        cur = nxt.pop(start)
        while cur != start:
            loop.append(cur)
            cur = nxt.pop(cur)
        loops.append(np.asarray(loop, dtype=np.int64))
    return loops


def _euler(faces: np.ndarray, n: int) -> int:
    _, keys = _edge_keys(faces, n)
    return len(np.unique(faces)) - len(np.unique(keys)) + len(faces)


# --------------------------------------------------------------------------------------
# flattening of one disc
# --------------------------------------------------------------------------------------


def _lscm(p: np.ndarray, faces: np.ndarray, loop: np.ndarray) -> np.ndarray:
    """LSCM of a disc: per face, ``|grad V - rot90(grad U)|^2 * area`` summed, two boundary pins."""
    n, f = len(p), len(faces)
    a, b, c = (p[faces[:, i]] for i in range(3))
    e1 = b - a
    normal = np.cross(e1, c - a)
    area2 = np.linalg.norm(normal, axis=1)  # twice the area
    x_axis = e1 / np.linalg.norm(e1, axis=1, keepdims=True)
    y_axis = np.cross(normal / area2[:, None], x_axis)
    local = np.stack([np.zeros((f, 2)),
                      np.stack([(e1 * x_axis).sum(1), (e1 * y_axis).sum(1)], 1),
                      np.stack([((c - a) * x_axis).sum(1), ((c - a) * y_axis).sum(1)], 1)], 1)  # (F, 3, 2)
    # gradient of the barycentric function of corner j: rot90(opposite edge) / (2 area)
    opposite = local[:, [2, 0, 1]] - local[:, [1, 2, 0]]
    grads = np.stack([-opposite[..., 1], opposite[..., 0]], -1) / area2[:, None, None]  # (F, 3, 2)
    rot = np.stack([-grads[..., 1], grads[..., 0]], -1)
    w = np.sqrt(0.5 * area2)[:, None]
    rows, cols, vals = [], [], []
    for comp in range(2):  # residual component (x, y) of grad V - rot90(grad U)
        r = np.repeat(np.arange(f) * 2 + comp, 3)
        rows += [r, r]
        cols += [faces.ravel() + n, faces.ravel()]  # V unknowns after U
        vals += [(grads[..., comp] * w).ravel(), (-rot[..., comp] * w).ravel()]
    mat = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(2 * f, 2 * n))
    # pins: the two boundary vertices farthest apart, at their 3D distance along u
    bp = p[loop]
    i0 = int(np.argmax(np.linalg.norm(bp - bp.mean(0), axis=1)))
    i1 = int(np.argmax(np.linalg.norm(bp - bp[i0], axis=1)))
    pins = np.asarray([loop[i0], loop[i1]])
    pin_vals = np.asarray([0.0, float(np.linalg.norm(bp[i1] - bp[i0])), 0.0, 0.0])  # U0, U1, V0, V1
    pin_cols = np.concatenate([pins, pins + n])
    free = np.setdiff1d(np.arange(2 * n), pin_cols)
    a_free, a_pin = mat[:, free], mat[:, pin_cols]
    rhs = -(a_free.T @ (a_pin @ pin_vals))
    sol = np.zeros(2 * n)
    sol[pin_cols] = pin_vals
    sol[free] = spsolve((a_free.T @ a_free).tocsc(), rhs)
    return np.stack([sol[:n], sol[n:]], 1)


def _mean_value_weights(p: np.ndarray, faces: np.ndarray) -> sp.csr_matrix:
    """Floater's mean-value weights ``w_ij = (tan(a/2) + tan(b/2)) / |p_i - p_j|`` (all positive)."""
    n = len(p)
    rows, cols, vals = [], [], []
    for k in range(3):
        i, j, m = faces[:, k], faces[:, (k + 1) % 3], faces[:, (k + 2) % 3]
        dj, dm = p[j] - p[i], p[m] - p[i]
        lj, lm = np.linalg.norm(dj, axis=1), np.linalg.norm(dm, axis=1)
        cos = np.clip((dj * dm).sum(1) / (lj * lm), -1.0, 1.0)
        half_tan = np.tan(0.5 * np.arccos(cos))
        rows += [i, i]
        cols += [j, m]
        vals += [half_tan / lj, half_tan / lm]
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


def _untangle(uv: np.ndarray, p: np.ndarray, faces: np.ndarray, fixed: np.ndarray, rounds: int = 30) -> np.ndarray:
    """Move the free vertices of flipped triangles (and their neighbours) to the mean-value average of
    their neighbours, a few rounds; a local repair of the rare LSCM flip at a sliver triangle."""
    w = _mean_value_weights(p, faces)
    w = sp.diags(1.0 / np.asarray(w.sum(1)).ravel()) @ w
    adj = (w != 0).astype(np.int8)
    movable = np.ones(len(p), dtype=bool)
    movable[fixed] = False
    uv = uv.copy()
    for _ in range(rounds):
        bad = signed_uv_areas(uv, faces) <= 0
        if not bad.any():
            break
        region = np.zeros(len(p), dtype=bool)
        region[faces[bad].ravel()] = True
        region |= np.asarray(adj @ region.astype(np.int8)).ravel() > 0
        ids = np.flatnonzero(region & movable)
        for _ in range(10):
            uv[ids] = w[ids] @ uv
    return uv


def _tutte(p: np.ndarray, faces: np.ndarray, loop: np.ndarray) -> np.ndarray:
    """Tutte embedding with mean-value weights, the boundary on a circle by arc length."""
    n = len(p)
    w = _mean_value_weights(p, faces)
    lap = sp.diags(np.asarray(w.sum(1)).ravel()) - w
    seg = np.linalg.norm(p[np.roll(loop, -1)] - p[loop], axis=1)
    t = 2 * np.pi * np.concatenate([[0.0], np.cumsum(seg)[:-1]]) / seg.sum()
    radius = seg.sum() / (2 * np.pi)
    out = np.zeros((n, 2))
    out[loop] = radius * np.stack([np.cos(t), np.sin(t)], 1)
    inner = np.setdiff1d(np.arange(n), loop)
    if len(inner):
        lap = lap.tocsr()
        a_ii = lap[inner][:, inner].tocsc()
        rhs = -(lap[inner][:, loop] @ out[loop])
        out[inner] = np.stack([spsolve(a_ii, rhs[:, 0]), spsolve(a_ii, rhs[:, 1])], 1)
    return out


def _fill_holes(p: np.ndarray, faces: np.ndarray, loops: list[np.ndarray], outer: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Close every boundary loop but ``outer`` with a virtual fan whose apex sits above the loop's
    centre by the loop's radius (a tent: well-shaped triangles even over a slit like the mouth)."""
    pts, tri = p, faces
    a, b, c = (p[faces[:, i]] for i in range(3))
    face_normals = np.cross(b - a, c - a)
    for lp in loops:
        if lp is outer:
            continue
        touching = np.isin(faces, lp).any(1)
        normal = face_normals[touching].sum(0)
        normal /= max(np.linalg.norm(normal), 1e-300)
        radius = np.linalg.norm(p[np.roll(lp, -1)] - p[lp], axis=1).sum() / (2 * np.pi)
        centre = len(pts)
        pts = np.vstack([pts, p[lp].mean(0) + radius * normal])
        # the hole's loop runs along the faces' winding, so the fan (next, this, apex) agrees
        tri = np.vstack([tri, np.stack([np.roll(lp, -1), lp, np.full(len(lp), centre)], 1)])
    return pts, tri


def _flatten_disc(p: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Flatten a genus-0 chart (local vertex ids) to the plane, inner holes closed by virtual fans
    (which keeps a slit from overlapping itself): Tutte's embedding and LSCM (its rare flips at sliver
    triangles repaired locally), whichever flip-free one has the lower area distortion."""
    n = len(p)
    loops = _boundary_loops(faces, n)
    lengths = [np.linalg.norm(p[np.roll(lp, -1)] - p[lp], axis=1).sum() for lp in loops]
    outer = loops[int(np.argmax(lengths))]
    pts, tri = _fill_holes(p, faces, loops, outer)
    candidates = [_tutte(pts, tri, outer)]  # never flips
    try:
        lscm = _lscm(pts, tri, outer)
        if np.isfinite(lscm).all() and (signed_uv_areas(lscm, tri) <= 0).any():
            lscm = _untangle(lscm, pts, tri, outer)
        if np.isfinite(lscm).all() and (signed_uv_areas(lscm, tri) > 0).all():
            candidates.append(lscm)
    except (RuntimeError, ValueError, np.linalg.LinAlgError):  # pragma: no cover - singular system
        pass
    a3 = _areas3d(p, faces)

    def spread(uv: np.ndarray) -> float:  # 95th percentile of the symmetric area distortion
        a2 = signed_uv_areas(uv, faces)
        return float(np.percentile(_symmetric((a2 / a3) / (a2.sum() / a3.sum())), 95))

    uv = min(candidates, key=spread)
    return uv[:n]


# --------------------------------------------------------------------------------------
# charts, packing
# --------------------------------------------------------------------------------------


def _halves(p: np.ndarray, faces: np.ndarray, face_ids: np.ndarray) -> list[np.ndarray]:
    """``face_ids`` cut by the plane through their median along their longest principal axis,
    as edge-connected pieces."""
    sub = faces[face_ids]
    centroids = p[sub].mean(1)
    centred = centroids - centroids.mean(0)
    axis = np.linalg.eigh(centred.T @ centred)[1][:, -1]
    side = (centred @ axis > np.median(centred @ axis)).astype(np.int64)
    comps = _face_components(sub, side, len(p))
    return [face_ids[comps == c] for c in range(int(comps.max()) + 1)]


def _split_to_discs(p: np.ndarray, faces: np.ndarray, face_ids: np.ndarray, depth: int = 0) -> list[np.ndarray]:
    """Face-id sets of genus-0 pieces (discs, possibly with holes) covering ``face_ids``."""
    sub = faces[face_ids]
    n = len(p)
    loops = _boundary_loops(sub, n) if len(sub) else []
    if loops and _euler(sub, n) == 2 - len(loops):
        return [face_ids]
    if depth > 12 or len(face_ids) < 2:
        raise ShapeError(f"could not cut a chart of {len(face_ids)} faces into discs; the mesh may be "
                         f"non-manifold or have handles.")
    out: list[np.ndarray] = []
    for piece in _halves(p, faces, face_ids):
        out += _split_to_discs(p, faces, piece, depth + 1)
    return out


def _face_neighbours(faces: np.ndarray, n: int) -> np.ndarray:
    """``(F, 3)`` the face across each edge (the face itself on a boundary edge)."""
    _, keys = _edge_keys(faces, n)
    f = len(faces)
    slot = np.arange(3 * f)
    order = np.argsort(keys, kind="stable")
    ks = keys[order]
    out = np.tile(np.arange(f), 3)
    same = np.flatnonzero(ks[1:] == ks[:-1])
    a, b = order[same], order[same + 1]
    out[a], out[b] = slot[b] % f, slot[a] % f
    return out.reshape(3, f).T


def _smooth_labels(faces: np.ndarray, labels: np.ndarray, n: int, rounds: int = 4) -> np.ndarray:
    """Straighten chart borders: a face whose neighbours (at least two of three) agree on another
    label takes it; a few rounds remove the saw teeth that per-face labels leave."""
    nb = _face_neighbours(faces, n)
    labels = labels.copy()
    for _ in range(rounds):
        lab = labels[nb]
        pair = np.where(lab[:, 0] == lab[:, 1], lab[:, 0], np.where(lab[:, 1] == lab[:, 2], lab[:, 1],
                                                                     np.where(lab[:, 0] == lab[:, 2], lab[:, 0], -1)))
        change = (pair >= 0) & (pair != labels)
        if not change.any():
            break
        labels[change] = pair[change]
    return labels


def _merge_small(faces: np.ndarray, labels: np.ndarray, n: int, min_faces: int) -> np.ndarray:
    """Give the faces of label components smaller than ``min_faces`` the label of a neighbouring face."""
    labels = labels.copy()
    e, keys = _edge_keys(faces, n)
    face_of = np.tile(np.arange(len(faces)), 3)
    order = np.argsort(keys, kind="stable")
    ks, fs = keys[order], face_of[order]
    same = ks[1:] == ks[:-1]
    pairs = np.concatenate([np.stack([fs[:-1][same], fs[1:][same]], 1), np.stack([fs[1:][same], fs[:-1][same]], 1)])
    for _ in range(20):
        comps = _face_components(faces, labels, n)
        sizes = np.bincount(comps)
        small = sizes[comps] < min_faces
        if not small.any():
            break
        # a small component's face takes the label of a neighbour in a large component
        take = small[pairs[:, 0]] & ~small[pairs[:, 1]]
        if not take.any():
            break
        labels[pairs[take, 0]] = labels[pairs[take, 1]]
    return labels


def _symmetric(ratio: np.ndarray) -> np.ndarray:
    return np.maximum(ratio, 1.0 / np.maximum(ratio, 1e-12))


def _chart(p: np.ndarray, faces: np.ndarray, face_ids: np.ndarray, max_distortion: float,
           depth: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Flatten one genus-0 piece: ``[(face_ids, local faces, mesh vertex ids, uv at 3D scale)]``,
    halving it while the 95th percentile of its area distortion exceeds ``max_distortion``."""
    verts, local = np.unique(faces[face_ids], return_inverse=True)
    local = local.reshape(-1, 3)
    uv = _flatten_disc(p[verts], local)
    a3 = _areas3d(p[verts], local)
    a2 = signed_uv_areas(uv, local)
    uv = uv * np.sqrt(a3.sum() / a2.sum())
    ratio = (a2 / np.maximum(a3, 1e-300)) / (a2.sum() / a3.sum())
    if depth < 6 and len(face_ids) > 64 and np.percentile(_symmetric(ratio), 95) > max_distortion:
        out = []
        for piece in _halves(p, faces, face_ids):
            for disc in _split_to_discs(p, faces, piece):
                out += _chart(p, faces, disc, max_distortion, depth + 1)
        return out
    centred = uv - uv.mean(0)
    rot = np.linalg.eigh(centred.T @ centred)[1][:, ::-1]
    if np.linalg.det(rot) < 0:
        rot[:, 1] *= -1
    return [(face_ids, local, verts, centred @ rot)]


def _pack(charts: list[np.ndarray], gutter: float) -> list[np.ndarray]:
    """Shelf-pack chart UVs (each already at 3D scale) into [0, 1]^2, keeping aspect and relative scale."""
    boxes = [c.max(0) - c.min(0) for c in charts]
    total = sum(float(b[0] * b[1]) for b in boxes)
    order = sorted(range(len(charts)), key=lambda i: -boxes[i][1])
    width = max(np.sqrt(total) * 1.15, max(float(b[0]) for b in boxes))
    for _ in range(60):  # grow the strip until the shelves fit in a square
        g = gutter * width
        x = y = shelf = used = 0.0
        offsets: dict[int, tuple[float, float]] = {}
        for i in order:
            w, h = boxes[i]
            if x > 0 and x + w + g > width:
                x, y, shelf = 0.0, y + shelf + g, 0.0
            offsets[i] = (x + g, y + g)
            x += w + g
            used = max(used, x)
            shelf = max(shelf, h)
        height = y + shelf + 2 * g
        side = max(used + g, height)
        if height <= width + g:
            break
        width *= 1.05
    out = []
    for i, c in enumerate(charts):
        out.append((c - c.min(0) + np.asarray(offsets[i])) / side)
    return out


def unwrap(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray | None = None, *,
           gutter: float = 0.004, max_distortion: float = 2.5) -> UVLayout:
    """UV layout of a triangle mesh (tissue-local ``faces (F, 3)``): charts from ``labels (F,)``
    (default: one label), cut further into discs where needed, flattened without flips and packed.

    ``gutter``: empty space around each chart as a fraction of the atlas (0.004: 4 texels at 1024).
    ``max_distortion``: a chart is halved while the 95th percentile of its symmetric area distortion
    (``max(r, 1/r)`` of UV over 3D area, normalised per chart) exceeds it.
    """
    p = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if p.ndim != 2 or p.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ShapeError(f"unwrap needs vertices (V, 3) and triangles (F, 3), got {p.shape} and {f.shape}.")
    if not len(f):
        raise ParameterError("unwrap needs at least one face.")
    lab = np.zeros(len(f), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    if lab.shape != (len(f),):
        raise ShapeError(f"labels must have shape ({len(f)},) (one per face), got {lab.shape}.")
    if not max_distortion > 1.0:
        raise ParameterError(f"max_distortion must be > 1, got {max_distortion}.")
    if not 0 <= gutter < 0.1:
        raise ParameterError(f"gutter must be in [0, 0.1), got {gutter}.")
    lab = _merge_small(f, _smooth_labels(f, lab, len(p)), len(p), min_faces=16)
    comps = _face_components(f, lab, len(p))
    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for c in range(int(comps.max()) + 1):
        for disc in _split_to_discs(p, f, np.flatnonzero(comps == c)):
            pieces += _chart(p, f, disc, max_distortion)
    charts = [piece[3] for piece in pieces]
    chart_faces = [(piece[0], piece[1]) for piece in pieces]
    chart_verts = [piece[2] for piece in pieces]
    packed = _pack(charts, gutter)
    uv_all = np.concatenate(packed)
    offsets = np.cumsum([0] + [len(c) for c in packed])
    uv_faces = np.zeros_like(f)
    chart_of_face = np.zeros(len(f), dtype=np.int64)
    for k, (ids, local) in enumerate(chart_faces):
        uv_faces[ids] = local + offsets[k]
        chart_of_face[ids] = k
    return UVLayout(uv=uv_all, uv_faces=uv_faces, vertex_of_uv=np.concatenate(chart_verts),
                    chart_of_face=chart_of_face)
