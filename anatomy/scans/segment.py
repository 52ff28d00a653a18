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
4. Optional :func:`split_mandible` on the skull piece.

MRI (:func:`segment_mri`): body only, by Otsu + closing + largest piece + hole filling.
A label map made elsewhere enters through :func:`from_labels`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
from scipy import ndimage

from ..core.errors import ParameterError, ShapeError, import_optional
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


class Tissue(IntEnum):
    """Label codes of a :class:`Segmentation` (2 is left free for a future fat/muscle split)."""

    AIR = 0
    SKIN = 1
    BONE = 3
    MANDIBLE = 4


@dataclass(frozen=True, eq=False)
class Segmentation:
    """A tissue label map and how it was made.

    Attributes:
        labels: a :class:`Volume` (modality ``"labels"``, uint8) of :class:`Tissue` codes.
        thresholds: the intensity thresholds used (``"skin"``, ``"bone"``; empty for :func:`from_labels`).
        volumes_mm3: voxel volume of each tissue present, in mm^3 (``"skin"`` counts soft tissue only;
            ``"body"`` is everything inside the skin).
        notes: what the steps decided (pieces dropped, jaw split radius, ...).
    """

    labels: Volume
    thresholds: dict[str, float] = field(default_factory=dict)
    volumes_mm3: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def mask(self, tissue: str | Tissue) -> np.ndarray:
        """Boolean mask of a tissue: ``"skin"``/``"body"`` (all inside the skin), ``"bone"`` (skull and
        mandible), ``"skull"`` (code BONE), ``"mandible"``."""
        data = self.labels.data
        name = tissue.name.lower() if isinstance(tissue, Tissue) else str(tissue).lower()
        if name in ("skin", "body"):
            return np.asarray(data != Tissue.AIR)
        if name == "bone":
            return np.isin(data, [Tissue.BONE, Tissue.MANDIBLE])
        if name == "skull":
            return np.asarray(data == Tissue.BONE)
        if name == "mandible":
            return np.asarray(data == Tissue.MANDIBLE)
        raise ParameterError(f"Segmentation.mask: unknown tissue {tissue!r}; use skin, body, bone, skull or mandible.")

    def mask_volume(self, tissue: str | Tissue) -> Volume:
        """:meth:`mask` on the label map's grid, ready for :func:`anatomy.scans.extract_surface`."""
        return self.labels.with_data(self.mask(tissue), modality="labels")


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _voxel_mm3(volume: Volume) -> float:
    return float(abs(np.linalg.det(volume.affine[:3, :3])))


def _superior_axis(volume: Volume) -> int:
    """The voxel axis that points most along world z (superior)."""
    return int(np.argmax(np.abs(volume.affine[2, :3])))


def _radius_voxels(volume: Volume, mm: float) -> int:
    return max(int(round(mm / min(volume.spacing))), 0) if mm > 0 else 0


_CROSS = ndimage.generate_binary_structure(3, 1)
_CUBE = ndimage.generate_binary_structure(3, 3)


def _components(mask: np.ndarray, structure: np.ndarray = _CUBE) -> tuple[np.ndarray, np.ndarray]:
    """Labelled pieces of ``mask`` and the voxel count of each (index 0 = background, count 0)."""
    lab, n = ndimage.label(mask, structure=structure)
    counts = np.bincount(lab.ravel(), minlength=n + 1)
    counts[0] = 0
    return lab, counts


def _largest(mask: np.ndarray, structure: np.ndarray = _CUBE) -> np.ndarray:
    lab, counts = _components(mask, structure)
    if counts.max() == 0:
        return np.zeros_like(mask, dtype=bool)
    return np.asarray(lab == int(np.argmax(counts)))


def fill_enclosed(mask: np.ndarray, axis: int | None = None) -> np.ndarray:
    """``mask`` with its holes filled: background pieces (6-connected; with ``axis``, connected only
    within the planes across ``axis``, i.e. slice by slice) that touch no face of the array (with
    ``axis``: no in-plane edge). One labelling pass, unlike an iterated dilation from the border."""
    if axis is None:
        structure = _CROSS
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


def _fill(mask: np.ndarray, axis: int) -> np.ndarray:
    """Fill holes in 3D, then slice by slice across ``axis`` (airways open to the outside)."""
    return fill_enclosed(fill_enclosed(mask), axis)


def _robust_sample(data: np.ndarray, max_samples: int = 2_000_000) -> np.ndarray:
    step = max(1, int(np.ceil((data.size / max_samples) ** (1.0 / 3.0))))
    return np.asarray(data[::step, ::step, ::step], dtype=np.float64).ravel()


def histogram_thresholds(data: np.ndarray, classes: int = 3) -> tuple[list[float], dict[str, float]]:
    """Multi-Otsu thresholds of an intensity array (see the module text for the robust range and the
    padding rule). Returns the thresholds (ascending) and facts: ``low``, ``high``, ``padding``."""
    filters = import_optional("skimage.filters", "scans", "histogram thresholds", "scikit-image")
    sample = _robust_sample(data)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        raise ParameterError("histogram_thresholds: the volume has no finite values.")
    facts: dict[str, float] = {}
    vmin = float(sample.min())
    at_min = sample == vmin
    rest = sample[~at_min]
    if at_min.mean() >= 0.01 and rest.size:
        top = float(np.percentile(rest, 99.95))
        if float(np.percentile(rest, 1.0)) > vmin + 0.25 * (top - vmin):
            facts["padding"] = vmin
            sample = rest
    low, high = (float(v) for v in np.percentile(sample, [0.5, 99.95]))
    facts["low"], facts["high"] = low, high
    if not high > low:
        raise ParameterError(
            f"histogram_thresholds: the volume is nearly constant (robust range [{low:g}, {high:g}]); "
            f"there is nothing to separate."
        )
    counts, edges = np.histogram(np.clip(sample, low, high), bins=256, range=(low, high))
    centers = 0.5 * (edges[1:] + edges[:-1])
    try:
        thresholds = filters.threshold_multiotsu(hist=(counts, centers), classes=classes)
    except ValueError as exc:
        raise ParameterError(
            f"histogram_thresholds: the histogram of [{low:g}, {high:g}] (facts {facts}) holds fewer than "
            f"{classes} distinct levels ({exc}). Pass the thresholds explicitly."
        ) from exc
    return [float(t) for t in np.atleast_1d(thresholds)], facts


def _windowed_floor(data: np.ndarray) -> float | None:
    """The floor value of a windowed export (integer data over at most 256 levels with >= 1 % of the
    voxels at its minimum: air and fat both clipped there), else ``None``."""
    if data.dtype.kind not in "biu":
        return None
    sample = _robust_sample(data)
    vmin, vmax = float(sample.min()), float(sample.max())
    if vmax - vmin > 255 or np.mean(sample == vmin) < 0.01:
        return None
    return vmin


def _tissue_volumes(labels: np.ndarray, voxel_mm3: float) -> dict[str, float]:
    counts = np.bincount(labels.ravel(), minlength=max(Tissue) + 1)
    out = {t.name.lower(): float(counts[t]) * voxel_mm3 for t in Tissue if t != Tissue.AIR and counts[t]}
    out["body"] = float(counts[1:].sum()) * voxel_mm3
    return out


def _labels_volume(volume: Volume, labels: np.ndarray) -> Volume:
    return Volume(labels.astype(np.uint8), volume.affine, "labels", dict(volume.meta))


def _check_grey(volume: Volume, what: str) -> None:
    if not isinstance(volume, Volume):
        raise ParameterError(f"{what} needs an anatomy.scans.Volume; got {type(volume).__name__}.")
    if volume.modality == "labels":
        raise ParameterError(f"{what}: this volume is a label map; use from_labels(volume, mapping) instead.")


# --------------------------------------------------------------------------------------
# CT
# --------------------------------------------------------------------------------------


def _upsample(small: np.ndarray, steps: tuple[int, int, int], shape: tuple[int, ...]) -> np.ndarray:
    """A mask on the grid ``data[::sx, ::sy, ::sz]`` spread back over ``shape`` (each voxel over its block)."""
    out = small
    for ax, step in enumerate(steps):
        out = np.repeat(out, step, axis=ax)
    return np.asarray(out[: shape[0], : shape[1], : shape[2]])


def _body_mask(volume: Volume, tissue: np.ndarray, open_mm: float, close_mm: float) -> tuple[np.ndarray, list[str]]:
    """Body mask (module text, step 2). The opening and the choice of the body's piece run on a grid of
    about 1.5 mm (every n-th voxel) to stay fast on 512 x 512 x 300 scans; the mask itself stays full-size."""
    notes: list[str] = []
    sx, sy, sz = (max(1, int(round(1.5 / s))) for s in volume.spacing)
    steps = (sx, sy, sz)
    small = tissue[::sx, ::sy, ::sz]
    small_mm = min(s * k for s, k in zip(volume.spacing, steps))
    r_open = max(int(round(open_mm / small_mm)), 0)
    opened = ndimage.binary_opening(small, _CROSS, iterations=r_open) if r_open else small
    lab, counts = _components(opened, _CROSS)
    if counts.max() == 0:
        raise ParameterError(
            f"segment_ct: no body left after an opening of {open_mm} mm; lower open_mm or check the skin threshold."
        )
    core_small = lab == int(np.argmax(counts))
    others_small = ~core_small & (lab != 0)
    candidate = tissue
    if others_small.any():
        notes.append(f"body: {int((counts > 0).sum()) - 1} piece(s) apart from the body removed (table, headrest)")
        grown = ndimage.binary_dilation(others_small, _CROSS, iterations=max(r_open, 1))
        candidate = tissue & ~_upsample(grown & ~core_small, steps, tissue.shape)
    r_close = _radius_voxels(volume, close_mm)
    if r_close:
        # padded, so the closing does not glue the body to the volume's border
        closed = ndimage.binary_closing(np.pad(candidate, r_close), _CROSS, iterations=r_close)
        candidate = closed[r_close:-r_close, r_close:-r_close, r_close:-r_close] | candidate
    # filled before the body's piece is chosen: in an 8-bit export the skin is a thin shell around fat at 0
    candidate = _fill(candidate, _superior_axis(volume))
    lab, counts = _components(candidate, _CROSS)
    overlap = np.bincount(lab[_upsample(core_small, steps, tissue.shape)].ravel(), minlength=len(counts))
    overlap[0] = 0
    body = lab == int(np.argmax(overlap if overlap.any() else counts))  # the piece holding the opened body
    return np.asarray(body), notes


def _select_bone(volume: Volume, bone: np.ndarray, min_fraction: float) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(skull piece, separate jaw pieces kept, notes) by the rule in the module text."""
    lab, counts = _components(bone, _CUBE)
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
        split_jaw: also split a mandible joined to the skull (:func:`split_mandible`).
        max_split_mm: the largest opening radius that split tries.

    Raises:
        ParameterError: no tissue or no bone above the thresholds (the message gives them), bad options.
    """
    _check_grey(volume, "segment_ct")
    if open_mm < 0 or close_mm < 0:
        raise ParameterError(f"open_mm and close_mm must be >= 0; got {open_mm}, {close_mm}.")
    data = volume.data
    thresholds: dict[str, float] = {}
    if skin_threshold is None or bone_threshold is None:
        floor = _windowed_floor(data)
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
    body, notes = _body_mask(volume, tissue, open_mm, close_mm)
    bone = (data > bone_threshold) & body
    if not bone.any():
        raise ParameterError(
            f"segment_ct: no bone found inside the body: no voxel above the bone threshold {bone_threshold:g} "
            f"(thresholds found: {thresholds}). Pass bone_threshold=... or check the window of an 8-bit export."
        )
    skull, jaw, bone_notes = _select_bone(volume, bone, min_bone_fraction)
    skull_mm3 = float(skull.sum()) * _voxel_mm3(volume)
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
        skull_part, mandible, radius = split_mandible(labels_like(volume, skull), max_radius_mm=max_split_mm)
        if mandible.any():
            notes.append(f"jaw: split from the skull by an opening of {radius:g} mm")
            skull, jaw = skull_part, mandible
        else:
            notes.append(f"jaw: no split found up to {max_split_mm:g} mm; the mandible stays in BONE")
    labels[skull] = Tissue.BONE
    labels[jaw] = Tissue.MANDIBLE
    return Segmentation(_labels_volume(volume, labels), thresholds, _tissue_volumes(labels, _voxel_mm3(volume)), notes)


def labels_like(volume: Volume, mask: np.ndarray) -> Volume:
    """A boolean mask on ``volume``'s grid, as a label :class:`Volume`."""
    return Volume(np.asarray(mask, dtype=bool), volume.affine, "labels", dict(volume.meta))


# --------------------------------------------------------------------------------------
# jaw
# --------------------------------------------------------------------------------------


def _two_big(mask: np.ndarray, min_fraction: float) -> tuple[np.ndarray, np.ndarray] | None:
    lab, counts = _components(mask, _CUBE)
    order = np.argsort(counts)[::-1]
    total = counts.sum()
    if len(order) < 3 or counts[order[1]] < min_fraction * total:
        return None
    return lab == order[0], lab == order[1]


def _grow(mask: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Share ``mask`` between seeds ``a`` and ``b`` by growing both one voxel a step inside it."""
    a, b = a & mask, b & mask
    while True:
        free = mask & ~a & ~b
        if not free.any():
            break
        grow_a = ndimage.binary_dilation(a, _CUBE) & free
        grow_b = ndimage.binary_dilation(b, _CUBE) & free & ~grow_a
        if not grow_a.any() and not grow_b.any():
            break  # voxels of other pieces, not reachable from either seed
        a, b = a | grow_a, b | grow_b
    return a, b


def split_mandible(
    bone: Volume, *, max_radius_mm: float = 6.0, min_fraction: float = 0.1
) -> tuple[np.ndarray, np.ndarray, float]:
    """Split a bone mask into skull and mandible.

    Openings of growing radius (1 voxel a step, up to ``max_radius_mm``) are tried until the opened
    mask falls into two pieces each holding at least ``min_fraction`` of the opened voxels (radius 0:
    the mask is already in two such pieces). The piece whose centroid is lower (world z, inferior) is
    the mandible; every voxel of the original mask is then given to the piece that reaches it first
    when both grow inside the mask, so the thin joint (teeth, condyles) is shared at its middle.

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
    for radius in range(0, _radius_voxels(bone, max_radius_mm) + 1):
        opened = ndimage.binary_opening(crop, _CUBE, iterations=radius) if radius else crop
        found = _two_big(opened, min_fraction)
        if found is not None:
            break
    if found is None:
        return mask, np.zeros_like(mask), float("nan")
    a, b = _grow(crop, *found)
    za, zb = (bone.world(np.asarray(ndimage.center_of_mass(p), dtype=np.float64) + lo)[2] for p in (a, b))
    skull_c, jaw_c = (a, b) if za > zb else (b, a)
    skull = np.zeros_like(mask)
    jaw = np.zeros_like(mask)
    skull[box], jaw[box] = skull_c, jaw_c
    return skull, jaw, radius * step_mm


# --------------------------------------------------------------------------------------
# MRI and label maps
# --------------------------------------------------------------------------------------


def segment_mri(volume: Volume, *, threshold: float | None = None, close_mm: float = 3.0) -> Segmentation:
    """Body (skin) label of an MRI: Otsu threshold (robust range, see the module text), closing,
    largest piece, holes filled in 3D and in axial slices. Bone is not attempted (cortical bone is dark
    on MRI, like air)."""
    _check_grey(volume, "segment_mri")
    thresholds: dict[str, float] = {}
    if threshold is None:
        (t,), facts = histogram_thresholds(volume.data, classes=2)
        thresholds.update({f"range_{k}": v for k, v in facts.items()})
        threshold = t
    thresholds["skin"] = float(threshold)
    fg = _largest(volume.data > threshold, _CROSS)
    if not fg.any():
        raise ParameterError(f"segment_mri: no voxel above the threshold {threshold:g}; thresholds {thresholds}.")
    r = _radius_voxels(volume, close_mm)
    if r:
        closed = ndimage.binary_closing(np.pad(fg, r), _CROSS, iterations=r)
        fg = closed[r:-r, r:-r, r:-r] | fg
    body = _fill(fg, _superior_axis(volume))
    labels = np.where(body, np.uint8(Tissue.SKIN), np.uint8(Tissue.AIR))
    return Segmentation(_labels_volume(volume, labels), thresholds, _tissue_volumes(labels, _voxel_mm3(volume)), [])


def from_labels(
    label_volume: Volume, mapping: Mapping[int, Tissue | str | int], *, default: Tissue | str | int = Tissue.SKIN
) -> Segmentation:
    """A :class:`Segmentation` from a label map made elsewhere.

    ``mapping`` sends the map's label values to tissues (``Tissue``, its name or its code), e.g.
    ``{1: "skin", 2: "bone", 7: "mandible"}``; 0 is air; other non-zero labels (brain, muscle, ...)
    become ``default`` (soft tissue inside the skin).
    """
    if not isinstance(label_volume, Volume):
        raise ParameterError(f"from_labels needs a Volume; got {type(label_volume).__name__}.")
    data = label_volume.data
    if data.dtype.kind not in "biu":
        raise ParameterError(f"from_labels needs an integer label map; got dtype {data.dtype}.")

    def code(value: Tissue | str | int) -> int:
        try:
            return int(Tissue[value.upper()]) if isinstance(value, str) else int(Tissue(int(value)))
        except (KeyError, ValueError) as exc:
            raise ParameterError(
                f"from_labels: unknown tissue {value!r}; use one of {[t.name.lower() for t in Tissue]}."
            ) from exc

    out = np.where(data != 0, np.uint8(code(default)), np.uint8(Tissue.AIR))
    for value, tissue in mapping.items():
        out[data == value] = code(tissue)
    return Segmentation(
        _labels_volume(label_volume, out), {}, _tissue_volumes(out, _voxel_mm3(label_volume)), ["from a label map"]
    )
