"""matplotlib plots (the ``vis`` extra): fitting curves from a log, and the variance of a model's spaces.

* :func:`read_fit_log` / :func:`plot_fit_log`: loss or error per iteration. A log is a JSON file
  or the object itself: a list of numbers; a list of per-iteration dicts (numeric fields become
  curves, ``iteration``/``iter``/``step`` is the x axis, ``stage`` marks stages); a dict of
  name -> list; ``[stage, value]`` pairs (the ``model_fit_log`` of a registration's
  ``report.json``); or a dict holding one of these under ``log``, ``history`` or
  ``model_fit_log``. CSV/TSV files with a header row work too.
* :func:`space_variances` / :func:`plot_variance`: the variance (mm^2) of every component of a
  model's linear spaces (shape, trait, expression, and the pose PCA when the file has it) and
  the share of its space's total each explains.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ParameterError
from .quick import pyplot, save_figure

__all__ = ["FitLog", "plot_fit_log", "plot_variance", "read_fit_log", "space_variances"]

_X_KEYS = ("iteration", "iter", "step", "epoch")
_NESTED = ("log", "history", "model_fit_log")


@dataclass(frozen=True)
class FitLog:
    """Curves of a fit: ``x (N,)`` iterations, ``series`` name -> ``(N,)`` values (NaN where an
    iteration has none), ``stages``: ``(first index, stage name)`` where a stage starts."""

    x: np.ndarray
    series: dict[str, np.ndarray]
    stages: list[tuple[int, str]] = field(default_factory=list)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    return float(value)


def _from_rows(rows: Sequence[Mapping[str, Any]]) -> FitLog:
    names: list[str] = []
    for row in rows:
        names += [k for k, v in row.items() if k not in names and k not in _X_KEYS and _number(v) is not None]
    series = {n: np.array([_number(r.get(n)) if _number(r.get(n)) is not None else np.nan for r in rows])
              for n in names}
    key = next((k for k in _X_KEYS if all(_number(r.get(k)) is not None for r in rows)), None)
    x = np.array([float(r[key]) for r in rows]) if key else np.arange(len(rows), dtype=np.float64)
    stages: list[tuple[int, str]] = []
    for i, row in enumerate(rows):
        stage = row.get("stage")
        if isinstance(stage, str) and (not stages or stages[-1][1] != stage):
            stages.append((i, stage))
    return FitLog(x, series, stages)


def read_fit_log(source: Any) -> FitLog:
    """A :class:`FitLog` from a log file (``.json``, ``.csv``, ``.tsv``) or log object (see the module docs)."""
    if isinstance(source, FitLog):
        return source
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ParameterError(f"fit log {str(path)!r} does not exist; pass a .json/.csv log file.")
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".csv", ".tsv"):
            reader = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            rows = []
            for raw in reader:
                row: dict[str, Any] = {}
                for k, v in raw.items():
                    try:
                        row[k] = float(v)
                    except (TypeError, ValueError):
                        row[k] = v
                rows.append(row)
            source = rows
        else:
            try:
                source = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ParameterError(f"fit log {str(path)!r} is not valid JSON ({exc}).") from exc
    if isinstance(source, Mapping):
        nested = next((source[k] for k in _NESTED if k in source), None)
        if nested is not None:
            return read_fit_log(nested)
        curves = {str(k): v for k, v in source.items() if isinstance(v, Sequence) and not isinstance(v, str)}
        if not curves:
            raise ParameterError(f"fit log has no curves: expected name -> list of numbers, or a 'log' entry; "
                                 f"got keys {sorted(source)}.")
        length = max(len(v) for v in curves.values())
        series = {k: np.array([_number(x) if _number(x) is not None else np.nan for x in v]
                              + [np.nan] * (length - len(v))) for k, v in curves.items() if k not in _X_KEYS}
        x_key = next((k for k in _X_KEYS if k in curves and len(curves[k]) == length), None)
        x = np.asarray(curves[x_key], dtype=np.float64) if x_key else np.arange(length, dtype=np.float64)
        return FitLog(x, series)
    if isinstance(source, Sequence) and not isinstance(source, str) and len(source):
        if all(_number(v) is not None for v in source):
            return FitLog(np.arange(len(source), dtype=np.float64), {"loss": np.asarray(source, dtype=np.float64)})
        if all(isinstance(r, Mapping) for r in source):
            return _from_rows(source)
        if all(isinstance(r, Sequence) and len(r) == 2 and isinstance(r[0], str) and _number(r[1]) is not None
               for r in source):
            return _from_rows([{"stage": s, "value": v} for s, v in source])
    raise ParameterError("unreadable fit log: expected a list of numbers, a list of per-iteration dicts, a dict of "
                         "name -> list, or [stage, value] pairs (see anatomy.vis.plots).")


def plot_fit_log(log: Any, path: str | Path, *, title: str | None = None, ylabel: str = "loss / error",
                 log_scale: bool | None = None) -> Path:
    """Each curve of a fit log against the iteration, stage starts marked, into the PNG ``path``.

    ``log_scale``: logarithmic y axis (default: when every value is positive and they span more
    than a factor 20)."""
    fit = read_fit_log(log)
    if not fit.series or not len(fit.x):
        raise ParameterError("the fit log is empty: nothing to plot.")
    plt = pyplot("plot_fit_log()")
    path = Path(path)
    values = np.concatenate([v[np.isfinite(v)] for v in fit.series.values()])
    if log_scale is None:
        log_scale = bool(values.size) and values.min() > 0 and values.max() > 20 * values.min()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, curve in fit.series.items():
        ax.plot(fit.x, curve, marker="o" if len(curve) <= 30 else None, markersize=3, label=name)
    for start, stage in fit.stages:
        ax.axvline(fit.x[start], color="0.8", linewidth=0.8, zorder=0)
        ax.text(fit.x[start], 1.0, f" {stage}", transform=ax.get_xaxis_transform(), va="top", fontsize=7,
                color="0.4", rotation=90)
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    if len(fit.series) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def space_variances(model: Any) -> dict[str, np.ndarray]:
    """Per linear space of ``model`` (a :class:`~anatomy.io.model_data.ModelData`, a model file, a
    built-in name "hand"/"head" or a layer), the variance (mm^2, summed over all coordinates) of
    each component.

    Model files store normalised bases (coefficients ~ N(0, 1)), so a component's variance is its
    basis row's squared norm (the squared standard deviation along it); for the pose PCA it is
    ``pose_pm_std[k]^2 * |pose_basis[k]|^2`` (radians^2 over the 57 axis-angle values, not mm^2).
    A ``{space}_variance`` tensor in the file's extras, when present, is used as it is.
    """
    data = _model_data(model)
    out: dict[str, np.ndarray] = {}
    for name, basis in data.spaces.items():
        stored = data.extras.get(f"{name}_variance")
        flat = basis.detach().double().reshape(basis.shape[0], -1)
        out[name] = (stored.double() if stored is not None else (flat * flat).sum(1)).cpu().numpy()
    if "pose_pca_basis" in data.extras and "pose_pca_pm_std" in data.extras:
        basis = data.extras["pose_pca_basis"].double()
        std = data.extras["pose_pca_pm_std"].double()
        out["pose"] = (std**2 * (basis * basis).sum(1)).cpu().numpy()
    if not out:
        raise ParameterError("this model has no linear spaces (shape, trait, expression) or pose PCA to plot.")
    return out


def _model_data(model: Any) -> Any:
    from ..io import load_model
    from ..io.model_data import ModelData

    if isinstance(model, ModelData):
        return model
    if isinstance(model, str) and model in ("hand", "head"):
        from ..models.nimble import default_hand_path
        from ..models.sculptor import default_head_path

        return load_model(default_hand_path() if model == "hand" else default_head_path())
    if isinstance(model, (str, Path)):
        return load_model(model)
    raise ParameterError(f"model must be a ModelData, a model file or 'hand'/'head', got {type(model).__name__} "
                         f"(for a layer, pass the file it was built from).")


def plot_variance(model: Any, path: str | Path, *, title: str | None = None) -> Path:
    """Explained variance of each space of ``model`` (see :func:`space_variances`): one panel per
    space, bars for each component's share of the space's total and a line for the cumulative share."""
    variances = space_variances(model)
    plt = pyplot("plot_variance()")
    fig, axes = plt.subplots(1, len(variances), figsize=(3.6 * len(variances), 3.4), squeeze=False)
    for ax, (name, var) in zip(axes[0], variances.items()):
        share = var / var.sum() if var.sum() > 0 else np.zeros_like(var)
        k = np.arange(1, len(var) + 1)
        ax.bar(k, 100 * share, color="#8fa8c8", label="component")
        ax.plot(k, 100 * np.cumsum(share), color="#b5524a", marker="o", markersize=3, label="cumulative")
        unit = "rad²" if name == "pose" else "mm²"
        ax.set_title(f"{name} ({len(var)} components, total {var.sum():.3g} {unit})", fontsize=9)
        ax.set_xlabel("component")
        ax.set_ylabel("explained variance (%)")
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="center right")
    if title:
        fig.suptitle(title)
    return save_figure(fig, Path(path))
