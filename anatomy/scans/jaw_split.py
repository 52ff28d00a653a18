"""Mandible apart from the skull in a bone mask: openings of growing radius until the mask falls in
two pieces, then both pieces grow back inside the mask."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..core.errors import ParameterError, ShapeError
from .morphology import CUBE, components, radius_voxels
from .volume import Volume

__all__ = ["split_mandible"]



def _two_big(mask: np.ndarray, min_fraction: float) -> tuple[np.ndarray, np.ndarray] | None:
    lab, counts = components(mask, CUBE)
    order = np.argsort(counts)[::-1]
    total = counts.sum()
    if len(order) < 3 or counts[order[1]] < min_fraction * total:
        return None
    return lab == order[0], lab == order[1]


def _grow(mask: np.ndarray, a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Share ``mask`` between seeds ``a`` and ``b``: each voxel of a piece of ``mask`` that holds a seed
    goes to the nearer seed (Euclidean distance in mm; the voxels between the opened pieces lie within
    the opening radius of them, so this matches growing both inside the mask, at a fraction of the
    cost of step-by-step dilations). Pieces of ``mask`` holding no seed stay out."""
    a, b = a & mask, b & mask
    lab, _ = ndimage.label(mask, structure=CUBE)
    seeded = np.unique(lab[a | b])
    reach = np.isin(lab, seeded[seeded != 0])
    to_a = reach & (ndimage.distance_transform_edt(~a, sampling=spacing)
                    <= ndimage.distance_transform_edt(~b, sampling=spacing))
    return to_a, reach & ~to_a


def split_mandible(
    bone: Volume, *, max_radius_mm: float = 6.0, min_fraction: float = 0.1
) -> tuple[np.ndarray, np.ndarray, float]:
    """Split a bone mask into skull and mandible.

    Openings of growing radius (1 voxel a step, up to ``max_radius_mm``) are tried until the opened
    mask falls into two pieces each holding at least ``min_fraction`` of the opened voxels (radius 0:
    the mask is already in two such pieces). The piece whose centroid is lower (world z, inferior) is
    the mandible; every voxel of the original mask is then given to the nearer piece, so the thin
    joint (teeth, condyles) is shared at its middle.

    Returns ``(skull, mandible, radius_mm)``; with no split found, ``(mask, empty, nan)``.
    """
    if not isinstance(bone, Volume):
        raise ParameterError(f"split_mandible needs a Volume mask; got {type(bone).__name__}.")
    mask = np.asarray(bone.data != 0)
    if not mask.any():
        raise ShapeError("split_mandible: the bone mask is empty.")
    idx = np.nonzero(mask)
    lo = [max(int(i.min()) - 1, 0) for i in idx]
    hi = [int(i.max()) + 2 for i in idx]
    box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    crop = mask[box]
    step_mm = min(bone.spacing)
    found: tuple[np.ndarray, np.ndarray] | None = None
    radius = 0
    for radius in range(0, radius_voxels(bone, max_radius_mm) + 1):
        opened = ndimage.binary_opening(crop, CUBE, iterations=radius) if radius else crop
        found = _two_big(opened, min_fraction)
        if found is not None:
            break
    if found is None:
        return mask, np.zeros_like(mask), float("nan")
    a, b = _grow(crop, *found, bone.spacing)
    za, zb = (bone.world(np.asarray(ndimage.center_of_mass(p), dtype=np.float64) + lo)[2] for p in (a, b))
    skull_c, jaw_c = (a, b) if za > zb else (b, a)
    skull = np.zeros_like(mask)
    jaw = np.zeros_like(mask)
    skull[box], jaw[box] = skull_c, jaw_c
    return skull, jaw, radius * step_mm
