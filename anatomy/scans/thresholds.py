"""Intensity thresholds read off a volume's histogram (multi-Otsu on a robust range), and the floor
of windowed 8-bit exports."""

from __future__ import annotations

import numpy as np

from ..core.errors import ParameterError, import_optional

__all__ = ["histogram_thresholds", "robust_sample", "windowed_floor"]



def robust_sample(data: np.ndarray, max_samples: int = 2_000_000) -> np.ndarray:
    step = max(1, int(np.ceil((data.size / max_samples) ** (1.0 / 3.0))))
    return np.asarray(data[::step, ::step, ::step], dtype=np.float64).ravel()


def histogram_thresholds(data: np.ndarray, classes: int = 3) -> tuple[list[float], dict[str, float]]:
    """Multi-Otsu thresholds of an intensity array (see the module text for the robust range and the
    padding rule). Returns the thresholds (ascending) and facts: ``low``, ``high``, ``padding``."""
    filters = import_optional("skimage.filters", "scans", "histogram thresholds", "scikit-image")
    sample = robust_sample(data)
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


def windowed_floor(data: np.ndarray) -> float | None:
    """The floor value of a windowed export (integer data over at most 256 levels with >= 1 % of the
    voxels at its minimum: air and fat both clipped there), else ``None``."""
    if data.dtype.kind not in "biu":
        return None
    sample = robust_sample(data)
    vmin, vmax = float(sample.min()), float(sample.max())
    if vmax - vmin > 255 or np.mean(sample == vmin) < 0.01:
        return None
    return vmin
