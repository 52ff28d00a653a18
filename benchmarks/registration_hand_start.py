"""A posed hand fitted to its surfaces with and without its 21 keypoints (``fit_model_to_surfaces``).

Cases (seeds 0..``--cases``-1): the default hand at a random pose (``Nimble.sample_pose``), shape (0.5 x a
normal draw of the coefficients), orientation (any angle up to 180 deg) and translation; the targets are
12,000 points with normals sampled on each of its bones, muscles and skin. Each case is fitted three ways:
with the true keypoints (the reference), without keypoints from the searched start (the default,
``anatomy.registration.hand_start``) and, with ``--rest``, without keypoints from the rest pose (the old
behaviour). Prints per case and fit the mean vertex error (mm) of each tissue against the truth, the error of
the start's keypoints and the seconds; then the mean and worst over the cases.

``--phantom`` also registers the MRI-Hand-like phantom of ``benchmarks/registration_scans.py`` (label map,
elastic soft tissue, whole pipeline) with and without its keypoints.

Run: ``OMP_NUM_THREADS=1 nice -n 10 python benchmarks/registration_hand_start.py [--cases 5] [--first 0] [--rest]
[--phantom]``.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import anatomy
from anatomy.core.rotations import matrix_to_axis_angle
from anatomy.fitting.synthetic import random_rigid
from anatomy.registration import fit_model_to_surfaces
from anatomy.registration.hand_start import AmbiguousHandStartWarning
from anatomy.registration.nonrigid import sample_surface

TISSUES = ("bones", "muscles", "skin")


def make_case(hand: anatomy.Nimble, seed: int) -> tuple[object, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """The true output and the sampled surfaces of case ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    rot, trans = random_rigid(1, generator=gen, max_angle=math.pi)
    truth = hand(pose=hand.sample_pose(1, generator=gen),
                 shape=0.5 * torch.randn(1, 10, generator=gen, dtype=torch.float64),
                 global_orient=matrix_to_axis_angle(rot.double()), transl=trans.double())
    targets = {t: sample_surface(truth.tissue(t)[0], truth.faces(t), 12000, generator=gen) for t in TISSUES}
    return truth, targets


def fit_errors(hand: anatomy.Nimble, truth: object, targets: dict, **options: object) -> dict[str, float]:
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AmbiguousHandStartWarning)
        fit = fit_model_to_surfaces(hand, targets, **options)
    row = {t: float((fit.output.tissue(t)[0] - truth.tissue(t)[0]).norm(dim=-1).mean()) for t in TISSUES}
    if fit.hand_start is not None:
        keys = np.stack([fit.hand_start.keypoints[k] for k in hand.keypoint_names])
        row["start keypoints"] = float(np.linalg.norm(keys - truth.keypoints[0].numpy(), axis=1).mean())
    row["warned"] = float(any(issubclass(w.category, AmbiguousHandStartWarning) for w in caught))
    row["s"] = time.perf_counter() - start
    return row


def phantom(data: Path) -> None:
    from registration_scans import _dataset, _errors  # the same phantom and error measure

    from anatomy.pipeline import register_scan
    from anatomy.pipeline.runner import find_scans

    job = find_scans(_dataset("hand", data, None), labels="mri")[1]
    truth = Path(job.scan).parent
    work = Path(tempfile.mkdtemp(prefix="reg_hand_start_"))
    for label, keys in (("with keypoints", job.landmarks), ("without keypoints", None)):
        start = time.perf_counter()
        register_scan("hand", job.scan, work / label.replace(" ", "_"), labels=job.labels, landmarks=keys,
                      picture=False)
        errs = "  ".join(f"{t} {_errors(work / label.replace(' ', '_'), truth, t)[0]:.3f}" for t in TISSUES)
        print(f"phantom {label:<18} mean vertex error (mm): {errs}   {time.perf_counter() - start:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--first", type=int, default=0, help="seed of the first case")
    parser.add_argument("--rest", action="store_true", help="also fit without keypoints from the rest pose")
    parser.add_argument("--phantom", action="store_true", help="also register the MRI-Hand-like phantom")
    parser.add_argument("--data", type=Path, default=Path(__file__).parent / "_data")
    args = parser.parse_args()
    hand = anatomy.Nimble().double()
    ways = {"keypoints": {}, "searched": {}, **({"rest": {"search_start": False}} if args.rest else {})}
    rows: dict[str, list[dict[str, float]]] = {w: [] for w in ways}
    print(f"{'case':<5}{'fit':<11}" + "".join(f"{t:>9}" for t in TISSUES) + f"{'start kp':>10}{'warned':>8}{'s':>6}")
    for seed in range(args.first, args.first + args.cases):
        truth, targets = make_case(hand, seed)
        for way, options in ways.items():
            if way == "keypoints":
                options = {"landmarks": dict(zip(hand.keypoint_names, truth.keypoints[0]))}
            row = fit_errors(hand, truth, targets, **options)
            rows[way].append(row)
            kp = f"{row['start keypoints']:10.2f}" if "start keypoints" in row else f"{'-':>10}"
            print(f"{seed:<5}{way:<11}" + "".join(f"{row[t]:9.3f}" for t in TISSUES)
                  + f"{kp}{'yes' if row['warned'] else 'no':>8}{row['s']:6.0f}", flush=True)
    print("mean / worst over the cases (mm), mean seconds:")
    for way, got in rows.items():
        cells = "".join(f"  {t} {np.mean([r[t] for r in got]):.3f} / {np.max([r[t] for r in got]):.3f}"
                        for t in TISSUES)
        print(f"  {way:<10}{cells}   {np.mean([r['s'] for r in got]):.0f} s")
    if args.phantom:
        phantom(args.data)


if __name__ == "__main__":
    main()
