"""``anatomy.fit(model, target, ...)``: fit a model to a target given in memory or as a file.

* In-memory targets (:class:`~anatomy.fitting.Keypoints3D`, :class:`~anatomy.fitting.Keypoints2D`,
  :class:`~anatomy.fitting.PointCloud`, or a list of them) go to :func:`anatomy.fitting.fit` (batched).
* A mesh or point cloud file (PLY / OBJ / STL) becomes a :class:`PointCloud` of the model's skin (hand) or
  face (head); ``coverage="partial"`` (default: a scan rarely covers the whole tissue) fits it with the
  trimmed one-way target -> model term only.
* A keypoint file: JSON ``{"keypoints": [[x, y, z], ...] | {name: [x, y, z]}, "confidence": [...],
  "camera": {"fx", "fy", "cx", "cy", "rotation", "translation"}}`` (pixels ``[u, v]`` with a camera), or CSV
  rows ``[name,] x, y, z [, confidence]``.
* A CT / MRI volume (NIfTI, NRRD / MHA, a DICOM folder): its tissue surfaces
  (:func:`~anatomy.pipeline.scan_targets`) fitted by the model-based surface registration
  (:func:`~anatomy.registration.model_based.fit_model_to_surfaces`, one scan).

``model``: a layer, or ``"hand"`` / ``"head"`` / a model file path.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import ModelFileError, ParameterError, ShapeError
from ..fitting.camera import PinholeCamera
from ..fitting.fit import FitResult
from ..fitting.fit import fit as fit_targets
from ..fitting.fit_targets import Keypoints2D, Keypoints3D, PointCloud
from ..fitting.fit_variables import model_kind
from ..fitting.report import summary
from ..io.mesh_export import read_mesh
from ..models import Nimble, Sculptor

__all__ = ["fit", "load_layer", "read_fit_target"]

MESH_SUFFIXES = (".ply", ".obj", ".stl")
KEYPOINT_SUFFIXES = (".json", ".csv")


def load_layer(model: Any) -> Any:
    """A layer from ``"hand"``, ``"head"``, a model file path or a layer."""
    if isinstance(model, (Nimble, Sculptor)):
        return model
    if model == "hand":
        return Nimble()
    if model == "head":
        return Sculptor()
    path = Path(os.fspath(model))
    if not path.exists() and not path.with_suffix(".safetensors").exists():
        raise ParameterError(f"model {str(model)!r} is neither 'hand', 'head', a layer nor an existing model file.")
    try:
        return Nimble(path)
    except ParameterError:
        return Sculptor(path)


def _is_volume(path: Path) -> bool:
    name = path.name.lower()
    return path.is_dir() or name.endswith((".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm"))


def _keypoints_json(path: Path) -> Keypoints3D | Keypoints2D:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a readable JSON keypoint file ({exc}).") from exc
    if not isinstance(doc, dict) or "keypoints" not in doc:
        raise ShapeError(f"{path}: expected a JSON object with 'keypoints' (a list of points or name -> point).")
    kp = doc["keypoints"]
    keys: list[str] | None = None
    if isinstance(kp, dict):
        keys, kp = [str(k) for k in kp], list(kp.values())
    pts = torch.as_tensor(np.asarray(kp, dtype=np.float64))
    conf = doc.get("confidence")
    conf_t = None if conf is None else torch.as_tensor(np.asarray(conf, dtype=np.float64))
    given = doc.get("names", keys)
    names = None if given is None else tuple(str(n) for n in given)
    if "camera" in doc:
        cam = doc["camera"]
        if not isinstance(cam, dict) or not {"fx", "fy", "cx", "cy"} <= set(cam):
            raise ShapeError(f"{path}: 'camera' needs fx, fy, cx, cy (pixels) and optionally rotation, translation.")
        extr = {k: torch.as_tensor(np.asarray(cam[k], dtype=np.float64)) for k in ("rotation", "translation")
                if k in cam}
        camera = PinholeCamera(float(cam["fx"]), float(cam["fy"]), float(cam["cx"]), float(cam["cy"]), **extr)
        return Keypoints2D(pts, camera, conf_t, names)
    return Keypoints3D(pts, conf_t, names)


def _keypoints_csv(path: Path) -> Keypoints3D:
    rows = [r for r in csv.reader(io.StringIO(path.read_text())) if r and any(c.strip() for c in r)]
    names: list[str] = []
    pts, conf = [], []
    for r in rows:
        cells = [c.strip() for c in r]
        try:
            float(cells[0])
            numbers = cells
        except ValueError:
            if cells[0].lower() in ("name", "x"):  # a header row
                continue
            names.append(cells[0])
            numbers = cells[1:]
        try:
            values = [float(c) for c in numbers]
        except ValueError as exc:
            raise ShapeError(f"{path}: a row is not [name,] x, y, z [, confidence]: {r}") from exc
        if len(values) not in (3, 4):
            raise ShapeError(f"{path}: each row needs x, y, z [, confidence]; got {len(values)} numbers in {r}.")
        pts.append(values[:3])
        conf.append(values[3] if len(values) == 4 else 1.0)
    if names and len(names) != len(pts):
        raise ShapeError(f"{path}: name some rows and not others; name all of them or none.")
    return Keypoints3D(torch.tensor(pts, dtype=torch.float64), torch.tensor(conf, dtype=torch.float64),
                       tuple(names) or None)


def read_fit_target(path: Any, kind: str, *, coverage: str = "partial") -> Keypoints3D | Keypoints2D | PointCloud:
    """A mesh / point cloud or keypoint file -> one in-memory target (see the module text)."""
    p = Path(os.fspath(path))
    if coverage not in ("partial", "full"):
        raise ParameterError(f"coverage must be 'partial' or 'full', got {coverage!r}.")
    suffix = p.suffix.lower()
    if not p.exists():
        raise ModelFileError(f"target {p} does not exist.")
    if suffix in MESH_SUFFIXES:
        mesh = read_mesh(p)
        tissue = "skin" if kind == "hand" else "face"
        return PointCloud([torch.from_numpy(mesh.vertices)], tissue=tissue, partial=coverage == "partial")
    if suffix == ".json":
        return _keypoints_json(p)
    if suffix == ".csv":
        return _keypoints_csv(p)
    raise ParameterError(f"target {p}: unknown kind; give a PLY/OBJ/STL mesh or point cloud, a JSON/CSV keypoint "
                         f"file, or a NIfTI/NRRD/MHA volume or DICOM folder.")


def _fit_volume(layer: Any, path: Path, kind: str, options: dict[str, Any]) -> FitResult:
    from ..core.surface import vertex_normals
    from ..registration.model_based import fit_model_to_surfaces
    from ..scans import read_volume
    from .targets import scan_targets

    start = time.perf_counter()
    scan = read_volume(path)
    found = scan_targets(kind, scan)
    points = {}
    for name, (v, f) in found.surfaces.items():  # with normals: point-to-plane pairs and the normal test
        vt = torch.as_tensor(v, dtype=torch.float64)
        points[name] = (vt, vertex_normals(vt, torch.as_tensor(f, dtype=torch.long)))
    found_fit = fit_model_to_surfaces(layer, points, **options)
    dtype = layer.template.dtype
    params = {k: v.to(dtype) for k, v in found_fit.params.items()}
    with torch.no_grad():
        output = layer(**params, jaw_range="ignore") if kind == "head" else layer(**params)
    residuals = [[d] for d in found_fit.distances.values()]
    report = {"model": kind, "units": "mm", "units_scale": 1.0, "source": "volume",
              "targets": [{"target": f"surface:{k}", "unit": "mm", **summary(d)}
                          for k, d in found_fit.distances.items()],
              "stages": [{"stage": s, "energy": round(e, 6)} for s, e in found_fit.log],
              "seconds": round(time.perf_counter() - start, 3)}
    return FitResult(params, output, residuals, report, 1.0, list(found_fit.log))


def fit(model: Any, target: Any, **options: Any) -> FitResult:
    """Fit ``model`` to ``target`` (in memory, a file, or a volume); see the module text. ``options``: those of
    :class:`anatomy.fitting.FitOptions`, plus ``coverage`` for mesh / point cloud files; for a volume, those of
    :func:`anatomy.registration.fit_model_to_surfaces` (``outer``, ``inner``, ``max_points``, ``landmarks``...)."""
    layer = load_layer(model)
    kind = model_kind(layer)
    coverage = options.pop("coverage", "partial")
    if isinstance(target, (str, os.PathLike)):
        p = Path(os.fspath(target))
        if _is_volume(p):
            return _fit_volume(layer, p, kind, options)
        target = read_fit_target(p, kind, coverage=coverage)
    return fit_targets(layer, target, **options)
