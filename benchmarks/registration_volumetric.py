"""Volumetric registration of the hand's muscles and skin volume against elastic ground truth.

Ground truth: :func:`anatomy.scans.phantom_soft.settle_soft_tissue` of the default hand at random
poses and shapes (muscles attached to the bones solved elastically, then the skin volume). Start: the
LBS output of the model at the true pose and shape, or (last row) at the true pose with the mean
shape. Targets: 30 000 points sampled on the ground-truth muscle surface and on the outer skin with
their normals (clean), then damaged by ``corrupt_target`` (30 % of each surface cut away, 10 %
outliers, 2 mm RMS noise; normals estimated). Errors are distances of every tet node ("all") and of
every data-surface node ("surf") to the same node of the ground truth, in mm (mean / 95th
percentile), before and after; "inv" counts inverted tets (those of the ground truth are printed
per case); seconds are those of :func:`register_hand_soft_tissue` (rest-state repair for the shape and
classification included); the last column is the target noise the registration estimated and the
factor its data terms were softened by.

Rows: ``presolve`` (default) first solves the elastic equilibrium with the bone attachments
alone, which is the phantom's own model, so on clean targets it starts next to the truth;
``data only`` skips it, so the fit has to come from the targets.

Run: ``OMP_NUM_THREADS=1 nice -n 10 python benchmarks/registration_volumetric.py [--cases 2] [--quick]``
(about 2-3 min per case on one core; ``--quick``: the clean and damaged presolve rows only).
"""

from __future__ import annotations

import argparse

import torch

import anatomy
from anatomy.core.elastic import tet_volumes
from anatomy.registration.nonrigid import corrupt_target, sample_surface
from anatomy.registration.volumetric_hand import register_hand_soft_tissue
from anatomy.scans.phantom_soft import settle_soft_tissue

TISSUES = ("muscles", "skin")


def _targets(truth: anatomy.ModelOutput, corrupt: bool, seed: int) -> dict[str, object]:
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, object] = {}
    for name in TISSUES:
        pts, nrm = sample_surface(truth.tissue(name)[0].double(), truth.faces(name), 30000, generator=gen)
        out[name] = corrupt_target(pts, generator=gen)[0] if corrupt else (pts, nrm)
    return out


def _stats(x: torch.Tensor, truth: torch.Tensor, ids: torch.Tensor | None = None) -> str:
    e = (x.double() - truth.double()).norm(dim=-1)
    e = e if ids is None else e[ids]
    return f"{float(e.mean()):5.2f} / {float(e.quantile(0.95)):5.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--quick", action="store_true",
                        help="only the two 'true shape, presolve' rows (clean and damaged) per case")
    args = parser.parse_args()
    hand = anatomy.Nimble()
    print(f"{'case':>4} {'start':>11} {'target':>9} {'mode':>9} {'tissue':>8} {'before all':>13} "
          f"{'after all':>13} {'after surf':>13} {'inv':>4} {'s':>5} {'noise mm, softening':>20}")
    for case in range(args.cases):
        gen = torch.Generator().manual_seed(100 + case)
        pose = hand.sample_pose(1, generator=gen, collision_free=True)
        shape = torch.randn(1, 11, generator=gen)
        with torch.no_grad():
            lbs = hand(pose, shape)
            mean_lbs = hand(pose)
        truth = settle_soft_tissue(hand, lbs, shape=shape)
        inv = {name: int((tet_volumes(truth.tissue(name)[0].double(), truth.tets(name)) <= 0).sum())  # type: ignore
               for name in TISSUES}
        print(f"case {case}: inverted tets of the ground truth (same tets): {inv}", flush=True)
        runs = [("true shape", lbs, shape, False, 1500), ("true shape", lbs, shape, True, 1500),
                ("true shape", lbs, shape, False, 0), ("true shape", lbs, shape, True, 0),
                ("mean shape", mean_lbs, None, False, 1500)]
        for label, start, sh, corrupt, presolve in runs[:2] if args.quick else runs:
            res = register_hand_soft_tissue(hand, start, _targets(truth, corrupt, case), shape=sh, presolve=presolve)
            for name, r in (("muscles", res.muscles), ("skin", res.skin)):
                gt = truth.tissue(name)[0]
                print(f"{case:>4} {label:>11} {'damaged' if corrupt else 'clean':>9} "
                      f"{'presolve' if presolve else 'data only':>9} {name:>8} "
                      f"{_stats(start.tissue(name)[0], gt):>13} {_stats(r.nodes, gt):>13} "
                      f"{_stats(r.nodes, gt, r.surface_nodes):>13} {r.inverted:>4} {res.seconds:5.1f} "
                      f"{r.noise:>13.2f}, {r.softening:4.1f}", flush=True)


if __name__ == "__main__":
    main()
