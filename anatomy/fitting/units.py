"""Units of 3D targets: millimetres (the models' unit) or metres, given or detected from the target's size.

A target in metres is about 1/1000 the size of the model; detection compares the RMS radius of the target
(about its centroid) with the model's over the same keypoints or tissue surface: below 3 % of it the target
is taken to be in metres. 2D keypoints are pixels and their cameras' translations must be in mm.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..core.errors import ParameterError
from .fit_targets import Keypoints2D, Keypoints3D, PointCloud, Target

__all__ = ["detect_units", "rms_radius"]

_METRES_BELOW = 0.03


def rms_radius(points: torch.Tensor) -> float:
    """RMS distance of ``points (N, 3)`` from their centroid."""
    p = points.double()
    return float((p - p.mean(0)).square().sum(-1).mean().sqrt())


def _model_radius(model: Any, target: Target) -> float:
    with torch.no_grad():
        out = model()
    if isinstance(target, PointCloud):
        tissue = target.tissue or ("skin" if "skin" in out.tissue_names else "face")
        return rms_radius(out.tissue(tissue)[0])
    names = model.keypoint_names if hasattr(model, "keypoint_names") else out.landmark_names
    pts = out.keypoints[0] if hasattr(out, "keypoints") else out.landmarks[0]
    if target.names is not None:
        pts = pts[[list(names).index(n) for n in target.names if n in names]]
    return rms_radius(pts)


def _target_radius(target: Target) -> float:
    if isinstance(target, PointCloud):
        return sum(rms_radius(p) for p in target.points) / len(target.points)
    return sum(rms_radius(p) for p in target.points) / target.points.shape[0]


def detect_units(model: Any, targets: list[Target], units: str) -> tuple[list[Target], float]:
    """The targets in mm and the factor applied (1 or 1000); see the module text."""
    three = [t for t in targets if not isinstance(t, Keypoints2D)]
    if units == "mm" or not three:
        return targets, 1.0
    if units == "auto":
        ratio = min(_target_radius(t) / max(_model_radius(model, t), 1e-9) for t in three)
        if ratio >= _METRES_BELOW:
            return targets, 1.0
    elif units != "m":
        raise ParameterError(f"units must be 'mm', 'm' or 'auto', got {units!r}.")
    out: list[Target] = []
    for t in targets:
        if isinstance(t, Keypoints3D):
            out.append(dataclasses.replace(t, points=t.points * 1000.0))
        elif isinstance(t, PointCloud):
            out.append(dataclasses.replace(t, points=[p * 1000.0 for p in t.points]))
        else:
            out.append(t)
    return out, 1000.0
