"""An interpretable, differentiable skin albedo: melanin and blood -> spectrum -> linear sRGB.

Two layers (the model of Doi & Tominaga 2003, "Spectral estimation of human skin color using
the Kubelka-Munk theory", Proc. SPIE 5008): an epidermis of thickness ``d`` whose absorption is
melanosomes (volume fraction ``melanin``) in bloodless tissue, over a semi-infinite dermis whose
absorption is whole blood (volume fraction ``blood``, oxygen saturation ``oxygenation``) in bloodless
tissue; both scatter like skin. Optical coefficients: :mod:`anatomy.appearance.skin_optics`
(Jacques 2013, Prahl). Kubelka-Munk (Kubelka 1948, "New contributions to the optics of intensely
light-scattering materials", JOSA 38) with ``K = 2 mu_a`` and ``S = mu_s'``:

* semi-infinite dermis: ``R_inf = 1 + K/S - sqrt((K/S)^2 + 2 K/S)``;
* epidermis layer: ``a = 1 + K/S``, ``b = sqrt(a^2 - 1)``,
  ``R = sinh(bSd) / (a sinh(bSd) + b cosh(bSd))``, ``T = b / (a sinh(bSd) + b cosh(bSd))``;
* stack: ``R = R_epi + T_epi^2 R_derm / (1 - R_epi R_derm)``.

The reflectance spectrum is integrated against CIE 1931 under D65 to XYZ, then to linear sRGB,
normalised so that a white reflector (``R = 1``) gives ``(1, 1, 1)`` exactly (a von Kries step that
absorbs the coarse 20 nm sampling). Every function is elementwise over leading dimensions and
differentiable (float32 or float64, any device).
"""

from __future__ import annotations

import math

import torch

from ..core.errors import ParameterError, ShapeError
from . import skin_optics as so

__all__ = [
    "ita_angle", "linear_to_srgb", "skin_absorption", "skin_albedo", "skin_reflectance", "spectrum_to_linear_srgb",
    "srgb_to_linear", "linear_srgb_to_lab",
]


def _table(values: object, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device)


def skin_absorption(like: torch.Tensor) -> dict[str, torch.Tensor]:
    """Absorption (cm^-1) and reduced scattering spectra ``(16,)`` in ``like``'s dtype/device:
    ``melanosome``, ``baseline``, ``blood_oxy``, ``blood_deoxy``, ``scattering``."""
    lam = _table(so.WAVELENGTHS_NM, like)
    b0, b1, b2, b3 = so.BASELINE
    per_mol = math.log(10.0) * so.BLOOD_HB_G_PER_L / so.HB_G_PER_MOL  # mol/L of whole blood times ln 10
    return {
        "melanosome": so.MELANIN_A * lam ** so.MELANIN_EXP,
        "baseline": b0 + b1 * torch.exp(-(lam - b2) / b3),
        "blood_oxy": per_mol * _table(so.EPS_HBO2, like),
        "blood_deoxy": per_mol * _table(so.EPS_HB, like),
        "scattering": so.SCATTER_A * (lam / 500.0) ** (-so.SCATTER_B),
    }


def _check(name: str, x: torch.Tensor, low: float, high: float) -> None:
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise ParameterError(f"{name} must be a floating-point tensor, got {type(x).__name__}"
                             f"{'' if not torch.is_tensor(x) else ' of dtype ' + str(x.dtype)}.")
    if not torch.isfinite(x).all():
        raise ParameterError(f"{name} contains NaN or Inf; pass finite values in [{low}, {high}].")
    if x.numel() and (x.min() < low or x.max() > high):
        raise ParameterError(f"{name} must lie in [{low}, {high}] (a volume fraction / saturation), got values in "
                             f"[{float(x.min()):.4g}, {float(x.max()):.4g}]; clamp it first.")


def skin_reflectance(melanin: torch.Tensor, blood: torch.Tensor, oxygenation: torch.Tensor | float = 0.75, *,
                     epidermis_cm: float = so.EPIDERMIS_CM) -> torch.Tensor:
    """Diffuse reflectance spectrum ``(..., 16)`` at :data:`~skin_optics.WAVELENGTHS_NM`.

    ``melanin``: melanosome volume fraction of the epidermis in [0, 1] (published: 0.013-0.063
    light, 0.11-0.16 moderate, 0.18-0.43 dark skin); ``blood``: blood volume fraction of the dermis
    in [0, 1] (typically 0.002-0.07); ``oxygenation``: haemoglobin oxygen saturation in [0, 1].
    Shapes broadcast against each other.
    """
    _check("melanin", melanin, 0.0, 1.0)
    _check("blood", blood, 0.0, 1.0)
    oxy = oxygenation if torch.is_tensor(oxygenation) else torch.tensor(float(oxygenation), dtype=melanin.dtype,
                                                                        device=melanin.device)
    _check("oxygenation", oxy, 0.0, 1.0)
    if not epidermis_cm > 0:
        raise ParameterError(f"epidermis_cm must be > 0 (about 0.006-0.01 cm), got {epidermis_cm}.")
    if melanin.dtype != blood.dtype or melanin.dtype != oxy.dtype:
        raise ParameterError(f"melanin, blood and oxygenation must share a dtype, got {melanin.dtype}, {blood.dtype}, "
                             f"{oxy.dtype}.")
    tab = skin_absorption(melanin)
    m, b, s = melanin[..., None], blood[..., None], oxy[..., None]
    mu_epi = m * tab["melanosome"] + (1 - m) * tab["baseline"]
    mu_derm = b * (s * tab["blood_oxy"] + (1 - s) * tab["blood_deoxy"]) + (1 - b) * tab["baseline"]
    scatter = tab["scattering"]
    ks_derm = 2 * mu_derm / scatter
    r_derm = 1 + ks_derm - torch.sqrt(ks_derm * ks_derm + 2 * ks_derm)
    ks_epi = 2 * mu_epi / scatter
    a = 1 + ks_epi
    bb = torch.sqrt(a * a - 1)
    x = bb * scatter * epidermis_cm
    denom = a * torch.sinh(x) + bb * torch.cosh(x)
    r_epi, t_epi = torch.sinh(x) / denom, bb / denom
    return r_epi + t_epi * t_epi * r_derm / (1 - r_epi * r_derm)


def spectrum_to_linear_srgb(reflectance: torch.Tensor) -> torch.Tensor:
    """Reflectance spectra ``(..., 16)`` -> linear sRGB ``(..., 3)`` under D65 (white -> (1, 1, 1))."""
    if reflectance.shape[-1:] != (len(so.WAVELENGTHS_NM),):
        raise ShapeError(f"reflectance must have shape (..., {len(so.WAVELENGTHS_NM)}) (one value per wavelength "
                         f"of skin_optics.WAVELENGTHS_NM), got {tuple(reflectance.shape)}.")
    weights = _table(so.D65, reflectance)[:, None] * _table(so.CIE_XYZ, reflectance)  # (16, 3)
    to_rgb = _table(so.XYZ_TO_LINEAR_SRGB, reflectance) @ weights.t()  # (3, 16)
    to_rgb = to_rgb / to_rgb.sum(1, keepdim=True)  # white reflector -> (1, 1, 1)
    return reflectance @ to_rgb.t()


def skin_albedo(melanin: torch.Tensor, blood: torch.Tensor, oxygenation: torch.Tensor | float = 0.75, *,
                epidermis_cm: float = so.EPIDERMIS_CM) -> torch.Tensor:
    """Linear sRGB diffuse albedo ``(..., 3)`` of skin; see :func:`skin_reflectance` for the inputs."""
    return spectrum_to_linear_srgb(skin_reflectance(melanin, blood, oxygenation, epidermis_cm=epidermis_cm))


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer function (IEC 61966-2-1), values clamped to [0, 1] first."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`linear_to_srgb` on [0, 1]."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)


def linear_srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """Linear sRGB ``(..., 3)`` -> CIELAB ``(..., 3)`` (D65 white, CIE 15:2004)."""
    to_xyz = torch.linalg.inv(_table(so.XYZ_TO_LINEAR_SRGB, rgb))
    xyz = rgb @ to_xyz.t()
    white = to_xyz.sum(1)
    t = xyz / white
    eps = (6 / 29) ** 3
    f = torch.where(t > eps, t.clamp_min(eps) ** (1 / 3), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def ita_angle(rgb: torch.Tensor) -> torch.Tensor:
    """Individual typology angle in degrees, ``atan2(L* - 50, b*)`` (Chardon et al. 1991): > 55 very
    light, 41-55 light, 28-41 intermediate, 10-28 tan, -30-10 brown, < -30 dark (Del Bino 2013)."""
    lab = linear_srgb_to_lab(rgb)
    return torch.rad2deg(torch.atan2(lab[..., 0] - 50, lab[..., 2]))
