"""A closed, smooth hand skin around the bones, from an implicit (signed-distance-like) field.

Build-time helper for ``build_geometry.py``; everything is in the hand frame (mm, +x radial,
+y distal, +z palmar). The field is a smooth union of

* one anisotropic offset surface per bone: the set of points at distance t(u) from the bone,
  where u is the direction from the nearest bone point and t grows from the dorsal to the palmar
  side (and beyond the tip of the distal phalanges, for the pulp);
* a palm block: the convex hull of the metacarpals 2-5 and the carpals, every hull plane pushed
  out by a thickness that depends on its normal (thin dorsally, thick palmarly, up to the web
  distally);
* a first-web block: the convex hull of the thumb and index metacarpals (and the trapezium /
  trapezoid), for the adductor pollicis / first dorsal interosseous web;

cut flat at the wrist. Fingers are united with the palm only (never with each other), and each
finger is clipped by the bisecting planes to its neighbours so the fingers stay apart. Then a
Gaussian blur, marching cubes (scikit-image), Taubin smoothing and quadric decimation.

Soft-tissue thicknesses (mm) are the targets given for this template (not fitted to one
published data set): dorsal hand 3-5 mm, palm over the metacarpals 8-15 mm (palmar fascia, flexor
tendons, lumbricals), fingers 3 mm dorsal / 5-6 mm palmar, pulps thicker palmar and 4-5 mm at
the tip. The measured figures are in the build report.
"""

from __future__ import annotations

import time

import numpy as np

VOXEL = 0.7  # mm
BLUR_SIGMA = 1.0  # mm
TARGET_SKIN_VERTS = 6000  # NIMBLE: 5,990

# (dorsal, palmar, exponent, tip) thickness per bone kind; t(c) = d + (p - d) * ((1 + c) / 2) ** e,
# c = cos(angle between the outward direction and the bone's palmar direction). ``tip`` is added
# along the long axis beyond the distal end (pulp/nail bed of the distal phalanges).
THICK = {
    "carpal": (4.5, 11.0, 2.0, 0.0),
    "met": (3.5, 9.0, 2.0, 0.0),
    "met1": (4.0, 11.0, 1.5, 0.0),  # thenar eminence
    "met5": (3.5, 9.0, 1.5, 0.0),  # hypothenar
    "pro": (3.3, 5.8, 1.5, 0.0),
    "int": (3.1, 5.3, 1.5, 0.0),
    "dis": (2.7, 8.0, 2.0, 2.5),
}
PALM_HULL = (3.0, 7.0, 2.0)  # dorsal, palmar, exponent for the palm hull planes
PALM_WEB = 5.0  # extra push of the distal-facing palm planes: web commissures distal of the MCPs
THUMB_WEB_HULL = (3.0, 6.0, 1.0)
FINGER_GAP = 1.0  # mm kept between neighbouring fingers (they touch in the rest pose otherwise)
WRIST_MARGIN = 6.0  # mm of forearm kept proximal to the most proximal carpal point


def _polyline_distance(p: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Distance from points (N, 3) to a polyline (K, 3)."""
    out = np.full(len(p), np.inf)
    for a, b in zip(poly[:-1], poly[1:]):
        ab = b - a
        t = np.clip((p - a) @ ab / (ab @ ab), 0.0, 1.0)
        np.minimum(out, np.linalg.norm(p - a - t[:, None] * ab, axis=1), out=out)
    return out


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (blend width k)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _sample_with_normals(v, f, n, seed):
    import trimesh
    tm = trimesh.Trimesh(v, f, process=False)
    pts, fid = trimesh.sample.sample_surface(tm, n, seed=seed)
    return np.concatenate([pts, tm.vertices]), np.concatenate([tm.face_normals[fid], tm.vertex_normals])


def _bone_field(grid_pts, samples, normals, palmar, long_axis, tip_point, kind, reach, big):
    """Anisotropic offset field of one bone at ``grid_pts`` (N, 3); ``big`` beyond ``reach``."""
    from scipy.spatial import cKDTree
    d_, p_, e_, tip = THICK[kind]
    dist, idx = cKDTree(samples).query(grid_pts, distance_upper_bound=reach, workers=-1)
    far = ~np.isfinite(dist)
    idx[far] = 0
    dist[far] = reach
    q = samples[idx]
    diff = grid_pts - q
    sign = np.where((diff * normals[idx]).sum(1) < 0, -1.0, 1.0)
    u = diff / np.maximum(dist, 1e-9)[:, None]
    c = np.clip(u @ palmar, -1.0, 1.0)
    t = d_ + (p_ - d_) * ((1 + c) / 2) ** e_
    if tip > 0:
        beyond = np.clip((grid_pts - tip_point) @ long_axis + 3.0, 0, None) / 3.0
        t = t + tip * np.clip(u @ long_axis, 0, 1) ** 2 * np.minimum(beyond, 1.0)
    out = sign * dist - t
    out[far] = big
    return out


def _hull_field(grid_pts, hull_pts, thick, palmar, distal=None, web=0.0):
    """Convex hull of ``hull_pts`` with each face plane pushed out by a normal-dependent offset."""
    from scipy.spatial import ConvexHull
    h = ConvexHull(hull_pts)
    n, off = h.equations[:, :3], h.equations[:, 3]  # n . x + off <= 0 inside
    # merge near-duplicate planes to keep the max() cheap
    key = np.round(np.c_[n * 50, off / 2], 0)
    _, keep = np.unique(key, axis=0, return_index=True)
    n, off = n[keep], off[keep]
    d_, p_, e_ = thick
    t = d_ + (p_ - d_) * ((1 + n @ palmar) / 2) ** e_
    if distal is not None and web > 0:
        t = t + web * np.clip(n @ distal, 0, None) ** 4
    out = np.full(len(grid_pts), -np.inf)
    for i in range(len(n)):
        np.maximum(out, grid_pts @ n[i] + off[i] - t[i], out=out)
    return out


def build_skin(per_bone, joints, joint_names, src_meshes=None, seed=0):
    """per_bone: {bone id: (verts (V, 3), faces (F, 3))} in the hand frame (mm); joints (25, 3).
    Returns {"verts", "faces", "report"}."""
    import fast_simplification
    import trimesh
    from scipy import ndimage
    from skimage import measure

    t0 = time.time()
    jn = {n: i for i, n in enumerate(joint_names)}
    bone_names = ["carpal", "met1", "pro1", "dis1"] + [f"{k}{d}" for d in range(2, 6)
                                                       for k in ("met", "pro", "int", "dis")]
    z_hand = np.array([0.0, 0.0, 1.0])

    # bone long axes and palmar directions
    info = {}
    for b, name in enumerate(bone_names):
        v, f = per_bone[b]
        if b == 0:
            info[b] = dict(kind="carpal", palmar=z_hand, long=np.array([0.0, 1.0, 0.0]), tip=None)
            continue
        j0 = joints[jn[name]]
        nxt = joint_names[jn[name] + 1]
        j1 = joints[jn[nxt]]
        long = _unit(j1 - j0)
        # palmar = perpendicular to the long axis, toward the palm. For fingers: hand +z.
        # For the thumb, whose ray is pronated, use the palm-facing side: toward the centroid of
        # the index/middle metacarpal heads, blended with hand +z.
        if name in ("met1", "pro1", "dis1"):
            target = 0.5 * (joints[jn["pro2"]] + joints[jn["pro3"]]) + np.array([0, 0, 12.0])
            pal = target - 0.5 * (j0 + j1)
            pal = _unit(_unit(pal) + 0.6 * z_hand)
        else:
            pal = z_hand.copy()
        pal = _unit(pal - (pal @ long) * long)
        kind = name[:3]
        if name in ("met1", "met5"):
            kind = name
        info[b] = dict(kind=kind, palmar=pal, long=long, tip=j1 if kind == "dis" else None)

    allv = np.concatenate([per_bone[b][0] for b in range(20)])
    lo = allv.min(0) - 16.0
    hi = allv.max(0) + 16.0
    y_cap = per_bone[0][0][:, 1].min() - WRIST_MARGIN
    lo[1] = y_cap - 3.0
    shape = np.ceil((hi - lo) / VOXEL).astype(int) + 1
    axes = [lo[i] + VOXEL * np.arange(shape[i]) for i in range(3)]
    gx, gy, gz = np.meshgrid(*axes, indexing="ij")
    grid = np.stack([gx.ravel(), gy.ravel(), gz.ravel()], 1)
    del gx, gy, gz
    big = 50.0

    def bone_field(b):
        v, f = per_bone[b]
        s, nrm = _sample_with_normals(v, f, 5000 if b else 12000, seed)
        reach = max(THICK[info[b]["kind"]][:2]) + THICK[info[b]["kind"]][3] + 8.0
        i0 = np.maximum(np.floor((v.min(0) - reach - lo) / VOXEL).astype(int), 0)
        i1 = np.minimum(np.ceil((v.max(0) + reach - lo) / VOXEL).astype(int) + 1, shape)
        out = np.full(tuple(shape), big)
        sub = grid.reshape(*shape, 3)[i0[0]:i1[0], i0[1]:i1[1], i0[2]:i1[2]].reshape(-1, 3)
        val = _bone_field(sub, s, nrm, info[b]["palmar"], info[b]["long"], info[b]["tip"],
                          info[b]["kind"], reach, big)
        out[i0[0]:i1[0], i0[1]:i1[1], i0[2]:i1[2]] = np.minimum(val, big).reshape(i1 - i0)
        return out.ravel()

    fields = {b: bone_field(b) for b in range(20)}

    # palm block and first web
    palm_pts = np.concatenate([per_bone[b][0] for b in (0, 4, 8, 12, 16)])
    palm = _hull_field(grid, palm_pts, PALM_HULL, z_hand, np.array([0.0, 1.0, 0.0]), PALM_WEB)
    web_pts = np.concatenate([per_bone[1][0], per_bone[4][0]])
    web = _hull_field(grid, web_pts, THUMB_WEB_HULL, info[1]["palmar"])

    print(f"    skin: bone fields {time.time() - t0:.1f}s", flush=True)
    blur = BLUR_SIGMA / VOXEL

    def smooth(field):
        return ndimage.gaussian_filter(field.reshape(shape), blur).ravel()

    palm_f = smin(palm, web, 4.0)
    for b in (0, 1, 4, 8, 12, 16):
        palm_f = smin(palm_f, fields[b], 4.0)
    palm_f = smooth(palm_f)

    fingers = {1: [2, 3], 2: [5, 6, 7], 3: [9, 10, 11], 4: [13, 14, 15], 5: [17, 18, 19]}
    finger_f = {}
    for d, bones in fingers.items():
        ff = fields[bones[0]]
        for b in bones[1:]:
            ff = smin(ff, fields[b], 2.5)
        finger_f[d] = smooth(ff)
    # keep neighbouring fingers apart: finger d only occupies the points nearer to its own ray
    # (MCP-PIP-DIP-tip polyline) than to its neighbour's, less half a gap
    ray_d = {d: _polyline_distance(grid, joints[[jn[f"pro{d}"], jn[f"int{d}"], jn[f"dis{d}"],
                                                  jn[f"dis{d}_end"]]]) for d in range(2, 6)}
    for d in range(2, 6):
        for e in (d - 1, d + 1):
            if e in ray_d:
                finger_f[d] = np.maximum(finger_f[d], 0.5 * (ray_d[d] - ray_d[e]) + 0.5 * FINGER_GAP)
    total = np.full(len(grid), big)
    for d, ff in finger_f.items():
        total = np.minimum(total, smin(palm_f, ff, 3.0 if d > 1 else 4.0))
    total = np.maximum(total, y_cap - grid[:, 1])  # flat cap at the wrist

    vol = total.reshape(shape)
    vol = ndimage.gaussian_filter(vol, 0.5)
    vol[0], vol[-1], vol[:, 0], vol[:, -1], vol[:, :, 0], vol[:, :, -1] = 1.0, 1.0, 1.0, 1.0, 1.0, 1.0
    print(f"    skin: field done {time.time() - t0:.1f}s", flush=True)
    verts, faces, _, _ = measure.marching_cubes(vol, 0.0, spacing=(VOXEL,) * 3)
    verts = verts + lo
    tm = trimesh.Trimesh(verts, faces[:, ::-1], process=True)
    comps = tm.split(only_watertight=False)
    tm = max(comps, key=lambda m: len(m.faces))
    trimesh.smoothing.filter_taubin(tm, lamb=0.5, nu=-0.53, iterations=10)
    print(f"    skin: surface {len(tm.vertices)} v, {time.time() - t0:.1f}s", flush=True)
    v, f = fast_simplification.simplify(np.asarray(tm.vertices), np.asarray(tm.faces, dtype=np.int32),
                                        target_count=2 * TARGET_SKIN_VERTS - 4, agg=5.0)
    skin = trimesh.Trimesh(v, f, process=True)
    if not skin.is_watertight:
        import pymeshfix
        v2, f2 = pymeshfix.clean_from_arrays(np.asarray(skin.vertices, dtype=np.float64),
                                             np.asarray(skin.faces, dtype=np.int32))
        skin = trimesh.Trimesh(v2, f2, process=True)
    trimesh.repair.fix_normals(skin)
    if skin.volume < 0:
        skin.invert()

    print(f"    skin: decimated {time.time() - t0:.1f}s", flush=True)
    report = skin_report(skin, per_bone, info)
    # soft tissue beyond each fingertip: along the distal phalanx axis from the tip joint
    tips = {}
    for d, b in zip(range(1, 6), (3, 7, 11, 15, 19)):
        o = info[b]["tip"]
        loc, _, _ = skin.ray.intersects_location([o], [info[b]["long"]])
        if len(loc):
            tips[f"finger{d}"] = round(float(np.linalg.norm(loc - o, axis=1).min()), 2)
    report["fingertip_pad_beyond_bone_mm"] = tips
    return {"verts": np.asarray(skin.vertices), "faces": np.asarray(skin.faces, dtype=np.int64),
            "report": report, "n_components_before": len(comps)}


def skin_report(skin, per_bone, info):
    """Distances skin -> bones and containment of every bone vertex."""
    import trimesh
    allv = np.concatenate([per_bone[b][0] for b in range(20)])
    bid = np.concatenate([[b] * len(per_bone[b][0]) for b in range(20)])
    from meshdist import point_mesh_distance
    bones = trimesh.util.concatenate([trimesh.Trimesh(*per_bone[b], process=False) for b in range(20)])
    d, cp, tri = point_mesh_distance(np.asarray(skin.vertices), np.asarray(bones.vertices),
                                     np.asarray(bones.faces))
    # bone vertices inside the skin (ray-parity test) and their depth below it
    inside = skin.contains(allv)
    depth = point_mesh_distance(allv, np.asarray(skin.vertices), np.asarray(skin.faces))[0]
    sd = np.where(inside, depth, -depth)
    outside = int((~inside).sum())
    # thickness by region: skin vertices whose nearest bone is a metacarpal 2-5, split by side
    face_bone = np.concatenate([[b] * len(per_bone[b][1]) for b in range(20)])
    nb = face_bone[tri]
    sv = np.asarray(skin.vertices)
    rep = {
        "verts": int(len(skin.vertices)), "faces": int(len(skin.faces)),
        "watertight": bool(skin.is_watertight), "components": int(skin.body_count),
        "euler_number": int(skin.euler_number),
        "skin_to_bone_min_mm": round(float(d.min()), 2), "skin_to_bone_mean_mm": round(float(d.mean()), 2),
        "skin_to_bone_max_mm": round(float(d.max()), 2),
        "bone_verts_outside_skin": outside,
        "bone_min_depth_mm": round(float(sd.min()), 2),
    }
    regions = {"metacarpal_palmar": ([4, 8, 12, 16], 1), "metacarpal_dorsal": ([4, 8, 12, 16], -1),
               "phalanx_palmar": ([5, 6, 9, 10, 13, 14, 17, 18], 1),
               "phalanx_dorsal": ([5, 6, 9, 10, 13, 14, 17, 18], -1),
               "distal_palmar_pulp": ([7, 11, 15, 19], 1), "distal_dorsal_nail": ([7, 11, 15, 19], -1)}
    pal = np.stack([info[b]["palmar"] for b in nb])
    off = ((sv - cp) * pal).sum(1)
    for key, (bs, side) in regions.items():
        # skin vertices whose nearest bone is in ``bs`` and that lie on its palmar (side=1) or
        # dorsal (side=-1) side: the offset to the bone points within 45 degrees of that direction
        m = np.isin(nb, bs) & (off * side > 0.7 * d)
        if m.any():
            rep[f"thickness_{key}_median_mm"] = round(float(np.median(d[m])), 2)
            rep[f"thickness_{key}_range_mm"] = [round(float(np.percentile(d[m], 5)), 2),
                                                round(float(np.percentile(d[m], 95)), 2)]
    return rep
