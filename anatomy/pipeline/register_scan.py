"""Register one scan: target surfaces, model-based fit, free-form residual, a result folder.

:func:`register_scan` writes, into a new folder:

* ``<tissue>.ply`` per model tissue: the registered mesh, in the template's vertex order and the scan's
  world mm (RAS+); tissues without a target follow the fitted model (the head's bone targets are judged by
  a first fit and the model fitted again: :func:`~anatomy.pipeline.targets.bones_by_model`). Surfaces (the
  head's face, the hand's bones; the head's bones keep their fit) get a free-form embedded-deformation
  step; the hand's muscles and skin volume, when both
  have targets, an elastic tetrahedral registration (muscles attached to the bones, collisions);
* ``params.json``: the fitted layer parameters (what ``Sculptor(**params)`` / ``Nimble(**params)`` take);
* ``residuals.npz``: per tissue, each registered vertex's distance (mm) to the target surface (NaN for the
  inner nodes of a tetrahedral tissue);
* ``report.json``: per tissue mean / 95th-percentile residual (mm) before and after the free-form step,
  the seconds of each step, inputs and settings;
* ``overlay.png`` (unless ``picture=False``): scan slices with the labels and the registered surfaces.

The folder is built as ``<name>.partial-<pid>-<random>`` beside it and renamed when complete, so a folder
without that suffix is always a finished result; leftovers of interrupted runs are removed by
:func:`~anatomy.pipeline.runner.run_registrations`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import ParameterError
from ..core.nearest import point_to_surface_distance
from ..core.surface import vertex_normals
from ..io import load_model, write_ply
from ..io._atomic import write_atomic
from ..models import Nimble, Sculptor
from ..registration import NonRigidWeights, VolumetricWeights, fit_model_to_surfaces, nonrigid_register
from ..registration.volumetric_hand import register_hand_soft_tissue
from ..scans import Volume, read_volume
from .targets import bones_by_model, scan_targets

__all__ = ["PARTIAL", "layer_for", "register_scan"]

PARTIAL = ".partial"
# the free-form step after the model fit: every vertex lightly tied to its fitted place (the landmark term), so
# it moves onto the surface without sliding along it (the fit's correspondence is the better one); pairs
# farther than 1.5 x the median residual are down-weighted (Geman-McClure), so parts of the model the scan
# misses (thin bones under the CT threshold) do not pull onto the nearest wrong surface: on the LUCY-like
# CT skull 0.59 -> 0.55 mm, mandible 0.42 -> 0.35 mm (scale 3.0 before; measured when the head's bones still
# went through this step, see _FIT_ONLY)
_ANCHORED = NonRigidWeights(landmark=0.5, robust_scale=1.5)
# tissues that keep their model fit (no free-form step): on the head CTs the free-form step pulled the bones onto
# bone the model lacks (LUCY-like CT seed 11 sub-000 after the second fit on targets.bones_by_model: skull 0.19 ->
# 0.24, mandible 0.13 -> 0.16 mm vertex error; sub-001 with one fit: 0.29 -> 0.32, 0.19 -> 0.22 mm)
_FIT_ONLY = {("head", "skull"), ("head", "mandible")}
# the hand's muscles and skin volume onto surfaces extracted from a label map: firmer data springs than
# HAND_WEIGHTS (tuned for damaged point clouds); on the MRI-Hand-like phantom muscles 0.89 -> 0.64 mm and skin
# 1.27 -> 1.04 mm mean node error (benchmarks/registration_scans.py)
_SCAN_SOFT = VolumetricWeights(data=0.1, back=1.0, robust_scale=1.5)


def layer_for(spec: str | os.PathLike[str]) -> tuple[str, torch.nn.Module]:
    """``("head" | "hand", layer)`` of a model name (``head``, ``hand``) or model file."""
    if spec in ("head", "hand"):
        return str(spec), (Sculptor() if spec == "head" else Nimble())
    path = Path(os.fspath(spec))
    if not path.exists():
        raise ParameterError(f"model {spec!r} is neither 'head', 'hand' nor an existing model file.")
    data = load_model(path)
    names = {t.name for t in data.tissues}
    if {"skull", "mandible", "face"} <= names:
        return "head", Sculptor(data)
    if {"bones", "skin"} <= names:
        return "hand", Nimble(data)
    raise ParameterError(f"model file {path} has tissues {sorted(names)}: neither a head (skull, mandible, face) "
                         f"nor a hand (bones, muscles, skin).")


def _stats(d: np.ndarray) -> dict[str, float]:
    d = d[np.isfinite(d)]
    return {"mean_mm": float(d.mean()), "p95_mm": float(np.quantile(d, 0.95))}


def _distance(verts: torch.Tensor, faces: torch.Tensor, surface: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Each vertex on the tissue's surface (its faces' vertices) to the target surface, mm; NaN for the inner
    nodes of a tetrahedral tissue."""
    v = torch.as_tensor(surface[0], dtype=torch.float64)
    f = torch.as_tensor(surface[1], dtype=torch.long)
    on = torch.unique(faces)
    out = np.full(verts.shape[0], np.nan)
    out[on.numpy()] = point_to_surface_distance(verts.double()[on], v, f, squared=False, reduction="none").numpy()
    return out


def _json(path: Path, doc: object) -> None:
    write_atomic(path, (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode("utf-8"))


def register_scan(
    model: str | os.PathLike[str],
    scan: str | os.PathLike[str] | Volume,
    out: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | Volume | None = None,
    landmarks: Mapping[str, Any] | None = None,
    spacing: Any = None,
    vertices: int = 20_000,
    free_form: bool = True,
    picture: bool = True,
    fit: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Register ``scan`` (a path any :func:`~anatomy.scans.read_volume` reads, or a Volume) with ``model``
    (``"head"``, ``"hand"`` or a model file) into the new folder ``out``; returns the report.

    Args:
        labels: a phantom label map on the scan's grid (the datasets' ``labels.nii.gz``), used instead of
            segmenting the scan (a hand MRI needs one for its bones and muscles).
        landmarks: named points in world mm (the hand's 21 keypoints, the head's landmarks); see
            :func:`~anatomy.registration.fit_model_to_surfaces`. Without them a hand starts from the pose
            searched on its bones (``report["hand_start"]``; a warning when that start is ambiguous).
        spacing: voxel size of a PNG/TIFF slice stack.
        vertices: the target surfaces are decimated to about this many vertices each.
        free_form: run the non-rigid residual step after the model fit (``False``: the model fit only).
        picture: write ``overlay.png``.
        fit: more keyword arguments of :func:`~anatomy.registration.fit_model_to_surfaces` (``outer``,
            ``inner``, ``max_points``, ``prior``...).

    Raises:
        ParameterError: ``out`` exists (a finished result is never replaced), bad inputs.
    """
    final = Path(os.fspath(out))
    if final.exists():
        raise ParameterError(f"{final} exists; registrations are never overwritten (remove it to redo the scan).")
    # a folder of this attempt's own: two attempts of one scan (a retried task whose first worker was not
    # dead after all) never write into each other's files; the first to finish publishes its folder
    partial = final.with_name(f"{final.name}{PARTIAL}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    kind, layer = layer_for(model)
    volume = scan if isinstance(scan, Volume) else read_volume(scan, spacing=spacing)
    label_map = labels if labels is None or isinstance(labels, Volume) else read_volume(labels)
    times["read"] = time.perf_counter() - t0
    targets = scan_targets(kind, volume, label_map, vertices=vertices)
    times.update(targets.seconds)
    points = {}
    for name, (v, f) in targets.surfaces.items():
        vt = torch.as_tensor(v, dtype=torch.float64)
        points[name] = (vt, vertex_normals(vt, torch.as_tensor(f, dtype=torch.long)))
    t1 = time.perf_counter()
    fitted = fit_model_to_surfaces(layer, points, landmarks=landmarks, **dict(fit or {}))
    times["model_fit"] = time.perf_counter() - t1
    if kind == "head" and {"skull", "mandible"} <= set(points):
        # the bone targets judged by the first fit (anatomy.pipeline.targets.bones_by_model), then fitted again
        t1 = time.perf_counter()
        points = bones_by_model(points, {b: fitted.output.tissue(b)[0].detach() for b in ("skull", "mandible")})
        fitted = fit_model_to_surfaces(layer, points, landmarks=landmarks, init=fitted, **dict(fit or {}))
        times["model_refit"] = time.perf_counter() - t1
    volumetric: dict[str, torch.Tensor] = {}
    if free_form and kind == "hand" and {"muscles", "skin"} <= set(points):
        # the tetrahedral tissues: muscles attached to the bones, then the skin volume, elastically onto their
        # surfaces (anatomy.registration.volumetric_hand)
        t2 = time.perf_counter()
        soft = register_hand_soft_tissue(layer.double(), fitted.output, {k: points[k] for k in ("muscles", "skin")},
                                         shape=fitted.params.get("shape"), weights=_SCAN_SOFT)
        times["volumetric_muscles_skin"] = time.perf_counter() - t2
        volumetric = {k: soft.output.tissue(k)[0].detach().double() for k in ("muscles", "skin")}
    out_meshes: dict[str, torch.Tensor] = {}
    faces: dict[str, torch.Tensor] = {}
    report_tissues: dict[str, Any] = {}
    residuals: dict[str, np.ndarray] = {}
    for name in fitted.output.tissue_names:
        verts = fitted.output.tissue(name)[0].detach().double()
        faces[name] = fitted.output.faces(name).cpu()
        entry: dict[str, Any] = {"target": name in targets.surfaces, "vertices": int(verts.shape[0])}
        if name in targets.surfaces:
            before = _distance(verts, faces[name], targets.surfaces[name])
            entry["model_fit"] = _stats(before)
            if name in volumetric:
                verts = volumetric[name]
            elif free_form and name != "muscles" and (kind, name) not in _FIT_ONLY:
                t2 = time.perf_counter()
                res = nonrigid_register(verts, faces[name], *points[name], levels=(256, 1024), iterations=4,
                                        landmarks=(torch.arange(len(verts)), verts), weights=_ANCHORED)
                times[f"free_form_{name}"] = time.perf_counter() - t2
                verts = res.vertices.double()
            after = _distance(verts, faces[name], targets.surfaces[name])
            entry["registered"] = _stats(after)
            residuals[name] = after.astype(np.float32)
        out_meshes[name] = verts
        report_tissues[name] = entry

    partial.mkdir(parents=True)
    try:
        report = _write(partial, out_meshes, faces, fitted, residuals, kind, str(model), times, t0,
                        volume if picture else None, targets.labels)
        report.update({"scan": str(scan) if not isinstance(scan, Volume) else "<Volume>",
                       "labels": None if labels is None or isinstance(labels, Volume) else str(labels),
                       "landmarks": sorted(landmarks) if landmarks else [], "tissues": report_tissues})
        if fitted.hand_start is not None:
            report["hand_start"] = {"chamfer_mm": fitted.hand_start.chamfer_mm,
                                    "ambiguous": fitted.hand_start.ambiguous}
        _json(partial / "report.json", report)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # never leave a half-written result behind
        raise
    try:
        partial.rename(final)  # atomic; refused when another attempt published first
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not (final / "report.json").exists():
            raise
        report["duplicate"] = True  # this attempt's result was dropped: the folder holds the first one's
    return report


def _write(partial: Path, meshes: Mapping[str, torch.Tensor], faces: Mapping[str, torch.Tensor], fitted: Any,
           residuals: Mapping[str, np.ndarray], kind: str, model: str, times: dict[str, float], t0: float,
           picture_of: Volume | None, labels: Volume) -> dict[str, Any]:
    """The result files (all but ``report.json``) into ``partial``; returns the report's common part."""
    for name, verts in meshes.items():
        write_ply(partial / f"{name}.ply", verts.float(), faces[name])
    _json(partial / "params.json", {"model": model, "kind": kind, "units": "mm, radians (axis-angle)",
                                    "params": {k: v.tolist() for k, v in fitted.params.items()}})
    write_atomic(partial / "residuals.npz", _npz(residuals))
    if picture_of is not None:
        from ..vis.slices import render_slices

        t3 = time.perf_counter()
        surf = {k: (v.numpy(), faces[k].numpy()) for k, v in meshes.items() if k != "muscles"}
        render_slices(picture_of, labels, partial / "overlay.png", surfaces=surf)
        times["picture"] = time.perf_counter() - t3
    times["total"] = time.perf_counter() - t0
    return {"model": model, "kind": kind, "model_fit_log": fitted.log,
            "seconds": {k: round(v, 3) for k, v in times.items()}}


def _npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **dict(arrays))  # type: ignore[arg-type]
    return buffer.getvalue()
