"""Head applications: ``predict-face``, ``predict-skull``, ``surgery``."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..core.errors import AnatomyError, ParameterError
from ..fitting import HeadFit, predict_face, predict_skull, simulate_surgery
from ..io import write_ply
from ..models import Sculptor
from .common import EPILOG, new_out_folder, resolve_model, write_json, write_npy, write_tissues


def _head_model(name: str) -> Sculptor:
    return Sculptor(resolve_model(name), dtype=torch.float64)


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
    new_out_folder(args.out, create=False)
    source = [str(p) for p in targets] if len(targets) > 1 else str(targets[0])
    options = {"fit_jaw": not args.no_jaw, "fit_scale": args.fit_scale, "prior_weight": args.prior_weight}
    if skull_from_face:
        fit = predict_skull(source, model, fit_expression=not args.no_expression, **options)
    else:
        fit = predict_face(source, model, **options)
    folder = new_out_folder(args.out, create=True)
    files = write_tissues(fit.output, folder)
    files.append(write_json(folder / "fit.json", _fit_doc(args, fit, ", ".join(str(p) for p in targets))).name)
    if args.picture:
        from ..vis import render_model

        files.append(render_model(fit.output, folder / "fit.png").name)
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
    new_out_folder(args.out, create=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = simulate_surgery(params, movement, model)
    for w in caught:
        print(f"anatomy surgery: warning: {w.message}", file=sys.stderr)
    folder = new_out_folder(args.out, create=True)
    files = write_tissues(result.pre, folder, "_pre", ["face"]) + write_tissues(result.post, folder, "_post")
    normal = result.change_normal_mm[0].double().numpy()
    span = max(float(np.abs(normal).max()), 1e-9)
    # colour: white = no change, red = the surface moves outwards, blue = inwards (scaled to the largest)
    u = np.clip(normal / span, -1.0, 1.0)[:, None]
    colours = np.where(u >= 0, [1.0, 1.0, 1.0] - u * [0.0, 1.0, 1.0], [1.0, 1.0, 1.0] + u * [1.0, 1.0, 0.0])
    files.append(write_ply(folder / "face_change.ply", result.post.face[0], result.post.faces("face"),
                           vertex_colors=colours).name)
    files.append(write_npy(folder / "change_mm.npy", result.change_mm[0].double().numpy()).name)
    files.append(write_npy(folder / "change_normal_mm.npy", normal).name)
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
    files.append(write_json(folder / "change.json", summary).name)
    if args.picture:
        from ..vis import render_before_after

        files.append(render_before_after(result.pre, result.post, folder / "surgery.png", show=["face"]).name)
    print(f"face change: max {float(change.max()):.2f} mm, mean {float(change.mean()):.2f} mm; "
          f"wrote {', '.join(files)} to {folder}")
    return 0


def _add_picture(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--picture", action="store_true", help=f"also write {name} (off-screen render; the vis extra)")


def _add_fit_options(parser: argparse.ArgumentParser) -> None:
    _add_picture(parser, "fit.png: the fitted tissues, the face see-through")
    parser.add_argument("--out", required=True, help="output folder (new or empty; created)")
    parser.add_argument("--model", default="head", help="'head' (the embedded default head) or a head model file")
    parser.add_argument("--no-jaw", action="store_true", help="keep the jaw closed (do not fit jaw pose/offset)")
    parser.add_argument("--fit-scale", action="store_true", help="also fit a uniform scale")
    parser.add_argument("--prior-weight", type=float, default=1.0,
                        help="weight of the Gaussian coefficient prior: the expected noise variance, mm^2 "
                             "(default 1; 0 = no prior)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``predict-face``, ``predict-skull`` and ``surgery`` to the command's sub-parsers."""
    face = sub.add_parser("predict-face", help="forensic face from a registered skull (model topology, any pose)",
                          epilog=EPILOG)
    face.add_argument("mesh", nargs="+", help="the bones in the model's topology: one mesh with every bone "
                                              "tissue (skull then mandible), or one mesh per bone tissue")
    _add_fit_options(face)
    face.set_defaults(func=cmd_predict_face)
    skull = sub.add_parser("predict-skull", help="the bones under a registered face (model topology, any pose)",
                           epilog=EPILOG)
    skull.add_argument("mesh", nargs=1, help="the face in the model's topology")
    _add_fit_options(skull)
    skull.add_argument("--no-expression", action="store_true", help="fit a neutral face (no expression)")
    skull.set_defaults(func=cmd_predict_skull)
    surgery = sub.add_parser("surgery", help="simulate an orthognathic movement on a fitted head", epilog=EPILOG)
    surgery.add_argument("--params", default=None, help="fit.json of predict-face/predict-skull (default: the "
                                                        "mean head)")
    surgery.add_argument("--move", action="append", required=True, metavar="NAME=MM",
                         help="movement of a trait's bony landmark in mm, e.g. mandibular_advancement=5 (repeat)")
    surgery.add_argument("--model", default="head", help="'head' or the head model file the params belong to")
    surgery.add_argument("--out", required=True, help="output folder (new or empty; created)")
    _add_picture(surgery, "surgery.png: the face before and after, coloured by the change (mm)")
    surgery.set_defaults(func=cmd_surgery)
