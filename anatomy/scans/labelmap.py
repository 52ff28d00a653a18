"""Tissue label maps: the :class:`Tissue` codes, the :class:`Segmentation` result, and label maps
made elsewhere (:func:`from_labels`, :func:`from_phantom`).

Phantom label maps (:class:`~anatomy.scans.PhantomTissue`) carry finer codes than a segmentation:
:data:`PHANTOM_TO_TISSUE` folds skin/fat and muscle into ``SKIN`` (soft tissue inside the body) and
cortical bone, cancellous bone and teeth into ``BONE``; a phantom does not tell the mandible from
the skull, so :func:`from_phantom` can split it like a CT (``split_jaw``, by the template head by default)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from ..core.errors import ParameterError
from .jaw_template import separate_jaw
from .morphology import voxel_mm3
from .phantom_labels import PhantomTissue
from .volume import Volume

__all__ = ["PHANTOM_TO_TISSUE", "Segmentation", "Tissue", "check_grey", "from_labels", "from_phantom", "labels_like",
           "labels_volume", "tissue_volumes"]



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


def tissue_volumes(labels: np.ndarray, voxel_mm3: float) -> dict[str, float]:
    counts = {t: int(np.count_nonzero(labels == t)) for t in Tissue if t != Tissue.AIR}
    out = {t.name.lower(): float(n) * voxel_mm3 for t, n in counts.items() if n}
    out["body"] = float(np.count_nonzero(labels)) * voxel_mm3
    return out


def labels_volume(volume: Volume, labels: np.ndarray) -> Volume:
    return Volume(labels.astype(np.uint8), volume.affine, "labels", dict(volume.meta))


def labels_like(volume: Volume, mask: np.ndarray) -> Volume:
    """A boolean mask on ``volume``'s grid, as a label :class:`Volume`."""
    return Volume(np.asarray(mask, dtype=bool), volume.affine, "labels", dict(volume.meta))


def check_grey(volume: Volume, what: str) -> None:
    if not isinstance(volume, Volume):
        raise ParameterError(f"{what} needs an anatomy.scans.Volume; got {type(volume).__name__}.")
    if volume.modality == "labels":
        raise ParameterError(f"{what}: this volume is a label map; use from_labels(volume, mapping) instead.")


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
        labels_volume(label_volume, out), {}, tissue_volumes(out, voxel_mm3(label_volume)), ["from a label map"]
    )


def _phantom_map() -> dict[int, Tissue]:
    soft = (PhantomTissue.SKIN, PhantomTissue.MUSCLE)
    bone = (PhantomTissue.CORTICAL, PhantomTissue.CANCELLOUS, PhantomTissue.TEETH)
    return {**{int(c): Tissue.SKIN for c in soft}, **{int(c): Tissue.BONE for c in bone}}


#: phantom label code -> segmentation tissue (air stays air)
PHANTOM_TO_TISSUE: dict[int, Tissue] = _phantom_map()


def from_phantom(label_volume: Volume, *, split_jaw: bool = False, jaw_method: str = "template") -> Segmentation:
    """A :class:`Segmentation` of a phantom label map (:func:`~anatomy.scans.phantom_labels`) through
    :data:`PHANTOM_TO_TISSUE`; with ``split_jaw`` the bone is split into skull and mandible as for a CT
    (``jaw_method``, see :func:`~anatomy.scans.segment_ct`; an estimate: the phantom's meshes are the truth)."""
    if not isinstance(label_volume, Volume):
        raise ParameterError(f"from_phantom needs a Volume; got {type(label_volume).__name__}.")
    codes = {int(v) for v in np.unique(label_volume.data)}
    unknown = sorted(codes - set(PHANTOM_TO_TISSUE) - {int(PhantomTissue.AIR)})
    if unknown:
        raise ParameterError(
            f"from_phantom: label values {unknown} are not phantom codes "
            f"({ {t.name.lower(): int(t) for t in PhantomTissue} }); use from_labels(volume, mapping) for other maps."
        )
    seg = from_labels(label_volume, dict(PHANTOM_TO_TISSUE))
    if not split_jaw or not seg.mask("bone").any():
        return seg
    _, jaw, note = separate_jaw(seg.mask_volume("bone"), jaw_method)
    if not jaw.any():
        return Segmentation(seg.labels, {}, seg.volumes_mm3, [*seg.notes, note])
    out = seg.labels.data.copy()
    out[jaw] = Tissue.MANDIBLE
    notes = [*seg.notes, note]
    return Segmentation(labels_volume(label_volume, out), {}, tissue_volumes(out, voxel_mm3(label_volume)), notes)
