"""Filling closed triangle surfaces on a regular grid by scan-line crossing counts.

Every column of samples along +z collects the signed crossings of the triangles above it
(point-in-triangle by edge functions with a top-left tie rule, so a column through a shared edge
or vertex counts it once) and a running sum gives the winding number of every sample: one pass
over the triangles plus one over the samples, instead of samples x triangles for a generalised
winding number. A sample counts as inside when the count from below AND the count from above are
both non-zero, so a column that slips through a small hole does not fill the rest of its column.
:func:`cap_holes` closes open sheets (a fan from each boundary loop to its centroid).
"""

from __future__ import annotations

import numpy as np

__all__ = ["cap_holes", "fill_columns"]


def fill_columns(vertices: np.ndarray, faces: np.ndarray, origin: np.ndarray, step: float | np.ndarray,
                  shape: tuple[int, int, int]) -> np.ndarray:
    """Inside mask ``shape`` of sample ``origin + step * (i, j, k)`` for a closed surface (see module doc);
    ``step``: mm between samples, one number or one per axis ``(3,)``."""
    nx, ny, nz = shape
    g = (vertices[faces] - origin) / step  # (F, 3, 3) in sample units
    a, b, c = g[:, 0], g[:, 1], g[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    keep = area != 0
    lo = np.maximum(np.ceil(g[:, :, :2].min(1)), 0).astype(np.int64)
    hi = np.minimum(np.floor(g[:, :, :2].max(1)), [nx - 1, ny - 1]).astype(np.int64)
    keep &= np.all(hi >= lo, axis=1)
    a, b, c, area, lo, hi = a[keep], b[keep], c[keep], area[keep], lo[keep], hi[keep]
    flip = area < 0  # make every projected triangle counter-clockwise; the crossing keeps its sign
    b, c = np.where(flip[:, None], c, b), np.where(flip[:, None], b, c)
    sign = np.where(flip, -1, 1)
    span = hi - lo + 1
    count = span[:, 0] * span[:, 1]
    tri = np.repeat(np.arange(len(count)), count)
    local = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    px = (lo[tri, 0] + local // span[tri, 1]).astype(np.float64)
    py = (lo[tri, 1] + local % span[tri, 1]).astype(np.float64)
    inside = np.ones(len(tri), dtype=bool)
    weights = []
    for u, v in ((b, c), (c, a), (a, b)):  # the weight of the vertex opposite each edge
        ux, uy, dx, dy = u[tri, 0], u[tri, 1], v[tri, 0] - u[tri, 0], v[tri, 1] - u[tri, 1]
        w = dx * (py - uy) - dy * (px - ux)
        top_left = (dy < 0) | ((dy == 0) & (dx < 0))  # the edge a shared edge's owner is decided by
        inside &= (w > 0) | ((w == 0) & top_left)
        weights.append(w)
    tri, px, py = tri[inside], px[inside].astype(np.int64), py[inside].astype(np.int64)
    w0, w1, w2 = (w[inside] for w in weights)
    zc = (w0 * a[tri, 2] + w1 * b[tri, 2] + w2 * c[tri, 2]) / np.abs(area[tri])
    k = np.clip(np.floor(zc).astype(np.int64) + 1, 0, nz)  # first sample above the crossing
    flat = (px * ny + py) * (nz + 1) + k
    delta = np.bincount(flat, weights=sign[tri], minlength=nx * ny * (nz + 1)).reshape(nx, ny, nz + 1)
    below = np.cumsum(delta, axis=2)
    above = below - below[:, :, -1:]
    return (np.rint(below[:, :, :nz]) != 0) & (np.rint(above[:, :, :nz]) != 0)


def cap_holes(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Close every boundary loop with a fan to its centroid (wound against the loop's faces)."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    key = np.sort(edges, axis=1)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    open_edges = edges[counts[inverse.ravel()] == 1]
    if len(open_edges) == 0:
        return vertices, faces
    nxt = {int(u): int(v) for u, v in open_edges}
    new_v, new_f = [vertices], [faces]
    n = len(vertices)
    while nxt:
        start = next(iter(nxt))
        loop = [start]
        while True:
            step = nxt.pop(loop[-1], None)
            if step is None or step == start:
                break
            loop.append(step)
        ring = np.asarray(loop)
        new_v.append(vertices[ring].mean(0, keepdims=True))
        new_f.append(np.stack([np.roll(ring, -1), ring, np.full(len(ring), n)], axis=1))
        n += 1
    return np.concatenate(new_v), np.concatenate(new_f)
