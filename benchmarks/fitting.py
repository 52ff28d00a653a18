"""Accuracy and speed of ``anatomy.fit`` on synthetic targets with known parameters.

* Hand from 21 3D keypoints (1 mm Gaussian noise per coordinate), from 2D keypoints (1.5 px noise, cameras
  500 mm from the hand, f = 1000 px; 1, 2 and 4 views), from a partial point cloud (the skin surface seen from
  one side, about 65 %, 0.3 mm noise) and from the full skin surface. Hands: ``sample_pose`` (uniform within the
  joint limits; the clouds: 0.3 of those angles, see the README), shape N(0, 1), any orientation, +-200 mm.
* Head from a phantom CT (``make_head_dataset``, 1 mm voxels): ``anatomy.fit("head", ct.nii.gz)``.
* Speed: 1,024 hands fitted to 3D keypoints at once (penetration stage off, no output meshes) against the same
  fit one hand at a time for a few hands, extrapolated to 1,024 (the ratio is loop / batched).

Errors: joints (the 21 keypoints) and vertices (all 25,047 of bones, muscles and skin) in mm against the truth,
pose as the mean rotation angle (degrees) between fitted and true bone rotations (bones 1..19, in the hand's
frame). Run: ``OMP_NUM_THREADS=1 python benchmarks/fitting.py [--only keypoints3d,keypoints2d,clouds,head,speed]``.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import anatomy
from anatomy.core.surface import vertex_normals
from anatomy.fitting import Keypoints2D, Keypoints3D, PinholeCamera, PointCloud, fit
from anatomy.fitting.fit_variables import surface_ids

HAND = anatomy.Nimble()


def truth(batch: int, seed: int, pose_factor: float = 1.0, spread: float = 200.0) -> tuple[dict, Any]:
    g = torch.Generator().manual_seed(seed)
    params = {"pose": HAND.sample_pose(batch, generator=g) * pose_factor,
              "shape": torch.randn(batch, 11, generator=g),
              "global_orient": torch.randn(batch, 3, generator=g),
              "transl": torch.randn(batch, 3, generator=g) * spread}
    if pose_factor < 1.0:
        params["global_orient"] = params["global_orient"] * 0.3
    with torch.no_grad():
        return params, HAND(**params)


def errors(res, params: dict, out) -> dict[str, float]:
    with torch.no_grad():
        fit_out = HAND(**res.params)
    joint = (fit_out.keypoints - out.keypoints).norm(dim=-1)
    aligned = ((fit_out.keypoints - fit_out.keypoints[:, :1]) - (out.keypoints - out.keypoints[:, :1])).norm(dim=-1)
    vert = (fit_out.vertices - out.vertices).norm(dim=-1)
    r_fit = HAND.bone_rotations(res.params["pose"])[:, 1:]
    r_true = HAND.bone_rotations(params["pose"])[:, 1:]
    cos = ((r_fit.transpose(-1, -2) @ r_true).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    angle = torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))
    per_hand = vert.mean(1)
    return {"joint": float(joint.mean()), "joint_root_aligned": float(aligned.mean()), "vertex": float(vert.mean()),
            "vertex_median_hand": float(per_hand.median()),
            "vertex_p95": float(torch.quantile(vert.flatten()[::7], 0.95)),
            "pose_deg": float(angle.mean())}


def show(name: str, e: dict[str, float], seconds: float, batch: int) -> None:
    print(f"{name:<34} joints {e['joint']:6.2f} (root-aligned {e['joint_root_aligned']:5.2f})  vertices "
          f"{e['vertex']:6.2f} (median hand {e['vertex_median_hand']:5.2f}, p95 {e['vertex_p95']:6.2f})  pose "
          f"{e['pose_deg']:5.2f} deg   {seconds:6.1f} s for {batch}")


def keypoints3d(batch: int = 64) -> None:
    params, out = truth(batch, 0)
    g = torch.Generator().manual_seed(1)
    kp = out.keypoints + torch.randn(out.keypoints.shape, generator=g)
    t0 = time.perf_counter()
    res = fit(HAND, Keypoints3D(kp), penetration=False, output=False)
    show("3D keypoints, 1 mm noise", errors(res, params, out), time.perf_counter() - t0, batch)
    t0 = time.perf_counter()
    res = fit(HAND, Keypoints3D(out.keypoints), penetration=False, output=False)
    show("3D keypoints, no noise", errors(res, params, out), time.perf_counter() - t0, batch)


def keypoints2d(batch: int = 32) -> None:
    params, out = truth(batch, 2, spread=20.0)
    centre = out.keypoints.mean((0, 1)).double()
    g = torch.Generator().manual_seed(3)
    cams = [PinholeCamera.looking_at(centre + 500 * torch.tensor([math.sin(a), 0.3, math.cos(a)], dtype=torch.float64),
                                     centre, fx=1000.0, cx=320.0, cy=240.0) for a in (0.0, 1.6, 3.2, 4.8)]
    for views in (1, 2, 4):
        targets = [Keypoints2D(c.project(out.keypoints.double()) + 1.5 * torch.randn(batch, 21, 2, generator=g,
                                                                                   dtype=torch.float64), c)
                   for c in cams[:views]]
        t0 = time.perf_counter()
        res = fit(HAND, targets, penetration=False, output=False)
        seconds = time.perf_counter() - t0
        px = np.mean([r["mean"] for r in res.report["targets"]])
        show(f"2D keypoints, {views} view(s) ({px:.2f} px)", errors(res, params, out), seconds, batch)


def clouds(batch: int = 4) -> None:
    params, out = truth(batch, 4, pose_factor=0.3, spread=20.0)
    ids, faces = surface_ids(HAND, "skin")
    skin = out.vertices[:, ids]
    g = torch.Generator().manual_seed(5)
    for partial in (True, False):
        pts = []
        for b in range(batch):
            keep = (vertex_normals(skin[b], faces) @ torch.tensor([0.0, 0.0, 1.0]) > -0.2) if partial else \
                torch.ones(skin.shape[1], dtype=torch.bool)
            pts.append(skin[b][keep] + 0.3 * torch.randn(int(keep.sum()), 3, generator=g))
        share = np.mean([p.shape[0] / skin.shape[1] for p in pts])
        t0 = time.perf_counter()
        res = fit(HAND, PointCloud(pts, partial=partial), penetration=False, output=False)
        show(f"{'partial' if partial else 'full'} skin cloud ({100 * share:.0f} %)", errors(res, params, out),
             time.perf_counter() - t0, batch)


def head(spacing: float = 1.0) -> None:
    from anatomy.io import read_mesh
    from anatomy.scans import make_head_dataset

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "head"
        make_head_dataset(folder, 1, spacing=spacing, seed=11, metal_fraction=0.0)
        sample = folder / "sub-000" / "ses-pre"
        t0 = time.perf_counter()
        res = anatomy.fit("head", sample / "ct.nii.gz")
        seconds = time.perf_counter() - t0
        cells = []
        for tissue in ("skull", "mandible", "face"):
            true = torch.from_numpy(np.asarray(read_mesh(sample / f"{tissue}.ply").vertices))
            d = (res.output.tissue(tissue)[0].double() - true).norm(dim=-1)
            cells.append(f"{tissue} {float(d.mean()):.2f} / {float(torch.quantile(d, 0.95)):.2f}")
        print(f"head from a phantom CT ({spacing} mm): vertex error mean / p95 (mm): {', '.join(cells)}; "
              f"{seconds:.0f} s")


def speed(batch: int = 1024, singles: int = 8) -> None:
    params, out = truth(batch, 6)
    g = torch.Generator().manual_seed(7)
    kp = out.keypoints + torch.randn(out.keypoints.shape, generator=g)
    fit(HAND, Keypoints3D(kp[:2]), penetration=False, output=False)  # warm-up
    t0 = time.perf_counter()
    res = fit(HAND, Keypoints3D(kp), penetration=False, output=False)
    batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    for b in range(singles):
        fit(HAND, Keypoints3D(kp[b:b + 1]), penetration=False, output=False)
    loop = (time.perf_counter() - t0) / singles * batch
    e = errors(res, params, out)
    print(f"speed: {batch} hands from 3D keypoints in {batched:.2f} s batched (target < 5 s); one at a time "
          f"{loop:.1f} s extrapolated from {singles} -> ratio {loop / batched:.1f}x; vertex error {e['vertex']:.2f} "
          f"mm, {torch.get_num_threads()} thread(s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="keypoints3d,keypoints2d,clouds,head,speed")
    args = parser.parse_args()
    parts = {"keypoints3d": keypoints3d, "keypoints2d": keypoints2d, "clouds": clouds, "head": head, "speed": speed}
    for name in args.only.split(","):
        parts[name]()


if __name__ == "__main__":
    main()
