"""The ``anatomy`` command.

Units everywhere are millimetres and radians; meshes are written in the model's
frame (right-handed, rotation matrices act on column vectors). Every sub-command
exits with status 0 on success and 2 with a one-line reason on bad input.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .core.errors import AnatomyError, ParameterError
from .fitting import HeadFit, predict_face, predict_skull, simulate_surgery
from .io import load_model, make_toy_model_data, save_model, write_obj, write_ply, write_vtu
from .io._atomic import write_atomic
from .io.model_data import ModelData
from .io.official_nimble import mirror_hand_model_data, nimble_to_model_data, piano_to_model_data
from .io.official_sculptor import sculptor_to_model_data
from .models import ArticulatedModel, ModelOutput, Nimble, Sculptor

_EPILOG = (
    "Conventions: millimetres, radians, right-handed frames; rotation matrices act on column "
    "vectors; axis-angle pose rows are axis * angle. Exit status 2 means bad input (the reason is "
    "printed on one line)."
)


def _resolve_model(name: str) -> ModelData:
    if name == "toy":
        return make_toy_model_data()
    if name == "hand":
        from .models.nimble import default_hand_path

        return load_model(default_hand_path())
    if name == "head":
        from .models.sculptor import default_head_path

        return load_model(default_head_path())
    path = Path(name)
    if not path.exists() and not path.with_suffix(".safetensors").exists():
        raise AnatomyError(
            f"model {name!r} is neither a built-in model ('hand', 'head', 'toy') nor an existing model file."
        )
    return load_model(path)


def _demo_poses(model: ArticulatedModel, count: int, seed: int) -> torch.Tensor:
    """Rest pose first, then smooth random bends that grow along each chain."""
    g = torch.Generator().manual_seed(seed)
    poses = torch.zeros(count, model.num_joints, 3)
    if count > 1:
        poses[1:, 1:] = (torch.rand(count - 1, model.num_joints - 1, 3, generator=g) - 0.5) * 0.2
        poses[1:, 1:, 0] = torch.linspace(0.3, 1.1, count - 1)[:, None]  # flexion about x
    return poses


def _write_meshes(out: ModelOutput, folder: Path, index: int) -> list[str]:
    written = []
    for layout in out.layout:
        verts = out.tissue(layout.name)[index].detach()
        obj = write_obj(folder / f"sample{index}_{layout.name}.obj", verts, layout.faces)
        ply = write_ply(folder / f"sample{index}_{layout.name}.ply", verts, layout.faces)
        written += [obj.name, ply.name]
        if layout.tets is not None:
            written.append(write_vtu(folder / f"sample{index}_{layout.name}.vtu", verts, layout.tets).name)
    return written


def _head_demo(samples: int, seed: int) -> ModelOutput:
    """The embedded default head: mean shape at rest, then random shapes, traits and expressions
    with the mouth opening to 30-90 % of the jaw's opening limit."""
    from .core.rotations import matrix_to_axis_angle

    head = Sculptor()
    limits = head.jaw_limits()
    angles = torch.zeros(samples, 1, 3)
    if samples > 1:
        angles[1:, 0, 0] = torch.linspace(0.3, 0.9, samples - 1) * limits.upper[0, 0]
    jaw = matrix_to_axis_angle(limits.rotations(angles)[:, 0])
    g = torch.Generator().manual_seed(seed + 1)
    coeffs = {name: torch.randn(samples, k, generator=g) * 0.8 for name, k in head.space_sizes.items()}
    for value in coeffs.values():
        value[0] = 0.0
    with torch.no_grad():
        return head(**coeffs, jaw_pose=jaw)


def cmd_demo(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    if args.model == "head":
        out = _head_demo(args.samples, args.seed)
    else:
        model: ArticulatedModel
        if args.model == "hand":  # rest pose, then poses sampled within the hand's joint limits
            model = Nimble()
            sampled = model.sample_pose(args.samples, generator=torch.Generator().manual_seed(args.seed))
            poses = torch.cat([torch.zeros(1, 20, 3), sampled[1:]])
        else:
            model = ArticulatedModel(_resolve_model(args.model))
            poses = _demo_poses(model, args.samples, args.seed)
        g = torch.Generator().manual_seed(args.seed + 1)
        coeffs = {name: torch.randn(args.samples, k, generator=g) * 0.8 for name, k in model.space_sizes.items()}
        with torch.no_grad():
            out = model(poses, **coeffs)
    files = []
    for b in range(args.samples):
        files += _write_meshes(out, folder, b)
    picture = None
    if not args.no_picture:
        from .vis import render_output

        # the hand: dorsal view, fingers up; the head (RAS, face towards +y): three-quarter front view
        view = {"hand": (-55.0, 80.0), "head": (10.0, 60.0)}.get(args.model, (20.0, -60.0))
        picture = render_output(out, folder / "demo.png", titles=[f"sample {b}" for b in range(args.samples)],
                                view=view)
        files.append(picture.name)
    summary = {
        "model": args.model, "samples": args.samples, "units": "mm",
        "tissues": {t.name: t.stop - t.start for t in out.layout},
        "joints": list(out.joint_names), "files": files, "seconds": round(time.perf_counter() - start, 3),
    }
    _write_json(folder / "summary.json", summary)
    print(f"wrote {len(files)} files to {folder} ({', '.join(summary['tissues'])}); "
          f"picture: {picture if picture else 'skipped'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Rest-pose (mean shape) meshes of every tissue: OBJ + PLY, and VTU for tetrahedral tissues."""
    model = ArticulatedModel(_resolve_model(args.model))
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        out = model()
    files = _write_meshes(out, folder, 0)
    print(f"wrote {len(files)} files to {folder}: {', '.join(files)}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """An official NIMBLE / PIANO / SCULPTOR model file to our format (safetensors + JSON)."""
    source = Path(args.source)
    if not source.is_file():
        raise AnatomyError(f"official file {str(source)!r} does not exist; pass the path of the .pkl/.npy file.")
    if args.kind == "sculptor":
        if args.side == "left":
            raise AnatomyError("--side left is for the hand models; the head has no side.")
        data = sculptor_to_model_data(source, split_mandible=not args.no_split_mandible,
                                      length_scale=args.length_scale)
        if args.num_betas is not None:
            avail = int(data.spaces["shape"].shape[0])
            if not 0 <= args.num_betas <= avail:
                raise AnatomyError(f"--num-betas must be in [0, {avail}] (the file's shape components), "
                                   f"got {args.num_betas}.")
            data.spaces["shape"] = data.spaces["shape"][:args.num_betas]
    elif args.kind == "nimble":
        data = nimble_to_model_data(source, num_shape=20 if args.num_betas is None else args.num_betas)
    else:
        data = piano_to_model_data(source)
    if args.side == "left":
        data = mirror_hand_model_data(data)
    target = Path(args.out)
    if target.resolve() in (source.resolve(), source.with_suffix(".safetensors").resolve()):
        raise AnatomyError(f"--out {str(target)!r} would overwrite the input; choose another name.")
    data.meta.setdefault("provenance", {})["converted_from"] = source.name
    written = save_model(data, target, overwrite=args.overwrite)
    print(f"wrote {', '.join(str(w) for w in written)} ({data.num_vertices} vertices, {data.num_joints} joints)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    data = _resolve_model(args.model)
    info = {
        "name": data.meta.get("name", args.model), "units": data.meta.get("units", "mm"),
        "vertices": data.num_vertices,
        "tissues": [{"name": t.name, "vertices": t.num_vertices, "faces": int(t.faces.shape[0]),
                     "tets": None if t.tets is None else int(t.tets.shape[0]), "parts": list(t.part_names)}
                    for t in data.tissues],
        "joints": [{"name": n, "parent": p} for n, p in zip(data.joint_names, data.parents)],
        "spaces": {k: int(v.shape[0]) for k, v in data.spaces.items()},
        "pose_correctives": 0 if data.pose_basis is None else int(data.pose_basis.shape[0]),
        "landmarks": list(data.landmark_names), "meta": data.meta,
    }
    print(json.dumps(info, indent=2, default=str))
    return 0


# -- head applications: predict-face, predict-skull, surgery ---------------------------------


def _new_out_folder(name: str, create: bool) -> Path:
    """The output folder of the head commands: refused if it is a file or holds anything (so no
    earlier result and no input is ever replaced); created when ``create`` (after the work is done)."""
    folder = Path(name)
    if folder.exists() and not folder.is_dir():
        raise AnatomyError(f"--out {name!r} is a file; pass a new or empty folder.")
    if folder.is_dir() and any(folder.iterdir()):
        raise AnatomyError(f"--out {name!r} is not empty; pass a new or empty folder (nothing was written).")
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write_json(path: Path, doc: object) -> Path:
    return write_atomic(path, (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode("utf-8"))


def _write_npy(path: Path, array: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return write_atomic(path, buffer.getvalue())


def _head_model(name: str) -> Sculptor:
    return Sculptor(_resolve_model(name), dtype=torch.float64)


def _write_tissues(out: ModelOutput, folder: Path, suffix: str = "", names: Sequence[str] | None = None) -> list[str]:
    written = []
    for layout in out.layout:
        if names is not None and layout.name not in names:
            continue
        verts = out.tissue(layout.name)[0].detach()
        for ext, writer in ((".obj", write_obj), (".ply", write_ply)):
            written.append(writer(folder / f"{layout.name}{suffix}{ext}", verts, layout.faces).name)
    return written


def _fit_doc(args: argparse.Namespace, fit: HeadFit, target: str) -> dict[str, object]:
    residual = fit.residual_mm[0].double()
    return {
        "command": args.command, "model": args.model, "target": target, "units": "mm, radians (axis-angle)",
        "params": {k: v.double().tolist() for k, v in fit.params.items()},
        "rms_mm": float(fit.rms_mm[0]), "residual_mm": {
            "mean": float(residual.mean()), "max": float(residual.max()), "per_vertex": residual.tolist()},
        "iterations": fit.iterations[0], "converged": fit.converged[0], "seconds": round(fit.seconds, 3),
    }


def _cmd_predict(args: argparse.Namespace, skull_from_face: bool) -> int:
    model = _head_model(args.model)
    targets = [Path(p) for p in args.mesh]
    for p in targets:
        if not p.is_file():
            raise AnatomyError(f"mesh {str(p)!r} does not exist; pass the path of an OBJ/PLY/STL file.")
    _new_out_folder(args.out, create=False)
    source = [str(p) for p in targets] if len(targets) > 1 else str(targets[0])
    options = {"fit_jaw": not args.no_jaw, "fit_scale": args.fit_scale, "prior_weight": args.prior_weight}
    if skull_from_face:
        fit = predict_skull(source, model, fit_expression=not args.no_expression, **options)
    else:
        fit = predict_face(source, model, **options)
    folder = _new_out_folder(args.out, create=True)
    files = _write_tissues(fit.output, folder)
    files.append(_write_json(folder / "fit.json", _fit_doc(args, fit, ", ".join(str(p) for p in targets))).name)
    print(f"fitted in {fit.seconds:.2f} s, rms {float(fit.rms_mm[0]):.3f} mm over the {len(fit.residual_mm[0])} "
          f"target vertices; wrote {', '.join(files)} to {folder}")
    return 0


def cmd_predict_face(args: argparse.Namespace) -> int:
    """Fit the head to a registered skull (bones in the model's topology) and write the face."""
    return _cmd_predict(args, skull_from_face=False)


def cmd_predict_skull(args: argparse.Namespace) -> int:
    """Fit the head to a registered face and write the bones under it."""
    return _cmd_predict(args, skull_from_face=True)


def _parse_moves(moves: Sequence[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for text in moves:
        name, sep, value = text.partition("=")
        try:
            mm = float(value)
        except ValueError:
            mm = float("nan")
        if not sep or not name or not np.isfinite(mm):
            raise ParameterError(f"--move {text!r}: expected NAME=MILLIMETRES, e.g. mandibular_advancement=5.")
        out[name] = out.get(name, 0.0) + mm
    return out


def _load_params(path: str | None, model: Sculptor) -> dict[str, torch.Tensor]:
    if path is None:
        return {}
    try:
        doc = json.loads(Path(path).read_text())
        params = {str(k): torch.tensor(v, dtype=torch.float64) for k, v in doc["params"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ParameterError(f"--params {path!r}: expected a fit.json written by predict-face/predict-skull "
                             f"(with a 'params' table), could not read it ({exc}).") from exc
    batch = {int(v.shape[0]) for v in params.values() if v.dim() > 0}
    if batch != {1}:
        raise ParameterError(f"--params {path!r} must hold one head (batch 1), got batch sizes {sorted(batch)}.")
    return params


def cmd_surgery(args: argparse.Namespace) -> int:
    """Simulate an orthognathic movement; write the pre/post face, the change map and a summary."""
    model = _head_model(args.model)
    params = _load_params(args.params, model)
    movement = _parse_moves(args.move)
    _new_out_folder(args.out, create=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = simulate_surgery(params, movement, model)
    for w in caught:
        print(f"anatomy surgery: warning: {w.message}", file=sys.stderr)
    folder = _new_out_folder(args.out, create=True)
    files = _write_tissues(result.pre, folder, "_pre", ["face"]) + _write_tissues(result.post, folder, "_post")
    normal = result.change_normal_mm[0].double().numpy()
    span = max(float(np.abs(normal).max()), 1e-9)
    # colour: white = no change, red = the surface moves outwards, blue = inwards (scaled to the largest)
    u = np.clip(normal / span, -1.0, 1.0)[:, None]
    colours = np.where(u >= 0, [1.0, 1.0, 1.0] - u * [0.0, 1.0, 1.0], [1.0, 1.0, 1.0] + u * [1.0, 1.0, 0.0])
    files.append(write_ply(folder / "face_change.ply", result.post.face[0], result.post.faces("face"),
                           vertex_colors=colours).name)
    files.append(_write_npy(folder / "change_mm.npy", result.change_mm[0].double().numpy()).name)
    files.append(_write_npy(folder / "change_normal_mm.npy", normal).name)
    change = result.change_mm[0].double()
    summary = {
        "model": args.model, "params": args.params, "movement_mm": movement, "units": "mm",
        "trait_delta": result.trait_delta[0].double().tolist(),
        "face_change_mm": {"max": float(change.max()), "mean": float(change.mean()),
                           "normal_min": float(normal.min()), "normal_max": float(normal.max())},
        "landmarks": {name: {"change": result.landmark_change(name)[0].double().tolist(),
                             "mm": float(result.landmark_change_mm(name)[0])}
                      for name in model.landmark_names},
    }
    files.append(_write_json(folder / "change.json", summary).name)
    print(f"face change: max {float(change.max()):.2f} mm, mean {float(change.mean()):.2f} mm; "
          f"wrote {', '.join(files)} to {folder}")
    return 0


def _add_fit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (new or empty; created)")
    parser.add_argument("--model", default="head", help="'head' (the embedded default head) or a head model file")
    parser.add_argument("--no-jaw", action="store_true", help="keep the jaw closed (do not fit jaw pose/offset)")
    parser.add_argument("--fit-scale", action="store_true", help="also fit a uniform scale")
    parser.add_argument("--prior-weight", type=float, default=1.0,
                        help="weight of the Gaussian coefficient prior: the expected noise variance, mm^2 "
                             "(default 1; 0 = no prior)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anatomy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="pose a model, write meshes (OBJ/PLY/VTU) and a picture", epilog=_EPILOG)
    demo.add_argument("--model", default="hand",
                      help="built-in model ('hand': the embedded default hand, 'toy': a 3-segment finger) or a file")
    demo.add_argument("--out", default="anatomy_demo", help="output folder (created; files replaced atomically)")
    demo.add_argument("--samples", type=int, default=3, help="number of posed samples (default 3)")
    demo.add_argument("--seed", type=int, default=0, help="random seed for poses and shapes")
    demo.add_argument("--no-picture", action="store_true", help="skip the PNG (no matplotlib needed)")
    demo.set_defaults(func=cmd_demo)
    export = sub.add_parser("export", help="write a model's rest meshes per tissue (OBJ/PLY, VTU for tets)",
                            epilog=_EPILOG)
    export.add_argument("model", help="built-in model ('hand', 'toy') or a model file path")
    export.add_argument("--out", required=True, help="output folder (created; files replaced atomically)")
    export.set_defaults(func=cmd_export)
    convert = sub.add_parser("convert", help="convert an official NIMBLE/PIANO/SCULPTOR file to our model format",
                             epilog=_EPILOG)
    convert.add_argument("source", help="official file, e.g. NIMBLE_DICT_9137.pkl or paradict.npy (read by a "
                                        "restricted unpickler)")
    convert.add_argument("--kind", choices=["nimble", "piano", "sculptor"], required=True,
                         help="which official model it is")
    convert.add_argument("--num-betas", type=int, default=None,
                         help="shape components to keep (NIMBLE: default 20, the released model's default; "
                              "SCULPTOR: default all 50)")
    convert.add_argument("--no-split-mandible", action="store_true",
                         help="SCULPTOR: keep the official [skull | face] stack (mandible as a skull part)")
    convert.add_argument("--length-scale", type=float, default=1.0,
                         help="SCULPTOR: multiply lengths by this (1 for a file in mm, 1000 for metres)")
    convert.add_argument("--side", choices=["right", "left"], default="right", help="left = mirrored model")
    convert.add_argument("--out", required=True, help="output model path (stem, .safetensors or .json)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing model at --out")
    convert.set_defaults(func=cmd_convert)
    info = sub.add_parser("info", help="print a model's layout, joints, spaces and metadata", epilog=_EPILOG)
    info.add_argument("model", help="built-in model ('hand', 'toy') or a model file path")
    info.set_defaults(func=cmd_info)
    face = sub.add_parser("predict-face", help="forensic face from a registered skull (model topology, any pose)",
                          epilog=_EPILOG)
    face.add_argument("mesh", nargs="+", help="the bones in the model's topology: one mesh with every bone "
                                              "tissue (skull then mandible), or one mesh per bone tissue")
    _add_fit_options(face)
    face.set_defaults(func=cmd_predict_face)
    skull = sub.add_parser("predict-skull", help="the bones under a registered face (model topology, any pose)",
                           epilog=_EPILOG)
    skull.add_argument("mesh", nargs=1, help="the face in the model's topology")
    _add_fit_options(skull)
    skull.add_argument("--no-expression", action="store_true", help="fit a neutral face (no expression)")
    skull.set_defaults(func=cmd_predict_skull)
    surgery = sub.add_parser("surgery", help="simulate an orthognathic movement on a fitted head", epilog=_EPILOG)
    surgery.add_argument("--params", default=None, help="fit.json of predict-face/predict-skull (default: the "
                                                        "mean head)")
    surgery.add_argument("--move", action="append", required=True, metavar="NAME=MM",
                         help="movement of a trait's bony landmark in mm, e.g. mandibular_advancement=5 (repeat)")
    surgery.add_argument("--model", default="head", help="'head' or the head model file the params belong to")
    surgery.add_argument("--out", required=True, help="output folder (new or empty; created)")
    surgery.set_defaults(func=cmd_surgery)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "samples", 1) < 1:
        parser.error("--samples must be at least 1")
    try:
        return int(args.func(args))
    except (AnatomyError, OSError) as exc:
        print(f"anatomy {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
