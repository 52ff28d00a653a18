"""The JSON-ready report of a fit: units, per-target residual mean / 95th percentile, stages, seconds."""

from __future__ import annotations

from typing import Any

import torch

from .fit_targets import Keypoints2D, Keypoints3D, Target

__all__ = ["fit_report", "summary"]


def summary(values: torch.Tensor) -> dict[str, float]:
    """``{"mean", "p95", "max"}`` of a flat tensor of distances."""
    v = values.detach().double().flatten().cpu()
    if v.numel() == 0:
        return {"mean": float("nan"), "p95": float("nan"), "max": float("nan")}
    return {"mean": round(float(v.mean()), 4), "p95": round(float(torch.quantile(v, 0.95)), 4),
            "max": round(float(v.max()), 4)}


def fit_report(targets: list[Target], residuals: list[Any], *, units_scale: float, seconds: float,
               log: list[tuple[str, float]], kind: str) -> dict[str, Any]:
    """Per target: its kind, its unit (mm or px) and :func:`summary` of its residuals over the whole batch
    (and per fit: ``per_fit_mean``)."""
    rows = []
    for t, r in zip(targets, residuals):
        if isinstance(t, (Keypoints3D, Keypoints2D)):
            w = torch.as_tensor(t.weight > 0).to(r.device)
            flat = r[w]
            per_fit = [round(float(r[b][w[b]].mean()), 4) if bool(w[b].any()) else None for b in range(r.shape[0])]
            unit = "px" if isinstance(t, Keypoints2D) else "mm"
            name = type(t).__name__
        else:
            flat = torch.cat([x.flatten() for x in r])
            per_fit = [round(float(x.mean()), 4) for x in r]
            unit, name = "mm", f"PointCloud({'partial' if t.partial else 'full'})"
        rows.append({"target": name, "unit": unit, **summary(flat), "per_fit_mean": per_fit})
    return {"model": kind, "units": "m" if units_scale == 1000.0 else "mm", "units_scale": units_scale,
            "targets": rows, "stages": [{"stage": s, "energy": round(e, 6)} for s, e in log],
            "seconds": round(seconds, 3)}
