"""Assemble the embedded default head model ``templates/assets/head.safetensors`` + ``head.json``.

    python templates/head/build_model.py [--no-render]      (~1-2 min on 2 cores)

Input: the geometry build (``build/head_geometry.npz`` + ``build/landmarks.json``, made by
``build_geometry.py``). Output (the old one is deleted first): the model pair, a report
``build/head_model_report.json`` and a picture ``build/head_model.png``. The report's
``check.penetration`` is the package's own bone-through-skin measure on 1,000 random heads
(``penetration_check``), overall and per space.

Contract (what ``anatomy.Sculptor`` reads):

* tissues ``skull`` (cranium + maxilla), ``mandible``, ``face`` (triangles), mm, RAS head frame
  (origin mid-porion, +x right porion, +y anterior, +z superior);
* joints ``root`` (mid-porion, regressed from the two porion landmarks on the skull) and ``jaw``
  (child of root; midpoint of the two condylar-head centroids, regressed from mandible vertices);
* skinning: skull -> root, mandible -> jaw, face: a smooth jaw weight (``model_rig``);
* spaces, in order: ``shape`` (``spaces_shape``), ``trait`` (``spaces_trait``), ``expression``
  (``spaces_expression``), each normalised N(0, 1) per component;
* ``pose_basis``: jaw correctives on ``R_jaw - I`` (``model_correctives``);
* landmarks: every skeletal and soft-tissue landmark of the geometry build;
* extras: jaw rotation/offset limits, rest joints, TMJ centres, lip sheet boundaries.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import model_correctives as MC  # noqa: E402
import model_rig as R  # noqa: E402
import spaces_expression as SE  # noqa: E402
import spaces_shape as SS  # noqa: E402
import spaces_trait as ST  # noqa: E402

from anatomy.io import load_model, save_model  # noqa: E402
from anatomy.io.model_data import ModelData, TissueSpec  # noqa: E402
from anatomy.io.model_file import model_paths  # noqa: E402

OUT = ROOT / "templates" / "assets" / "head"
REPORT = HERE / "build" / "head_model_report.json"
PICTURE = HERE / "build" / "head_model.png"
NUM_SHAPE = 10
FP16_TOLERANCE_MM = 0.05
SIZE_LIMIT = 4_000_000


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sparse(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    idx = torch.from_numpy(np.stack([rows, cols]).astype(np.int64))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(vals.astype(np.float32)), shape).coalesce()


def compact(t: np.ndarray, coeff_norm: float = 1.0) -> tuple[torch.Tensor, float]:
    """float16 if that costs < FP16_TOLERANCE_MM at coefficients of norm ``coeff_norm`` (bound:
    per-vertex Frobenius norm of the rounding error over the components), else float32."""
    x32 = torch.from_numpy(t.astype(np.float32))
    x16 = x32.half()
    diff = x16.double() - torch.from_numpy(t)
    err = float(diff.pow(2).sum(dim=(0, 2)).sqrt().max()) * coeff_norm
    return (x16, err) if err < FP16_TOLERANCE_MM else (x32, 0.0)


def build(render: bool = True) -> dict:
    t0 = time.time()
    inputs = {"templates/head/build/head_geometry.npz": sha256(R.GEOMETRY),
              "templates/head/build/landmarks.json": sha256(R.LANDMARKS)}
    geo = R.load_geometry()
    off, V = geo.offsets, geo.num_vertices
    ns, nm, nf = (len(geo.verts[t]) for t in R.TISSUES)
    template = np.concatenate([geo.verts[t] for t in R.TISSUES])

    # -- rig
    jreg, joints = R.joint_regressor(geo)
    w_face, w_info = R.face_jaw_weights(geo)
    w_face = np.round(w_face * 2048.0) / 2048.0  # k / 2^11: w and 1 - w exact in float16, rows sum to 1
    limits, lim_info = R.jaw_limits(geo, joints[1])
    normals = R.welded_normals(geo)

    # -- spaces
    trait, trait_info = ST.build_trait_space(geo, w_face)
    facs = SS.shape_factors(geo, w_face, normals, joints[1])
    cover_info = SS.fit_under_cover(facs, geo, w_face, others=trait)
    shape, shape_info = SS.build_shape_space(facs, NUM_SHAPE)
    shape_info["cover"] = cover_info
    expr, expr_info = SE.build_expression_space(geo, w_face, normals)
    pb_face, corr_info = MC.fit_correctives(geo, w_face, joints[1], limits)
    pose_basis = np.zeros((9, V, 3))
    pose_basis[:, off["face"]:] = pb_face

    # -- skinning weights, dense (V, 2) float16 (smaller than sparse here; rounding < 2.5e-4 per weight,
    # < 0.015 mm at the full opening): skull -> root, mandible -> jaw, face -> (1 - w, w)
    sw = np.zeros((V, 2))
    sw[:ns, 0] = 1.0
    sw[off["mandible"]:off["face"], 1] = 1.0
    sw[off["face"]:, 0], sw[off["face"]:, 1] = 1.0 - w_face, w_face
    skin_w = torch.from_numpy(sw.astype(np.float16))
    jr_r, jr_c = np.nonzero(jreg)
    joint_reg = sparse(jr_r, jr_c, jreg[jr_r, jr_c], (2, V))

    # -- landmarks
    names = list(geo.landmarks)
    lm_ids = np.array([geo.faces[geo.landmarks[n]["mesh"]][geo.landmarks[n]["face"]] + off[geo.landmarks[n]["mesh"]]
                       for n in names])
    lm_w = np.array([geo.landmarks[n]["bary"] for n in names])
    lm_w /= lm_w.sum(1, keepdims=True)

    spaces, fp16_err = {}, {}
    for key, arr in (("shape", shape), ("trait", trait), ("expression", expr)):
        spaces[key], fp16_err[key] = compact(arr)
    full_open = MC.euler_xyz(R.anatomical_to_head(limits["jaw_rotation_upper"]))
    pose_t, fp16_err["pose_basis"] = compact(pose_basis, float(np.linalg.norm(full_open - np.eye(3))))

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    trait_names = [t["name"] for t in trait_info]
    expr_names = [e["name"] for e in expr_info]
    meta = {
        "name": "anatomy-default-head",
        "units": "mm",
        "frame": "RAS head frame: origin mid-porion, +x towards the right porion, +y anterior (Frankfurt "
                 "horizontal), +z superior",
        "description": "Default head in the SCULPTOR layout (skull = cranium + maxilla, mandible, face; joints "
                       "root + jaw). REAL geometry: skull and mandible from myo-sim's hat_skull/hat_jaw meshes "
                       "(scaled to adult norms), face from pydeface's mean head MRI. SYNTHETIC spaces: shape from "
                       "published craniometric and soft-tissue-thickness statistics (sampled phantoms + PCA), "
                       "trait from typical orthognathic movements and published soft-to-hard tissue ratios, "
                       "expression from muscle lines (origin on bone, insertion in skin), jaw correctives from "
                       "ARAP-deformed synthetic jaw openings. Nothing is learned from scans.",
        "licence": "skull/mandible geometry: Apache-2.0 (myo-sim 0.2.4, MyoHub; templates/LICENSE-myo-sim); face "
                   "geometry: MIT (pydeface 2.1.0, poldracklab; templates/LICENSE-pydeface); see templates/NOTICE. "
                   "Rig, spaces and correctives: this project's own construction, same licence as the package.",
        "provenance": {
            "build_script": "templates/head/build_model.py",
            "modules": ["templates/head/model_rig.py", "templates/head/spaces_shape.py",
                        "templates/head/spaces_trait.py", "templates/head/spaces_expression.py",
                        "templates/head/model_correctives.py", "templates/head/spaces_fields.py"],
            "inputs": inputs,
            "sources": {"myo-sim": "0.2.4 (Apache-2.0)", "pydeface": "2.1.0 (MIT)"},
            "date": now,
        },
        "space_order": ["shape", "trait", "expression"],
        "trait_names": trait_names,
        "expression_names": expr_names,
        "shape_components": {k: shape_info[k] for k in ("samples", "explained_variance", "main_factor")},
        "trait_components": [{k: v for k, v in t.items() if k not in ("description", "max_skin_displacement_mm")}
                             for t in trait_info],
        "expression_components": [{k: e[k] for k in ("index", "name", "muscle", "peak_mm")} for e in expr_info],
        "landmark_groups": {"skeletal": geo.names("skeletal"), "soft_tissue": geo.names("soft_tissue")},
        "jaw": {
            "joint": "jaw (index 1): midpoint of the two condylar-head centroids",
            "rotation_convention": "jaw_rotation_* are ranges of the anatomical angles (opening, roll, yaw): "
                                   "intrinsic XYZ angles of the jaw's local rotation read in extras['jaw_frame'] "
                                   "= diag(-1, -1, 1) (anatomy.models.head_limits.JAW_FRAME: x = inter-condylar "
                                   "axis pointing LEFT, y posterior, z superior), so a POSITIVE first angle opens "
                                   "the mouth. In head-frame (RAS) axis-angle, opening by a is (-a, 0, 0): a "
                                   "positive rotation about +x would lift the chin. Upper opening limit = the "
                                   "rotation whose chord at the lower incisal edge is the maximal interincisal "
                                   "opening; lower limit 0 (teeth in occlusion).",
            "offset_convention": "jaw_offset_* (mm) bound the translation added to the jaw joint relative to root "
                                 "(condylar glide): +y protrusion, -z downward glide, +-x the condyles' side "
                                 "shift (Bennett movement; the lateral excursion of the chin is the yaw).",
            **lim_info,
        },
        "pose_correctives": {k: v for k, v in corr_info.items() if k != "ridge_scan"},
        "fp16_max_error_mm": {k: round(v, 4) for k, v in fp16_err.items()},
        "report": "templates/head/build/head_model_report.json (full build figures)",
    }
    extras = {k: torch.from_numpy(v.astype(np.float32)) for k, v in limits.items()}
    extras.update({
        "rest_joints": torch.from_numpy(joints.astype(np.float32)),
        "tmj_centres": torch.from_numpy(geo.tmj.astype(np.float32)),
        "lip_upper_ids": torch.from_numpy(geo.lip_upper + off["face"]),
        "lip_lower_ids": torch.from_numpy(geo.lip_lower + off["face"]),
    })
    tissues = [TissueSpec(t, off[t], off[t] + len(geo.verts[t]), torch.from_numpy(geo.faces[t])) for t in R.TISSUES]
    data = ModelData(
        template=torch.from_numpy(template.astype(np.float32)), tissues=tissues, joint_names=["root", "jaw"],
        parents=[-1, 0], joint_regressor=joint_reg, skinning_weights=skin_w, spaces=spaces,
        pose_basis=pose_t, pose_feature_joints=[1], landmark_names=names,
        landmark_vertices=torch.from_numpy(lm_ids.astype(np.int64)),
        landmark_weights=torch.from_numpy(lm_w.astype(np.float32)), extras=extras, meta=meta)
    for p in model_paths(OUT):  # save_model refuses to overwrite: the build replaces its own output
        p.unlink(missing_ok=True)
    tp, sp = save_model(data, OUT)
    size = tp.stat().st_size + sp.stat().st_size
    check = verify(tp, geo, joints, limits)
    check["penetration"] = penetration_check(tp)
    report = {
        "counts": {"vertices": V, "skull": ns, "mandible": nm, "face": nf,
                   "faces": {t: int(len(geo.faces[t])) for t in R.TISSUES}, "landmarks": len(names)},
        "spaces": {k: list(v.shape) + [str(v.dtype).removeprefix("torch.")] for k, v in spaces.items()},
        "pose_basis": list(pose_t.shape) + [str(pose_t.dtype).removeprefix("torch.")],
        "file_bytes": size, "fp16_max_error_mm": fp16_err,
        "joint_regressor_error_mm": check["joint_error_mm"],
        "jaw": meta["jaw"], "face_skinning": w_info, "pose_correctives": corr_info,
        "shape": shape_info, "trait": trait_info, "expression": expr_info, "check": check,
        "build_seconds": round(time.time() - t0, 1),
    }
    REPORT.write_text(json.dumps(report, indent=1))
    if size > SIZE_LIMIT:
        print(f"WARNING: model files {size / 1e6:.2f} MB > {SIZE_LIMIT / 1e6:.1f} MB")
    print(f"V={V} (skull {ns}, mandible {nm}, face {nf}); spaces {report['spaces']}; pose {report['pose_basis']}")
    print(f"wrote {tp} + {sp}: {size / 1e6:.2f} MB; fp16 max error {fp16_err}")
    print(f"jaw: opening {lim_info['opening_rotation_deg']} deg for {lim_info['max_interincisal_opening_mm']} mm; "
          f"model check { {k: v for k, v in check.items() if k != 'penetration'} }")
    print(f"correctives: {corr_info['train_error_mm']} (train), {corr_info['test_error_mm']} (test)")
    pen = check["penetration"]
    print(f"bone through skin, {pen['samples']} samples: {pen['samples_over_0.5_mm']} over 0.5 mm, max "
          f"{pen['max_depth_mm']} mm; per space {pen['per_space']}")
    if render:
        render_picture(tp, limits)
    print(f"done in {time.time() - t0:.0f} s")
    return report


def verify(path: Path, geo: R.HeadGeometry, joints: np.ndarray, limits: dict[str, np.ndarray]) -> dict:
    """Load the written model with the generic layer: joints at rest, incisor travel at full opening."""
    from anatomy.models import ArticulatedModel

    data = load_model(path)
    model = ArticulatedModel(data, dtype=torch.float64)
    rest = model()
    inc = R.lower_incisal_edge(geo)
    iid = int(np.argmin(np.linalg.norm(data.template.double().numpy() - inc, axis=1)))
    pose = torch.zeros(1, 2, 3, dtype=torch.float64)
    pose[0, 1, 0] = -float(limits["jaw_rotation_upper"][0])  # head-frame axis-angle of the full opening
    opened = model(pose)
    v0, v1 = rest.vertices[0, iid], opened.vertices[0, iid]
    return {"joint_error_mm": float((rest.joints[0] - torch.from_numpy(joints)).norm(dim=1).max()),
            "incisor_travel_at_max_opening_mm": round(float((v1 - v0).norm()), 3),
            "incisor_drop_at_max_opening_mm": round(float(v0[2] - v1[2]), 3),
            "finite": bool(torch.isfinite(opened.vertices).all())}


def penetration_check(path: Path, num: int = 1000, seed: int = 0) -> dict:
    """Bone through skin over random heads, measured as the package measures it.

    ``anatomy.Sculptor`` on the written model, ``Sculptor.penetration()`` (each bone point under
    the face paired once at rest with the skin point over it, height along the posed skin-patch
    normal, > 0 = through the skin) on ``Sculptor.sample(num)`` heads (shape ~ N(0, 1), trait ~
    U(-1, 1), expression ~ U(0, 1), jaw angles and offsets uniform inside the limits), seed
    ``seed``: all spaces with the jaw, then each space alone, then each with the jaw."""
    from anatomy.models import Sculptor

    head = Sculptor(path, dtype=torch.float64)
    pen = head.penetration()

    def measure(spaces: tuple[str, ...] | None, jaw: bool) -> dict:
        kw = head.sample(num, generator=torch.Generator().manual_seed(seed), spaces=spaces, jaw=jaw)
        with torch.no_grad():
            return pen.report(head(**kw))

    names = tuple(head.space_sizes)
    per = {name: measure((name,), False) for name in names}
    per["jaw"] = measure((), True)
    per.update({f"jaw+{name}": measure((name,), True) for name in names})
    rest = pen.heights(head())[0]
    full = measure(None, True)
    return {"measure": "anatomy.Sculptor(model).penetration().report(head(**head.sample(num, generator="
                       "torch.Generator().manual_seed(seed))))", "samples": num, "seed": seed,
            "rest_max_height_mm": round(float(rest.max()), 3), **full,
            "per_space": {k: {"max_depth_mm": v["max_depth_mm"], "samples_over_0.5_mm": v["samples_over_0.5_mm"]}
                          for k, v in per.items()}}


def render_picture(path: Path, limits: dict[str, np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    from anatomy.models import ArticulatedModel

    data = load_model(path)
    model = ArticulatedModel(data, dtype=torch.float64)
    tnames = data.meta["trait_names"]
    enames = data.meta["expression_names"]

    def pose_open(f: float) -> torch.Tensor:
        p = torch.zeros(1, 2, 3, dtype=torch.float64)
        p[0, 1, 0] = -f * float(limits["jaw_rotation_upper"][0])
        return p

    def coeff(name: str, names: list[str], val: float) -> torch.Tensor:
        c = torch.zeros(1, len(names), dtype=torch.float64)
        c[0, names.index(name)] = val
        return c

    panels = [
        ("rest", {}, (5, 75)),
        ("mouth open (60 % of the limit)", {"pose": pose_open(0.6)}, (5, 35)),
        ("smile +1.5", {"expression": coeff("smile", enames, 1.5)}, (5, 75)),
        ("brow raise + eye closure + lip pucker", {"expression": coeff("brow_raise", enames, 1.0)
                                                   + coeff("eye_closure", enames, 1.0)
                                                   + coeff("lip_pucker", enames, 1.0)}, (5, 45)),
        ("mandibular advancement +2 (10 mm)", {"trait": coeff("mandibular_advancement", tnames, 2.0)}, (0, 0)),
        ("shape component 1, +3 SD", {"shape": torch.tensor([[3.0]], dtype=torch.float64)}, (5, 75)),
    ]
    fig = plt.figure(figsize=(18, 11))
    light = np.array([0.3, 0.8, 0.5])
    light /= np.linalg.norm(light)
    for k, (title, kw, (elev, azim)) in enumerate(panels):
        pose = kw.pop("pose", None)
        out = model(pose, **kw)
        ax = fig.add_subplot(2, 3, k + 1, projection="3d")
        for tissue, colour, alpha in (("skull", (0.85, 0.82, 0.72), 1.0), ("mandible", (0.8, 0.75, 0.6), 1.0),
                                      ("face", (0.95, 0.75, 0.65), 0.45 if azim == 0 else 1.0)):
            v = out.tissue(tissue)[0].numpy()
            f = out.faces(tissue).numpy()
            if tissue != "face" and azim != 0:
                continue
            tri = v[f]
            n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
            n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
            shade = 0.35 + 0.65 * np.clip(n @ light, 0, 1)
            col = np.clip(np.outer(shade, colour), 0, 1)
            pc = Poly3DCollection(tri, facecolors=np.c_[col, np.full(len(col), alpha)], edgecolors="none",
                                  linewidths=0, antialiased=False)
            ax.add_collection3d(pc)
        ax.set_xlim(-90, 90)
        ax.set_ylim(-60, 120)
        ax.set_zlim(-110, 70)
        ax.view_init(elev=elev, azim=azim)
        ax.set_box_aspect((1, 1, 1))
        ax.set_axis_off()
        ax.set_title(title)
    fig.suptitle("anatomy-default-head: skull (myo-sim) + face (pydeface mean MRI); synthetic spaces")
    fig.tight_layout()
    fig.savefig(PICTURE, dpi=70)
    plt.close(fig)
    print(f"wrote {PICTURE}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-render", action="store_true", help="skip the picture")
    args = ap.parse_args(argv)
    build(render=not args.no_render)


if __name__ == "__main__":
    main()
