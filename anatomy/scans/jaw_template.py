"""Mandible apart from the skull by a template: the default head's skull and mandible, aligned to the
bone, say which bone each voxel belongs to.

In a closed-mouth CT the teeth meet over a broad area and the condyles sit in their fossae, so
openings (:func:`~anatomy.scans.split_mandible`) often find no split, or cut off a piece of the
jaw. Here, instead:

1. The outer surface of the bone (boundary voxels of the mask with its cavities filled, on a grid of
   about 1 mm) is sampled.
2. The template's skull + mandible vertices are aligned to it by trimmed ICP with a uniform scale
   (Besl & McKay 1992 for ICP; the worst ``1 - trim`` of the pairs are left out each step, Chetverikov
   et al. 2002, "The trimmed iterative closest point algorithm"), starting from the centroids, in the
   volume's RAS+ world frame (so the scan must be roughly upright; a head CT's affine gives that).
3. The template mandible is then aligned again on its own (rigid), to the surface points nearer to it
   than to the template skull: that follows an open or shifted jaw.
4. Each bone voxel takes the bone of its nearest template vertex; the mandible is the largest connected
   piece of its voxels, the rest is skull.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from ..core.errors import ParameterError, ShapeError
from ..registration.rigid import icp
from .jaw_split import split_mandible
from .morphology import CUBE, fill_enclosed, largest
from .volume import Volume

__all__ = ["JAW_METHODS", "separate_jaw", "split_mandible_by_template"]

_MAX_SURFACE_POINTS = 40_000


def _template(head: Any) -> tuple[np.ndarray, np.ndarray]:
    """Rest skull and mandible vertices (mm, RAS+) of ``head`` (default: the embedded head)."""
    from ..models import Sculptor

    model = Sculptor(dtype=torch.float64) if head is None else head
    with torch.no_grad():
        out = model()
    if not {"skull", "mandible"} <= set(out.tissue_names):
        raise ParameterError(f"the template head needs 'skull' and 'mandible' tissues; it has {out.tissue_names}.")
    return out.tissue("skull")[0].double().numpy(), out.tissue("mandible")[0].double().numpy()


def split_mandible_by_template(
    bone: Volume, head: Any = None, *, iterations: int = 80, trim: float = 0.8
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Split a bone mask into skull and mandible with a template head (see the module text).

    Args:
        bone: a mask volume (non-zero = bone) of the skull and mandible, world frame RAS+.
        head: a :class:`~anatomy.Sculptor` with ``skull`` and ``mandible`` tissues (default: the embedded head).
        iterations: ICP steps per stage; trim: share of the closest pairs used at each step.

    Returns:
        ``(skull, mandible, facts)``: boolean masks on ``bone``'s grid and ``{"scale", "rms_mm",
        "mandible_rms_mm"}`` of the alignment.
    """
    if not isinstance(bone, Volume):
        raise ParameterError(f"split_mandible_by_template needs a Volume mask; got {type(bone).__name__}.")
    if not 0.2 <= trim <= 1.0:
        raise ParameterError(f"trim must be in [0.2, 1] (share of ICP pairs kept); got {trim}.")
    mask = np.asarray(bone.data != 0)
    if mask.sum() < 100:
        raise ShapeError(f"split_mandible_by_template: the bone mask holds {int(mask.sum())} voxels; need a skull.")
    # the outer surface on a grid of about 1 mm (every n-th voxel) is plenty to align a template
    step = tuple(max(1, int(round(1.0 / s))) for s in bone.spacing)
    solid = fill_enclosed(mask[:: step[0], :: step[1], :: step[2]])
    shell = solid & ~ndimage.binary_erosion(solid, CUBE)
    ijk = np.argwhere(shell) * np.array(step)
    if len(ijk) > _MAX_SURFACE_POINTS:
        ijk = ijk[np.linspace(0, len(ijk) - 1, _MAX_SURFACE_POINTS).astype(np.int64)]
    surface = bone.world(ijk.astype(np.float64))
    skull, jaw = _template(head)
    both = np.concatenate([skull, jaw])
    start = both - both.mean(0) + surface.mean(0)
    # trimmed ICP steps until no point moves 0.01 mm
    fit = icp(start, surface, scale=True, trim=trim, max_iter=iterations, tol=1e-2)
    moved = fit.apply(start)
    skull_t, jaw_t = moved[: len(skull)], moved[len(skull):]
    skull_tree = cKDTree(skull_t)
    # the mandible again on its own: to the surface points nearer to it than to the skull
    d_skull, _ = skull_tree.query(surface)
    d_jaw, _ = cKDTree(jaw_t).query(surface)
    near = surface[d_jaw < d_skull]
    jaw_rms = float("nan")
    if len(near) >= 10:
        jaw_fit = icp(jaw_t, near, scale=False, trim=trim, max_iter=iterations, tol=1e-2)
        jaw_t, jaw_rms = jaw_fit.apply(jaw_t), jaw_fit.rms
    voxels = np.argwhere(mask)
    points = bone.world(voxels.astype(np.float64))
    d_skull, _ = skull_tree.query(points, workers=-1)
    d_jaw, _ = cKDTree(jaw_t).query(points, workers=-1)
    near_jaw = voxels[d_jaw < d_skull]
    mandible = np.zeros_like(mask)
    if len(near_jaw):  # its largest piece, found inside its bounding box
        lo, hi = near_jaw.min(axis=0), near_jaw.max(axis=0) + 1
        to_jaw = np.zeros(tuple(hi - lo), dtype=bool)
        to_jaw[tuple((near_jaw - lo).T)] = True
        mandible[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = largest(to_jaw, CUBE)
    facts = {"scale": float(fit.transform.scale), "rms_mm": fit.rms, "mandible_rms_mm": jaw_rms}
    return mask & ~mandible, mandible, facts


JAW_METHODS = ("template", "opening")


def separate_jaw(
    bone: Volume, method: str = "template", *, max_split_mm: float = 6.0
) -> tuple[np.ndarray, np.ndarray, str]:
    """``(skull, mandible, note)`` of a bone mask by ``method``: ``"template"``
    (:func:`split_mandible_by_template`) or ``"opening"`` (:func:`~anatomy.scans.split_mandible`, up to
    ``max_split_mm``). With no split found the mandible is empty and the note says so."""
    if method == "template":
        skull, jaw, facts = split_mandible_by_template(bone)
        note = (f"jaw: split by the template head (ICP rms {facts['rms_mm']:.2f} mm, scale {facts['scale']:.3f}; "
                f"mandible rms {facts['mandible_rms_mm']:.2f} mm)")
        return skull, jaw, note
    if method == "opening":
        skull, jaw, radius = split_mandible(bone, max_radius_mm=max_split_mm)
        if jaw.any():
            return skull, jaw, f"jaw: split from the skull by an opening of {radius:g} mm"
        return skull, jaw, f"jaw: no split found up to {max_split_mm:g} mm; the mandible stays with the skull"
    raise ParameterError(f"jaw split method must be one of {JAW_METHODS}; got {method!r}.")
