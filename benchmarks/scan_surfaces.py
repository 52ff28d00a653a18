"""Time a head CT from file to skin, skull and mandible surfaces (issue target: < 20 s on 2 cores).

The CT: the embedded default head as a phantom (``phantom_labels`` at 0.5 x 0.5 x 0.8 mm, CT with
0.8 mm PSF, 10 HU noise and amalgam fillings) placed in a 512 x 512 x 300 field of view (256 x 256 x
240 mm) of air with a table slab and a headrest under the head, stored as int16 HU in a ``.nii.gz``
file the way scanners export. Building it takes a minute or two and is not timed. Timed, as
``anatomy segment`` runs them: ``read_volume``, ``segment_scan`` (thresholds from the histogram, body
without table and headrest, bone, template jaw split) and ``tissue_surfaces`` (marching cubes,
decimation to 100k vertices, Taubin smoothing) for skin, skull and mandible. Prints each stage and
the total, and the stages' share of it.

``--synthetic``: an ellipsoidal head (a 6 mm skull shell, no jaw) instead of the phantom, built in
seconds (no jaw split).

Run: ``python benchmarks/scan_surfaces.py [--synthetic]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from anatomy.scans import (
    Volume,
    ct_from_labels,
    phantom_labels,
    read_volume,
    segment_scan,
    tissue_surfaces,
    write_nifti,
)

SHAPE = (512, 512, 300)
SPACING = np.array([0.5, 0.5, 0.8])


def _field_of_view() -> tuple[np.ndarray, list[np.ndarray]]:
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = -(np.array(SHAPE) - 1) / 2.0 * SPACING
    grids = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    return affine, [(g * SPACING[k] + affine[k, 3]).astype(np.float32) for k, g in enumerate(grids)]


def _add_table(data: np.ndarray, y: np.ndarray, z: np.ndarray, x: np.ndarray, back: float, low: float) -> None:
    """A table slab behind the head and a headrest under the occiput (plastic/foam HU)."""
    data[np.broadcast_to((np.abs(x) < 120) & (y > back - 12) & (y < back - 6), SHAPE)] = 200.0
    rest = (np.abs(x) < 60) & (y > back - 6) & (y < back + 20) & (z < low + 30) & (z > low)
    data[np.broadcast_to(rest, SHAPE)] = 50.0


def phantom_head_ct() -> Volume:
    from anatomy import Sculptor

    with torch.no_grad():
        out = Sculptor()()
    labels, frac = phantom_labels(out, spacing=tuple(SPACING), max_bytes=12 << 30)
    ct = ct_from_labels(labels, frac, metal=True, generator=0)
    affine, (x, y, z) = _field_of_view()
    data = np.full(SHAPE, -1000.0, dtype=np.float32)
    data += np.random.default_rng(1).normal(0.0, 10.0, SHAPE).astype(np.float32)
    # paste the phantom's grid (same spacing) at its world position, cut to the field of view
    start = np.round((ct.affine[:3, 3] - affine[:3, 3]) / SPACING).astype(int)
    src = [slice(max(-s, 0), min(n, SHAPE[k] - s)) for k, (s, n) in enumerate(zip(start, ct.shape))]
    dst = [slice(max(s, 0), max(s, 0) + (sl.stop - sl.start)) for s, sl in zip(start, src)]
    data[tuple(dst)] = np.asarray(ct.data)[tuple(src)]
    ys = np.nonzero((np.asarray(labels.data) > 0).any(axis=(0, 2)))[0]
    back = float(ct.world([0, ys[0], 0])[1])
    _add_table(data, y, z, x, back, float(ct.affine[2, 3]))
    return Volume(data, affine, "ct")


def synthetic_head_ct() -> Volume:
    affine, (x, y, z) = _field_of_view()

    def ellipsoid(a: float, b: float, d: float) -> np.ndarray:
        return (x / a) ** 2 + (y / b) ** 2 + (z / d) ** 2 <= 1

    data = np.full(SHAPE, -1000.0, dtype=np.float32)
    data[ellipsoid(80, 100, 105)] = 40.0
    data[ellipsoid(72, 92, 97) & ~ellipsoid(66, 86, 91)] = 1200.0
    _add_table(data, y, z, x, -100.0, -105.0)
    data += np.random.default_rng(0).normal(0.0, 20.0, SHAPE).astype(np.float32)
    return Volume(data, affine, "ct")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", action="store_true", help="ellipsoidal head instead of the phantom")
    args = parser.parse_args()
    t = time.perf_counter()
    volume = synthetic_head_ct() if args.synthetic else phantom_head_ct()
    print(f"built the CT in {time.perf_counter() - t:.0f} s (not timed)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ct.nii.gz"
        stored = volume.with_data(np.clip(np.round(np.asarray(volume.data)), -1024, 3071).astype(np.int16))
        write_nifti(stored, path)
        size_mb = path.stat().st_size / 1e6
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        ct = read_volume(path)
        times["read"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        seg = segment_scan(ct, "ct", split_jaw=not args.synthetic)
        times["segment"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        surfaces, per_tissue = tissue_surfaces(seg, target_vertices=100_000)
        times["surfaces"] = time.perf_counter() - t0
    total = sum(times.values())
    print(f"{ct.shape} at {tuple(float(s) for s in ct.spacing)} mm, {size_mb:.0f} MB .nii.gz (int16)")
    print(f"thresholds {seg.thresholds}")
    print("notes: " + "; ".join(seg.notes))
    print("surfaces: " + ", ".join(f"{n} {len(s.vertices)} v in {per_tissue[n]:.1f} s" for n, s in surfaces.items()))
    print(" | ".join(f"{k} {v:.1f} s ({v / total:.0%})" for k, v in times.items()) + f" | total {total:.1f} s "
          f"(target < 20 s: {'met' if total < 20 else 'NOT met'})")


if __name__ == "__main__":
    main()
