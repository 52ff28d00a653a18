"""From a scan to labelled tissues and their surfaces in one call (what ``anatomy segment`` runs).

* :func:`segment_scan`: CT (:func:`~anatomy.scans.segment_ct`, jaw split by default), MRI
  (:func:`~anatomy.scans.segment_mri`), or a label map given instead of intensities (a phantom's
  codes through :func:`~anatomy.scans.from_phantom`, any other map through a mapping).
* :func:`tissue_surfaces`: one closed surface per tissue present: ``skin`` (outside of the body),
  ``skull`` (label BONE: cranium and maxilla, or all bone when the jaw was not split) and
  ``mandible``, each decimated to about ``target_vertices`` and Taubin-smoothed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from ..core.errors import ParameterError
from .labelmap import Segmentation, Tissue, from_labels, from_phantom
from .segment import segment_ct, segment_mri
from .surface import Surface, extract_surface
from .volume import Volume

__all__ = ["SURFACE_TISSUES", "segment_scan", "tissue_surfaces"]

#: surface name -> the Segmentation mask it is taken from
SURFACE_TISSUES = {"skin": "body", "skull": "skull", "mandible": "mandible"}


def segment_scan(
    volume: Volume,
    modality: str,
    *,
    split_jaw: bool = True,
    jaw_method: str = "template",
    label_mapping: Mapping[int, Tissue | str | int] | str | None = None,
) -> Segmentation:
    """Tissue labels of a scan.

    Args:
        volume: the scan (intensities), or a label map when ``label_mapping`` is given.
        modality: ``"ct"`` or ``"mri"`` (for a label map: what it was made from; only recorded).
        split_jaw: CT and phantom label maps: split the mandible from the skull, by ``jaw_method``
            (``"template"`` or ``"opening"``, see :func:`~anatomy.scans.segment_ct`).
        label_mapping: ``"phantom"`` for a phantom label map, or ``{value: tissue}`` for another one
            (see :func:`~anatomy.scans.from_labels`); ``None``: ``volume`` holds intensities.
    """
    if modality not in ("ct", "mri"):
        raise ParameterError(f"modality must be 'ct' or 'mri'; got {modality!r}.")
    if label_mapping is not None:
        if label_mapping == "phantom":
            return from_phantom(volume, split_jaw=split_jaw, jaw_method=jaw_method)
        if isinstance(label_mapping, str):
            raise ParameterError(
                f"label_mapping must be 'phantom' or a {{value: tissue}} mapping; got {label_mapping!r}."
            )
        return from_labels(volume, label_mapping)
    if volume.modality == "labels":
        raise ParameterError(
            "this volume is a label map; pass label_mapping='phantom' (a phantom's codes) or {value: tissue}."
        )
    if modality == "ct":
        return segment_ct(volume, split_jaw=split_jaw, jaw_method=jaw_method)
    return segment_mri(volume)


def tissue_surfaces(
    segmentation: Segmentation, *, target_vertices: int | None = 30_000, smooth_iterations: int = 10
) -> tuple[dict[str, Surface], dict[str, float]]:
    """The closed surface of each tissue present (``skin``, ``skull``, ``mandible``; see the module
    text), in world mm, and the seconds each took."""
    surfaces: dict[str, Surface] = {}
    seconds: dict[str, float] = {}
    for name, mask_name in SURFACE_TISSUES.items():
        mask = segmentation.mask(mask_name)
        if not mask.any():
            continue
        start = time.perf_counter()
        surfaces[name] = extract_surface(
            segmentation.labels.with_data(mask, modality="labels"), tissue=name,
            target_vertices=target_vertices, smooth_iterations=smooth_iterations,
        )
        seconds[name] = time.perf_counter() - start
    return surfaces, seconds
