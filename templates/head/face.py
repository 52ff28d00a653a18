"""Face surface from pydeface's mean head T1 MRI (``mean_reg2mean.nii.gz``, MIT).

Steps (all in the image's world frame, mm, RAS+ from the NIfTI affine):
1. threshold = the valley of the smoothed grey-level histogram between the air mode and the
   soft-tissue mode (Otsu sits inside the tissue on this image: it is reported for reference);
2. Gaussian blur (sigma 1 voxel) against the averaging noise; the head mask is closed (4 mm
   ball) and hole-filled, and its 5-voxel erosion is forced to "tissue" so nostrils, airways and
   the mouth cavity give no inner surfaces; marching cubes at the threshold; affine to world mm;
   largest component;
3. crop to the face (in front of the ears, forehead to the lower border of the image -- the
   image stops about 10 mm below the lower lip, so the MRI has NO chin: lower_face.py adds it);
4. (build_geometry + lower_face) the face is re-sampled as one ray-graph surface with the chin
   rebuilt from the mandible; ``remesh`` decimates it to ~10k vertices;
5. soft-tissue landmarks by rules on the midline profile and the front depth map;
6. a slit along the stomion line so the lips can part (see ``cut_mouth``).
"""

from __future__ import annotations

import gzip
import heapq

import _mesh as M
import _sources as S
import numpy as np
import trimesh
from scipy import ndimage


def load_mri():
    import nibabel as nib

    img = nib.Nifti1Image.from_bytes(gzip.decompress(S.read_member("pydeface", S.MRI_MEMBER)))
    return np.asarray(img.get_fdata(), np.float32), np.asarray(img.affine, float)


def skin_threshold(vol: np.ndarray) -> dict:
    edges = np.arange(0, 402, 2.0)
    h, _ = np.histogram(vol, bins=edges)
    hs = ndimage.gaussian_filter1d(h.astype(float), 2)
    air = int(np.argmax(hs[:15]))
    tis = 15 + int(np.argmax(hs[15:]))
    val = air + int(np.argmin(hs[air:tis]))
    from skimage.filters import threshold_otsu

    return {"air_mode": float(edges[air] + 1), "tissue_mode": float(edges[tis] + 1),
            "valley": float(edges[val] + 1), "otsu": float(threshold_otsu(vol))}


def skin_field(vol, level, sigma=1.0):
    """The smoothed intensity with the head's interior forced above ``level`` (no nostril,
    airway or mouth-cavity surfaces) and the lower image border closed: its ``level`` set is
    the skin."""
    ds = ndimage.gaussian_filter(vol, sigma)
    mask = ds > level
    lab, _ = ndimage.label(mask)
    mask = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    r = 4
    g = np.indices((2 * r + 1,) * 3) - r
    ball = (g ** 2).sum(0) <= r * r
    closed = ndimage.binary_closing(np.pad(mask, r + 1), ball)[r + 1:-r - 1, r + 1:-r - 1,
                                                              r + 1:-r - 1]
    inner = ndimage.binary_erosion(ndimage.binary_fill_holes(closed), iterations=r + 1)
    v2 = np.where(inner, np.maximum(ds, level + 50), ds)
    # only the head: everything outside its (dilated) component stays below the level (the mean
    # image has faint ghost blobs in front of the eyes that rays would otherwise hit)
    keep = ndimage.binary_dilation(mask | inner, iterations=2)
    v2 = np.where(keep, v2, np.minimum(v2, level - 1.0))
    v2[:, :, 0] = 0  # close the lower image border
    return v2


def skin_surface(vol, aff, level, sigma=1.0, field=None):
    from skimage import measure

    v2 = skin_field(vol, level, sigma) if field is None else field
    v, f, _, _ = measure.marching_cubes(v2, level, step_size=1)
    v = v @ aff[:3, :3].T + aff[:3, 3]
    m = M.basic_clean(M.to_trimesh(v, f[:, ::-1]), keep_largest=True)
    if m.volume < 0:
        m.invert()
    return m


def crop_face(m: trimesh.Trimesh) -> tuple[trimesh.Trimesh, dict]:
    v = np.asarray(m.vertices)
    prn = v[np.argmax(v[:, 1])]
    # ears: the most lateral skin points at the height of the nose (helix), per side
    band = np.abs(v[:, 2] - (prn[2] + 30)) < 30
    ear_y = [v[band][np.argmax(s * v[band, 0]), 1] for s in (1, -1)]
    y_cut = max(ear_y) + 12.0       # just in front of the ears (tragus)
    z_top = prn[2] + 115.0          # forehead, about the hairline (nasion + ~75 mm)
    z_bot = v[:, 2].min() + 4.0     # drop the rim at the lower image border
    c = np.asarray(m.triangles_center)
    keep = (c[:, 1] > y_cut) & (c[:, 2] < z_top) & (c[:, 2] > z_bot)
    out = m.copy()
    out.update_faces(keep)
    out.remove_unreferenced_vertices()
    out = max(out.split(only_watertight=False), key=lambda p: p.area)
    return out, {"y_cut": y_cut, "z_top": z_top, "z_bottom": z_bot}


def remesh(m: trimesh.Trimesh, n_vertices=10000, taubin_iters=10):
    """Quadric-error decimation (fast-simplification) of the dense ray-graph surface to about
    ``n_vertices``, then Taubin smoothing. Decimation keeps the input's topology: one manifold
    disc with one boundary loop (clustering remeshers such as pyacvd leave bow-tie vertices and
    small holes along an open boundary). Triangles are denser where the face is curved (nose,
    lips, eyes) and coarser on the forehead and cheeks."""
    import fast_simplification

    v, f = fast_simplification.simplify(
        np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.int32),
        target_reduction=1.0 - n_vertices / len(m.vertices))
    r = M.basic_clean(M.to_trimesh(np.asarray(v, float), np.asarray(f)), keep_largest=True)
    trimesh.smoothing.filter_taubin(r, lamb=0.5, nu=-0.53, iterations=taubin_iters)
    # orient outward (away from the head centre, which lies behind the face)
    c = np.asarray(r.vertices).mean(0) - np.array([0, 80.0, 0])
    if np.mean(np.einsum("nd,nd->n", r.face_normals, r.triangles_center - c)) < 0:
        r.invert()
    return r


# ------------------------------------------------------------------------------- landmarks
def _pick(prof, d, zwin):
    p, ids = prof
    sel = (p[:, 2] >= zwin[0]) & (p[:, 2] <= zwin[1])
    if not sel.any():
        raise RuntimeError(f"empty face profile window {zwin}")
    k = np.nonzero(sel)[0][np.argmax(p[sel] @ np.asarray(d, float))]
    return p[k], int(ids[k])


def _unused_groove(m, x, zc, half=8.0):
    """Deepest (most posterior) profile point of the section x = const within zc +- half mm and
    its depth below the lower of the two lips (the maxima above and below it)."""
    p, ids = M.section_profile(m, x)
    sel = (np.abs(p[:, 2] - zc) < half) & (p[:, 1] > p[:, 1].max() - 60)
    if sel.sum() < 5:
        return None
    q, qi = p[sel], ids[sel]
    k = np.argmin(q[:, 1])
    up, lo = q[q[:, 2] > q[k, 2]], q[q[:, 2] < q[k, 2]]
    if len(up) == 0 or len(lo) == 0:
        return None
    depth = min(up[:, 1].max(), lo[:, 1].max()) - q[k, 1]
    return q[k], int(qi[k]), float(depth)


def _concavity(prof, zwin, step=1.0):
    """Point of the profile within zwin where the anterior outline y(z) bends most concavely
    (largest second difference of the per-height maximum y)."""
    p, ids = prof
    zs = np.arange(zwin[0], zwin[1] + step, step)
    ys, ks = [], []
    for z in zs:
        sel = np.nonzero(np.abs(p[:, 2] - z) < step / 2)[0]
        k = sel[np.argmax(p[sel, 1])]
        ys.append(p[k, 1])
        ks.append(k)
    ys = np.array(ys)
    c = ys[:-2] + ys[2:] - 2 * ys[1:-1]
    k = ks[1 + int(np.argmax(c))]
    return p[k], int(ids[k])


def soft_landmarks(hi: trimesh.Trimesh, m: trimesh.Trimesh,
                   x_chin: float | None = None) -> tuple[dict, np.ndarray]:
    """Rules on the dense surface ``hi`` (sharper profile); each point is then snapped to the
    remeshed face ``m`` as (face, barycentric). ``x_chin``: x of the chin's midline (the bony
    midline; the MRI face is not symmetric); when given, the chin points are added."""
    v = np.asarray(hi.vertices)
    pts = {}
    prn_v = int(np.argmax(v[:, 1]))
    x0 = float(v[prn_v, 0])  # midline of the average face: through the nose tip
    prof = M.section_profile(hi, x0)
    front = prof[0][:, 1] > v[prn_v, 1] - 45  # anterior outline only
    prof = (prof[0][front], prof[1][front])
    prn, _ = _pick(prof, [0, 1, 0], (v[prn_v, 2] - 3, v[prn_v, 2] + 3))
    pts["pronasale"] = prn
    pts["soft_nasion"] = _pick(prof, [0, -1, 0], (prn[2] + 22, prn[2] + 50))[0]
    n = pts["soft_nasion"]
    pts["soft_glabella"] = _pick(prof, [0, 1, 0], (n[2] + 8, n[2] + 35))[0]
    # subnasale: the sharpest concave bend below the nose tip
    sn = _concavity(prof, (prn[2] - 20, prn[2] - 6))[0]
    pts["subnasale"] = sn
    # labrale superius: most anterior point of the upper lip, 4-14 mm below subnasale
    ls = _pick(prof, [0, 1, 0], (sn[2] - 14, sn[2] - 4))[0]
    pts["labrale_superius"] = ls
    # stomion: the sharpest concave bend 6-20 mm below labrale superius (the lower lip is
    # retruded in this average face and the lips are fused: the bend marks their junction)
    st = _concavity(prof, (ls[2] - 20, ls[2] - 6))[0]
    pts["stomion"] = st
    li = _pick(prof, [0, 1, 0], (max(st[2] - 8, v[:, 2].min() + 2), st[2] - 1))[0]
    pts["labrale_inferius"] = li
    if x_chin is not None:
        # chin, on the midline section through the bony chin (front outline: within 70 mm
        # behind the nose tip): sublabiale = deepest point 4-25 mm below labrale inferius;
        # soft pogonion = most anterior point within 30 mm below it; soft menton = lowest point
        # within 35 mm behind soft pogonion; soft gnathion = the outline point farthest along
        # (0, 1, -1) between the two (Farkas 1994 definitions)
        pc, ic = M.section_profile(hi, x_chin)
        sel = pc[:, 1] > v[prn_v, 1] - 70
        cprof = (pc[sel], ic[sel])
        sl = _pick(cprof, [0, -1, 0], (li[2] - 25, li[2] - 4))[0]
        pts["sublabiale"] = sl
        pg = _pick(cprof, [0, 1, 0], (sl[2] - 30, sl[2] - 3))[0]
        pts["soft_pogonion"] = pg
        p2, i2 = cprof
        near = p2[:, 1] > pg[1] - 35
        me = _pick((p2[near], i2[near]), [0, 0, -1], (-1e9, pg[2]))[0]
        pts["soft_menton"] = me
        pts["soft_gnathion"] = _pick(cprof, [0, 1, -1], (me[2], pg[2]))[0]
    # mouth corners: the mean face shows no commissures, so they are placed at the adult mean
    # half mouth width, 25 mm (ch-ch ~ 50 mm, Farkas LG, Anthropometry of the Head and Face,
    # 1994), 2 mm above the stomion, projected onto the skin from the front
    for s, tag in ((1, "R"), (-1, "L")):
        o = np.array([x0 + s * 25.0, 300.0, st[2] + 2.0])
        loc, _, _ = hi.ray.intersects_location(o[None], np.array([[0, -1.0, 0]]),
                                               multiple_hits=False)
        pts[f"cheilion_{tag}"] = loc[0]
    # eyes: medial canthus = deepest skin point beside the nasal bridge near the soft
    # nasion (within +-5 mm of 4 mm below it); lateral canthus = 30 mm further out (palpebral
    # fissure ~ 30 mm, Farkas 1994)
    for s, tag in ((1, "R"), (-1, "L")):
        sel = (s * (v[:, 0] - x0) > 10) & (s * (v[:, 0] - x0) < 24) & \
              (np.abs(v[:, 2] - (n[2] - 4)) < 5) & (v[:, 1] > n[1] - 40)
        idx = np.nonzero(sel)[0]
        en = v[idx[np.argmin(v[idx, 1])]]
        pts[f"endocanthion_{tag}"] = en
        o = np.array([en[0] + s * 30.0, 300.0, en[2] + 1.0])
        loc, _, _ = hi.ray.intersects_location(o[None], np.array([[0, -1.0, 0]]),
                                               multiple_hits=False)
        pts[f"exocanthion_{tag}"] = loc[0]
    vr, fr = np.asarray(m.vertices), np.asarray(m.faces)
    L = {}
    for k, p in pts.items():
        fi, w = M.point_to_bary(vr, fr, p)
        L[k] = {"mesh": "face", "face": fi, "bary": w}
    groove = np.array([pts["cheilion_R"][[0, 2]], st[[0, 2]], pts["cheilion_L"][[0, 2]]])
    return L, groove[np.argsort(groove[:, 0])]


# ------------------------------------------------------------------------------- mouth slit
def cut_mouth(m: trimesh.Trimesh, L: dict, groove: np.ndarray):
    """Cut the skin along the stomion line between the two cheilions.

    The cut path is the mesh-edge shortest path from cheilion R to cheilion L with edge costs
    length * (1 + (dz / 1 mm)^2), dz = the height of the edge midpoint above/below the lip
    groove curve measured in the profile sections (so the path follows the groove). Every
    interior path vertex is duplicated; faces that touch the path from below (centroid under the
    path) are re-pointed to the duplicates. The lips then coincide at rest but are separate
    sheets (upper lip boundary = path, lower lip boundary = duplicates); the corners stay joined.
    """
    v, f = np.asarray(m.vertices).copy(), np.asarray(m.faces).copy()

    def corner(tag):
        d = L[f"cheilion_{tag}"]
        p = M.bary_point(v, f, d["face"], d["bary"])
        return int(f[d["face"]][np.argmax(d["bary"])]), p

    a, _ = corner("R")
    b, _ = corner("L")
    gx, gz = groove[:, 0], groove[:, 1]
    e = np.asarray(m.edges_unique)
    mid = v[e].mean(1)
    dz = mid[:, 2] - np.interp(mid[:, 0], gx, gz)
    w = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1) * (1 + dz ** 2)
    adj = [[] for _ in range(len(v))]
    for (i, j), c in zip(e, w):
        adj[i].append((j, c))
        adj[j].append((i, c))
    dist = np.full(len(v), np.inf)
    prev = np.full(len(v), -1)
    dist[a] = 0
    pq = [(0.0, a)]
    while pq:
        dcur, i = heapq.heappop(pq)
        if i == b:
            break
        if dcur > dist[i]:
            continue
        for j, c in adj[i]:
            if dcur + c < dist[j]:
                dist[j], prev[j] = dcur + c, i
                heapq.heappush(pq, (dist[j], j))
    path = [b]
    while path[-1] != a:
        path.append(int(prev[path[-1]]))
    path = path[::-1]
    pz = v[path]
    order = np.argsort(pz[:, 0])
    inner = path[1:-1]
    dup = {}
    cen = v[f].mean(1)
    below = cen[:, 2] < np.interp(cen[:, 0], pz[order, 0], pz[order, 2])
    for pv_ in inner:
        dup[pv_] = len(v) + len(dup)
    newv = v[inner]
    for fi in np.nonzero(np.isin(f, inner).any(1) & below)[0]:
        f[fi] = [dup.get(int(k), int(k)) for k in f[fi]]
    v = np.vstack([v, newv])
    upper = np.array(path)
    lower = np.array([path[0]] + [dup[k] for k in inner] + [path[-1]])
    return v, f, upper, lower
