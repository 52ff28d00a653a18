"""Elastic soft tissue of the default hand against plain linear blend skinning.

For ``--poses`` poses from ``Nimble.sample_pose`` (seed 0, mean shape) plus a fist (every finger
and thumb joint flexed to 80 % of its flexion limit), runs :func:`anatomy.scans.phantom_soft.
settle_soft_tissue_report` and prints per pose and tissue, LBS -> elastic:

* inverted tets (signed volume <= 0);
* mean relative volume change ``mean |dV / V|`` over the tets, per muscle group and for the skin;
* elastic energy (stable Neo-Hookean, E = 10 kPa, nu = 0.45; kPa * mm^3) of the LBS guess with the
  attachments applied, and after the solve;
* L-BFGS iterations, attached nodes released, seconds per pose (one process, this machine).

Run: ``OMP_NUM_THREADS=1 python benchmarks/soft_tissue.py [--poses 4] [--smoke]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import anatomy
from anatomy.scans.phantom_soft import settle_soft_tissue_report, soft_tissue_changes


def fist_pose(model: anatomy.Nimble, fraction: float = 0.8) -> torch.Tensor:
    """``(1, 20, 3)``: every non-root bone flexed to ``fraction`` of its flexion limit (a fist)."""
    lim = model.joint_limits()
    pose = torch.zeros(1, 20, 3)
    for b in range(1, 20):
        pose[0, b] = (lim.frames[b, :, 0] * lim.upper[b, 0] * fraction).float()
    return pose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poses", type=int, default=4, help="sampled poses besides the fist")
    parser.add_argument("--smoke", action="store_true", help="one sampled pose, loose tolerance")
    args = parser.parse_args()
    n = 1 if args.smoke else args.poses
    rtol = 0.1 if args.smoke else 1e-2
    model = anatomy.Nimble()
    rest = model()
    g = torch.Generator().manual_seed(0)
    poses = [("fist", fist_pose(model))] + [(f"sample {i}", p[None]) for i, p in
                                             enumerate(model.sample_pose(n, generator=g))]
    groups = model().part_names("muscles")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); rtol {rtol}; values LBS -> elastic")
    times = []
    for label, pose in poses:
        out = model(pose)
        t0 = time.perf_counter()
        new, report = settle_soft_tissue_report(model, out, rtol=rtol)
        dt = time.perf_counter() - t0
        times.append(dt)
        a, b = soft_tissue_changes(out, rest), soft_tissue_changes(new, rest)
        print(f"\n{label}: {dt:.1f} s")
        print(f"  {'tissue':<28} {'inverted':>13} {'mean |dV/V|':>17} {'energy':>21} {'iter':>5} {'released':>8}")
        for tissue in ("muscles", "skin"):
            rep = report.samples[0][tissue]
            s = rep.solve
            print(f"  {tissue:<28} {int(a[tissue + '_inverted'][0]):>5} -> {int(b[tissue + '_inverted'][0]):<5} "
                  f"{float(a[tissue + '_dvol'][0]):>7.4f} -> {float(b[tissue + '_dvol'][0]):<7.4f} "
                  f"{s.energy_before:>9.4g} -> {s.energy_after:<9.4g} {s.iterations:>5} {rep.released:>8}")
            if tissue == "muscles":
                for grp in groups:
                    key = f"muscles/{grp}_dvol"
                    print(f"    {grp:<26} {'':>13} {float(a[key][0]):>7.4f} -> {float(b[key][0]):<7.4f}")
    print(f"\nseconds per pose: mean {statistics.mean(times):.1f}, max {max(times):.1f} over {len(times)} poses")


if __name__ == "__main__":
    main()
