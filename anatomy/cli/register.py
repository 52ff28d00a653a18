"""``anatomy register``: register scans with a model, one result folder per scan, resumable."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..core.errors import ParameterError
from ..pipeline.runner import ScanResult, find_scans, run_registrations
from .common import EPILOG, write_json


def _progress(result: ScanResult, done: int, total: int) -> None:
    what = result.status if result.status != "failed" else f"FAILED ({result.error})"
    bar = "#" * round(20 * done / total)
    print(f"[{bar:<20}] {done}/{total} {result.job.name}: {what}"
          + (f" in {result.seconds:.0f} s" if result.status == "done" else ""), file=sys.stderr, flush=True)


def _table(results: list[ScanResult]) -> str:
    rows = [f"{'scan':<28} {'status':<8} {'seconds':>7}  residual mean / p95 (mm) per tissue"]
    for r in results:
        tissues = r.report.get("tissues", {})
        cells = ", ".join(f"{k} {v['registered']['mean_mm']:.2f}/{v['registered']['p95_mm']:.2f}"
                          for k, v in tissues.items() if "registered" in v)
        rows.append(f"{r.job.name:<28} {r.status:<8} {r.seconds:>7.1f}  {cells or (r.error or '')}")
    return "\n".join(rows)


def cmd_register(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if args.vertices < 1000:
        raise ParameterError(f"--vertices must be at least 1000; got {args.vertices}.")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"--out {args.out!r} is a file; pass a folder (finished scans in it are skipped).")
    jobs = find_scans(args.scans, labels=args.labels)
    print(f"registering {len(jobs)} scan(s) with the {args.model} model into {out}"
          + (f" on the Dask scheduler {args.scheduler}" if args.scheduler else f" with {args.workers} process(es)"),
          file=sys.stderr, flush=True)
    results = run_registrations(args.model, jobs, out, workers=args.workers, scheduler=args.scheduler,
                                retries=args.retries, progress=_progress, vertices=args.vertices,
                                free_form=not args.no_free_form, picture=not args.no_picture,
                                spacing=None if args.spacing is None else tuple(args.spacing))
    print(_table(results))
    failed = [r for r in results if r.status == "failed"]
    write_json(out / "register_summary.json", {
        "model": args.model, "scans": str(args.scans), "seconds": round(time.perf_counter() - start, 3),
        "results": [{"scan": r.job.name, "status": r.status, "seconds": round(r.seconds, 3),
                     "attempts": r.attempts, "error": r.error, "tissues": r.report.get("tissues", {})}
                    for r in results]})
    if failed:
        print(f"anatomy register: {len(failed)} of {len(results)} scan(s) failed; run the command again to retry "
              f"them (finished scans are skipped)", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``register`` to the command's sub-parsers."""
    p = sub.add_parser(
        "register", epilog=EPILOG,
        help="register scans with a model: meshes in template correspondence, parameters, residuals",
        description="Register each scan with the model: its surfaces (the CT segmentation of `anatomy segment`, or "
                    "the label map of a phantom dataset), the model fitted to them, then a free-form step. One "
                    "folder per scan under --out: <tissue>.ply (template vertex order, the scan's world mm, RAS+), "
                    "params.json, residuals.npz, report.json, overlay.png. Finished scans are skipped when the "
                    "command runs again; unfinished ones are redone.")
    p.add_argument("--model", default="head", help="'head', 'hand' or a model file (default head)")
    p.add_argument("--scans", required=True,
                   help="a scan (NIfTI/NRRD/MHA file or DICOM folder), a folder of scan files, or a phantom dataset "
                        "(its folder or manifest.json; a hand dataset's keypoints start the hand fit)")
    p.add_argument("--out", required=True, help="output folder (created; finished scans in it are skipped)")
    p.add_argument("--labels", choices=("mri", "always", "never"), default="mri",
                   help="use a dataset's label maps for MRI samples (default: bone is not segmented on MRI), for "
                        "every sample, or never")
    p.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("SX", "SY", "SZ"),
                   help="voxel size (mm) of PNG/TIFF slice stacks (other formats carry their own)")
    p.add_argument("--vertices", type=int, default=20_000, help="target surfaces' vertex count (default 20000)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (0: in this process; default 1)")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address (tcp://host:8786): run the scans there")
    p.add_argument("--retries", type=int, default=2, help="re-runs of a scan whose worker died (default 2)")
    p.add_argument("--no-free-form", action="store_true", help="keep the model fit (skip the non-rigid step)")
    p.add_argument("--no-picture", action="store_true", help="do not write overlay.png")
    p.set_defaults(func=cmd_register)
