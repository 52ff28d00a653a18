"""How well the mandible is split from the skull in phantom CTs: template vs openings.

For the mean head and ``--heads`` heads sampled with ``Sculptor.sample`` (random shape, trait,
expression and jaw pose inside its limits; seed 3), a phantom CT at ``--spacing`` mm is segmented
(``segment_ct``) and its bone split by ``split_mandible_by_template`` and by ``split_mandible``
(openings up to 6 mm). The truth of each bone voxel is the nearer of the true skull and mandible
surfaces. Prints the Dice overlap of the mandible, the ICP rms and scale, and the seconds.

Run: ``python benchmarks/jaw_split.py [--heads 2] [--spacing 1.0]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.spatial import cKDTree

import anatomy
from anatomy.scans import ct_from_labels, phantom_labels, segment_ct, split_mandible, split_mandible_by_template


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum() + b.sum())
    return float(2 * (a & b).sum() / total) if total else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, default=2, help="sampled heads besides the mean head")
    parser.add_argument("--spacing", type=float, default=1.0, help="voxel size, mm")
    args = parser.parse_args()
    head = anatomy.Sculptor()
    gen = torch.Generator().manual_seed(3)
    columns = ("head", "jaw deg", "template Dice", "rms mm", "scale", "s", "openings Dice", "s")
    print(" ".join(f"{c:>{w}}" for c, w in zip(columns, (6, 8, 14, 7, 6, 5, 14, 5))))
    for case in range(args.heads + 1):
        kwargs = head.sample(1, generator=gen) if case else {}
        with torch.no_grad():
            out = head(**kwargs)
        labels, frac = phantom_labels(out, spacing=args.spacing)
        ct = ct_from_labels(labels, frac, metal=True, generator=case)
        seg = segment_ct(ct)
        bone = seg.mask_volume("bone")
        mask = seg.mask("bone")
        vox = np.argwhere(mask)
        pts = ct.world(vox.astype(np.float64))
        d_skull, _ = cKDTree(out.skull[0].double().numpy()).query(pts)
        d_jaw, _ = cKDTree(out.mandible[0].double().numpy()).query(pts)
        truth = np.zeros_like(mask)
        truth[tuple(vox[d_jaw < d_skull].T)] = True
        t0 = time.perf_counter()
        _, jaw, facts = split_mandible_by_template(bone)
        t1 = time.perf_counter()
        _, jaw_open, _ = split_mandible(bone)
        t2 = time.perf_counter()
        angle = float(np.degrees(float(kwargs["jaw_pose"].norm()))) if case else 0.0
        name = "mean" if case == 0 else f"#{case}"
        print(f"{name:>6} {angle:8.1f} {dice(jaw, truth):14.4f} {facts['rms_mm']:7.2f} {facts['scale']:6.3f} "
              f"{t1 - t0:5.1f} {dice(jaw_open, truth):14.4f} {t2 - t1:5.1f}")


if __name__ == "__main__":
    main()
