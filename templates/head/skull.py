"""Skull (cranium + maxilla) and mandible from myo-sim's ``hat_skull.stl`` / ``hat_jaw.stl``.

Frames
------
The STL files are in metres in the OpenSim/MuJoCo body frame of myo-sim's "head" body: +x
anterior, +y superior, +z right. ``myohead_rigid_chain.xml`` puts both meshes on the same body
with the same geom offset (``pos="0 -.5 0"``), so skull and jaw share one frame and the mandible
is already articulated (teeth in occlusion). We map (x, y, z)_myo -> (z, x, y) (a proper
rotation, det +1) and metres -> mm, giving the raw RAS+ frame used by the landmark rules below.

Landmarks
---------
Each skeletal landmark is a rule "extreme point along a direction inside a search window" on the
raw frame mesh (windows in mm, written for this pinned mesh and checked on the render). A rule
returns a point on the surface, stored as (face id, barycentric weights) so it follows any later
similarity transform of the mesh.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import _mesh as M
import _sources as S
import numpy as np
import trimesh


def _load_stl(member: str) -> trimesh.Trimesh:
    raw = S.read_member("myo-sim", member)
    m = trimesh.load(io.BytesIO(raw), file_type="stl", process=False)
    return m


def geom_offsets() -> dict[str, np.ndarray]:
    """Geom ``pos`` of hat_skull / hat_jaw in the MuJoCo include (metres, myo frame)."""
    root = ET.fromstring(S.read_member("myo-sim", S.MYO_HEAD_XML))
    out = {}
    for g in root.iter("geom"):
        if g.get("mesh") in ("hat_skull", "hat_jaw"):
            out[g.get("mesh")] = np.array([float(t) for t in g.get("pos", "0 0 0").split()])
    return out


MYO_TO_RAS = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float)  # rows: R, A, S in myo axes


def load_raw() -> dict:
    """Skull and mandible in the raw RAS+ mm frame, cleaned."""
    off = geom_offsets()
    if not np.allclose(off["hat_skull"], off["hat_jaw"]):
        raise RuntimeError(f"skull and jaw geoms have different offsets: {off}")
    out = {}
    for name, member in (("skull", S.SKULL_MEMBER), ("mandible", S.JAW_MEMBER)):
        m = _load_stl(member)
        n_in = len(np.unique(np.asarray(m.vertices), axis=0))
        v = (np.asarray(m.vertices) @ MYO_TO_RAS.T) * 1000.0
        m = M.basic_clean(M.to_trimesh(v, m.faces), keep_largest=True)
        v, f = np.asarray(m.vertices), np.asarray(m.faces)
        if name == "skull":
            # the only open boundary is the foramen magnum; cap it so the cranium is a closed
            # shell (inside/outside tests, collision) -- the cap is flat and marked in the report
            loops = M.boundary_loops(f)
            for lp in loops:
                v, f = M.cap_loop(v, f, lp)
        else:
            # 4 boundary edges between the lower incisors and one non-manifold edge: MeshFix
            # closes them without touching the rest (bounds unchanged to 1e-5 mm)
            import pymeshfix

            v, f = pymeshfix.clean_from_arrays(v, f)
        m = M.to_trimesh(v, f)
        trimesh.repair.fix_normals(m)
        out[name] = dict(v=np.asarray(m.vertices), f=np.asarray(m.faces), n_in=n_in,
                         watertight=bool(m.is_watertight),
                         nonmanifold=M.nonmanifold_edge_count(np.asarray(m.faces)))
    return out


# ----------------------------------------------------------------------------- landmark rules
def _bary_of(v, f, fi, p):
    w = trimesh.triangles.points_to_barycentric(v[f[fi]][None], p[None])[0]
    w = np.clip(w, 0, None)
    return int(fi), [float(x) for x in w / w.sum()]


def _prof_extreme(prof, d, zwin, ywin=(-1e9, 1e9)):
    p, ids = prof
    sel = (p[:, 2] >= zwin[0]) & (p[:, 2] <= zwin[1]) & (p[:, 1] >= ywin[0]) & (p[:, 1] <= ywin[1])
    if not sel.any():
        raise RuntimeError(f"empty profile window z{zwin} y{ywin}")
    k = np.nonzero(sel)[0][np.argmax(p[sel] @ np.asarray(d, float))]
    return p[k], ids[k]


def _front_concavity(prof, zwin, step=0.5):
    """Deepest point of the FRONT outline of a midline profile within zwin: per height bin the
    most anterior profile point, then the most posterior of those (the section also holds the
    lingual / nasal-floor outlines behind, which a plain 'most posterior' would pick)."""
    p, ids = prof
    best = None
    for z in np.arange(zwin[0], zwin[1], step):
        sel = np.nonzero((p[:, 2] >= z) & (p[:, 2] < z + step) & (p[:, 1] > 40))[0]
        if len(sel) == 0:
            continue
        k = sel[np.argmax(p[sel, 1])]
        if best is None or p[k, 1] < p[best, 1]:
            best = k
    if best is None:
        raise RuntimeError(f"empty profile window z{zwin}")
    return p[best], ids[best]


def _vert_extreme(v, d, mask):
    idx = np.nonzero(mask)[0]
    if len(idx) == 0:
        raise RuntimeError("empty vertex window")
    return int(idx[np.argmax(v[idx] @ np.asarray(d, float))])


def _front_depth(mesh, xr, zr, res=0.5, y0=300.0):
    """Orthographic depth map seen from the front: y of the first hit per (x, z) pixel."""
    xs = np.arange(xr[0], xr[1], res)
    zs = np.arange(zr[0], zr[1], res)
    X, Z = np.meshgrid(xs, zs)
    o = np.stack([X.ravel(), np.full(X.size, y0), Z.ravel()], 1)
    loc, ri, ti = mesh.ray.intersects_location(o, np.tile([0, -1.0, 0], (len(o), 1)),
                                               multiple_hits=False)
    Y = np.full(X.size, np.nan)
    T = np.full(X.size, -1)
    Y[ri] = loc[:, 1]
    T[ri] = ti
    return xs, zs, Y.reshape(X.shape), T.reshape(X.shape)


def _ray_hit(mesh, o, d):
    loc, ri, ti = mesh.ray.intersects_location(np.asarray(o, float)[None],
                                               np.asarray(d, float)[None], multiple_hits=False)
    if len(ti) == 0:
        raise RuntimeError(f"ray from {o} along {d} missed")
    return loc[0], int(ti[0])


def skeletal_landmarks(sk: dict, md: dict) -> dict:
    """Rules on the raw-frame meshes. Returns name -> dict(mesh, face, bary)."""
    vs, fs = sk["v"], sk["f"]
    vm, fm = md["v"], md["f"]
    ms, mm = M.to_trimesh(vs, fs), M.to_trimesh(vm, fm)
    L: dict[str, dict] = {}

    def put(name, mesh, fi, w):
        L[name] = {"mesh": mesh, "face": int(fi), "bary": [float(x) for x in w]}

    def put_v(name, mesh, vid):
        f = fs if mesh == "skull" else fm
        put(name, mesh, *M.vertex_to_bary(f, vid))

    def put_p(name, mesh, fi, p):
        v, f = (vs, fs) if mesh == "skull" else (vm, fm)
        put(name, mesh, *_bary_of(v, f, fi, p))

    ps = M.section_profile(M.to_trimesh(vs, fs))
    pm = M.section_profile(M.to_trimesh(vm, fm))
    A, Sd = [0, 1, 0], [0, 0, 1]
    # --- midline, upper face (front profile of the section x = 0)
    n_p, n_f = _prof_extreme(ps, [0, -1, 0], (555, 572), (60, 1e9))       # deepest concavity
    put_p("nasion", "skull", n_f, n_p)
    g_p, g_f = _prof_extreme(ps, A, (n_p[2] + 3, n_p[2] + 25), (60, 1e9))   # most prominent
    put_p("glabella", "skull", g_f, g_p)
    sg_p, sg_f = _prof_extreme(ps, A, (g_p[2] + 13, g_p[2] + 17), (40, 1e9))  # 15 mm above g
    put_p("supraglabella", "skull", sg_f, sg_p)
    r_p, r_f = _prof_extreme(ps, [0, 1, -0.3], (538, n_p[2] - 3), (60, 1e9))  # nasal bone tip
    put_p("rhinion", "skull", r_f, r_p)
    # --- midline, maxilla: anterior nasal spine, subspinale (A), prosthion, upper incisal tip
    ans_p, ans_f = _prof_extreme(ps, A, (509, 522), (60, 1e9))
    put_p("anterior_nasal_spine", "skull", ans_f, ans_p)
    pr_p, pr_f = _prof_extreme(ps, A, (498, 506), (60, 1e9))
    put_p("prosthion", "skull", pr_f, pr_p)
    a_p, a_f = _front_concavity(ps, (pr_p[2] + 2, ans_p[2] - 2))
    put_p("subspinale", "skull", a_f, a_p)
    # upper incisal edge: lowest skull vertex within 5 mm of the midline, at most 12 mm behind
    # and 15 mm below prosthion (the tips of the central incisors)
    put_v("upper_incisal_edge", "skull", _vert_extreme(
        vs, [0, 0, -1], (np.abs(vs[:, 0]) < 5) & (vs[:, 1] > pr_p[1] - 12) & (vs[:, 2] > pr_p[2] - 15)))
    # --- midline, mandible
    ztop = pm[0][:, 2].max()  # lower incisal edge in the midline
    zmin = vm[:, 2].min()
    id_p, id_f = _prof_extreme(pm, A, (ztop - 12, ztop - 5), (60, 1e9))
    put_p("infradentale", "mandible", id_f, id_p)
    pg_p, pg_f = _prof_extreme(pm, A, (zmin + 3, zmin + 16), (60, 1e9))
    put_p("pogonion", "mandible", pg_f, pg_p)
    b_p, b_f = _front_concavity(pm, (pg_p[2] + 3, id_p[2] - 3))
    put_p("supramentale", "mandible", b_f, b_p)
    me_p, me_f = _prof_extreme(pm, [0, 0, -1], (zmin - 1, zmin + 10), (55, 1e9))
    put_p("menton", "mandible", me_f, me_p)
    gn_p, gn_f = _prof_extreme(pm, [0, 1, -1], (me_p[2], pg_p[2]), (55, 1e9))
    put_p("gnathion", "mandible", gn_f, gn_p)
    # --- vault
    put_v("vertex", "skull", _vert_extreme(vs, Sd, np.abs(vs[:, 0]) < 8))
    op_p, op_f = _prof_extreme(ps, [0, -1, 0], (540, 640))
    put_p("opisthocranion", "skull", op_f, op_p)
    # --- bilateral rules (side s = +1 right, -1 left)
    xs, zs, Y, T = _front_depth(ms, (-70, 70), (500, 600))
    from scipy import ndimage
    Yf = np.nan_to_num(Y, nan=np.nanmin(Y))
    tophat = ndimage.grey_closing(Yf, size=(51, 51)) - Yf
    for s, tag in ((1, "R"), (-1, "L")):
        X = np.array([s, 0, 0])
        put_v(f"euryon_{tag}", "skull", _vert_extreme(vs, X, vs[:, 2] > 545))
        # zygion: most lateral point of the zygomatic arch (below the vault, in front of the ear)
        put_v(f"zygion_{tag}", "skull", _vert_extreme(
            vs, X, (vs[:, 2] > 505) & (vs[:, 2] < 530) & (vs[:, 1] > 5) & (vs[:, 1] < 60)))
        # condylion: most superior point of the condyle (posterior part of the ramus top)
        cmask = (s * vm[:, 0] > 30) & (vm[:, 1] < 35)
        put_v(f"condylion_{tag}", "mandible", _vert_extreme(vm, Sd, cmask))
        # gonion: most posterior-inferior point of the mandibular angle
        put_v(f"gonion_{tag}", "mandible", _vert_extreme(vm, [0, -1, -1], s * vm[:, 0] > 25))
        # coronoid tip: most superior point of the anterior ramus process
        put_v(f"coronoid_{tag}", "mandible", _vert_extreme(
            vm, Sd, (s * vm[:, 0] > 30) & (vm[:, 1] > 35) & (vm[:, 1] < 60)))
        # orbit: pixels seen from the front that lie >= 10 mm below a grey closing (25 mm
        # element) of the depth map -- a "black top-hat" that isolates the orbital openings
        side = (s * xs > 5) & (s * xs < 50)
        deep = tophat > 10
        deep[:, ~side] = False
        deep[(zs < 530) | (zs > 590), :] = False
        rows, cols = np.nonzero(deep)
        # the orbital opening is the largest deep blob in the window
        from scipy import ndimage
        lab, nlab = ndimage.label(deep)
        big = np.argmax(np.bincount(lab[rows, cols]))
        rr, cc = np.nonzero(lab == big)
        zc, xc = zs[rr].mean(), xs[cc].mean()
        # orbitale: lowest point of the opening, then the rim hit just below it
        low = np.nonzero(rr == rr.min())[0]
        k = low[np.argmin(np.abs(xs[cc[low]] - xc))]
        r0, c0 = rr[k], cc[k]
        p, t = _ray_hit(ms, [xs[c0], 300, zs[r0] - 1.0], [0, -1, 0])
        put_p(f"orbitale_{tag}", "skull", t, p)
        # supraorbital: upper rim above the orbit centre
        col = np.argmin(np.abs(xs - xc))
        rtop = rr[cc == col].max()
        p, t = _ray_hit(ms, [xs[col], 300, zs[rtop] + 1.5], [0, -1, 0])
        put_p(f"supraorbital_{tag}", "skull", t, p)
        # lateral orbit: the most antero-lateral skull point (direction 45 deg between lateral and
        # anterior) within 5 mm of the orbit centre height, lateral of the orbit centre
        put_v(f"lateral_orbit_{tag}", "skull", _vert_extreme(
            vs, [s, 1, 0], (np.abs(vs[:, 2] - zc) < 5) & (s * vs[:, 0] > abs(xc))
            & (s * vs[:, 0] < abs(xc) + 30)))
        # frontal eminence: 25 mm lateral of the midline, 25 mm above glabella
        p, t = _ray_hit(ms, [s * 25.0, 300, g_p[2] + 25], [0, -1, 0])
        put_p(f"frontal_eminence_{tag}", "skull", t, p)
        # porion: top of the external acoustic meatus -- deep pit seen from the side
        put_v(f"porion_{tag}", "skull", _porion_vertex(ms, s))
    # --- dental / lateral-midface rules that need the landmarks above
    # occlusal level: midway between prosthion and infradentale; the second molars sit about
    # 35 mm behind prosthion (adult dental arch depth incisors-to-M2 ~ 35-40 mm)
    zocc = 0.5 * (pr_p[2] + id_p[2])
    ymid = pr_p[1] - 35.0
    for s, tag in ((1, "R"), (-1, "L")):
        p, t = _ray_hit(ms, [s * 120, ymid, zocc + 10], [-s, 0, 0])
        put_p(f"supra_M2_{tag}", "skull", t, p)
        p, t = _ray_hit(mm, [s * 120, ymid, zocc - 10], [-s, 0, 0])
        put_p(f"sub_M2_{tag}", "mandible", t, p)
        # suborbital = orbitale (the infra-orbital rim point) is already placed
    return L


def _porion_vertex(ms: trimesh.Trimesh, s: int) -> int:
    """Porion: the highest vertex on the rim of the external acoustic meatus.

    Rays cast from the side at the region behind the glenoid fossa; pixels whose first hit lies
    >= 6 mm deeper than the median of the window are the meatus; its top rim is the porion."""
    ys = np.arange(-25, 15, 0.5)
    zs = np.arange(512, 545, 0.5)
    Yg, Zg = np.meshgrid(ys, zs)
    o = np.stack([np.full(Yg.size, s * 150.0), Yg.ravel(), Zg.ravel()], 1)
    loc, ri, ti = ms.ray.intersects_location(o, np.tile([-s, 0, 0.0], (len(o), 1)),
                                             multiple_hits=False)
    X = np.full(Yg.size, np.nan)
    X[ri] = s * loc[:, 0]
    X = X.reshape(Yg.shape)
    med = np.nanmedian(X)
    pit = (X < med - 6) | np.isnan(X)
    from scipy import ndimage
    lab, n = ndimage.label(pit)
    if n == 0:
        raise RuntimeError("no meatus pit found")
    # the blob closest to the window centre (the meatus), not the window edges
    best, bd = None, 1e9
    for k in range(1, n + 1):
        rr, cc = np.nonzero(lab == k)
        if len(rr) < 4:
            continue
        d = np.hypot(ys[cc].mean() + 5, zs[rr].mean() - 528)
        if d < bd:
            best, bd = k, d
    rr, cc = np.nonzero(lab == best)
    k = np.argmax(rr)
    ptop = np.array([s * 150.0, ys[cc[k]], zs[rr[k]] + 1.0])
    loc, ri, ti = ms.ray.intersects_location(ptop[None], np.array([[-s, 0, 0.0]]),
                                             multiple_hits=False)
    fvid = ms.faces[ti[0]]
    return int(fvid[np.argmin(np.linalg.norm(ms.vertices[fvid] - loc[0], axis=1))])


def eval_landmarks(L: dict, meshes: dict) -> dict:
    return {k: M.bary_point(meshes[d["mesh"]]["v"], meshes[d["mesh"]]["f"], d["face"], d["bary"])
            for k, d in L.items()}


def tmj_centres(md: dict, L: dict) -> np.ndarray:
    """TMJ rotation centre per side: centroid of the condylar head (mandible vertices within
    8 mm below condylion and within 12 mm of it), rows (right, left)."""
    v = md["v"]
    out = []
    for tag in ("R", "L"):
        c = M.bary_point(v, md["f"], L[f"condylion_{tag}"]["face"], L[f"condylion_{tag}"]["bary"])
        sel = (np.linalg.norm(v - c, axis=1) < 12) & (v[:, 2] > c[2] - 8)
        out.append(v[sel].mean(0))
    return np.array(out)


def seat_condyles(sk: dict, md: dict, L: dict, clearance: float = 0.5) -> tuple[np.ndarray, dict]:
    """The myo-sim mandible's condyles sit ~6 mm inside the skull shell (through the glenoid
    fossae). Translate the mandible straight down (-z) by the smallest distance that leaves
    every vertex of the condylar cap (within 8 mm of condylion and at most 6 mm below it) at
    least ``clearance`` mm outside the skull surface. The incisors part by the same amount."""
    vm, fm = md["v"], md["f"]
    samp = M.SurfaceSampler(sk["v"], sk["f"], spacing=0.3)
    heads = []
    for tag in ("R", "L"):
        c = M.bary_point(vm, fm, L[f"condylion_{tag}"]["face"], L[f"condylion_{tag}"]["bary"])
        heads.append(np.nonzero((np.linalg.norm(vm - c, axis=1) < 8) & (vm[:, 2] > c[2] - 6))[0])
    heads = np.concatenate(heads)
    d = np.array([0.0, 0.0, -1.0])
    d /= np.linalg.norm(d)

    def worst(t):
        return samp.signed(vm[heads] + t * d)[0].min()

    lo, hi = 0.0, 20.0
    before = worst(0.0)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if worst(mid) < clearance else (lo, mid)
    return vm + hi * d, {"direction": d.round(4).tolist(), "shift_mm": round(float(hi), 2),
                         "condyle_penetration_before_mm": round(float(-before), 2),
                         "condyle_min_clearance_after_mm": round(float(worst(hi)), 2)}
