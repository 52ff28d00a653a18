"""Whole-scan registration (``anatomy.pipeline.register_scan``) on phantoms with known ground truth.

* Head: one LUCY-like CT (``make_head_dataset``, 0.48 x 0.48 x 1 mm unless ``--head-spacing``), registered
  from the scan alone (segmentation, surfaces, model fit, free-form step, picture).
* Hand: one MRI-Hand-like MRI pose (``make_hand_dataset``, 0.5 mm, elastic soft tissue), registered from its
  label map and its 21 keypoints.

Prints, per tissue, the mean / 95th-percentile distance (mm) of the registered vertices to the true ones (the
phantom's meshes, same vertex order) after the model fit and after the whole registration, the surface
residual, and the seconds of each stage against the issue's targets (head < 60 s, hand < 120 s on 2 cores).
The phantoms are written once to ``--data`` (default ``benchmarks/_data``) and reused.

``--head-labels`` registers the head from its phantom label map (the same template jaw split) instead of
segmenting the CT, which separates the registration's error from the segmentation's. ``--subjects N``
registers the ``ses-pre`` CT of each of N head subjects (dataset seed 11; N > 1 writes ``head_phantom_N``;
subjects 1 and 2 have amalgam fillings, subject 0 has none).

Run: ``python benchmarks/registration_scans.py [--data DIR] [--only head|hand] [--head-spacing S S S]
[--head-labels] [--subjects N]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from anatomy.io import read_mesh
from anatomy.pipeline import register_scan
from anatomy.pipeline.runner import ScanJob, find_scans

TARGET_S = {"head": 60.0, "hand": 120.0}


def _dataset(kind: str, root: Path, head_spacing: tuple[float, float, float] | None, subjects: int = 1) -> Path:
    folder = root / (f"{kind}_phantom" if subjects == 1 else f"{kind}_phantom_{subjects}")
    if (folder / "manifest.json").is_file():
        return folder
    from anatomy.scans import make_hand_dataset, make_head_dataset

    if kind == "head":
        make_head_dataset(folder, subjects, seed=11, spacing=head_spacing or (0.48, 0.48, 1.0))
    else:
        make_hand_dataset(folder, 1, poses=2, seed=11)
    return folder


def _errors(out: Path, truth: Path, tissue: str) -> tuple[float, float]:
    a = np.asarray(read_mesh(out / f"{tissue}.ply")[0], dtype=np.float64)
    b = np.asarray(read_mesh(truth / f"{tissue}.ply")[0], dtype=np.float64)
    d = np.linalg.norm(a - b, axis=1)
    return float(d.mean()), float(np.quantile(d, 0.95))


def run(kind: str, data: Path, head_spacing: tuple[float, float, float] | None, labels: str = "mri",
        subjects: int = 1) -> None:
    folder = _dataset(kind, data, head_spacing, subjects if kind == "head" else 1)
    jobs = find_scans(folder, labels=labels)
    if kind == "head":
        for job in [j for j in jobs if j.name.endswith("ses-pre")][:subjects]:
            _run_job(kind, job)
    else:
        _run_job(kind, jobs[1])  # the hand: a posed sample, not the rest


def _run_job(kind: str, job: ScanJob) -> None:
    truth = Path(job.scan).parent
    work = Path(tempfile.mkdtemp(prefix=f"reg_{kind}_"))
    try:
        rows = []
        for label, free in (("model fit", False), ("registered", True)):
            out = work / label.replace(" ", "_")
            report = register_scan(kind, job.scan, out, labels=job.labels, landmarks=job.landmarks, free_form=free,
                                   picture=free)
            for tissue, info in report["tissues"].items():
                mean, p95 = _errors(out, truth, tissue)
                surf = info.get("registered", {})
                rows.append(f"  {label:<10} {tissue:<9} vertex error {mean:6.3f} / {p95:6.3f} mm   surface residual "
                            + (f"{surf['mean_mm']:.3f} / {surf['p95_mm']:.3f} mm" if surf else "(no target)"))
            if free:
                secs = report["seconds"]
                print(f"{kind}: {job.scan}" + (f" with the label map {job.labels}" if job.labels else ""))
                print("\n".join(rows))
                print("  seconds: " + json.dumps(secs))
                total = secs["total"]
                print(f"  total {total:.1f} s, target < {TARGET_S[kind]:.0f} s: ratio {total / TARGET_S[kind]:.2f} "
                      f"({'met' if total < TARGET_S[kind] else 'NOT met'})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parent / "_data"))
    parser.add_argument("--only", choices=("head", "hand"), default=None)
    parser.add_argument("--head-spacing", type=float, nargs=3, default=None)
    parser.add_argument("--head-labels", action="store_true",
                        help="register the head from its phantom label map instead of segmenting the CT")
    parser.add_argument("--subjects", type=int, default=1,
                        help="head: register the ses-pre CT of this many phantom subjects (seed 11)")
    args = parser.parse_args()
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    spacing = tuple(args.head_spacing) if args.head_spacing else None
    for kind in ("head", "hand"):
        if args.only in (None, kind):
            run(kind, data, spacing, "always" if kind == "head" and args.head_labels else "mri",
                args.subjects)


if __name__ == "__main__":
    main()
