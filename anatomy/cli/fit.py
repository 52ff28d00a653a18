"""``anatomy fit``: fit the hand or head model to a mesh / point cloud, a CT/MRI volume or keypoints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.errors import OptionalDependencyError
from ..pipeline.fit_target import fit, load_layer
from .common import EPILOG, new_out_folder, write_json, write_tissues


def _jsonable(params: dict) -> dict:
    return {k: v.detach().cpu().double().tolist() for k, v in params.items()}


def cmd_fit(args: argparse.Namespace) -> int:
    new_out_folder(args.out, create=False)
    layer = load_layer(args.model)
    result = fit(layer, args.target, units=args.units, coverage=args.coverage, penetration=not args.no_penetration,
                 fit_scale=args.scale)
    out = new_out_folder(args.out, create=True)
    write_json(out / "params.json", {"model": args.model, "units": "mm", "params": _jsonable(result.params)})
    written = write_tissues(result.output, out)
    report = dict(result.report)
    report["files"] = ["params.json", "report.json", *written]
    if not args.no_picture:
        try:
            from ..vis.quick import render_output

            render_output(result.output, out / "fit.png")
            report["files"].append("fit.png")
        except OptionalDependencyError as exc:
            report["picture"] = f"not drawn: {exc}"
    write_json(out / "report.json", report)
    rows = ", ".join(f"{t['target']} mean {t['mean']:.2f} / p95 {t['p95']:.2f} {t['unit']}" for t in report["targets"])
    print(f"fitted the {args.model} model to {args.target} in {report['seconds']:.1f} s (target units: "
          f"{report['units']}): {rows}; wrote {len(report['files'])} files to {Path(args.out)}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``fit`` to the command's sub-parsers."""
    p = sub.add_parser(
        "fit", epilog=EPILOG, help="fit a model to a mesh, point cloud, CT/MRI volume or keypoints",
        description="Fit the model (staged: global, pose, shape; robust loss, priors, joint limits, penetration) to "
                    "TARGET: a PLY/OBJ/STL mesh or point cloud, a NIfTI/NRRD/MHA volume or DICOM folder, or a JSON/"
                    "CSV keypoint file (the hand's 21 keypoints or named landmarks; 2D pixels with a 'camera' in "
                    "JSON). Writes params.json, one mesh per tissue (OBJ and PLY, mm), report.json (residual mean "
                    "and 95th percentile) and fit.png into --out (new or empty).")
    p.add_argument("--model", default="hand", help="'hand', 'head' or a model file (default hand)")
    p.add_argument("--target", required=True, help="the target file (or DICOM folder)")
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--units", choices=("mm", "m", "auto"), default="auto",
                   help="units of a 3D target (default auto: metres are detected from the size)")
    p.add_argument("--coverage", choices=("partial", "full"), default="partial",
                   help="a mesh / point cloud covers part of the skin or face (default; trimmed one-way term) or "
                        "all of it")
    p.add_argument("--scale", action="store_true", help="also fit a uniform scale")
    p.add_argument("--no-penetration", action="store_true", help="skip the penetration stage")
    p.add_argument("--no-picture", action="store_true", help="do not write fit.png")
    p.set_defaults(func=cmd_fit)
