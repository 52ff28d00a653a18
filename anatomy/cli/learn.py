"""``anatomy learn``: a model file's spaces learned from a folder of registrations."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..core.errors import ParameterError
from ..io import save_model
from ..learning import learn_model
from .common import EPILOG, resolve_model, write_json


def cmd_learn(args: argparse.Namespace) -> int:
    """Learn the shape (and for a head, trait) space; write the model and ``<stem>.learn.json``."""
    start = time.perf_counter()
    if args.components is not None and args.components < 1:
        raise ParameterError(f"--components must be at least 1; got {args.components}.")
    if not 0.0 < args.variance <= 1.0:
        raise ParameterError(f"--variance must be in (0, 1]; got {args.variance}.")
    target = Path(args.out)
    stem = target.with_suffix("") if target.suffix in (".safetensors", ".json") else target
    report_path = stem.with_name(stem.name + ".learn.json")
    if not args.overwrite and any(p.exists() for p in (stem.with_suffix(".safetensors"), stem.with_suffix(".json"),
                                                       report_path)):
        raise ParameterError(f"--out {str(target)!r}: a model or report with that name exists; pass --overwrite or "
                             f"another name (nothing was written).")
    base = resolve_model(args.model)
    data, report = learn_model(args.registrations, base, components=args.components, variance=args.variance,
                               provenance={"registrations_folder": str(args.registrations), "base": args.model})
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = save_model(data, stem, overwrite=args.overwrite)
    report["seconds"] = round(time.perf_counter() - start, 3)
    report["model"] = [str(w) for w in written]
    write_json(report_path, report)
    if args.picture:
        from ..vis import plot_variance

        picture = plot_variance(data, stem.with_name(stem.name + ".variance.png"), title=f"learned {stem.name}")
        report["picture"] = str(picture)
    shape = report["shape"]
    trait = report.get("trait")
    print(f"learned from {report['registrations']} registrations of {report['subjects']} subjects: shape "
          f"{shape['components']} components (leave-one-out {shape['leave_one_out_mm']} mm)"
          + (f", trait {trait['components']} ({'named' if trait['named'] else 'principal'}) from "
             f"{report['pairs']} pairs" if trait else "")
          + (f", expression {report['expression']['components']} from {report['expression_scans']} expression "
             f"scans" if "expression" in report else "")
          + f"; wrote {', '.join(str(w) for w in written)} and {report_path}"
          + (f" and {report['picture']}" if "picture" in report else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``learn`` to the command's sub-parsers."""
    p = sub.add_parser("learn", help="learn a model's shape/trait/expression spaces (or a hand's articulation) "
                                     "from registrations", epilog=EPILOG)
    p.add_argument("--registrations", required=True,
                   help="folder of registrations: a phantom dataset (manifest.json) or sub-folders holding one "
                        "PLY/OBJ per tissue in the base model's vertex order (sub-X/ses-Y: sessions pre/post give "
                        "traits, expr* expressions, posed hands with params.json the articulation)")
    p.add_argument("--model", default="head", help="the base model: 'head', 'hand' or a model file")
    p.add_argument("--out", required=True, help="model path to write (stem, .safetensors or .json)")
    p.add_argument("--components", type=int, default=None, help="shape components (default: by --variance)")
    p.add_argument("--variance", type=float, default=0.99, help="share of the shape variance to keep (default 0.99)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model at --out")
    p.add_argument("--picture", action="store_true",
                   help="also write <stem>.variance.png: the variance of each learned space's components")
    p.set_defaults(func=cmd_learn)
