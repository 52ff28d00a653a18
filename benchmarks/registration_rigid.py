"""Rigid / similarity registration of the default skull and hand bones onto moved copies of themselves.

For each shape and ``--trials`` random frames (``random_rigid``, any angle up to 180 deg, seeds 0..), the
target is the moved shape (clean), and the moved shape with 30 % cut away as one region, 2 mm RMS noise
and 10 % outliers (``corrupt_target``). Prints the mean and worst error over the trials (mean distance of
the registered source points to their true places, mm; rotation error, deg) and the seconds per
registration, for trimmed ICP (``trim``) and, as the reference in the same run, plain ICP (``trim=1``),
both started from the principal axes (no landmarks).

Run: ``OMP_NUM_THREADS=1 nice -n 10 python benchmarks/registration_rigid.py [--trials 5] [--trim 0.7]``.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import anatomy
from anatomy.fitting.synthetic import random_rigid
from anatomy.registration import register_rigid
from anatomy.registration.nonrigid import corrupt_target


def run(points: torch.Tensor, target_of: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        trim: float) -> tuple[float, float, float, float]:
    """Mean and worst point error (mm), worst rotation error (deg) and mean seconds over the trials."""
    errs, angles, secs = [], [], []
    for rot, truth, target in target_of:
        start = time.perf_counter()
        res = register_rigid(points, target, trim=trim)
        secs.append(time.perf_counter() - start)
        errs.append(float((torch.from_numpy(res.apply(points)) - truth).norm(dim=-1).mean()))
        chord = float((res.transform.rotation - rot).norm()) / (2 * math.sqrt(2))
        angles.append(math.degrees(2 * math.asin(min(1.0, chord))))
    return sum(errs) / len(errs), max(errs), max(angles), sum(secs) / len(secs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--trim", type=float, default=0.7)
    args = parser.parse_args()
    shapes = {"skull": anatomy.Sculptor()().skull[0].double(), "hand bones": anatomy.Piano()().bones[0].double()}
    print(f"{'shape':<11}{'target':<10}{'method':<14}{'mean mm':>9}{'worst mm':>10}{'worst deg':>10}{'s':>7}")
    for name, pts in shapes.items():
        rots, trans = random_rigid(args.trials, generator=torch.Generator().manual_seed(0), max_angle=math.pi)
        clean, damaged = [], []
        for i in range(args.trials):
            truth = pts @ rots[i].T + trans[i]
            clean.append((rots[i], truth, truth))
            bad, _ = corrupt_target(truth, generator=torch.Generator().manual_seed(100 + i))
            damaged.append((rots[i], truth, bad))
        for label, cases in (("clean", clean), ("damaged", damaged)):
            rows = {f"trimmed {args.trim:g}": run(pts, cases, args.trim), "plain (1.0)": run(pts, cases, 1.0)}
            for method, (mean, worst, deg, sec) in rows.items():
                print(f"{name:<11}{label:<10}{method:<14}{mean:9.3f}{worst:10.3f}{deg:10.3f}{sec:7.2f}")
            (m_t, *_), (m_p, *_) = rows.values()
            print(f"{'':<21}mean error plain / trimmed = {m_p / max(m_t, 1e-12):.1f}x")


if __name__ == "__main__":
    main()
