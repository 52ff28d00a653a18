"""From a scan (and, when given, its label map) to the target surfaces of a model's tissues.

* **Head CT**: :func:`~anatomy.scans.segment_scan` (skin, skull, mandible by the template jaw split), the
  bones filled to their envelopes (:func:`bone_envelopes`: the head model's skull and mandible are closed
  outer surfaces, while a CT shows the inner table, the cranial cavity and the sinus walls too), then
  :func:`~anatomy.scans.tissue_surfaces`; the model's ``face`` takes the skin. After a first model fit,
  :func:`bones_by_model` gives each bone target point to the nearer fitted bone and drops the points far
  from both (the template jaw split of a CT can hand the upper teeth to the mandible; the envelopes keep
  bone the model lacks), and the model is fitted again to what is left.
* **A phantom label map** (:class:`~anatomy.scans.PhantomTissue` codes: the datasets' ``labels.nii.gz``):
  the head's bone is split into skull and mandible as for a CT; the hand's ``bones`` are the cortical and
  cancellous voxels (every piece kept), its ``muscles`` the muscle voxels, its ``skin`` the body's outline.
  An MRI of the hand needs one: bone is dark on MRI like air, so :func:`~anatomy.scans.segment_mri` finds
  the skin only, and the hand is then fitted to its skin alone.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..core.errors import ParameterError
from ..scans import (
    PhantomTissue,
    Segmentation,
    Tissue,
    Volume,
    extract_surface,
    from_phantom,
    segment_scan,
    tissue_surfaces,
)
from ..scans.morphology import fill_holes, superior_axis

__all__ = ["BONES_FAR_MM", "SurfaceTargets", "bone_envelopes", "bones_by_model", "scan_targets"]

#: scan surface name -> head model tissue
HEAD_TISSUES = {"skin": "face", "skull": "skull", "mandible": "mandible"}
_HAND_CODES = {
    "bones": (int(PhantomTissue.CORTICAL), int(PhantomTissue.CANCELLOUS)),
    "muscles": (int(PhantomTissue.MUSCLE),),
    "skin": tuple(int(t) for t in PhantomTissue if t != PhantomTissue.AIR),
}


#: bone target points farther than this (mm) from both fitted bones are dropped by :func:`bones_by_model`
#: (LUCY-like CT sub-000: skull 0.54 -> 0.19 mm after the second fit with 2 mm, 0.22 with 3 mm)
BONES_FAR_MM = 2.0
_MIN_POINTS = 100


@dataclass(frozen=True)
class SurfaceTargets:
    """Target surfaces by model tissue: ``{tissue: (vertices (N, 3), faces (F, 3))}`` in world mm, the label
    map they came from (for the picture) and the seconds of each step."""

    surfaces: dict[str, tuple[np.ndarray, np.ndarray]]
    labels: Volume
    seconds: dict[str, float]


def bone_envelopes(seg: Segmentation) -> Segmentation:
    """``seg`` with the skull and the mandible each filled to its envelope (holes filled in 3D and in
    axial slices: the cranial cavity, the marrow under a bone threshold, the sinuses), so their surfaces
    are the outer ones only, as the model's. Filled voxels of one bone never take the other's."""
    labels = seg.labels.data.copy()
    axis = superior_axis(seg.labels)
    for code, other in ((Tissue.BONE, Tissue.MANDIBLE), (Tissue.MANDIBLE, Tissue.BONE)):
        filled = fill_holes(labels == int(code), axis)
        labels[filled & (labels != int(other))] = int(code)
    return replace(seg, labels=seg.labels.with_data(labels), notes=[*seg.notes, "bones filled to their envelopes"])


def bones_by_model(points: Mapping[str, tuple[torch.Tensor, torch.Tensor]], fitted: Mapping[str, torch.Tensor],
                   bones: tuple[str, ...] = ("skull", "mandible"), far_mm: float = BONES_FAR_MM
                   ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The target points of ``bones`` (``{tissue: (points (N, 3), normals (N, 3))}``, world mm) pooled and
    given each to the bone whose fitted vertices (``fitted[tissue]`` (V, 3)) lie nearest; points farther
    than ``far_mm`` from every fitted bone are dropped (bone that the model lacks, or that it misses by more
    than the fit's own error). Other tissues pass through unchanged. When a bone would keep fewer than 100
    points the targets are returned as they were (the fit was not good enough to judge by).

    Raises:
        ParameterError: ``far_mm`` not positive, a bone without fitted vertices.
    """
    if not (np.isfinite(far_mm) and far_mm > 0):
        raise ParameterError(f"far_mm must be a positive distance in mm, got {far_mm!r}.")
    present = [b for b in bones if b in points]
    missing = [b for b in present if b not in fitted]
    if missing:
        raise ParameterError(f"bones {missing} have targets but no fitted vertices; pass the fitted model's "
                             f"vertices of every bone in {present}.")
    out = dict(points)
    if len(present) == 0:
        return out
    pts = torch.cat([torch.as_tensor(points[b][0]) for b in present])
    nrm = torch.cat([torch.as_tensor(points[b][1]) for b in present])
    query = pts.detach().cpu().double().numpy()
    dist = np.stack([cKDTree(torch.as_tensor(fitted[b]).detach().cpu().double().numpy().reshape(-1, 3)).query(query)[0]
                     for b in present])
    owner = np.argmin(dist, axis=0)
    near = dist.min(axis=0) <= far_mm
    kept = {}
    for i, b in enumerate(present):
        keep = torch.from_numpy(near & (owner == i)).to(pts.device)
        if int(keep.sum()) < _MIN_POINTS:
            return dict(points)
        kept[b] = (pts[keep], nrm[keep])
    out.update(kept)
    return out


def scan_targets(kind: str, scan: Volume, labels: Volume | None = None, *, vertices: int = 30_000
                 ) -> SurfaceTargets:
    """The target surfaces of model ``kind`` (``"head"`` or ``"hand"``) in ``scan`` (see the module text)."""
    if kind not in ("head", "hand"):
        raise ParameterError(f"kind must be 'head' or 'hand', got {kind!r}.")
    if labels is not None and labels.shape != scan.shape:
        raise ParameterError(f"the label map's grid {labels.shape} differs from the scan's {scan.shape}; pass the "
                             f"label map made on this scan.")
    start = time.perf_counter()
    if kind == "head":
        seg = (from_phantom(labels, split_jaw=True) if labels is not None
               else bone_envelopes(segment_scan(scan, scan.modality if scan.modality in ("ct", "mri") else "ct")))
        seconds = {"segmentation": time.perf_counter() - start}
        found, times = tissue_surfaces(seg, target_vertices=vertices)
        seconds.update({f"surface_{k}": v for k, v in times.items()})
        surfaces = {HEAD_TISSUES[k]: (s.vertices, s.faces) for k, s in found.items() if k in HEAD_TISSUES}
        label_map = seg.labels
    elif labels is None:
        seg = segment_scan(scan, "mri" if scan.modality != "ct" else "ct")
        seconds = {"segmentation": time.perf_counter() - start}
        skin = extract_surface(seg.labels, label=tuple(int(v) for v in np.unique(seg.labels.data) if v),
                               tissue="skin", target_vertices=vertices)
        surfaces = {"skin": (skin.vertices, skin.faces)}
        label_map = seg.labels
    else:
        seconds, surfaces = {}, {}
        present = set(np.unique(labels.data).tolist())
        for tissue, codes in _HAND_CODES.items():
            if not present.intersection(codes):
                continue
            t0 = time.perf_counter()
            s = extract_surface(labels, label=codes, tissue=tissue, target_vertices=vertices,
                                largest_only=tissue == "skin")
            surfaces[tissue] = (s.vertices, s.faces)
            seconds[f"surface_{tissue}"] = time.perf_counter() - t0
        label_map = labels
    if not surfaces:
        raise ParameterError(f"no {kind} tissue was found in the scan; check the modality and the label map.")
    return SurfaceTargets(surfaces, label_map, seconds)
