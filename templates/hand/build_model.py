"""Assemble the embedded default hand model ``templates/assets/hand.safetensors (shipped as anatomy.assets)`` + ``hand.json``.

Inputs (committed build outputs, see README.md): ``build/hand_geometry.npz`` (bones, joints,
axes, skin surface) and ``build/hand_tissues.npz`` (muscles, tetrahedra, skinning weights).

    python templates/hand/build_model.py [--out templates/assets/hand]

Layout (NIMBLE conventions, DESIGN §4), one vertex stack:

* ``bones``: the 20 bones in NIMBLE order (part ids = bone ids), weights one-hot to each bone's joint;
* ``muscles``: the tet nodes of the 14 muscles, each component's surface vertices first (the
  surface faces index them), parts = the 7 muscle groups;
* ``skin``: the skin-volume tet nodes: the 6,000 skin surface vertices first (the skin faces index
  them), then the inner-surface and Steiner nodes; ``extras['skin_surface_mask']`` marks the surface.

Joint regressor: each joint is a convex combination (non-negative, rows summing to 1) of a few
vertices of the bone that carries it (the parent bone: the rotation centre lies in its head),
solved by NNLS, so it reproduces the stored joints and moves with every affine per-bone shape map.

Shape space ``shape`` (normalised, beta ~ N(0, 1)): synthetic, built from smooth displacement fields:
per-bone affine maps composed down the kinematic tree (each bone scaled about its proximal joint,
then carried along by its parent), blended onto muscles/skin with the skinning weights, plus
soft-tissue fields that push soft-tissue nodes away from the bones. The SD of every component is
from published hand anthropometry (cited where defined); no scan data is used.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls
from scipy.spatial import cKDTree

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from anatomy.io.model_data import ModelData, TissueSpec  # noqa: E402
from anatomy.io.model_file import save_model  # noqa: E402
from anatomy.io.official_nimble import (  # noqa: E402
    BONE_NAMES,
    BONE_TO_JOINT,
    JOINT_TO_BONE,
    NIMBLE_JOINT_NAMES,
    NIMBLE_PARENTS,
)

# ------------------------------------------------------------------------------------------------
# anthropometry (relative SDs of the components; beta = 1 is one SD)
# ------------------------------------------------------------------------------------------------
# Hand length (wrist crease - middle fingertip), adults: men 193.6 +- 9.3 mm, women 180.5 +- 9.2 mm
# (Greiner 1991, "Hand anthropometry of U.S. Army personnel", US Army Natick TR-92/011); pooled
# ~189 +- 10 mm -> SD 5.3 % of length. Component 0 scales the whole hand uniformly by this.
SD_SIZE = 10.0 / 189.0
# Hand breadth at the metacarpals: men 90 +- 4.4, women 79 +- 4.0 mm (Greiner 1991); corr. with hand
# length r ~ 0.6-0.7, so the size-independent residual is ~ 0.75 * 5 % ~ 3.5 %.
SD_PALM_BREADTH = 0.035
# Palm length (wrist crease - MCP3 crease) 108 +- 6 mm, r ~ 0.85 with hand length (Greiner 1991;
# Agnihotri et al. 2005, J Forensic Leg Med): residual ~ 0.5 * 5.5 % ~ 3 %.
SD_PALM_LENGTH = 0.03
# Middle finger length 80 +- 4.5 mm (Greiner 1991), r ~ 0.85 with hand length: residual ~ 3 %.
SD_FINGER_LENGTH = 0.03
# Thumb length, r ~ 0.7 with hand length (Greiner 1991: thumb length 67 +- 4.6 mm): residual ~ 4 %.
SD_THUMB_LENGTH = 0.04
# 2D:4D digit ratio mean ~0.98, SD ~0.03-0.035 (Manning et al. 1998, Hum Reprod 13:3000): split as
# +-1.7 % on the index and -+1.7 % on the ring finger phalanges.
SD_2D4D = 0.017
# Little finger length relative to the others: SD of the 5th/3rd digit ratio ~4 % (Greiner 1991
# little finger 63 +- 4.4 mm vs middle 80 +- 4.5 mm, partly independent).
SD_LITTLE_LENGTH = 0.04
# Bone width: metacarpal/phalangeal shaft breadth CV ~5-7 % (e.g. Scheuer & Black 2000,
# "Developmental Juvenile Osteology"; radiogrammetry of the 2nd metacarpal, Meema & Meema 1987).
SD_BONE_WIDTH = 0.05
# Soft-tissue thickness (dorsal/palmar hand soft tissue, subcutaneous fat): CV ~15 % across adults
# (ultrasound of hand soft tissue, e.g. Kawchuk & Elliott 1998; skinfold CVs 20-40 % are an upper
# bound). Applied as a radial push of soft-tissue nodes away from the bones.
SD_SOFT = 0.15
# Palmar pad thickness beyond the overall soft-tissue factor (thenar/hypothenar/finger pulps): 15 %.
SD_PALMAR = 0.15
# Finger girth (circumference at the PIP) 72 +- 4.5 mm, residual to hand size ~5 % (Greiner 1991).
SD_FINGER_GIRTH = 0.05

FINGER_BONES = {f: [i for i, n in enumerate(BONE_NAMES) if n[-1] == str(f) and n != "carpal"] for f in range(1, 6)}
METACARPALS = [BONE_NAMES.index(f"met{f}") for f in range(1, 6)]
PHALANGES_2_5 = [b for f in range(2, 6) for b in FINGER_BONES[f] if not BONE_NAMES[b].startswith("met")]


def child_joint(j: int) -> int | None:
    kids = [k for k, p in enumerate(NIMBLE_PARENTS) if p == j]
    return kids[0] if len(kids) == 1 else None


# ------------------------------------------------------------------------------------------------
# joint regressor
# ------------------------------------------------------------------------------------------------


def solve_regressor(bone_verts: np.ndarray, bone_id: np.ndarray, joints: np.ndarray) -> tuple[np.ndarray, float]:
    """Sparse (25, V_bone) non-negative rows summing to 1 that reproduce ``joints``."""
    v64 = bone_verts.astype(np.float64)
    rows = np.zeros((len(joints), len(v64)))
    worst = 0.0
    for j, target in enumerate(joints.astype(np.float64)):
        own = JOINT_TO_BONE[j] if NIMBLE_PARENTS[j] < 0 or NIMBLE_JOINT_NAMES[j].endswith("_end") \
            else JOINT_TO_BONE[NIMBLE_PARENTS[j]]
        candidates = [[own], [own, JOINT_TO_BONE[j]], list(range(len(BONE_NAMES)))]
        best = None
        for bones in candidates:
            pool = np.flatnonzero(np.isin(bone_id, bones))
            for k in (12, 24, 48, 96):
                k = min(k, len(pool))
                d = np.linalg.norm(v64[pool] - target, axis=1)
                sel = pool[np.argsort(d)[:k]]
                lam = 1e3
                a = np.vstack([v64[sel].T, lam * np.ones((1, k))])
                b = np.concatenate([target, [lam]])
                w, _ = nnls(a, b)
                w[w < 1e-7] = 0.0
                w /= w.sum()
                err = float(np.linalg.norm(w @ v64[sel] - target))
                if best is None or err < best[0]:
                    best = (err, sel, w)
                if err < 1e-6:
                    break
            if best[0] < 1e-6:
                break
        assert best is not None
        rows[j, best[1]] = best[2]
        worst = max(worst, best[0])
    return rows, worst


# ------------------------------------------------------------------------------------------------
# shape space
# ------------------------------------------------------------------------------------------------


def bone_axes(joints: np.ndarray) -> np.ndarray:
    """Unit axis of each bone: proximal joint -> its (single) child joint; carpal: +y."""
    axes = np.zeros((len(BONE_NAMES), 3))
    for b, j in enumerate(BONE_TO_JOINT):
        c = child_joint(j)
        if c is None:
            axes[b] = (0.0, 1.0, 0.0)
        else:
            d = joints[c] - joints[j]
            axes[b] = d / np.linalg.norm(d)
    return axes


def tree_field(lin: dict[int, np.ndarray], joints: np.ndarray, points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Displacement of ``points`` under per-bone linear maps ``lin[b]`` (3x3 deltas about the bone's
    proximal joint) composed down the tree; ``weights (N, 20)`` blend the bones per point."""
    joint_disp = np.zeros((len(NIMBLE_JOINT_NAMES), 3))
    bone_t = np.zeros((len(BONE_NAMES), 3))
    for j in range(len(NIMBLE_JOINT_NAMES)):  # parents come first in NIMBLE order
        p = NIMBLE_PARENTS[j]
        if p < 0:
            continue
        pb = JOINT_TO_BONE[p]
        m = lin.get(pb, np.zeros((3, 3)))
        joint_disp[j] = joint_disp[p] + m @ (joints[j] - joints[p])
    for b, j in enumerate(BONE_TO_JOINT):
        bone_t[b] = joint_disp[j]
    out = np.zeros_like(points)
    for b, j in enumerate(BONE_TO_JOINT):
        w = weights[:, b]
        nz = w > 0
        if not nz.any():
            continue
        m = lin.get(b, np.zeros((3, 3)))
        out[nz] += w[nz, None] * (bone_t[b] + (points[nz] - joints[j]) @ m.T)
    return out


def axis_scale(axis: np.ndarray, along: float, across: float) -> np.ndarray:
    aa = np.outer(axis, axis)
    return along * aa + across * (np.eye(3) - aa)


def soft_directions(points: np.ndarray, bone_verts: np.ndarray, k: int = 128, h: float = 10.0) -> np.ndarray:
    """Smooth offset from the bones: p - softmin-weighted mean of the k nearest bone vertices."""
    tree = cKDTree(bone_verts)
    d, idx = tree.query(points, k=k)
    w = np.exp(-((d - d[:, :1]) ** 2) / h**2)
    w /= w.sum(1, keepdims=True)
    q = np.einsum("nk,nkc->nc", w, bone_verts[idx])
    return points - q


def build_shape_space(template: np.ndarray, bone_mask: np.ndarray, bone_w: np.ndarray,
                      joints: np.ndarray, bone_verts: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    axes = bone_axes(joints)
    eye = np.eye(3)
    comps: list[tuple[str, str, float, np.ndarray]] = []

    def tree(name: str, desc: str, sd: float, lin: dict[int, np.ndarray]) -> None:
        comps.append((name, desc, sd, tree_field(lin, joints, template, bone_w)))

    # 0 overall size: uniform scale about the wrist centre
    comps.append(("size", "uniform scale (hand length)", SD_SIZE, SD_SIZE * template))
    # 1 palm breadth: carpus + metacarpals scaled along x (radial-ulnar); fingers carried along
    tree("palm_breadth", "carpus/metacarpals scaled radial-ulnar, fingers translated", SD_PALM_BREADTH,
         {b: SD_PALM_BREADTH * np.diag([1.0, 0.0, 0.0]) for b in [0, *METACARPALS]})
    # 2 palm length: metacarpals 2-5 lengthened along their axes
    tree("palm_length", "metacarpals 2-5 lengthened", SD_PALM_LENGTH,
         {b: axis_scale(axes[b], SD_PALM_LENGTH, 0.0) for b in METACARPALS[1:]})
    # 3 finger length: phalanges of fingers 2-5 lengthened
    tree("finger_length", "phalanges of fingers 2-5 lengthened", SD_FINGER_LENGTH,
         {b: axis_scale(axes[b], SD_FINGER_LENGTH, 0.0) for b in PHALANGES_2_5})
    # 4 thumb length
    tree("thumb_length", "thumb metacarpal and phalanges lengthened", SD_THUMB_LENGTH,
         {b: axis_scale(axes[b], SD_THUMB_LENGTH, 0.0) for b in FINGER_BONES[1]})
    # 5 2D:4D
    lin5 = {b: axis_scale(axes[b], SD_2D4D, 0.0) for b in FINGER_BONES[2][1:]}
    lin5.update({b: axis_scale(axes[b], -SD_2D4D, 0.0) for b in FINGER_BONES[4][1:]})
    tree("digit_ratio_2d4d", "index phalanges longer, ring phalanges shorter", SD_2D4D, lin5)
    # 6 little finger length
    tree("little_length", "little finger phalanges lengthened", SD_LITTLE_LENGTH,
         {b: axis_scale(axes[b], SD_LITTLE_LENGTH, 0.0) for b in FINGER_BONES[5][1:]})
    # 7 bone width: every bone widened across its axis (carpus: isotropic in x, z)
    lin7 = {b: axis_scale(axes[b], 0.0, SD_BONE_WIDTH) for b in range(1, len(BONE_NAMES))}
    lin7[0] = SD_BONE_WIDTH * np.diag([1.0, 0.0, 1.0])
    tree("bone_width", "bones widened across their axes (soft tissue carried along)", SD_BONE_WIDTH, lin7)
    # 8 soft-tissue thickness: soft nodes pushed away from the bones
    off = np.zeros_like(template)
    soft = ~bone_mask
    off[soft] = soft_directions(template[soft], bone_verts)
    comps.append(("soft_tissue", "soft tissue thicker everywhere", SD_SOFT, SD_SOFT * off))
    # 9 palmar pads: only the palmar-pointing part of the offset (+z = palmar)
    norm = np.linalg.norm(off, axis=1, keepdims=True) + 1e-9
    palmar = np.clip(off[:, 2:3] / norm, 0.0, None) ** 2
    comps.append(("palmar_pads", "palmar soft tissue (pads, pulps) thicker", SD_PALMAR, SD_PALMAR * palmar * off))
    # 10 finger girth: phalanges 1-5 widened (bones), soft tissue of the fingers thicker
    phal = [b for f in range(1, 6) for b in FINGER_BONES[f] if not BONE_NAMES[b].startswith("met")]
    girth = tree_field({b: axis_scale(axes[b], 0.0, SD_FINGER_GIRTH) for b in phal}, joints, template, bone_w)
    finger_w = bone_w[:, phal].sum(1, keepdims=True)
    girth = girth + SD_FINGER_GIRTH * finger_w * off
    comps.append(("finger_girth", "finger bones and soft tissue wider", SD_FINGER_GIRTH, girth))
    del eye
    basis = np.stack([c[3] for c in comps])
    info = [{"index": i, "name": n, "description": d, "sd_fraction": round(float(s), 5)}
            for i, (n, d, s, _) in enumerate(comps)]
    return basis, info


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------


def sparse_rows(idx: np.ndarray, val: np.ndarray,
                row0: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    r, c = np.nonzero(val > 0)
    vals = val[r, c].astype(np.float64)
    return [r + row0], [idx[r, c].astype(np.int64)], [vals]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "templates" / "assets" / "hand"))
    args = ap.parse_args(argv)
    geo_path, tis_path = HERE / "build" / "hand_geometry.npz", HERE / "build" / "hand_tissues.npz"
    g, t = np.load(geo_path), np.load(tis_path)
    assert list(g["bone_joint"]) == list(BONE_TO_JOINT)
    assert list(g["joint_parents"]) == list(NIMBLE_PARENTS)

    # -- bones
    bone_v = g["bone_verts"].astype(np.float64)
    bone_id = g["bone_vert_id"].astype(np.int64)
    nb = len(bone_v)
    # -- muscles: per component, surface vertices first (as in the tet nodes)
    mv_off, mt_off = t["muscle_v_offsets"].astype(np.int64), t["muscle_tet_node_offsets"].astype(np.int64)
    surf_to_node = np.zeros(len(t["muscle_verts"]), np.int64)
    for i in range(len(mv_off) - 1):
        n = mv_off[i + 1] - mv_off[i]
        surf_to_node[mv_off[i]:mv_off[i + 1]] = mt_off[i] + np.arange(n)
        assert np.array_equal(t["muscle_tet_nodes"][mt_off[i]:mt_off[i] + n],
                              t["muscle_verts"][mv_off[i]:mv_off[i + 1]])
    muscle_nodes = t["muscle_tet_nodes"].astype(np.float64)
    muscle_faces = surf_to_node[t["muscle_faces"].astype(np.int64)]
    muscle_tets = t["muscle_tets"].astype(np.int64)
    comp_of_node = np.repeat(np.arange(len(mt_off) - 1), np.diff(mt_off))
    group_names = [str(s) for s in t["muscle_groups"]]
    comp_group = np.array([t["muscle_vert_group_id"][mv_off[i]] for i in range(len(mv_off) - 1)], np.int64)
    muscle_part = comp_group[comp_of_node]
    nm = len(muscle_nodes)
    # -- skin volume (surface vertices first)
    skin_nodes = t["skin_tet_nodes"].astype(np.float64)
    n_skin = int(t["skin_tet_n_skin"])
    assert np.array_equal(t["skin_tet_nodes"][:n_skin], g["skin_verts"])
    skin_mask = np.zeros(len(skin_nodes), bool)
    skin_mask[:n_skin] = True
    ns = len(skin_nodes)

    template = np.concatenate([bone_v, muscle_nodes, skin_nodes])
    V = len(template)
    # -- skinning weights (V, 25)
    rows = [np.arange(nb)]
    cols = [np.asarray(BONE_TO_JOINT)[bone_id]]
    vals = [np.ones(nb)]
    for idx_key, val_key, row0 in (("sw_muscle_nodes_idx", "sw_muscle_nodes_val", nb),
                                   ("sw_skin_nodes_idx", "sw_skin_nodes_val", nb + nm)):
        r, c, v = sparse_rows(t[idx_key], t[val_key], row0)
        rows += r
        cols += c
        vals += v
    r_all, c_all, v_all = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    sums = np.bincount(r_all, v_all, minlength=V)
    assert (sums > 0).all()
    v_all = v_all / sums[r_all]
    sw = torch.sparse_coo_tensor(torch.from_numpy(np.stack([r_all, c_all])), torch.from_numpy(v_all).float(),
                                 (V, 25), check_invariants=True).coalesce()
    # blend weights per bone (for the shape fields)
    bone_w = np.zeros((V, len(BONE_NAMES)))
    np.add.at(bone_w, (r_all, np.asarray(JOINT_TO_BONE)[c_all]), v_all)

    # -- joint regressor
    joints = g["joints"].astype(np.float64)
    reg_bone, reg_err64 = solve_regressor(bone_v, bone_id, joints)
    jr_dense = np.zeros((25, V))
    jr_dense[:, :nb] = reg_bone
    jr = torch.from_numpy(jr_dense).float().to_sparse_coo().coalesce()
    tpl32 = torch.from_numpy(template).float()
    reg_err32 = float((torch.sparse.mm(jr, tpl32) - torch.from_numpy(joints).float()).norm(dim=1).max())

    # -- shape space
    bone_mask = np.zeros(V, bool)
    bone_mask[:nb] = True
    basis, shape_info = build_shape_space(template, bone_mask, bone_w, joints, bone_v)

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta = {
        "name": "anatomy-default-hand",
        "units": "mm",
        "handedness": "right",
        "licence": "Apache-2.0 (bone geometry and joints derived from myo-sim 0.2.4, MyoHub; see "
                   "templates/NOTICE and templates/LICENSE-myo-sim); muscles, skin, weights and shape "
                   "space: this project's own construction, same licence as the package",
        "description": "Default right hand in the NIMBLE layout (20 bones, 25 joints), hand frame: origin wrist "
                       "centre, +x radial, +y distal, +z palmar; MyoHand rest pose (not NIMBLE's). Real bone "
                       "geometry (myo-sim meshes, decimated); intrinsic muscles and skin are modelled "
                       "(anatomical origins/insertions, chosen radii; implicit skin around the bones), not "
                       "segmented from scans; skinning weights by bone heat. The shape space is synthetic: "
                       "smooth displacement fields with SDs from published hand anthropometry, not learned "
                       "from scans. No pose correctives and no pose PCA yet.",
        "shape_components": shape_info,
        "hand_length_sd_fraction": SD_SIZE,
        "joint_regressor_max_error_mm": reg_err32,
        "provenance": {
            "build_script": "templates/hand/build_model.py",
            "inputs": ["templates/hand/build/hand_geometry.npz", "templates/hand/build/hand_tissues.npz"],
            "date": now,
        },
    }
    tissues = [
        TissueSpec("bones", 0, nb, torch.from_numpy(g["bone_faces"].astype(np.int64)), None, list(BONE_NAMES),
                   torch.from_numpy(bone_id)),
        TissueSpec("muscles", nb, nb + nm, torch.from_numpy(muscle_faces), torch.from_numpy(muscle_tets),
                   group_names, torch.from_numpy(muscle_part)),
        TissueSpec("skin", nb + nm, V, torch.from_numpy(g["skin_faces"].astype(np.int64)),
                   torch.from_numpy(t["skin_tets"].astype(np.int64))),
    ]
    basis_t = torch.from_numpy(basis).float()
    data = ModelData(
        template=tpl32, tissues=tissues, joint_names=list(NIMBLE_JOINT_NAMES), parents=list(NIMBLE_PARENTS),
        joint_regressor=jr, skinning_weights=sw, spaces={"shape": basis_t}, pose_basis=None,
        extras={
            "skin_surface_mask": torch.from_numpy(skin_mask),
            "rest_joints": torch.from_numpy(joints).float(),
            "joint_axes": torch.from_numpy(g["joint_axes"]).float(),
            "joint_ranges": torch.from_numpy(g["joint_ranges"]).float(),
            "joint_dof_mask": torch.from_numpy(g["joint_dof_mask"].astype(np.int64)),
        },
        meta=meta,
    )
    tp, sp = save_model(data, args.out, overwrite=True)
    size = tp.stat().st_size + sp.stat().st_size
    if size > 8_000_000:
        data.spaces["shape"] = basis_t.half()
        tp, sp = save_model(data, args.out, overwrite=True)
        size = tp.stat().st_size + sp.stat().st_size
    print(f"V={V} (bones {nb}, muscles {nm}, skin {ns} of which {n_skin} surface); "
          f"tets muscles {len(muscle_tets)}, skin {len(t['skin_tets'])}")
    print(f"shape basis {tuple(basis.shape)} {data.spaces['shape'].dtype}; regressor nnz {jr._nnz()}, "
          f"max error {reg_err64:.2e} mm (float64), {reg_err32:.2e} mm (float32)")
    print(f"wrote {tp} + {sp}: {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
