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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _mesh as M  # noqa: E402
import _sources as S  # noqa: E402
import align as AL  # noqa: E402
import face as FA  # noqa: E402
import skull as SK  # noqa: E402

OUT = Path(__file__).resolve().parent / "build"


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
    for key, ((a, b), norm, ax) in AL.NORMS.items():
        meas[key]["scaled_mm"] = round(float(np.linalg.norm(P_sc[a] - P_sc[b])), 1)
    print(f"[skull] scale x/y/z = {sc.round(4)}  ({time.time() - t0:.0f} s)")

    # 2. face
    vol, aff = FA.load_mri()
    th = FA.skin_threshold(vol)
    head = FA.skin_surface(vol, aff, th["valley"])
    crop_m, crop = FA.crop_face(head)
    face = FA.remesh(crop_m)
    Lf, groove = FA.soft_landmarks(crop_m, face)
    print(f"[face] threshold {th['valley']:.0f} (otsu {th['otsu']:.0f}); "
          f"{len(face.vertices)} v ({time.time() - t0:.0f} s)")
    fv, ff = np.asarray(face.vertices), np.asarray(face.faces)
    Pf = {k: M.bary_point(fv, ff, d["face"], d["bary"]) for k, d in Lf.items()}

    # 3. skull into face: start with nasion 6.5 mm behind soft nasion, then optimise
    init_t = Pf["soft_nasion"] - np.array([0, 6.5, 0]) - P_sc["nasion"]
    hv, hf = np.asarray(head.vertices), np.asarray(head.faces)
    tf, fit = AL.fit_in_face(P_sc, bones["skull"]["v"], bones["mandible"]["v"], hv, hf,
                             init_t, crop)
    for k in bones:
        bones[k]["v"] = tf(bones[k]["v"])
    print(f"[align] scale {fit['scale']:.4f}, mean |res| {fit['mean_abs_residual_mm']} mm, "
          f"max penetration {fit['max_penetration_mm']:.2f} mm ({time.time() - t0:.0f} s)")

    # 4. mouth slit, head frame
    fv2, ff2, lip_up, lip_lo = FA.cut_mouth(face, Lf, groove)
    P_all = SK.eval_landmarks(Lsk, bones)
    R, o = head_frame(P_all)
    for k in bones:
        bones[k]["v"] = (bones[k]["v"] - o) @ R.T
    fv2 = (fv2 - o) @ R.T
    meshes = {**bones, "face": {"v": fv2, "f": ff2}}
    L = {**Lsk, **Lf}
    P = SK.eval_landmarks(L, meshes)
    tmj = SK.tmj_centres(bones["mandible"], Lsk)
    gap = condyle_gap(bones["skull"]["v"], bones["skull"]["f"], bones["mandible"]["v"],
                      bones["mandible"]["f"], Lsk)

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
            "condyle_seating": seat,
            "condyle_fossa": gap,
            "mouth_slit_edges": int(len(lip_up) - 1),
        },
    }
    (OUT / "landmarks.json").write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc["build"], indent=1))
    if not args.no_render:
        render(meshes, P, OUT / "head_geometry.png")
    print(f"done in {time.time() - t0:.0f} s")
    return 0


def render(meshes, P, path):
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    import pyvista as pv

    def pvm(d):
        return pv.PolyData(np.asarray(d["v"], float),
                           np.hstack([np.full((len(d["f"]), 1), 3), d["f"]]).ravel())

    pl = pv.Plotter(off_screen=True, shape=(1, 3), window_size=(2100, 800))
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
    pl.screenshot(str(path))


if __name__ == "__main__":
    raise SystemExit(main())
