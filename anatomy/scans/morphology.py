"""Binary morphology on voxel masks shared by the segmenters: connected pieces, hole filling,
radii in voxels, the superior axis of a grid."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .volume import Volume

__all__ = ["CROSS", "CUBE", "components", "fill_enclosed", "fill_holes", "largest", "radius_voxels",
           "superior_axis", "upsample", "voxel_mm3"]



def voxel_mm3(volume: Volume) -> float:
    return float(abs(np.linalg.det(volume.affine[:3, :3])))


def superior_axis(volume: Volume) -> int:
    """The voxel axis that points most along world z (superior)."""
    return int(np.argmax(np.abs(volume.affine[2, :3])))


def radius_voxels(volume: Volume, mm: float) -> int:
    return max(int(round(mm / min(volume.spacing))), 0) if mm > 0 else 0


CROSS = ndimage.generate_binary_structure(3, 1)
CUBE = ndimage.generate_binary_structure(3, 3)


def components(mask: np.ndarray, structure: np.ndarray = CUBE) -> tuple[np.ndarray, np.ndarray]:
    """Labelled pieces of ``mask`` and the voxel count of each (index 0 = background, count 0)."""
    lab, n = ndimage.label(mask, structure=structure)
    counts = np.bincount(lab.ravel(), minlength=n + 1)
    counts[0] = 0
    return lab, counts


def largest(mask: np.ndarray, structure: np.ndarray = CUBE) -> np.ndarray:
    lab, counts = components(mask, structure)
    if counts.max() == 0:
        return np.zeros_like(mask, dtype=bool)
    return np.asarray(lab == int(np.argmax(counts)))


def fill_enclosed(mask: np.ndarray, axis: int | None = None) -> np.ndarray:
    """``mask`` with its holes filled: background pieces (6-connected; with ``axis``, connected only
    within the planes across ``axis``, i.e. slice by slice) that touch no face of the array (with
    ``axis``: no in-plane edge). One labelling pass, unlike an iterated dilation from the border."""
    if axis is None:
        structure = CROSS
    else:
        structure = np.zeros((3, 3, 3), dtype=bool)
        index: list[slice | int] = [slice(None)] * 3
        index[axis] = 1
        structure[tuple(index)] = ndimage.generate_binary_structure(2, 1)
    lab, n = ndimage.label(~mask, structure=structure)
    outside = np.zeros(n + 1, dtype=bool)
    for ax in range(3):
        if ax == axis:
            continue
        outside[np.take(lab, 0, axis=ax)] = True
        outside[np.take(lab, -1, axis=ax)] = True
    outside[0] = True
    return np.asarray(mask | ~outside[lab])


def fill_holes(mask: np.ndarray, axis: int) -> np.ndarray:
    """Fill holes slice by slice across ``axis``: that also fills every hole enclosed in 3D (each of its
    slices is enclosed in its plane, else a path to the outside would exist), and airways open to the
    outside above and below."""
    return fill_enclosed(mask, axis)


def upsample(small: np.ndarray, steps: tuple[int, int, int], shape: tuple[int, ...]) -> np.ndarray:
    """A mask on the grid ``data[::sx, ::sy, ::sz]`` spread back over ``shape`` (each voxel over its block)."""
    out = small
    for ax, step in enumerate(steps):
        out = np.repeat(out, step, axis=ax)
    return np.asarray(out[: shape[0], : shape[1], : shape[2]])
