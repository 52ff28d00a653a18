"""Tissue label maps from CT and MRI without training labels: thresholds read off the histogram.

Label codes (:class:`Tissue`): ``AIR = 0``, ``SKIN = 1`` (every soft-tissue voxel inside the body;
the skin surface is the outside of ``SKIN | BONE | MANDIBLE``), ``BONE = 3`` (the skull: cranium and
maxilla, or all kept bone when the jaw is not split), ``MANDIBLE = 4`` (only with ``split_jaw=True``
or when the jaw is already a separate piece of bone).

CT (:func:`segment_ct`), in Hounsfield units or windowed 8-bit (PNG stacks where air and fat are 0 and
bone saturates at 255): no fixed HU anywhere.

1. Thresholds: a three-class Otsu (:func:`skimage.filters.threshold_multiotsu`, Liao, Chen & Chung
   2001) on a 256-bin histogram of the robust range ``[0.5, 99.95]`` percentiles of a sub-sample;
   the lower threshold separates air from tissue, the upper one soft tissue from bone. A padding
   value (the minimum, holding >= 1 % of the voxels, while the rest starts more than a quarter of
   the range above it: the -3024 / -2048 outside a CT's round field of view) is left out first.
2. Body: tissue voxels, opened (radius ``open_mm``) so that thin contacts break; the largest
   opened piece is the body, the other opened pieces (table, headrest) and a margin around them
   are removed, then the largest connected piece of what is left is closed (``close_mm``), and
   holes are filled in 3D and then slice by slice in axial planes (airways open to the outside are
   enclosed in an axial slice).
3. Bone: above the upper threshold and inside the body. The skull is the largest connected bone
   piece (26-connectivity). Another piece is kept only if it holds at least ``min_bone_fraction``
   of the skull's voxels AND its centroid lies anterior to the skull's centroid: that keeps a jaw
   that is already apart (open mouth) and drops the cervical spine (under and behind the skull's
   centroid), the hyoid and specks. A spine fused to the skull in the threshold stays with it.
4. Optional jaw split of the skull piece: a template head aligned to the bone (default) or openings
   (:func:`split_mandible`).

MRI (:func:`segment_mri`): body only, by Otsu + closing + largest piece + hole filling.
A label map made elsewhere enters through :func:`from_labels`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..core.errors import ParameterError
from .jaw_split import split_mandible
from .jaw_template import separate_jaw
from .labelmap import Segmentation, Tissue, check_grey, from_labels, labels_like, labels_volume, tissue_volumes
from .morphology import CROSS, CUBE, components, fill_holes, largest, radius_voxels, superior_axis, upsample, voxel_mm3
from .thresholds import histogram_thresholds, windowed_floor
from .volume import Volume

__all__ = [
    "Segmentation",
    "Tissue",
    "from_labels",
    "histogram_thresholds",
    "labels_like",
    "segment_ct",
    "segment_mri",
    "split_mandible",
]



def _small_grid(volume: Volume) -> tuple[tuple[int, int, int], float]:
    """Steps of a grid of about 1.5 mm (every n-th voxel) and its finest spacing in mm."""
    sx, sy, sz = (max(1, int(round(1.5 / s))) for s in volume.spacing)
    return (sx, sy, sz), min(s * k for s, k in zip(volume.spacing, (sx, sy, sz)))


def _opened_pieces(volume: Volume, tissue: np.ndarray, open_mm: float
                   ) -> tuple[tuple[int, int, int], np.ndarray, int, np.ndarray, np.ndarray]:
    """On the 1.5 mm grid: ``(steps, tissue there, opening radius in its voxels, labelled opened pieces,
    their voxel counts)``; no piece left after the opening raises."""
    steps, small_mm = _small_grid(volume)
    small = tissue[:: steps[0], :: steps[1], :: steps[2]]
    r_open = max(int(round(open_mm / small_mm)), 0)
    opened = ndimage.binary_opening(small, CROSS, iterations=r_open) if r_open else small
    lab, counts = components(opened, CROSS)
    if counts.max() == 0:
        raise ParameterError(
            f"segment_ct: no body left after an opening of {open_mm} mm; lower open_mm or check the skin threshold."
        )
    return steps, small, r_open, lab, counts


def _body_box(volume: Volume, tissue: np.ndarray, open_mm: float, close_mm: float) -> tuple[slice, ...]:
    """Bounding box (voxel slices) of the body's piece on the 1.5 mm grid: the tissue piece that holds
    the largest opened piece, once the other opened pieces are taken away; with a margin of two coarse
    voxels and the closing radius. Everything after runs inside it (a head fills about half of a
    512 x 512 x 300 field of view)."""
    steps, small, r_open, lab, counts = _opened_pieces(volume, tissue, open_mm)
    core = lab == int(np.argmax(counts))
    others = ndimage.binary_dilation(~core & (lab != 0), CROSS, iterations=max(r_open, 1)) & ~core
    pieces, _ = components(small & ~others, CROSS)
    keep = np.unique(pieces[core])
    found = np.argwhere(np.isin(pieces, keep[keep != 0]) | core)
    margin = 2 + radius_voxels(volume, close_mm)
    lo = [max(int(found[:, k].min()) * steps[k] - margin * steps[k], 0) for k in range(3)]
    hi = [min((int(found[:, k].max()) + 1) * steps[k] + margin * steps[k], tissue.shape[k]) for k in range(3)]
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def _crop(volume: Volume, box: tuple[slice, ...]) -> Volume:
    """``volume`` cut to ``box``, with the affine moved so that world positions stay the same."""
    affine = volume.affine.copy()
    affine[:3, 3] = volume.world(np.array([float(b.start) for b in box]))
    return Volume(np.asarray(volume.data)[box], affine, volume.modality, dict(volume.meta))


def _body_mask(volume: Volume, tissue: np.ndarray, open_mm: float, close_mm: float) -> tuple[np.ndarray, list[str]]:
    """Body mask (module text, step 2). The opening and the choice of the body's piece run on a grid of
    about 1.5 mm (every n-th voxel) to stay fast on 512 x 512 x 300 scans; the mask itself stays full-size."""
    notes: list[str] = []
    steps, small, r_open, lab, counts = _opened_pieces(volume, tissue, open_mm)
    core_small = lab == int(np.argmax(counts))
    others_small = ~core_small & (lab != 0)
    candidate = tissue
    if others_small.any():
        notes.append(f"body: {int((counts > 0).sum()) - 1} piece(s) apart from the body removed (table, headrest)")
        grown = ndimage.binary_dilation(others_small, CROSS, iterations=max(r_open, 1))
        candidate = tissue & ~upsample(grown & ~core_small, steps, tissue.shape)
    r_close = radius_voxels(volume, close_mm)
    if r_close:
        # padded, so the closing does not glue the body to the volume's border
        closed = ndimage.binary_closing(np.pad(candidate, r_close), CROSS, iterations=r_close)
        candidate = closed[r_close:-r_close, r_close:-r_close, r_close:-r_close] | candidate
    # filled before the body's piece is chosen: in an 8-bit export the skin is a thin shell around fat at 0
    candidate = fill_holes(candidate, superior_axis(volume))
    lab, counts = components(candidate, CROSS)
    overlap = np.bincount(lab[upsample(core_small, steps, tissue.shape)].ravel(), minlength=len(counts))
    overlap[0] = 0
    body = lab == int(np.argmax(overlap if overlap.any() else counts))  # the piece holding the opened body
    return np.asarray(body), notes


def _select_bone(volume: Volume, bone: np.ndarray, min_fraction: float) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(skull piece, separate jaw pieces kept, notes) by the rule in the module text."""
    lab, counts = components(bone, CUBE)
    skull_id = int(np.argmax(counts))
    boxes = ndimage.find_objects(lab)

    def centroid(piece: int) -> np.ndarray:  # world centroid, computed inside the piece's bounding box
        box = boxes[piece - 1]
        assert box is not None
        ijk = np.asarray(ndimage.center_of_mass(lab[box] == piece), dtype=np.float64)
        return volume.world(ijk + [b.start for b in box])

    skull = lab == skull_id
    skull_y = centroid(skull_id)[1]
    jaw = np.zeros_like(bone, dtype=bool)
    big = np.nonzero(counts >= min_fraction * counts[skull_id])[0]
    kept = 0
    for piece in big:
        if piece != skull_id and centroid(int(piece))[1] > skull_y:  # anterior of the skull's centroid
            jaw |= lab == piece
            kept += 1
    dropped = int((counts > 0).sum()) - 1 - kept
    notes = [f"bone: kept the skull piece ({int(counts[skull_id])} voxels)"]
    if kept:
        notes.append(f"bone: {kept} separate anterior piece(s) kept as the mandible")
    if dropped:
        notes.append(f"bone: {dropped} other piece(s) dropped (spine, hyoid, specks)")
    return skull, jaw, notes


def segment_ct(
    volume: Volume,
    *,
    skin_threshold: float | None = None,
    bone_threshold: float | None = None,
    open_mm: float = 3.0,
    close_mm: float = 1.0,
    min_bone_fraction: float = 0.05,
    min_bone_mm3: float = 1000.0,
    split_jaw: bool = False,
    jaw_method: str = "template",
    max_split_mm: float = 6.0,
) -> Segmentation:
    """Skin (body) and bone labels of a head CT, in HU or windowed 8-bit (see the module text).

    Args:
        volume: the CT.
        skin_threshold, bone_threshold: override the histogram's thresholds (same units as the data).
        open_mm: opening radius that separates the table and headrest from the body.
        close_mm: closing radius of the body mask.
        min_bone_mm3: the skull piece must hold at least this volume (else: "no bone found").
        min_bone_fraction: a bone piece apart from the skull is kept (as mandible) only with at least this
            fraction of the skull's voxels and a centroid anterior to the skull's.
        split_jaw: also split a mandible joined to the skull.
        jaw_method: ``"template"`` (the default head aligned to the bone,
            :func:`~anatomy.scans.jaw_template.split_mandible_by_template`; for head CTs) or ``"opening"``
            (:func:`split_mandible`: openings until the bone falls apart; needs a visible gap).
        max_split_mm: the largest opening radius that the ``"opening"`` split tries.

    Raises:
        ParameterError: no tissue or no bone above the thresholds (the message gives them), bad options.
    """
    check_grey(volume, "segment_ct")
    if open_mm < 0 or close_mm < 0:
        raise ParameterError(f"open_mm and close_mm must be >= 0; got {open_mm}, {close_mm}.")
    data = volume.data
    thresholds: dict[str, float] = {}
    if skin_threshold is None or bone_threshold is None:
        floor = windowed_floor(data)
        if floor is None:
            (t_skin, t_bone), facts = histogram_thresholds(data, classes=3)
            thresholds.update({f"range_{k}": v for k, v in facts.items()})
        else:
            t_skin = floor + 0.5
            above = data[data > floor]
            if above.size == 0:
                raise ParameterError(f"segment_ct: every voxel sits at the floor value {floor:g}; nothing to segment.")
            (t_bone,), facts = histogram_thresholds(above.reshape(-1, 1, 1), classes=2)
            thresholds.update({f"range_{k}": v for k, v in facts.items()})
            thresholds["windowed_floor"] = floor
        skin_threshold = t_skin if skin_threshold is None else skin_threshold
        bone_threshold = t_bone if bone_threshold is None else bone_threshold
    if not bone_threshold > skin_threshold:
        raise ParameterError(
            f"segment_ct: the bone threshold ({bone_threshold:g}) must lie above the skin threshold "
            f"({skin_threshold:g})."
        )
    thresholds["skin"], thresholds["bone"] = float(skin_threshold), float(bone_threshold)
    tissue = data > skin_threshold
    if not tissue.any():
        raise ParameterError(
            f"segment_ct: no voxel above the skin threshold {skin_threshold:g} (thresholds found: {thresholds})."
        )
    full = volume
    box = _body_box(volume, tissue, open_mm, close_mm)
    volume, tissue = _crop(volume, box), tissue[box]
    data = volume.data
    body, notes = _body_mask(volume, tissue, open_mm, close_mm)
    bone = (data > bone_threshold) & body
    if not bone.any():
        raise ParameterError(
            f"segment_ct: no bone found inside the body: no voxel above the bone threshold {bone_threshold:g} "
            f"(thresholds found: {thresholds}). Pass bone_threshold=... or check the window of an 8-bit export."
        )
    skull, jaw, bone_notes = _select_bone(volume, bone, min_bone_fraction)
    skull_mm3 = float(skull.sum()) * voxel_mm3(volume)
    if skull_mm3 < min_bone_mm3:
        raise ParameterError(
            f"segment_ct: no bone found: the largest piece above the bone threshold {bone_threshold:g} holds "
            f"{skull_mm3:.4g} mm^3 < min_bone_mm3={min_bone_mm3:g} (thresholds found: {thresholds}). Pass "
            f"bone_threshold=... or check the window of an 8-bit export."
        )
    notes += bone_notes
    labels = np.zeros(data.shape, dtype=np.uint8)
    labels[body] = Tissue.SKIN
    if split_jaw and not jaw.any():
        skull_part, mandible, note = separate_jaw(labels_like(volume, skull), jaw_method, max_split_mm=max_split_mm)
        notes.append(note)
        if mandible.any():
            skull, jaw = skull_part, mandible
    labels[skull] = Tissue.BONE
    labels[jaw] = Tissue.MANDIBLE
    whole = np.zeros(full.shape, dtype=np.uint8)
    whole[box] = labels
    return Segmentation(labels_volume(full, whole), thresholds, tissue_volumes(labels, voxel_mm3(full)), notes)


def segment_mri(volume: Volume, *, threshold: float | None = None, close_mm: float = 3.0) -> Segmentation:
    """Body (skin) label of an MRI: Otsu threshold (robust range, see the module text), closing,
    largest piece, holes filled in 3D and in axial slices. Bone is not attempted (cortical bone is dark
    on MRI, like air)."""
    check_grey(volume, "segment_mri")
    thresholds: dict[str, float] = {}
    if threshold is None:
        (t,), facts = histogram_thresholds(volume.data, classes=2)
        thresholds.update({f"range_{k}": v for k, v in facts.items()})
        threshold = t
    thresholds["skin"] = float(threshold)
    fg = largest(volume.data > threshold, CROSS)
    if not fg.any():
        raise ParameterError(f"segment_mri: no voxel above the threshold {threshold:g}; thresholds {thresholds}.")
    r = radius_voxels(volume, close_mm)
    if r:
        closed = ndimage.binary_closing(np.pad(fg, r), CROSS, iterations=r)
        fg = closed[r:-r, r:-r, r:-r] | fg
    body = fill_holes(fg, superior_axis(volume))
    labels = np.where(body, np.uint8(Tissue.SKIN), np.uint8(Tissue.AIR))
    return Segmentation(labels_volume(volume, labels), thresholds, tissue_volumes(labels, voxel_mm3(volume)), [])
