"""Time a head CT from voxels to bone and skin surfaces (issue target: < 20 s on 2 cores).

A synthetic 512 x 512 x 300 CT at 0.5 x 0.5 x 0.8 mm (an ellipsoidal head of soft tissue at 40 HU
with a 6 mm skull shell at 1200 HU, a table slab 6 mm behind it, 20 HU Gaussian noise) goes
through ``segment_ct`` and two ``extract_surface`` calls (100k vertices each); prints the times.

Run: ``python benchmarks/scan_surfaces.py``.
"""

from __future__ import annotations

import time

import numpy as np

from anatomy.scans import Volume, extract_surface, segment_ct


def synthetic_head_ct() -> Volume:
    shape, h = (512, 512, 300), np.array([0.5, 0.5, 0.8])
    rng = np.random.default_rng(0)
    c = (np.array(shape) - 1) / 2.0
    grids = np.ogrid[: shape[0], : shape[1], : shape[2]]
    x, y, z = (((g - c[k]) * h[k]).astype(np.float32) for k, g in enumerate(grids))

    def ellipsoid(a: float, b: float, d: float) -> np.ndarray:
        return (x / a) ** 2 + (y / b) ** 2 + (z / d) ** 2 <= 1

    data = np.full(shape, -1000.0, dtype=np.float32)
    data[ellipsoid(80, 100, 105)] = 40.0
    data[ellipsoid(72, 92, 97) & ~ellipsoid(66, 86, 91)] = 1200.0
    data[np.broadcast_to((np.abs(x) < 120) & (y > -112) & (y < -106), shape)] = 200.0  # the table
    data += rng.normal(0.0, 20.0, shape).astype(np.float32)
    affine = np.diag([*h, 1.0])
    affine[:3, 3] = -c * h
    return Volume(data, affine, "ct")


def main() -> None:
    volume = synthetic_head_ct()
    t0 = time.perf_counter()
    seg = segment_ct(volume)
    t1 = time.perf_counter()
    bone = extract_surface(seg.mask_volume("bone"), tissue="bone", target_vertices=100_000)
    t2 = time.perf_counter()
    skin = extract_surface(seg.mask_volume("skin"), tissue="skin", target_vertices=100_000)
    t3 = time.perf_counter()
    print(f"thresholds {seg.thresholds}")
    print(f"segment_ct {t1 - t0:.1f} s, bone surface {t2 - t1:.1f} s ({len(bone.vertices)} v), "
          f"skin surface {t3 - t2:.1f} s ({len(skin.vertices)} v), total {t3 - t0:.1f} s")


if __name__ == "__main__":
    main()
