"""Small mesh helpers for the head geometry build (build-time only: numpy, scipy, trimesh)."""

from __future__ import annotations

import numpy as np
import trimesh
from scipy.spatial import cKDTree


def to_trimesh(v: np.ndarray, f: np.ndarray) -> trimesh.Trimesh:
    return trimesh.Trimesh(np.asarray(v, dtype=np.float64), np.asarray(f, dtype=np.int64),
                           process=False)


def basic_clean(m: trimesh.Trimesh, keep_largest: bool = True) -> trimesh.Trimesh:
    """Merge coincident vertices, drop degenerate and duplicate faces, optionally keep the
    largest connected piece, drop unreferenced vertices."""
    m = m.copy()
    m.merge_vertices()
    a = m.area_faces
    ok = a > 1e-10
    f = np.sort(m.faces, axis=1)
    _, first = np.unique(f, axis=0, return_index=True)
    uniq = np.zeros(len(m.faces), bool)
    uniq[first] = True
    m.update_faces(ok & uniq)
    m.remove_unreferenced_vertices()
    if keep_largest:
        parts = m.split(only_watertight=False)
        if len(parts) > 1:
            m = max(parts, key=lambda c: c.area)
    return m


def boundary_loops(f: np.ndarray) -> list[np.ndarray]:
    """Ordered vertex loops of the boundary edges (edges used by exactly one face)."""
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    key = np.sort(e, axis=1)
    _, inv, cnt = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    be = e[cnt[inv.ravel()] == 1]  # directed as in their face
    nxt = {int(a): int(b) for a, b in be}
    loops, seen = [], set()
    for start in list(nxt):
        if start in seen:
            continue
        loop, cur = [], start
        while cur not in seen and cur in nxt:
            seen.add(cur)
            loop.append(cur)
            cur = nxt[cur]
        loops.append(np.array(loop))
    return loops


def cap_loop(v: np.ndarray, f: np.ndarray, loop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Close one boundary loop with a fan around its centroid (winding follows the loop so the
    cap continues the surface orientation)."""
    c = v[loop].mean(0)
    ci = len(v)
    nf = [[loop[(i + 1) % len(loop)], loop[i], ci] for i in range(len(loop))]
    return np.vstack([v, c]), np.vstack([f, np.array(nf)])


def nonmanifold_edge_count(f: np.ndarray) -> int:
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, cnt = np.unique(e, axis=0, return_counts=True)
    return int((cnt > 2).sum())


def vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # area weighted
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def bary_point(v: np.ndarray, f: np.ndarray, face: int, bary) -> np.ndarray:
    return np.asarray(bary, float) @ v[f[face]]


def vertex_to_bary(f: np.ndarray, vid: int) -> tuple[int, list[float]]:
    """A vertex written as a barycentric point of one face that uses it."""
    fi = int(np.nonzero((f == vid).any(1))[0][0])
    w = [0.0, 0.0, 0.0]
    w[int(np.nonzero(f[fi] == vid)[0][0])] = 1.0
    return fi, w


def point_to_bary(v: np.ndarray, f: np.ndarray, p: np.ndarray) -> tuple[int, list[float]]:
    """Closest point of the mesh to ``p`` as (face, barycentric weights)."""
    m = to_trimesh(v, f)
    q, _, fi = trimesh.proximity.closest_point(m, p[None])
    fi = int(fi[0])
    w = trimesh.triangles.points_to_barycentric(v[f[fi]][None], q)[0]
    w = np.clip(w, 0, None)
    w = w / w.sum()
    return fi, [float(x) for x in w]


class SurfaceSampler:
    """Dense point samples with normals of a surface, for fast nearest / signed distances."""

    def __init__(self, v: np.ndarray, f: np.ndarray, spacing: float = 0.5, seed: int = 0):
        m = to_trimesh(v, f)
        n_pts = int(m.area / (spacing ** 2)) + len(v)
        pts, fi = trimesh.sample.sample_surface_even(m, n_pts, seed=seed) if False else \
            trimesh.sample.sample_surface(m, n_pts, seed=seed)
        self.points = np.vstack([v, pts])
        vn = vertex_normals(v, f)
        # interpolate vertex normals at the samples so the sign is smooth across edges
        w = trimesh.triangles.points_to_barycentric(v[f[fi]], pts)
        sn = np.einsum("nk,nkd->nd", w, vn[f[fi]])
        sn /= np.maximum(np.linalg.norm(sn, axis=1, keepdims=True), 1e-12)
        self.normals = np.vstack([vn, sn])
        # balanced_tree=False: the median-split build gives pathologically slow queries on
        # these surface samples (measured 100x slower)
        self.tree = cKDTree(self.points, balanced_tree=False, compact_nodes=False)

    def signed(self, p: np.ndarray, cap: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
        """(signed distance along the nearest sample's normal, nearest sample index). Points
        farther than ``cap`` from every sample get distance -inf and index -1 (a finite cap
        keeps the k-d tree search short for points deep inside)."""
        d, i = self.tree.query(p, distance_upper_bound=cap)
        far = ~np.isfinite(d)
        ii = np.where(far, 0, i)
        s = np.einsum("nd,nd->n", p - self.points[ii], self.normals[ii])
        out = np.where(far, -np.inf, np.sign(s) * d)
        return out, np.where(far, -1, i)


def section_profile(m, x0=0.0, step=0.25):
    """Densified points of the mesh's section with the plane x = x0, with their face ids."""
    segs, fids = trimesh.intersections.mesh_plane(m, [1, 0, 0], [x0, 0, 0], return_faces=True)
    pts, ids = [], []
    for (a, b), fi in zip(segs, fids):
        n = max(2, int(np.linalg.norm(b - a) / step) + 1)
        t = np.linspace(0, 1, n)[:, None]
        pts.append(a + t * (b - a))
        ids.append(np.full(n, fi))
    return np.vstack(pts), np.concatenate(ids)
