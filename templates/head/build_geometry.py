"""Build the geometry of the embedded default head model (issue 4).

    python templates/head/build_geometry.py [--no-render]

Reads myo-sim's skull/jaw meshes and pydeface's mean head MRI from their PyPI wheels (fetched
into templates/_cache/wheels), and writes

    templates/head/build/head_geometry.npz   skull / mandible / face meshes (mm, head frame)
    templates/head/build/landmarks.json      landmark definitions (face id + barycentric) and
                                             positions, TMJ centres, frame, build figures
    templates/head/build/head_geometry.png   check picture

Head frame (RAS+, mm): origin = midpoint of the two porions; +x = towards porion_R (right);
+y = anterior, in the Frankfurt horizontal plane (porions + mean orbitale); +z = superior.
Build-time dependencies: templates/requirements-build.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _mesh as M  # noqa: E402
import _sources as S  # noqa: E402
import align as AL  # noqa: E402
import face as FA  # noqa: E402
import lower_face as LF  # noqa: E402
import skull as SK  # noqa: E402
import warp as WP  # noqa: E402

OUT = Path(__file__).resolve().parent / "build"
CLEARANCE = 2.0  # mm of tissue the warp leaves at least over every bone vertex under the face


def head_frame(P: dict) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R (rows = axes) and origin o of the head frame from landmark positions."""
    o = 0.5 * (P["porion_R"] + P["porion_L"])
    x = P["porion_R"] - P["porion_L"]
    x /= np.linalg.norm(x)
    orb = 0.5 * (P["orbitale_R"] + P["orbitale_L"]) - o
    y = orb - (orb @ x) * x
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    return np.stack([x, y, z]), o


def condyle_gap(skull_v, skull_f, mand_v, mand_f, L) -> dict:
    """Per side: the smallest distance between the condylar head (mandible vertices within
    10 mm of condylion) and the skull, and the vertical gap straight above condylion."""
    import trimesh

    ms = M.to_trimesh(skull_v, skull_f)
    out = {}
    for tag in ("R", "L"):
        d = L[f"condylion_{tag}"]
        c = M.bary_point(mand_v, mand_f, d["face"], d["bary"])
        head = mand_v[np.linalg.norm(mand_v - c, axis=1) < 10]
        _, dist, _ = trimesh.proximity.closest_point(ms, head)
        loc, _, _ = ms.ray.intersects_location(c[None], np.array([[0, 0, 1.0]]),
                                               multiple_hits=False)
        up = float(loc[0, 2] - c[2]) if len(loc) else float("nan")
        out[tag] = {"min_distance_mm": round(float(dist.min()), 2),
                    "gap_above_condylion_mm": round(up, 2)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--no-render", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.time()
    OUT.mkdir(parents=True, exist_ok=True)

    # 1. skull + mandible (raw RAS frame, mm), landmarks, norm scaling
    raw = SK.load_raw()
    Lsk = SK.skeletal_landmarks(raw["skull"], raw["mandible"])
    raw["mandible"]["v"], seat = SK.seat_condyles(raw["skull"], raw["mandible"], Lsk)
    print(f"[skull] condyles seated: {seat}")
    P_raw = SK.eval_landmarks(Lsk, raw)
    sc, meas = AL.norm_scale(P_raw)
    centre = 0.5 * (P_raw["porion_R"] + P_raw["porion_L"])
    bones = {k: {"v": (d["v"] - centre) * sc + centre, "f": d["f"]} for k, d in raw.items()}
    P_sc = SK.eval_landmarks(Lsk, bones)
    for key, ((a, b), _norm, _ax) in AL.NORMS.items():
        meas[key]["scaled_mm"] = round(float(np.linalg.norm(P_sc[a] - P_sc[b])), 1)
    print(f"[skull] scale x/y/z = {sc.round(4)}  ({time.time() - t0:.0f} s)")

    # 2. MRI skin (field + closed surface), the face crop and its soft landmarks
    vol, aff = FA.load_mri()
    th = FA.skin_threshold(vol)
    field = FA.skin_field(vol, th["valley"])
    head = FA.skin_surface(vol, aff, th["valley"], field=field)
    crop_m, crop = FA.crop_face(head)
    L0, _ = FA.soft_landmarks(crop_m, crop_m)
    cv, cf = np.asarray(crop_m.vertices), np.asarray(crop_m.faces)
    P0 = {k: M.bary_point(cv, cf, d["face"], d["bary"]) for k, d in L0.items()}
    print(f"[mri] threshold {th['valley']:.0f} (otsu {th['otsu']:.0f}) ({time.time() - t0:.0f} s)")

    # 3. similarity: cranium/maxilla into the MRI face (nasion 6.5 mm behind soft nasion first)
    init_t = P0["soft_nasion"] - np.array([0, 6.5, 0]) - P_sc["nasion"]
    hv, hf = np.asarray(head.vertices), np.asarray(head.faces)
    tf, fit = AL.fit_in_face(P_sc, bones["skull"]["v"], hv, hf, init_t, crop, P0,
                             P_sc["upper_incisal_edge"])
    for k in bones:
        bones[k]["v"] = tf(bones[k]["v"])
    P_b = SK.eval_landmarks(Lsk, bones)
    print(f"[align] scale {fit['scale']:.4f}, rotation {fit['rotation_deg']} deg, upper-face mean "
          f"|res| {fit['mean_abs_residual_mm']} mm ({time.time() - t0:.0f} s)")

    # 4. one face surface: MRI skin above, the mandible's soft-tissue envelope below
    axis = (0.5 * (P_b["condylion_R"][0] + P_b["condylion_L"][0]), crop["y_cut"],
            P0["subnasale"][2] - 6.0)
    anchors = LF.jaw_anchors(bones["mandible"]["v"], P_b, AL.DE_GREEF_2006)
    dense, lower, grid = LF.build(field, aff, th["valley"], bones["mandible"]["v"], axis,
                               crop["z_top"], crop["z_bottom"], anchors,
                               hull_extra=LF.neck_points(P_b))
    face = FA.remesh(dense)
    Lf, _ = FA.soft_landmarks(dense, face, x_chin=float(P_b["pogonion"][0]))
    fv, ff = np.asarray(face.vertices), np.asarray(face.faces)
    print(f"[face] dense {len(dense.vertices)} v -> {len(fv)} v ({time.time() - t0:.0f} s)")

    # 5. undo the similarity's scale so the bones keep the craniometric norms (the face is
    #    scaled by 1 / s instead, about the mid-porion point), then warp the face: thickness at
    #    the table landmarks, >= 2 mm cover over every bone vertex under the face
    k_s = 1.0 / fit["scale"]
    o_s = 0.5 * (P_b["porion_R"] + P_b["porion_L"])
    for k in bones:
        bones[k]["v"] = k_s * (bones[k]["v"] - o_s) + o_s
    fv = k_s * (fv - o_s) + o_s
    P_b = SK.eval_landmarks(Lsk, bones)
    names = [k for k in AL.DE_GREEF_2006 if k in P_b]
    lm_pts = np.array([P_b[k] for k in names])
    lm_table = np.array([AL.DE_GREEF_2006[k][1] for k in names])
    bone_v = np.vstack([bones["skull"]["v"], bones["mandible"]["v"]])
    th0, _, _, _ = WP.cover(fv, ff, lm_pts)
    before = {k: round(float(t), 2) for k, t in zip(names, th0)}
    # face_region per vertex: 0 = MRI skin, 1 = blend band, 2 = mandible envelope (rebuilt)
    gw = grid["w"].ravel()[cKDTree(grid["points"]).query(fv)[1]]
    region = np.where(gw >= 0.99, 0, np.where(gw <= 0.01, 2, 1)).astype(np.uint8)
    fv_w, _, warp_log = WP.warp_face(fv, ff, [], lm_pts, lm_table, bone_v, clearance=CLEARANCE)
    smooth = WP.smoothness(fv, fv_w, ff)
    print(f"[warp] {warp_log[-1]}; {smooth} ({time.time() - t0:.0f} s)")

    # 6. mouth slit on the warped face (groove through the warped cheilions and stomion)
    Pw = {k: M.bary_point(fv_w, ff, d["face"], d["bary"]) for k, d in Lf.items()}
    groove = np.array([Pw[k][[0, 2]] for k in ("cheilion_R", "stomion", "cheilion_L")])
    groove = groove[np.argsort(groove[:, 0])]
    fv2, ff2, lip_up, lip_lo = FA.cut_mouth(M.to_trimesh(fv_w, ff), Lf, groove)
    region = np.concatenate([region, region[lip_up[1:-1]]])  # slit duplicates keep the label

    # 7. head frame (rigid)
    R, o = head_frame(P_b)
    for k in bones:
        bones[k]["v"] = (bones[k]["v"] - o) @ R.T
    fv2 = (fv2 - o) @ R.T
    meshes = {**bones, "face": {"v": fv2, "f": ff2}}
    L = {**Lsk, **Lf}
    P = SK.eval_landmarks(L, meshes)
    tmj = SK.tmj_centres(bones["mandible"], Lsk)
    gap = condyle_gap(bones["skull"]["v"], bones["skull"]["f"], bones["mandible"]["v"],
                      bones["mandible"]["f"], Lsk)
    checks = final_checks(meshes, P, lip_up, lip_lo)
    print(json.dumps(checks, indent=1))

    np.savez_compressed(
        OUT / "head_geometry.npz",
        skull_vertices=bones["skull"]["v"].astype(np.float32),
        skull_faces=bones["skull"]["f"].astype(np.int32),
        mandible_vertices=bones["mandible"]["v"].astype(np.float32),
        mandible_faces=bones["mandible"]["f"].astype(np.int32),
        face_vertices=fv2.astype(np.float32),
        face_faces=ff2.astype(np.int32),
        lip_upper_boundary=lip_up.astype(np.int32),
        lip_lower_boundary=lip_lo.astype(np.int32),
        tmj_centres=tmj.astype(np.float32),
        face_region=region,
    )
    skel_names = list(Lsk)
    soft_names = list(Lf)
    doc = {
        "units": "mm",
        "frame": "head frame, RAS+: origin midway between the porions; +x towards porion_R; "
                 "+y anterior in the Frankfurt horizontal (porions + mean orbitale); +z superior",
        "mesh_keys": {"skull": "skull_vertices/skull_faces", "mandible":
                      "mandible_vertices/mandible_faces", "face": "face_vertices/face_faces"},
        "landmark_definition": "point = sum_k bary[k] * vertices[faces[face][k]] of the named "
                               "mesh",
        "skeletal_landmarks": {k: {**L[k], "position": [round(float(x), 3) for x in P[k]]}
                               for k in skel_names},
        "soft_tissue_landmarks": {k: {**L[k], "position": [round(float(x), 3) for x in P[k]]}
                                  for k in soft_names},
        "tmj_centres": {"order": ["R", "L"], "positions": tmj.round(3).tolist(),
                        "definition": "centroid of the condylar head (mandible vertices within "
                                      "12 mm of condylion and less than 8 mm below it)"},
        "build": {
            "sources": {"myo-sim": S.PINS["myo-sim"], "pydeface": S.PINS["pydeface"]},
            "counts": {k: {"vertices": int(len(m["v"])), "faces": int(len(m["f"]))}
                       for k, m in meshes.items()},
            "input_counts": {k: int(d["n_in"]) for k, d in raw.items()},
            "skull_watertight": raw["skull"]["watertight"],
            "skull_nonmanifold_edges": raw["skull"]["nonmanifold"],
            "mandible_watertight": raw["mandible"]["watertight"],
            "norm_scale_xyz": sc.round(4).tolist(),
            "craniometry": meas,
            "skin_threshold": th,
            "face_crop_mri_world": {k: round(float(v), 2) for k, v in crop.items()},
            "fit": fit,
            "lower_face": lower,
            "warp": {"passes": warp_log, "smoothness": smooth, "clearance_mm": CLEARANCE,
                     "thickness_before_warp_mm": before},
            "face_region": {"key": "face_region (npz, uint8 per face vertex)",
                            "labels": {"0": "MRI skin", "1": "blend band",
                                       "2": "mandible envelope (rebuilt lower face)"},
                            "counts": {str(k): int((region == k).sum()) for k in (0, 1, 2)}},
            "checks": checks,
            "condyle_seating": seat,
            "condyle_fossa": gap,
            "mouth_slit_edges": int(len(lip_up) - 1),
            "runtime_s": round(time.time() - t0, 1),
        },
    }
    (OUT / "landmarks.json").write_text(json.dumps(doc, indent=1))
    if not args.no_render:
        render(meshes, P, OUT / "head_geometry.png")
    print(f"done in {time.time() - t0:.0f} s")
    # the build's targets (figures above and in landmarks.json -> build.checks)
    assert not checks["target_failures"], "; ".join(checks["target_failures"])
    print("all targets met: every table landmark covered, bone penetration 0, manifold face "
          "with one outline and the mouth slit")
    return 0


def final_checks(meshes, P, lip_up, lip_lo) -> dict:
    """Figures of the final geometry (head frame, mm) and the build's targets (listed in
    ``target_failures`` when missed; ``main`` asserts there are none): every bone vertex under
    the face is inside the skin (penetration 0), every table landmark is covered by the face,
    the face is one manifold surface with one outline plus the mouth slit, and all named
    landmarks exist."""
    fv, ff = meshes["face"]["v"], meshes["face"]["f"]
    names_all = [k for k in AL.DE_GREEF_2006 if k in P]
    pts = np.array([P[k] for k in names_all])
    th, _, _, ok = WP.cover(fv, ff, pts)
    table = np.array([AL.DE_GREEF_2006[k][1] for k in names_all])
    res = {k: {"table_mm": float(t), "model_mm": round(float(h), 2),
               "residual_mm": round(float(h - t), 2), "covered": bool(c)}
           for k, t, h, c in zip(names_all, table, th, ok)}
    bone = np.vstack([meshes["skull"]["v"], meshes["mandible"]["v"]])
    tb, _, _, okb = WP.cover(fv, ff, bone)
    loops = M.boundary_loops(ff)
    lens = sorted(len(lp) for lp in loops)
    out = {
        "per_landmark": res,
        "mean_abs_residual_mm": round(float(np.abs(th - table)[ok].mean()), 2),
        "max_abs_residual_mm": round(float(np.abs(th - table)[ok].max()), 2),
        "landmarks_covered": int(ok.sum()), "landmarks_in_table": int(len(ok)),
        "max_penetration_mm": round(float(max(0.0, -tb[okb].min())), 3),
        "min_bone_cover_mm": round(float(tb[okb].min()), 2),
        "bone_vertices_under_face": int(okb.sum()),
        "face_boundary_loops": len(loops), "face_boundary_loop_lengths": lens,
        "face_nonmanifold_edges": M.nonmanifold_edge_count(ff),
        "mouth_slit_vertices": [int(len(lip_up)), int(len(lip_lo))],
    }
    want_skel = ("nasion", "glabella", "orbitale_R", "orbitale_L", "porion_R", "porion_L",
                 "zygion_R", "zygion_L", "anterior_nasal_spine", "prosthion", "infradentale",
                 "pogonion", "gnathion", "menton", "gonion_R", "gonion_L", "condylion_R",
                 "condylion_L")
    want_soft = ("soft_nasion", "pronasale", "subnasale", "labrale_superius", "labrale_inferius",
                 "stomion", "soft_pogonion", "soft_gnathion", "soft_menton", "exocanthion_R",
                 "exocanthion_L", "endocanthion_R", "endocanthion_L", "cheilion_R", "cheilion_L")
    missing = [k for k in want_skel + want_soft if k not in P]
    fails = []
    if missing:
        fails.append(f"landmarks missing: {missing}")
    if out["landmarks_covered"] != out["landmarks_in_table"]:
        fails.append("table landmarks without skin over them: "
                     f"{[k for k, c in zip(names_all, ok) if not c]}")
    if out["max_penetration_mm"] > 0.0:
        fails.append(f"bone pokes through the skin by {out['max_penetration_mm']} mm")
    if out["face_nonmanifold_edges"]:
        fails.append("the face has non-manifold edges")
    # one outer boundary; the slit is an inner loop (upper + lower lip boundary)
    if len(loops) != 2:
        fails.append(f"face boundary loops: {lens} (want the outline and the mouth slit)")
    out["target_failures"] = fails
    return out


def render(meshes, P, path):
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    import pyvista as pv

    def pvm(d):
        return pv.PolyData(np.asarray(d["v"], float),
                           np.hstack([np.full((len(d["f"]), 1), 3), d["f"]]).ravel())

    pl = pv.Plotter(off_screen=True, shape=(1, 4), window_size=(2800, 800))
    names = list(P)
    pts = np.array([P[k] for k in names])
    views = [((0, 1, 0), (0, 0, 1)), ((1, 0, 0), (0, 0, 1)), ((0.8, 0.6, -0.3), (0, 0, 1))]
    for i, (d, up) in enumerate(views):
        pl.subplot(0, i)
        pl.add_mesh(pvm(meshes["skull"]), color="ivory")
        pl.add_mesh(pvm(meshes["mandible"]), color="burlywood")
        pl.add_mesh(pvm(meshes["face"]), color="peachpuff", opacity=0.35)
        pl.add_points(pts, color="red", point_size=8, render_points_as_spheres=True)
        if i == 1:
            pl.add_point_labels(pts, names, font_size=8, point_size=1, shape_opacity=0.2,
                                always_visible=True)
        c = np.array([0, 40.0, -20.0])
        pl.camera_position = [tuple(c + np.array(d) * 450), tuple(c), up]
    # the skin alone, opaque, three-quarter view from the front, slightly from below
    pl.subplot(0, 3)
    pl.add_mesh(pvm(meshes["face"]), color="peachpuff", smooth_shading=True)
    c = np.array([0, 40.0, -20.0])
    d = np.array([0.45, 1.0, -0.25])
    pl.camera_position = [tuple(c + d / np.linalg.norm(d) * 450), tuple(c), (0, 0, 1)]
    pl.screenshot(str(path))


if __name__ == "__main__":
    raise SystemExit(main())
