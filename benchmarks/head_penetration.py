"""Bone through skin on the embedded default head, and what the penalty costs.

Draws random heads with ``Sculptor.sample`` (shape ~ N(0, 1), trait ~ U(-1, 1), expression
activations ~ U(0, 1), every jaw angle and offset uniform inside its limits), poses them and
reports with ``Sculptor.penetration()`` how far skull or mandible comes in front of the skin that
covers it (see :mod:`anatomy.constraints.cover`): all spaces together, then each alone and each
with the jaw. Then times the layer's forward+backward at batch 64 with and without the
differentiable penalty added to the loss (ratio in the same run).

Run: ``python benchmarks/head_penetration.py [--samples 1000] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import time_call  # noqa: E402

from anatomy import Sculptor  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    head = Sculptor(dtype=torch.float64)
    pen = head.penetration()
    kw = head.sample(args.samples, generator=torch.Generator().manual_seed(args.seed))
    jaw = {k: kw[k] for k in ("jaw_pose", "jaw_offset")}
    print(f"{args.samples} random heads (seed {args.seed}); {len(pen.point_ids)} bone vertices under the face, "
          f"smallest rest cover {-float(pen.cover.rest_height.max()):.2f} mm")
    rows = {"all spaces + jaw": kw, "jaw": jaw}
    for name in head.space_sizes:
        rows[name] = {name: kw[name]}
        rows[f"{name} + jaw"] = {name: kw[name], **jaw}
    with torch.no_grad():
        for name, sub in rows.items():
            print(f"  {name:20s} {json.dumps(pen.report(head(**sub, jaw_range='ignore')))}", flush=True)
    small = Sculptor()
    batch = {k: v[:64].float().clone() for k, v in kw.items()}
    shape = batch.pop("shape").requires_grad_()

    def step(with_penalty: bool) -> None:
        out = small(shape, **batch, jaw_range="ignore")
        loss = out.vertices.square().mean()
        if with_penalty:
            loss = loss + small.penetration().penalty(out, margin=1.0).mean()
        loss.backward()

    small.penetration()
    plain = time_call(lambda: step(False), repeats=5)
    with_pen = time_call(lambda: step(True), repeats=5)
    print(f"batch 64 float32 forward+backward: layer {plain * 1e3:.1f} ms, with the penalty {with_pen * 1e3:.1f} ms "
          f"({with_pen / plain:.2f}x)")


if __name__ == "__main__":
    main()
