"""Warp the FACE (never the bones) so that the soft-tissue thickness at the table landmarks
matches De Greef et al. 2006 and every bone vertex under the face lies at least ``clearance``
mm inside the skin.

The warp is a smooth displacement FIELD of space, a normalised Gaussian average of control
displacements u(x) = sum_k K_k(x) d_k / (sum_k K_k(x) + kappa), K_k(x) = exp(-|x - c_k|^2 /
2 sigma^2) (no overshoot, zero far from the controls), applied to the face vertices and to any
other points that must follow the face. Being a field of space and not of mesh vertices, it
moves coincident points (landmark barycentric points, the two lips of a slit) identically.

Controls c_k are skin points, each displaced along the skin normal n there:
* one per table landmark: its nearest skin point, by (thickness - table) (into the face when the
  tissue is too thick, out of it when too thin);
* one per 4 mm voxel of bone vertices under the face whose tissue cover is below ``clearance``
  (or that poke through): their nearest skin point, out by (clearance + 0.5 - cover) (the
  largest in the voxel).

A few passes, the Gaussian width going from coarse to fine (``sigmas``), each measuring again
on the warped face, then passes with the bone-cover controls alone until none is left.
"Under the face" = the nearest skin point is at least ``edge_mm`` from the face's outer
boundary (bone beyond the cut lines is not covered by this surface).
"""

from __future__ import annotations

import _mesh as M
import numpy as np
from scipy.spatial import cKDTree


def cover(face_v, face_f, pts, edge_mm=4.0):
    """Tissue cover of points under the face: (thickness = -signed distance, nearest skin point,
    outward skin normal there, covered flag)."""
    samp = M.SurfaceSampler(face_v, face_f, spacing=0.6)
    sd, i = samp.signed(pts)
    # the face's outer boundary only (the mouth slit is an inner loop, the lips cover the teeth)
    loops = sorted(M.boundary_loops(face_f), key=len)[-1:]
    bpts = np.zeros((1, 3)) + 1e9
    # densify the boundary polyline so the edge test does not depend on edge length
    seg = []
    for lp in loops:
        a, b = face_v[lp], face_v[np.roll(lp, -1)]
        for t in np.linspace(0, 1, 5, endpoint=False):
            seg.append(a + t * (b - a))
    if seg:
        bpts = np.vstack(seg)
    dist_edge, _ = cKDTree(bpts).query(samp.points[i])
    return -sd, samp.points[i], samp.normals[i], dist_edge >= edge_mm


def _controls(face_v, face_f, lm_pts, lm_table, bone_v, clearance, voxel=4.0):
    th, q, n, ok = cover(face_v, face_f, lm_pts)
    c_l = q[ok]
    d_l = ((lm_table - th)[:, None] * n)[ok]  # tissue too thick -> the skin moves inward
    tb, qb, nb, okb = cover(face_v, face_f, bone_v)
    bad = okb & (tb < clearance)
    c_b, d_b = np.zeros((0, 3)), np.zeros((0, 3))
    if bad.any():
        need = clearance + 0.5 - tb[bad]
        key = np.floor(qb[bad] / voxel).astype(np.int64)
        order = np.lexsort((-need, key[:, 2], key[:, 1], key[:, 0]))
        _, first = np.unique(key[order], axis=0, return_index=True)
        pick = order[first]
        c_b = qb[bad][pick]
        d_b = need[pick, None] * nb[bad][pick]
    return np.vstack([c_l, c_b]), np.vstack([d_l, d_b]), int(bad.sum()), int(len(c_l))


def _field(c, dsp, sigma, kappa):
    """u(x) = sum_k K_k(x) d_k / (sum_k K_k(x) + kappa), K_k = exp(-|x - c_k|^2 / 2 sigma^2): a
    normalised (Shepard) Gaussian average -- never larger than the largest control, no
    overshoot between close controls that disagree, zero far from every control."""
    tree = cKDTree(c)

    def u(x):
        out = np.zeros_like(x)
        wsum = np.zeros(len(x))
        for i, nb in enumerate(tree.query_ball_point(x, 3.5 * sigma)):
            if nb:
                k = np.exp(-((x[i] - c[nb]) ** 2).sum(1) / (2 * sigma ** 2))
                out[i] = k @ dsp[nb]
                wsum[i] = k.sum()
        return out / (wsum + kappa)[:, None]

    return u


def warp_face(face_v, face_f, follow: list, lm_pts, lm_table, bone_v, clearance=2.0,
              sigmas=(20.0, 15.0, 12.0, 10.0, 8.0, 8.0, 6.0, 6.0, 5.0, 5.0), kappa=0.2,
              cleanup=8):
    """Returns the warped face vertices, the warped ``follow`` arrays and a pass log. After the
    passes with all controls, up to ``cleanup`` passes (sigma 4 mm) with the bone-cover
    controls only, until no bone vertex under the face is left with less than ``clearance``."""
    fv = np.asarray(face_v, float).copy()
    fol = [np.asarray(p, float).copy() for p in follow]
    log = []
    passes = [(s, True) for s in sigmas] + [(4.0, False)] * cleanup
    for sig, with_lm in passes:
        c, dsp, n_bad, n_lm = _controls(fv, face_f, lm_pts, lm_table, bone_v, clearance)
        th, _, _, ok = cover(fv, face_f, lm_pts)
        log.append({"sigma_mm": sig, "landmarks": with_lm, "mean_abs_residual_mm":
                    round(float(np.abs(th - lm_table)[ok].mean()), 3),
                    "bone_vertices_below_clearance": n_bad, "controls": int(len(c))})
        if not with_lm:
            c, dsp = c[n_lm:], dsp[n_lm:]
            if n_bad == 0:
                break
        u = _field(c, dsp, sig, kappa)
        fv = fv + u(fv)
        fol = [p + u(p) for p in fol]
    th, _, _, ok = cover(fv, face_f, lm_pts)
    tb, _, _, okb = cover(fv, face_f, bone_v)
    log.append({"final_mean_abs_residual_mm": round(float(np.abs(th - lm_table)[ok].mean()), 3),
                "min_bone_cover_mm": round(float(tb[okb].min()), 3)})
    return fv, fol, log


def smoothness(v0, v1, f):
    """Max change of the dihedral angle over interior edges (deg), max dihedral angle after
    (deg), and the number of triangles whose normal turned by more than 90 deg."""
    def normals(v):
        n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)

    n0, n1 = normals(v0), normals(v1)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    fid = np.tile(np.arange(len(f)), 3)
    key = np.sort(e, axis=1)
    order = np.lexsort((key[:, 1], key[:, 0]))
    ks, fs = key[order], fid[order]
    same = (ks[1:] == ks[:-1]).all(1)
    a, b = fs[:-1][same], fs[1:][same]

    def ang(n):
        return np.degrees(np.arccos(np.clip((n[a] * n[b]).sum(1), -1, 1)))

    d0, d1 = ang(n0), ang(n1)
    return {"max_dihedral_change_deg": round(float(np.abs(d1 - d0).max()), 2),
            "max_dihedral_after_deg": round(float(d1.max()), 2),
            "max_dihedral_before_deg": round(float(d0.max()), 2),
            "flipped_triangles": int(((n0 * n1).sum(1) < 0).sum())}
