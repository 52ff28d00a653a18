"""Build the intrinsic muscles, tetrahedra and skinning weights of the default hand.

    python templates/hand/build_tissues.py [--no-render]

Reads `build/hand_geometry.npz` (see README), writes `build/hand_tissues.npz`,
`build/hand_tissues_report.json` and `build/hand_tissues_pose.png`.
Build-time tools: tetgen (python wheel), scipy, scikit-image, trimesh, fast-simplification.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.spatial import cKDTree

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build"
H = 0.6              # grid spacing (mm) of the implicit fields
BONE_MARGIN = 0.8    # muscles kept this far outside the bones (mm)
SKIN_MARGIN = 1.5    # ... and this far inside the skin (mm)
GAP = 0.8            # gap between neighbouring muscles (mm)
HEAT_C = 0.5         # bone-heat constant (smaller = wider blends across the joints)
# muscle group names (DESIGN.md §4), in output order
GROUPS = ["thenar", "adductor_pollicis", "hypothenar", "first_dorsal_interosseous",
          "dorsal_interossei_2_4", "palmar_interossei", "lumbricals"]
# carpal component ids in bone 0 (build_geometry step 5)
SCAPHOID, LUNATE, TRIQUETRUM, PISIFORM, TRAPEZIUM, TRAPEZOID, CAPITATE, HAMATE = range(8)


def unit(v):
    v = np.asarray(v, float)
    return v / (np.linalg.norm(v, axis=-1, keepdims=True) + 1e-12)


# --------------------------------------------------------------------------- landmarks
class Landmarks:
    """Points on the bones, addressed by bone id, axial fraction and direction."""

    def __init__(self, g):
        self.v = g["bone_verts"].astype(float)
        self.bid = g["bone_vert_id"]
        self.cid = g["bone_vert_carpal_id"]
        self.J = g["joints"].astype(float)
        self.bj = g["bone_joint"]

    def axis(self, b):
        j = self.bj[b]
        return self.J[j], self.J[j + 1]

    def on_axis(self, b, t):
        a, c = self.axis(b)
        return a + t * (c - a)

    def surf(self, b, t, d, off=0.0):
        """Bone-b surface point at axial fraction t (0 proximal joint, 1 distal joint),
        furthest along direction d (made orthogonal to the bone axis); pushed off by `off`."""
        a, c = self.axis(b)
        ax = unit(c - a)
        d = unit(np.asarray(d, float) - (np.asarray(d, float) @ ax) * ax)
        pv = self.v[self.bid == b]
        s = (pv - a) @ (c - a) / ((c - a) @ (c - a))
        near = np.abs(s - t) < 0.06
        if near.sum() < 4:
            near = np.argsort(np.abs(s - t))[:8]
        q = pv[near]
        p = q[np.argmax((q - self.on_axis(b, t)) @ d)]
        return p + off * d

    def carpal(self, cid, d, off=0.0):
        q = self.v[(self.bid == 0) & (self.cid == cid)]
        return q[np.argmax(q @ unit(d))] + off * unit(d)

    def toward(self, b, b2, t):
        """Unit vector from bone b's axis to bone b2's axis at fraction t (e.g. the neighbour ray)."""
        return unit(self.on_axis(b2, t) - self.on_axis(b, t))


# Origins/insertions: Gray's Anatomy 41st ed. (2016) ch. 50 "Wrist and hand"; Netter, Atlas of
# Human Anatomy 7th ed. plates 447-452. Radii (mm) are belly sizes chosen to fill the palm
# envelope of the skin (not measured); each strand = polyline of points with radii.
def muscle_strands(L: Landmarks):
    X, Z = np.array([1.0, 0, 0]), np.array([0, 0, 1.0])  # radial, palmar
    P = Z
    D = -Z
    m = {}
    # thenar: APB (scaphoid + trapezium tubercles, flexor retinaculum -> radial base of pro1),
    # FPB (retinaculum, trapezium -> radial sesamoid / base of pro1),
    # OP (trapezium tubercle, retinaculum -> radial border of the whole met1 shaft)
    scaph = L.carpal(SCAPHOID, P + 0.3 * X, 1.0)
    trap = L.carpal(TRAPEZIUM, P, 1.0)
    hook = L.carpal(HAMATE, P, 1.0)
    retin = trap + 0.3 * (hook - trap) + 2.0 * P       # flexor retinaculum, radial third
    pro1_rad = L.surf(2, 0.12, X + P, 0.5)
    met1_rp = [L.surf(1, t, X + 1.5 * P, 1.5) for t in (0.35, 0.65, 0.9)]
    m["thenar"] = [
        ("APB", [scaph, 0.5 * (scaph + pro1_rad) + 3.0 * unit(X + P), pro1_rad], [4.0, 6.5, 3.0]),
        ("FPB", [retin, 0.5 * (retin + L.surf(2, 0.05, P, 1.0)) + 2.0 * P, L.surf(2, 0.05, P, 1.0)],
         [4.0, 6.5, 3.0]),
        ("OP", [trap] + met1_rp, [4.0, 5.5, 5.0, 3.5]),
    ]
    # adductor pollicis: oblique head (capitate, bases of met2/met3) and transverse head (palmar
    # ridge of met3 shaft, distal 2/3) -> ulnar sesamoid / ulnar base of pro1
    to_mid = unit(L.on_axis(9, 0.0) - L.on_axis(2, 0.0))
    pro1_uln = L.surf(2, 0.1, to_mid, 0.5)
    obl = [L.carpal(CAPITATE, P, 1.5), L.surf(4, 0.08, P, 1.5), L.surf(8, 0.08, P, 1.5)]
    tra = [L.surf(8, t, P, 2.0) for t in (0.4, 0.6, 0.8)]
    m["adductor_pollicis"] = [(f"AdP_{i}", [o, 0.5 * (o + pro1_uln) + 1.0 * P, pro1_uln],
                               [3.0, 4.5, 3.0]) for i, o in enumerate(obl + tra)]
    # hypothenar: ADM (pisiform -> ulnar base of pro5), FDMB (hook of hamate -> ulnar-palmar base
    # of pro5), ODM (hook of hamate -> ulnar border of met5 shaft)
    pis = L.carpal(PISIFORM, P - X, 0.5)
    pro5_uln = L.surf(17, 0.1, -X, 0.5)
    pro5_up = L.surf(17, 0.05, -X + P, 0.5)
    m["hypothenar"] = [
        ("ADM", [pis, 0.5 * (pis + pro5_uln) + 3.5 * unit(-X + 0.5 * P), pro5_uln], [4.0, 6.0, 2.5]),
        ("FDMB", [hook, 0.5 * (hook + pro5_up) + 2.5 * unit(-X + P), pro5_up], [3.5, 5.0, 2.5]),
        ("ODM", [hook] + [L.surf(16, t, -X + P, 1.5) for t in (0.4, 0.7, 0.9)], [3.0, 4.0, 4.0, 3.0]),
    ]
    # first dorsal interosseous: two heads, ulnar side of met1 and radial side of met2 ->
    # radial base of pro2 and its extensor expansion (abducts the index)
    pro2_rad = L.surf(5, 0.12, X + 0.3 * D, 0.5)
    heads = [L.surf(1, t, L.toward(1, 4, t), 1.0) for t in (0.3, 0.6)] + \
            [L.surf(4, t, X + 0.3 * D, 1.0) for t in (0.2, 0.5, 0.8)]
    web = 0.5 * (L.surf(1, 0.6, L.toward(1, 4, 0.6)) + L.surf(4, 0.55, X)) + 1.0 * D
    m["first_dorsal_interosseous"] = [(f"FDI_{i}", [h, web, pro2_rad], [3.5, 6.0, 2.5])
                                      for i, h in enumerate(heads)]
    # dorsal interossei 2-4 (bipennate, dorsal half of spaces 2-4): DI2 met2/met3 -> radial base
    # pro3; DI3 met3/met4 -> ulnar base pro3; DI4 met4/met5 -> ulnar base pro4
    mets = {2: 4, 3: 8, 4: 12, 5: 16}
    pros = {2: 5, 3: 9, 4: 13, 5: 17}

    def space(ra, rb, t, dors):
        """Point in the intermetacarpal space between rays ra, rb at fraction t, dorsal/palmar."""
        a, b = mets[ra], mets[rb]
        pa = L.surf(a, t, L.toward(a, b, t))
        pb = L.surf(b, t, L.toward(b, a, t))
        depth = 0.5 * (L.surf(a, t, dors) + L.surf(b, t, dors)) - 0.5 * (L.on_axis(a, t) + L.on_axis(b, t))
        return 0.5 * (pa + pb) + 0.45 * depth

    def interosseous(ra, rb, ins_ray, side, dors, r):
        pts = [space(ra, rb, t, dors) for t in (0.15, 0.45, 0.75)]
        ins = L.surf(pros[ins_ray], 0.1, side * X + 0.3 * dors, 0.5)
        return [pts[0], pts[1], pts[2], ins], r

    for name, ra, rb, ins, side in (("DI2", 2, 3, 3, +1), ("DI3", 3, 4, 3, -1), ("DI4", 4, 5, 4, -1)):
        m[name] = [(name,) + interosseous(ra, rb, ins, side, D, [3.0, 4.0, 3.5, 2.0])]
    # palmar interossei (unipennate, palmar half): PI1 ulnar met2 -> ulnar base pro2;
    # PI2 radial met4 -> radial base pro4; PI3 radial met5 -> radial base pro5
    for name, ra, rb, ins, side in (("PI1", 2, 3, 2, -1), ("PI2", 3, 4, 4, +1), ("PI3", 4, 5, 5, +1)):
        m[name] = [(name,) + interosseous(ra, rb, ins, side, P, [2.8, 3.5, 3.0, 2.0])]
    # lumbricals: from the FDP tendons (palmar to the metacarpal shafts, mid palm) -> radial side
    # of the extensor expansion at the base of pro2..pro5, palmar to the deep transverse lig.
    for k, ray in enumerate((2, 3, 4, 5), 1):
        b = mets[ray]
        o = L.surf(b, 0.4, P, 5.0) + 1.5 * X
        mid = L.surf(b, 0.85, P + 0.6 * X, 3.5)
        ins = L.surf(pros[ray], 0.12, X, 0.5)
        m[f"L{k}"] = [(f"L{k}", [o, mid, ins], [2.2, 2.6, 1.5])]
    return m


MUSCLE_GROUP = {"thenar": "thenar", "adductor_pollicis": "adductor_pollicis", "hypothenar": "hypothenar",
                "first_dorsal_interosseous": "first_dorsal_interosseous",
                "DI2": "dorsal_interossei_2_4", "DI3": "dorsal_interossei_2_4",
                "DI4": "dorsal_interossei_2_4", "PI1": "palmar_interossei", "PI2": "palmar_interossei",
                "PI3": "palmar_interossei", "L1": "lumbricals", "L2": "lumbricals", "L3": "lumbricals",
                "L4": "lumbricals"}
TARGET_V = {"thenar": 1000, "adductor_pollicis": 700, "hypothenar": 800, "first_dorsal_interosseous": 650,
            "DI2": 350, "DI3": 350, "DI4": 330, "PI1": 280, "PI2": 280, "PI3": 260,
            "L1": 160, "L2": 160, "L3": 150, "L4": 140}


# --------------------------------------------------------------------------- implicit fields
def smin(a, b, k):
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def cone_sdf(p, a, b, ra, rb):
    """Approximate SDF of a round cone (capsule with linearly varying radius)."""
    ab = b - a
    t = np.clip((p - a) @ ab / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - a - t[:, None] * ab, axis=1) - (ra + t * (rb - ra))


def strands_sdf(p, strands, k=2.5):
    out = None
    for _, pts, rad in strands:
        for i in range(len(pts) - 1):
            d = cone_sdf(p, np.asarray(pts[i]), np.asarray(pts[i + 1]), rad[i], rad[i + 1])
            out = d if out is None else smin(out, d, k)
    return out


class Grid:
    def __init__(self, lo, hi, h):
        self.lo, self.h = lo, h
        self.shape = tuple(np.ceil((hi - lo) / h).astype(int) + 1)

    def pts(self, sl=None):
        ax = [self.lo[i] + self.h * np.arange(self.shape[i]) for i in range(3)]
        if sl is not None:
            ax = [a[s] for a, s in zip(ax, sl)]
        g = np.meshgrid(*ax, indexing="ij")
        return np.stack([x.ravel() for x in g], 1)

    def crop(self, lo, hi):
        i0 = np.clip(np.floor((lo - self.lo) / self.h).astype(int), 0, None)
        i1 = np.minimum(np.ceil((hi - self.lo) / self.h).astype(int) + 1, self.shape)
        return tuple(slice(a, b) for a, b in zip(i0, i1))


def solid_sdf(grid, verts, faces):
    """Signed distance (mm, <0 inside) of a closed mesh on the grid: rasterised surface samples,
    hole filling, then Euclidean distance transforms (voxel accuracy)."""
    import trimesh
    m = trimesh.Trimesh(verts, faces, process=False)
    n = int(m.area / (0.25 * grid.h) ** 2)
    pts, _ = trimesh.sample.sample_surface(m, n, seed=0)
    pts = np.concatenate([pts, verts])
    idx = np.round((pts - grid.lo) / grid.h).astype(int)
    idx = np.clip(idx, 0, np.array(grid.shape) - 1)
    shell = np.zeros(grid.shape, bool)
    shell[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    inside = ndi.binary_fill_holes(shell)
    d_out = ndi.distance_transform_edt(~inside)
    d_in = ndi.distance_transform_edt(inside)
    return ((d_out - d_in + np.where(inside, 0.5, -0.5)) * grid.h).astype(np.float32)


# --------------------------------------------------------------------------- meshing
def extract(field, grid, sl, target, smooth_iter=10):
    """Largest closed component of the zero level set, Taubin-smoothed and decimated."""
    import fast_simplification
    import trimesh
    from skimage.measure import marching_cubes
    f = np.pad(field, 1, constant_values=10.0)
    v, fc, _, _ = marching_cubes(f, 0.0, spacing=(grid.h,) * 3)
    origin = grid.lo + grid.h * np.array([s.start for s in sl]) - grid.h
    m = trimesh.Trimesh(v + origin, fc[:, ::-1], process=True)
    comps = m.split(only_watertight=False)
    m = max(comps, key=lambda c: abs(c.volume) if c.is_watertight else 0.0)
    if m.volume < 0:
        m.invert()
    trimesh.smoothing.filter_taubin(m, lamb=0.5, nu=-0.53, iterations=smooth_iter)
    for agg in (5.0, 7.0, 4.0, 6.0, 8.0, 3.0):
        vv, ff = fast_simplification.simplify(np.asarray(m.vertices, np.float64), m.faces.astype(np.int32),
                                              target_count=int(2 * target - 4), agg=agg)
        mm = trimesh.Trimesh(vv, ff, process=True)
        if mm.is_watertight and mm.volume > 0:
            if mm.euler_number == 2:
                return mm
            print(f"    agg {agg}: euler {mm.euler_number}", flush=True)
    print(f"    marching cubes mesh: watertight {m.is_watertight} euler {m.euler_number}", flush=True)
    import pymeshfix
    vv, ff = pymeshfix.clean_from_arrays(np.asarray(mm.vertices), np.asarray(mm.faces))
    mm = trimesh.Trimesh(vv, ff, process=True)
    if mm.is_watertight and mm.volume > 0:
        return mm
    raise RuntimeError("decimation failed")


def tetra(verts, faces, holes_fn=None, q="1.5/10", a=None):
    """Constrained quality Delaunay tetrahedralisation (TetGen), boundary preserved (-Y)."""
    import tetgen
    sw = f"pq{q}YQ" + (f"a{a}" if a else "")
    t = tetgen.TetGen(np.asarray(verts, float), np.asarray(faces, np.int32))
    out = t.tetrahedralize(switches=sw)
    nodes, elems = np.asarray(out[0]), np.asarray(out[1])
    if holes_fn is not None:
        keep = ~holes_fn(nodes[elems].mean(1))
        elems = elems[keep]
        used = np.unique(elems)
        # keep the input (surface) vertices first and in order
        used = np.union1d(used, np.arange(len(verts)))
        remap = -np.ones(len(nodes), int)
        remap[used] = np.arange(len(used))
        nodes, elems = nodes[used], remap[elems]
    assert np.allclose(nodes[:len(verts)], verts, atol=1e-5), "TetGen moved boundary vertices"
    return nodes, elems


def tet_volumes(x, t):
    a, b, c, d = (x[t[:, i]] for i in range(4))
    return np.einsum("ij,ij->i", np.cross(b - a, c - a), d - a) / 6.0


def tet_quality(x, t):
    """Mean-ratio style quality: 6*sqrt(2)*V / l_rms^3 (1 = regular, 0 = flat)."""
    e = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    l2 = sum(((x[t[:, i]] - x[t[:, j]]) ** 2).sum(1) for i, j in e) / 6.0
    return 6 * np.sqrt(2) * tet_volumes(x, t) / l2 ** 1.5


# --------------------------------------------------------------------------- weights
def graph_laplacian(n, edges):
    i, j = edges[:, 0], edges[:, 1]
    w = np.ones(len(i))
    A = sp.coo_matrix((np.r_[w, w], (np.r_[i, j], np.r_[j, i])), shape=(n, n)).tocsr()
    A.data[:] = 1.0
    return sp.diags(np.asarray(A.sum(1)).ravel()) - A


def edges_of_faces(f):
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    return np.unique(np.sort(e, 1), axis=0)


def edges_of_tets(t):
    e = np.concatenate([t[:, [i, j]] for i, j in ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))])
    return np.unique(np.sort(e, 1), axis=0)


AXES = None   # (20, 2, 3) proximal/distal joint of each bone, set in main()


def nearest_bone(p, bone_tree, bone_id_of_sample, k=64):
    """Nearest bone surface sample whose bone 'spans' the point: a phalanx only claims points
    distal of its proximal joint plane, a bone other than a distal phalanx only points proximal
    of its distal joint plane (the carpal claims anything); this splits the skin at the joint
    planes instead of letting a phalanx base claim palm skin (cf. Pinocchio's visibility test)."""
    d, idx = bone_tree.query(p, k=k, workers=2)
    b = bone_id_of_sample[idx]
    a, c = AXES[b, 0], AXES[b, 1]
    t = np.einsum("nkj,nkj->nk", p[:, None] - a, c - a) / np.einsum("nkj,nkj->nk", c - a, c - a)
    is_met = np.isin(b, (1, 4, 8, 12, 16))
    is_dis = np.isin(b, (3, 7, 11, 15, 19))
    ok = (b == 0) | (((t >= 0) | is_met) & ((t <= 1) | is_dis))
    first = np.where(ok.any(1), ok.argmax(1), 0)
    r = np.arange(len(p))
    return d[r, first], b[r, first]


def bone_heat_weights(verts, faces, bone_tree, bone_id_of_sample, n_bones, c=1.0):
    """Pinocchio-style bone heat (Baran & Popovic 2007): solve (L + H) w_b = H p_b on the surface
    graph, H_ii = c / d_i^2 to the nearest bone, p_b one-hot of the nearest bone. Diffusion over
    the surface graph keeps the fingers apart (they are far apart along the skin)."""
    d, nb = nearest_bone(verts, bone_tree, bone_id_of_sample)
    # edge length normalised graph Laplacian (uniform weights scaled by mean edge length^-2)
    e = edges_of_faces(faces)
    le = np.linalg.norm(verts[e[:, 0]] - verts[e[:, 1]], axis=1).mean()
    Lg = graph_laplacian(len(verts), e) / le ** 2
    Hd = c / np.maximum(d, 1.0) ** 2
    A = (Lg + sp.diags(Hd)).tocsc()
    solve = spla.factorized(A)
    W = np.zeros((len(verts), n_bones))
    for b in np.unique(nb):
        W[:, b] = solve(Hd * (nb == b))
    return W


def sparsify(W, k=4):
    W = np.clip(W, 0, None)
    idx = np.argsort(-W, 1)[:, :k]
    out = np.zeros_like(W)
    r = np.arange(len(W))[:, None]
    out[r, idx] = W[r, idx]
    out[out < 1e-3 * out.max(1, keepdims=True)] = 0
    return out / out.sum(1, keepdims=True)


def harmonic_fill(n, edges, known_idx, known_W, pos):
    """Harmonic extension of weights to the unknown nodes of a graph (Dirichlet on known)."""
    Lg = graph_laplacian(n, edges).tocsr()
    unk = np.setdiff1d(np.arange(n), known_idx)
    W = np.zeros((n, known_W.shape[1]))
    W[known_idx] = known_W
    known_pos = pos[known_idx]
    if len(unk):
        Luu = (Lg[unk][:, unk] + 1e-9 * sp.eye(len(unk))).tocsc()
        Luk = Lg[unk][:, known_idx]
        W[unk] = spla.splu(Luu).solve(-(Luk @ known_W))
        lost = W.sum(1) < 0.5     # nodes not connected to any known node: copy the nearest
        if lost.any():
            print(f"    harmonic_fill: {lost.sum()} disconnected nodes", flush=True)
            W[lost] = known_W[cKDTree(known_pos).query(pos[lost])[1]]
    return W


# --------------------------------------------------------------------------- LBS
def rodrigues(axis, ang):
    a = unit(axis)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(ang) * K + (1 - np.cos(ang)) * K @ K


def joint_transforms(J, parents, rots):
    """rots: (25, 3, 3) local rotation about each joint. Returns (25, 4, 4) skinning transforms
    (global transform of the bone that starts at each joint, relative to rest)."""
    G = np.zeros((25, 4, 4))
    for j in range(25):
        T = np.eye(4)
        T[:3, :3] = rots[j]
        T[:3, 3] = J[j] - rots[j] @ J[j]
        G[j] = T if parents[j] < 0 else G[parents[j]] @ T
    return G


def lbs(x, W, G):
    T = np.einsum("vj,jab->vab", W, G)
    return np.einsum("vab,vb->va", T[:, :3, :3], x) + T[:, :3, 3]


# --------------------------------------------------------------------------- main
def main(render=True):
    import trimesh
    t0 = time.time()
    g = dict(np.load(BUILD / "hand_geometry.npz"))
    L = Landmarks(g)
    bv, bf, bid = g["bone_verts"].astype(float), g["bone_faces"], g["bone_vert_id"]
    sv, sf = g["skin_verts"].astype(float), g["skin_faces"]
    J, par, bone_joint = g["joints"].astype(float), g["joint_parents"], g["bone_joint"]
    lo, hi = sv.min(0) - 3.0, sv.max(0) + 3.0
    grid = Grid(lo, hi, H)
    print("grid", grid.shape, flush=True)
    bone_sdf = ndi.gaussian_filter(solid_sdf(grid, bv, bf), 0.7)
    skin_sdf = solid_sdf(grid, sv, sf)
    print(f"fields {time.time() - t0:.0f}s", flush=True)

    # ---- muscles: strand SDFs, partitioned (Voronoi with a gap), cut by bones and skin
    strands = muscle_strands(L)
    names = list(strands)
    crops, fields = {}, {}
    for nm in names:
        allp = np.concatenate([np.asarray(p) for _, pts, _ in strands[nm] for p in [pts]])
        r = max(max(rad) for _, _, rad in strands[nm]) + 4.0
        sl = grid.crop(allp.min(0) - r, allp.max(0) + r)
        crops[nm] = sl
        fields[nm] = strands_sdf(grid.pts(sl), strands[nm]).reshape([s.stop - s.start for s in sl])
    meshes = {}
    for nm in names:
        sl = crops[nm]
        f = fields[nm]
        P = None
        other = np.full(f.shape, 1e3)
        for o in names:
            if o == nm:
                continue
            # overlap of crops -> evaluate the other muscle on this crop
            lo_o = [max(a.start, b.start) for a, b in zip(sl, crops[o])]
            hi_o = [min(a.stop, b.stop) for a, b in zip(sl, crops[o])]
            if any(a >= b for a, b in zip(lo_o, hi_o)):
                continue
            if P is None:
                P = grid.pts(sl)
            other = np.minimum(other, strands_sdf(P, strands[o]).reshape(f.shape))
        f = np.maximum(f, 0.5 * (f - other) + 0.5 * GAP)
        f = np.maximum(f, -(bone_sdf[sl] - BONE_MARGIN))
        f = np.maximum(f, skin_sdf[sl] + SKIN_MARGIN)
        f = ndi.gaussian_filter(f, 0.6)
        meshes[nm] = extract(f, grid, sl, TARGET_V[nm])
        print(f"  {nm}: {len(meshes[nm].vertices)} v, vol {meshes[nm].volume:.0f} mm3", flush=True)
    print(f"muscles {time.time() - t0:.0f}s", flush=True)

    # ---- checks: muscle vertices outside bones and inside skin, muscles disjoint
    from meshdist import point_mesh_distance
    bone_m = trimesh.Trimesh(bv, bf, process=False)
    skin_m = trimesh.Trimesh(sv, sf, process=False)
    rep = {"muscles": {}}
    for nm, m in meshes.items():
        v = m.vertices
        d_b = point_mesh_distance(v, bv, bf)[0]
        d_s = point_mesh_distance(v, sv, sf)[0]
        in_b = bone_m.contains(v) if bone_m.is_watertight else np.zeros(len(v), bool)
        rep["muscles"][nm] = dict(group=MUSCLE_GROUP[nm], verts=len(v), faces=len(m.faces),
                                  volume_mm3=float(m.volume), min_dist_bone_mm=float(d_b.min()),
                                  n_inside_bone=int(in_b.sum()), min_dist_skin_mm=float(d_s.min()),
                                  all_inside_skin=bool(skin_m.contains(v).all()))
    # ---- tetrahedra
    mus_tets = {}
    for nm, m in meshes.items():
        nodes, el = tetra(m.vertices, m.faces)
        vol = tet_volumes(nodes, el)
        if (vol < 0).mean() > 0.5:
            el = el[:, [0, 2, 1, 3]]
            vol = -vol
        mus_tets[nm] = (nodes, el)
        rep["muscles"][nm].update(tets=len(el), tet_nodes=len(nodes), min_tet_vol_mm3=float(vol.min()),
                                  min_tet_quality=float(tet_quality(nodes, el).min()))
    # inner boundary of the skin volume: envelope of bones + muscles (muscles fused to the bones)
    mus_all = np.full(grid.shape, 1e3, np.float32)
    for nm in names:
        sl = crops[nm]
        mus_all[sl] = np.minimum(mus_all[sl], fields[nm])
    mus_all = np.maximum(mus_all, skin_sdf + SKIN_MARGIN)
    inner = np.minimum(bone_sdf - 0.2, mus_all)
    inner = np.maximum(inner, skin_sdf + 1.2)
    inner_s = ndi.gaussian_filter(inner, 0.6)
    import fast_simplification
    from skimage.measure import marching_cubes
    v, fc, _, _ = marching_cubes(np.pad(inner_s, 1, constant_values=10.0), 0.0,
                                 spacing=(H,) * 3)
    im = trimesh.Trimesh(v + grid.lo - H, fc[:, ::-1], process=True)
    if im.volume < 0:
        im.invert()
    trimesh.smoothing.filter_taubin(im, lamb=0.5, nu=-0.53, iterations=10)
    vv, ff = fast_simplification.simplify(np.asarray(im.vertices, np.float64), im.faces.astype(np.int32),
                                          target_count=14000, agg=5.0)
    im = trimesh.Trimesh(vv, ff, process=True)
    comps = [c for c in im.split(only_watertight=False) if c.is_watertight and c.volume > 1.0]
    im = trimesh.util.concatenate(comps)
    d_inner_skin = point_mesh_distance(im.vertices, sv, sf)[0]
    rep["skin_volume_inner_surface"] = dict(verts=len(im.vertices), faces=len(im.faces), components=len(comps),
                                            min_dist_to_skin_mm=float(d_inner_skin.min()))
    print(f"inner surface {len(im.vertices)} v, {len(comps)} comps, {time.time() - t0:.0f}s", flush=True)
    ns = len(sv)
    pv = np.concatenate([sv, im.vertices])
    pf = np.concatenate([sf, im.faces + ns])
    def in_inner(p):
        return ndi.map_coordinates(inner_s, ((p - grid.lo) / H).T, order=1, mode="nearest") < 0

    skin_nodes, skin_tets = tetra(pv, pf, holes_fn=in_inner, q="2.0/10")
    vol = tet_volumes(skin_nodes, skin_tets)
    if (vol < 0).mean() > 0.5:
        skin_tets = skin_tets[:, [0, 2, 1, 3]]
        vol = -vol
    rep["skin_tets"] = dict(tets=len(skin_tets), nodes=len(skin_nodes), min_tet_vol_mm3=float(vol.min()),
                            min_tet_quality=float(tet_quality(skin_nodes, skin_tets).min()),
                            volume_mm3=float(vol.sum()))
    print(f"tets {time.time() - t0:.0f}s", rep["skin_tets"], flush=True)

    # ---- skinning weights (bones -> joints)
    nb = 20
    global AXES
    AXES = np.stack([J[bone_joint], J[np.minimum(bone_joint + 1, 24)]], 1)
    AXES[0, 1] = J[0] + np.array([0, 1.0, 0])   # carpal: unused
    bm = trimesh.Trimesh(bv, bf, process=False)
    samp, fidx = trimesh.sample.sample_surface_even(bm, 40000, radius=0.3, seed=0)
    s_bone = bid[bf[fidx, 0]]
    samp = np.concatenate([samp, bv])
    s_bone = np.concatenate([s_bone, bid])
    tree = cKDTree(samp)
    B2J = np.zeros((nb, 25))
    B2J[np.arange(nb), bone_joint] = 1.0
    W_skin = sparsify(bone_heat_weights(sv, sf, tree, s_bone, nb, c=HEAT_C) @ B2J)
    W_mus = {nm: sparsify(bone_heat_weights(m.vertices, m.faces, tree, s_bone, nb, c=HEAT_C) @ B2J)
             for nm, m in meshes.items()}
    W_bone = B2J[bid]
    # tet nodes: surface nodes known, interior by harmonic extension over the tet edge graph
    W_mus_nodes = {}
    for nm, (nodes, el) in mus_tets.items():
        nv = len(meshes[nm].vertices)
        W_mus_nodes[nm] = sparsify(harmonic_fill(len(nodes), edges_of_tets(el), np.arange(nv), W_mus[nm], nodes))
    # inner-surface nodes of the skin volume: from the nearest bone or muscle vertex
    mv_all = np.concatenate([m.vertices for m in meshes.values()])
    mw_all = np.concatenate([W_mus[nm] for nm in meshes])
    d_m, km = cKDTree(mv_all).query(im.vertices)
    W_inner_b = sparsify(bone_heat_weights(im.vertices, im.faces, tree, s_bone, nb, c=HEAT_C) @ B2J)
    d_b = tree.query(im.vertices, workers=2)[0]
    W_inner = np.where((d_b <= d_m)[:, None], W_inner_b, mw_all[km])
    known = np.arange(ns + len(im.vertices))
    W_skin_nodes = sparsify(harmonic_fill(len(skin_nodes), edges_of_tets(skin_tets), known,
                                          np.concatenate([W_skin, W_inner]), skin_nodes))
    print(f"weights {time.time() - t0:.0f}s", flush=True)

    # ---- pose test with plain LBS
    axes = g["joint_axes"]
    poses = {
        "index_MCP90": {6: 90},
        "middle_PIP90_DIP60": {12: 90, 13: 60},
        "ring_all90": {16: 90, 17: 90, 18: 90},
        "fist_fingers": {6: 90, 7: 90, 8: 60, 11: 90, 12: 90, 13: 60, 16: 90, 17: 90, 18: 60,
                         21: 90, 22: 90, 23: 60},
        "thumb_IP_MCP": {2: -45, 3: -60},
        "mixed_check": {6: 90, 12: 90, 13: 60, 16: 90, 17: 90, 18: 90, 2: -45, 3: -60},
    }
    rep["poses"] = {}
    posed_vis = None
    for pname, pose in poses.items():
        R = np.tile(np.eye(3), (25, 1, 1))
        for j, deg in pose.items():
            R[j] = rodrigues(axes[j, 0], np.deg2rad(deg))
        G = joint_transforms(J, par, R)
        x_s = lbs(skin_nodes, W_skin_nodes, G)
        ratio_s = tet_volumes(x_s, skin_tets) / tet_volumes(skin_nodes, skin_tets)
        ratios_m = []
        for nm, (nodes, el) in mus_tets.items():
            x_m = lbs(nodes, W_mus_nodes[nm], G)
            ratios_m.append(tet_volumes(x_m, el) / tet_volumes(nodes, el))
        ratio_m = np.concatenate(ratios_m)
        x_b = lbs(bv, W_bone, G)
        posed_skin = x_s[:ns]
        inside = trimesh.Trimesh(x_b, bf, process=False).contains(posed_skin)
        rep["poses"][pname] = dict(
            skin_min_vol_ratio=float(ratio_s.min()), skin_p1_vol_ratio=float(np.percentile(ratio_s, 1)),
            skin_inverted=int((ratio_s <= 0).sum()), skin_frac_ratio_below_0_2=float((ratio_s < 0.2).mean()), muscle_min_vol_ratio=float(ratio_m.min()),
            muscle_inverted=int((ratio_m <= 0).sum()), skin_verts_inside_bone=int(inside.sum()),
            skin_volume_ratio=float(tet_volumes(x_s, skin_tets).sum() / tet_volumes(skin_nodes, skin_tets).sum()))
        print(pname, rep["poses"][pname], flush=True)
        if pname == "mixed_check":
            posed_vis = (x_b, posed_skin, {nm: lbs(m.vertices, W_mus[nm], G) for nm, m in meshes.items()})

    # ---- output
    out = {}
    mv, mf, mvid, mgid, off_v, off_f = [], [], [], [], [0], [0]
    tn, tt, tid, toff = [], [], [], [0]
    for i, nm in enumerate(names):
        m = meshes[nm]
        mf.append(m.faces + sum(len(x) for x in mv))
        mv.append(m.vertices)
        mvid.append(np.full(len(m.vertices), i))
        mgid.append(np.full(len(m.vertices), GROUPS.index(MUSCLE_GROUP[nm])))
        off_v.append(off_v[-1] + len(m.vertices))
        off_f.append(off_f[-1] + len(m.faces))
        nodes, el = mus_tets[nm]
        tt.append(el + sum(len(x) for x in tn))
        tn.append(nodes)
        toff.append(toff[-1] + len(nodes))
    W_all_nodes = np.concatenate([W_mus_nodes[nm] for nm in names])

    def sparse(W):
        idx = np.argsort(-W, 1)[:, :4]
        return idx.astype(np.int8), np.take_along_axis(W, idx, 1).astype(np.float32)

    out["muscle_names"] = np.array(names)
    out["muscle_groups"] = np.array(GROUPS)
    out["muscle_verts"] = np.concatenate(mv).astype(np.float32)
    out["muscle_faces"] = np.concatenate(mf).astype(np.int32)
    out["muscle_vert_muscle_id"] = np.concatenate(mvid).astype(np.int8)
    out["muscle_vert_group_id"] = np.concatenate(mgid).astype(np.int8)
    out["muscle_v_offsets"] = np.array(off_v, np.int32)
    out["muscle_f_offsets"] = np.array(off_f, np.int32)
    out["muscle_tet_nodes"] = np.concatenate(tn).astype(np.float32)
    out["muscle_tets"] = np.concatenate(tt).astype(np.int32)
    out["muscle_tet_node_offsets"] = np.array(toff, np.int32)
    out["skin_tet_nodes"] = skin_nodes.astype(np.float32)
    out["skin_tets"] = skin_tets.astype(np.int32)
    out["skin_tet_n_skin"] = np.int32(ns)
    out["skin_tet_n_surface"] = np.int32(ns + len(im.vertices))
    out["inner_verts"] = im.vertices.astype(np.float32)
    out["inner_faces"] = im.faces.astype(np.int32)
    W_vert = np.concatenate([W_bone, np.concatenate([W_mus[nm] for nm in names]), W_skin])
    out["sw_idx"], out["sw_val"] = sparse(W_vert)      # [bone | muscle | skin] vertex stacking
    out["sw_muscle_nodes_idx"], out["sw_muscle_nodes_val"] = sparse(W_all_nodes)
    out["sw_skin_nodes_idx"], out["sw_skin_nodes_val"] = sparse(W_skin_nodes)
    out["bone_v_sep"] = np.int32(len(bv))
    out["skin_v_sep"] = np.int32(-len(sv))
    np.savez_compressed(BUILD / "hand_tissues.npz", **out)
    size = (BUILD / "hand_tissues.npz").stat().st_size
    rep["npz_bytes"] = size
    rep["muscle_total_verts"] = int(len(out["muscle_verts"]))
    rep["muscle_total_faces"] = int(len(out["muscle_faces"]))
    rep["muscle_total_tets"] = int(len(out["muscle_tets"]))
    rep["weights_max_influences"] = int((W_vert > 0).sum(1).max())
    rep["weights_row_sum_err"] = float(np.abs(W_vert.sum(1) - 1).max())
    rep["build_seconds"] = round(time.time() - t0, 1)
    (BUILD / "hand_tissues_report.json").write_text(json.dumps(rep, indent=1))
    print(f"wrote {size / 1e6:.2f} MB, {time.time() - t0:.0f}s", flush=True)
    if render:
        render_pictures(g, meshes, names, posed_vis, W_skin)


def render_pictures(g, meshes, names, posed, W_skin):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection
    light = np.array([0.3, -0.4, 0.85])
    cmap = plt.get_cmap("tab20")

    def add(ax, v, f, col, alpha):
        tri = v[f]
        n = unit(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]))
        sh = 0.45 + 0.55 * np.abs(n @ light)[:, None]
        ax.add_collection3d(Poly3DCollection(tri, facecolors=np.clip(np.asarray(col)[..., :3] * sh, 0, 1),
                                             edgecolors="none", alpha=alpha))

    def frame(ax, pts, elev, azim, title):
        c = 0.5 * (pts.min(0) + pts.max(0))
        r = 0.36 * (pts.max(0) - pts.min(0)).max()
        ax.set_xlim(c[0] - r, c[0] + r)
        ax.set_ylim(c[1] - r, c[1] + r)
        ax.set_zlim(c[2] - r, c[2] + r)
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=elev, azim=azim)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()

    bv, bf, sv, sf = g["bone_verts"], g["bone_faces"], g["skin_verts"], g["skin_faces"]
    fig = plt.figure(figsize=(20, 11), dpi=80)
    views = [("palmar", 90, -90), ("dorsal", -90, -90), ("radial", 0, 0), ("ulnar-oblique", 20, -140)]
    for k, (t, el, az) in enumerate(views):
        ax = fig.add_subplot(2, 4, 1 + k, projection="3d")
        add(ax, bv, bf, (0.85, 0.85, 0.8), 1.0)
        for i, nm in enumerate(names):
            m = meshes[nm]
            add(ax, m.vertices, m.faces, cmap(GROUPS.index(MUSCLE_GROUP[nm]) * 2), 0.9)
        frame(ax, sv, el, az, f"rest: bones + muscles, {t}")
    x_b, x_s, x_m = posed
    for k, (t, el, az) in enumerate([("palmar", 90, -90), ("radial", 0, 0), ("ulnar-oblique", 20, -140)]):
        ax = fig.add_subplot(2, 4, 5 + k, projection="3d")
        add(ax, x_b, bf, (0.85, 0.85, 0.8), 1.0)
        for nm in names:
            add(ax, x_m[nm], meshes[nm].faces, cmap(GROUPS.index(MUSCLE_GROUP[nm]) * 2), 0.9)
        add(ax, x_s, sf, (0.95, 0.75, 0.62), 0.25)
        frame(ax, x_s, el, az, f"index MCP 90, middle PIP 90/DIP 60, ring 90/90/90, thumb (LBS), {t}")
    ax = fig.add_subplot(2, 4, 8, projection="3d")
    dom = np.argmax(W_skin, 1)   # colour: finger hue, lighter toward the tip
    fing = np.where(dom == 0, 0, (dom - 1) // 5 + 1)
    seg = np.where(dom == 0, 0, (dom - 1) % 5)
    base = np.array([(0.3, 0.3, 0.3), (0.2, 0.4, 0.9), (0.9, 0.3, 0.2), (0.2, 0.7, 0.3), (0.8, 0.6, 0.1),
                     (0.6, 0.3, 0.8)])
    col = base[fing] + (1 - base[fing]) * (seg[:, None] / 4.0) * 0.8
    add(ax, sv, sf, col[sf[:, 0]], 1.0)
    frame(ax, sv, 90, -90, "skin: dominant joint")
    fig.tight_layout()
    fig.savefig(BUILD / "hand_tissues_pose.png")
    plt.close(fig)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main(render="--no-render" not in sys.argv)
