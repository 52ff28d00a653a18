"""Phantom datasets: ``anatomy phantom hand|head``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..core.errors import ParameterError
from ..scans.datasets_hand import SOFT_TISSUE, make_hand_dataset
from ..scans.datasets_head import make_head_dataset
from .common import EPILOG

_DEFAULT_SPACING = {"head": [0.48, 0.48, 1.0], "hand": [0.5]}


def _spacing(values: list[float] | None, kind: str) -> float | list[float]:
    chosen = _DEFAULT_SPACING[kind] if values is None else values
    if len(chosen) not in (1, 3):
        raise ParameterError(f"--spacing takes one number (isotropic) or three (x y z mm); got {len(chosen)}.")
    return chosen[0] if len(chosen) == 1 else chosen


def cmd_phantom(args: argparse.Namespace) -> int:
    """Generate a LUCY-like (head, CT pre/post surgery) or MRI-Hand-like (hand, MRI poses) dataset."""
    spacing = _spacing(args.spacing, args.kind)
    if args.kind == "head":
        for flag, value in (("--poses", args.poses), ("--soft-tissue", args.soft_tissue),
                            ("--collision-free", args.collision_free or None), ("--shape-sd", args.shape_sd)):
            if value is not None:
                raise ParameterError(f"{flag} is for 'anatomy phantom hand'; a head subject has the sessions pre "
                                     f"and post.")
        report = make_head_dataset(args.out, args.subjects, spacing=spacing, seed=args.seed, progress=print)
    else:
        report = make_hand_dataset(args.out, args.subjects, poses=50 if args.poses is None else args.poses,
                                   spacing=spacing, seed=args.seed, soft_tissue=args.soft_tissue,
                                   shape_sd=1.0 if args.shape_sd is None else args.shape_sd,
                                   collision_free=args.collision_free, progress=print)
    print(f"wrote {report.num_samples} samples of {args.subjects} subject(s), {report.bytes / 2**20:.1f} MiB in "
          f"{report.seconds:.1f} s; manifest {report.manifest}")
    if args.picture:
        print(f"picture of the first sample: {_picture(report.manifest)}")
    return 0


def _picture(manifest: Path) -> Path:
    """``first_sample.png`` beside the manifest: the first sample's scan with its labels, three planes."""
    from ..scans import read_volume
    from ..vis import render_slices

    first = json.loads(manifest.read_text())["samples"][0]
    files = first["files"]
    image = read_volume(manifest.parent / files["ct" if "ct" in files else "mri"])
    labels = read_volume(manifest.parent / files["labels"])
    return render_slices(image, labels, manifest.parent / "first_sample.png",
                         titles=[f"{first['subject']}/{first['session']}"])


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``phantom`` to the command's sub-parsers."""
    p = sub.add_parser("phantom", help="phantom datasets: LUCY-like head CTs (pre/post surgery) or MRI-Hand-like "
                                       "hand MRIs (poses), with ground-truth parameters, meshes and label maps",
                       epilog=EPILOG)
    p.add_argument("kind", choices=("hand", "head"), help="hand: MRI, pose 0 flat then random poses; head: CT "
                                                          "before and after a random orthognathic plan")
    p.add_argument("--subjects", type=int, required=True, help="number of subjects")
    p.add_argument("--out", required=True, help="output folder (new or empty; created)")
    p.add_argument("--poses", type=int, default=None, help="hand: poses per subject (default 50)")
    p.add_argument("--spacing", type=float, nargs="+", metavar="MM",
                   help="voxel size in mm: S or SX SY SZ (default: head 0.48 0.48 1, hand 0.5)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (the same seed writes identical data)")
    p.add_argument("--soft-tissue", choices=SOFT_TISSUE, default=None,
                   help="hand: muscles and skin by an elastic solve around the bones or by skinning (default: "
                        "elastic where available)")
    p.add_argument("--shape-sd", type=float, default=None,
                   help="hand: SD of the shape coefficients (default 1; 0 = every subject the mean hand)")
    p.add_argument("--collision-free", action="store_true", help="hand: push the bones of each pose apart (slow)")
    p.add_argument("--picture", action="store_true",
                   help="also write first_sample.png: the first sample's scan and labels in three planes")
    p.set_defaults(func=cmd_phantom)
