"""T1-weighted MRI volumes from phantom label maps: spin-echo contrast, bias field, Rician noise."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.errors import ParameterError
from .phantom_ct import _blur, label_fractions, rng
from .phantom_labels import PhantomTissue
from .volume import Volume

__all__ = ["RELAXATION", "mri_from_labels", "t1_intensities"]

# (proton density relative to water, T1 ms, T2 ms) at 1.5 T. Muscle, subcutaneous fat and (fatty)
# bone marrow from de Bazelaire et al., Radiology 230 (2004) 652-659; cortical bone and enamel give
# no signal on conventional sequences (T2* well under 1 ms), so their density is 0.
RELAXATION: dict[PhantomTissue, tuple[float, float, float]] = {
    PhantomTissue.AIR: (0.0, 1.0, 1.0),
    PhantomTissue.SKIN: (0.9, 343.0, 58.0),
    PhantomTissue.MUSCLE: (0.8, 1008.0, 44.0),
    PhantomTissue.CORTICAL: (0.0, 1.0, 1.0),
    PhantomTissue.CANCELLOUS: (0.85, 549.0, 49.0),
    PhantomTissue.TEETH: (0.0, 1.0, 1.0),
}


def t1_intensities(tr_ms: float = 500.0, te_ms: float = 15.0) -> dict[PhantomTissue, float]:
    """Spin-echo signal ``PD (1 - exp(-TR/T1)) exp(-TE/T2)`` per tissue, scaled so fat (SKIN) is 1."""
    signal = {t: pd * (1.0 - np.exp(-tr_ms / t1)) * np.exp(-te_ms / t2) for t, (pd, t1, t2) in RELAXATION.items()}
    return {t: float(s / signal[PhantomTissue.SKIN]) for t, s in signal.items()}


def _bias_field(shape: tuple[int, int, int], strength: float, gen: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field ``exp(q)``, q a random quadratic in [-1, 1]^3 with max |q| = strength."""
    axes = [np.linspace(-1.0, 1.0, n) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    terms = [x, y, z, x * x, y * y, z * z, x * y, y * z, z * x]
    q = sum(c * t for c, t in zip(gen.normal(size=len(terms)), terms, strict=True))
    q = np.broadcast_to(q, shape)
    peak = float(np.abs(q).max())
    return np.exp(q * (strength / peak if peak > 0 else 0.0)).astype(np.float32)


def mri_from_labels(labels: Volume, fractions: dict[str, np.ndarray] | None = None, *, bias: float = 0.2,
                    noise: float = 0.02, psf_mm: float = 0.0, tr_ms: float = 500.0, te_ms: float = 15.0,
                    generator: Any = None) -> Volume:
    """A T1-weighted MRI volume (float32, fat = 1) of a phantom.

    PhantomTissue signals from :func:`t1_intensities` mixed by fraction (fat and marrow bright, muscle dark
    grey, cortical bone, teeth and air black), optionally blurred (``psf_mm`` FWHM), multiplied by a
    smooth bias field whose log spans ``[-bias, bias]``, then given Rician noise: the magnitude of
    the signal plus complex Gaussian noise of standard deviation ``noise`` per channel (so air reads
    ``noise * sqrt(pi / 2)`` on average).
    """
    if not np.isfinite(bias) or bias < 0 or not np.isfinite(noise) or noise < 0:
        raise ParameterError(f"bias and noise must be >= 0; got {bias} and {noise}.")
    if not np.isfinite(psf_mm) or psf_mm < 0 or tr_ms <= 0 or te_ms < 0:
        raise ParameterError(f"need psf_mm >= 0, tr_ms > 0, te_ms >= 0; got {psf_mm}, {tr_ms}, {te_ms}.")
    frac = label_fractions(labels, fractions)
    gen = rng(generator)
    level = t1_intensities(tr_ms, te_ms)
    signal = np.asarray(sum(level[t] * frac[t] for t in PhantomTissue), dtype=np.float32)
    signal = _blur(signal, psf_mm, labels.spacing)
    if bias > 0:
        signal = signal * _bias_field(labels.shape, bias, gen)
    if noise > 0:
        real = signal + gen.normal(0.0, noise, signal.shape).astype(np.float32)
        imag = gen.normal(0.0, noise, signal.shape).astype(np.float32)
        signal = np.hypot(real, imag)
    meta = dict(labels.meta, bias=float(bias), noise=float(noise), tr_ms=float(tr_ms), te_ms=float(te_ms))
    return Volume(signal.astype(np.float32), labels.affine, "mri", meta)
