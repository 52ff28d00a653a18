"""The skin albedo model: an independent float64 reference, monotonicity, published skin types, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from anatomy.appearance import (
    ita_angle,
    linear_srgb_to_lab,
    linear_to_srgb,
    skin_albedo,
    skin_reflectance,
    spectrum_to_linear_srgb,
)
from anatomy.appearance import skin_optics as so
from anatomy.appearance.albedo import srgb_to_linear
from anatomy.core.errors import ParameterError, ShapeError


def _reference_rgb(m: float, b: float, s: float, d: float = so.EPIDERMIS_CM) -> np.ndarray:
    """The model written out wavelength by wavelength in plain Python floats (Doi & Tominaga 2003)."""
    cmf, rows = np.asarray(so.CIE_XYZ), np.asarray(so.XYZ_TO_LINEAR_SRGB)
    refl = []
    for k, lam in enumerate(so.WAVELENGTHS_NM):
        base = 0.244 + 85.3 * math.exp(-(lam - 154.0) / 66.2)
        mel = 6.6e11 * lam ** -3.33
        hb = math.log(10) * 150.0 / 64500.0 * (s * so.EPS_HBO2[k] + (1 - s) * so.EPS_HB[k])
        sc = 46.0 * (lam / 500.0) ** -1.421
        kd = 2 * (b * hb + (1 - b) * base) / sc
        r_inf = 1 + kd - math.sqrt(kd * kd + 2 * kd)
        a = 1 + 2 * (m * mel + (1 - m) * base) / sc
        bb = math.sqrt(a * a - 1)
        den = a * math.sinh(bb * sc * d) + bb * math.cosh(bb * sc * d)
        r1, t1 = math.sinh(bb * sc * d) / den, bb / den
        refl.append(r1 + t1 * t1 * r_inf / (1 - r1 * r_inf))
    weights = np.asarray(so.D65)[:, None] * cmf
    xyz, white = np.asarray(refl) @ weights, weights.sum(0)
    return (rows @ xyz) / (rows @ white)


@pytest.mark.parametrize("m, b, s", [(0.02, 0.02, 0.75), (0.13, 0.005, 0.4), (0.35, 0.06, 0.95), (0.0, 0.0, 0.0)])
def test_matches_reference(m: float, b: float, s: float) -> None:
    got = skin_albedo(torch.tensor(m, dtype=torch.float64), torch.tensor(b, dtype=torch.float64),
                      torch.tensor(s, dtype=torch.float64))
    np.testing.assert_allclose(got.numpy(), _reference_rgb(m, b, s), rtol=1e-12, atol=1e-14)


def test_white_and_grey_reflectors() -> None:
    ones = torch.ones(16, dtype=torch.float64)
    np.testing.assert_allclose(spectrum_to_linear_srgb(ones).numpy(), 1.0, atol=1e-14)
    np.testing.assert_allclose(spectrum_to_linear_srgb(0.3 * ones).numpy(), 0.3, atol=1e-14)
    x = torch.linspace(0, 1, 11, dtype=torch.float64)
    np.testing.assert_allclose(srgb_to_linear(linear_to_srgb(x)).numpy(), x.numpy(), atol=1e-12)


def test_melanin_darkens_blood_reddens() -> None:
    mel = torch.linspace(0.0, 0.45, 19, dtype=torch.float64)
    for blood in (0.005, 0.02, 0.06):
        rgb = skin_albedo(mel, torch.full_like(mel, blood))
        luminance = rgb @ torch.tensor([0.2126, 0.7152, 0.0722], dtype=torch.float64)
        assert (luminance.diff() < 0).all()  # darker with every step of melanin
        assert (rgb.diff(dim=0) < 0).all()  # every channel
    # redder with more blood (R/G and CIE a*) over the dermal blood fractions of skin; in dark skin the
    # epidermis masks the dermis (erythema barely shows), so the check stops at moderate pigmentation
    for m, top in ((0.02, 0.1), (0.13, 0.05)):
        blood = torch.linspace(0.0, top, 11, dtype=torch.float64)
        rgb = skin_albedo(torch.full_like(blood, m), blood)
        assert ((rgb[:, 0] / rgb[:, 1]).diff() > 0).all()
        assert (linear_srgb_to_lab(rgb)[:, 1].diff() > 0).all()
        assert (rgb[:, 1].diff() < 0).all()  # haemoglobin absorbs green most
    # deoxygenated blood is darker in the red than oxygenated (deoxy-Hb absorbs more at 600-700 nm)
    m, b = torch.tensor(0.02, dtype=torch.float64), torch.tensor(0.05, dtype=torch.float64)
    assert skin_albedo(m, b, 0.0)[0] < skin_albedo(m, b, 1.0)[0]


def test_published_skin_types() -> None:
    """Melanosome fractions of the published ranges land in the matching ITA classes (Del Bino et al. 2013:
    > 41 deg very light/light, 10-41 intermediate/tan, < -30 dark) with skin-like sRGB (R > G > B)."""
    rows = []
    for name, (lo, hi) in so.MELANIN_RANGES.items():
        mel = torch.tensor([lo, hi], dtype=torch.float64)
        rgb = skin_albedo(mel, torch.full_like(mel, 0.02))
        ita = ita_angle(rgb)
        srgb = linear_to_srgb(rgb)
        rows.append((name, ita.tolist(), srgb.tolist()))
        assert (srgb[:, 0] > srgb[:, 1]).all() and (srgb[:, 1] > srgb[:, 2]).all()
        if name == "light":
            assert ita[0] > 55 and ita[1] > 20 and srgb[0, 0] > 0.75
        elif name == "moderate":
            assert (ita < 28).all() and (ita > -30).all()
        else:
            assert ita[1] < -30 and (srgb[1] < 0.35).all()
    print(rows)


def test_gradients() -> None:
    inputs = (torch.tensor([0.03, 0.2], dtype=torch.float64, requires_grad=True),
              torch.tensor([0.02, 0.05], dtype=torch.float64, requires_grad=True),
              torch.tensor([0.7, 0.3], dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(skin_albedo, inputs)
    # against central differences of the plain-float reference
    m, b, s = 0.08, 0.03, 0.6
    x = torch.tensor([m, b, s], dtype=torch.float64, requires_grad=True)
    jac = torch.autograd.functional.jacobian(lambda v: skin_albedo(v[0], v[1], v[2]), x)
    h = 1e-6
    for i in range(3):
        e = np.eye(3)[i] * h
        fd = (_reference_rgb(*(np.array([m, b, s]) + e)) - _reference_rgb(*(np.array([m, b, s]) - e))) / (2 * h)
        np.testing.assert_allclose(jac[:, i].numpy(), fd, rtol=1e-6, atol=1e-9)
    # float32 works and stays close to float64
    f32 = skin_albedo(torch.tensor(m), torch.tensor(b), torch.tensor(s))
    assert f32.dtype == torch.float32
    np.testing.assert_allclose(f32.numpy(), _reference_rgb(m, b, s), atol=1e-5)


def test_bad_input() -> None:
    z = torch.tensor(0.02)
    with pytest.raises(ParameterError, match="melanin must lie in"):
        skin_reflectance(torch.tensor(1.5), z)
    with pytest.raises(ParameterError, match="NaN"):
        skin_reflectance(z, torch.tensor(float("nan")))
    with pytest.raises(ParameterError, match="floating-point"):
        skin_reflectance(torch.tensor(0), z)
    with pytest.raises(ParameterError, match="share a dtype"):
        skin_reflectance(z, z.double())
    with pytest.raises(ParameterError, match="epidermis_cm"):
        skin_reflectance(z, z, epidermis_cm=0.0)
    with pytest.raises(ShapeError, match=r"\(\.\.\., 16\)"):
        spectrum_to_linear_srgb(torch.ones(3, 10))
