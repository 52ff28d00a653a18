"""Published optical data of skin, sampled every 20 nm from 400 to 700 nm (16 wavelengths).

Every table is a list of numbers transcribed from the cited source; nothing here is fitted.
The CIE and D65 values were checked against the tables shipped by the ``colour-science`` package
(0.4.7), value for value. The haemoglobin values are Prahl's table at 20 nm steps; they agree within
about 20 % with the independent analytic fit of whole-blood absorption by Jean & Schulmeister 2017
(J. Laser Appl. 29) at 420, 540, 580 and 600 nm, where that fit is meant to hold.

* ``CIE_XYZ``: CIE 1931 2-degree standard observer colour-matching functions x̄, ȳ, z̄
  (CIE 15:2004, Colorimetry, table T.4; 5 nm table subsampled).
* ``D65``: relative spectral power of CIE standard illuminant D65 (CIE 15:2004, table T.1).
* ``EPS_HBO2`` / ``EPS_HB``: molar extinction coefficients of oxy- and deoxy-haemoglobin,
  cm^-1 / (mol/L), from S. Prahl's compilation of W. B. Gratzer's and N. Kollias's data
  (Oregon Medical Laser Center, "Optical absorption of hemoglobin", omlc.org/spectra/hemoglobin).
* Closed forms from S. L. Jacques, "Optical properties of biological tissues: a review",
  Phys. Med. Biol. 58 (2013) R37-R61, and the OMLC notes it summarises:
  melanosome absorption ``6.6e11 * lambda^-3.33`` cm^-1 (lambda in nm; OMLC "melanin" note: the
  interior of one melanosome, 228 cm^-1 at 694 nm),
  baseline absorption of bloodless skin ``0.244 + 85.3 exp(-(lambda - 154) / 66.2)`` cm^-1,
  reduced scattering of skin ``46.0 (lambda / 500 nm)^-1.421`` cm^-1 (Jacques 2013, table 2),
  whole blood 150 g/L haemoglobin of molecular weight 64,500 g/mol.
* ``XYZ_TO_LINEAR_SRGB``: IEC 61966-2-1 (sRGB), D65 white.
"""

from __future__ import annotations

WAVELENGTHS_NM = (400, 420, 440, 460, 480, 500, 520, 540, 560, 580, 600, 620, 640, 660, 680, 700)

# CIE 1931 2-degree observer: x-bar, y-bar, z-bar at the wavelengths above
CIE_XYZ = (
    (0.01431, 0.000396, 0.06785),
    (0.13438, 0.004000, 0.64560),
    (0.34828, 0.023000, 1.74706),
    (0.29080, 0.060000, 1.66920),
    (0.09564, 0.139020, 0.81295),
    (0.00490, 0.323000, 0.27200),
    (0.06327, 0.710000, 0.07825),
    (0.29040, 0.954000, 0.02030),
    (0.59450, 0.995000, 0.00390),
    (0.91630, 0.870000, 0.00165),
    (1.06220, 0.631000, 0.00080),
    (0.85445, 0.381000, 0.00019),
    (0.44790, 0.175000, 0.00002),
    (0.16490, 0.061000, 0.00000),
    (0.04677, 0.017000, 0.00000),
    (0.01136, 0.004102, 0.00000),
)

# CIE illuminant D65, relative spectral power (100 at 560 nm)
D65 = (82.7549, 93.4318, 104.865, 117.812, 115.923, 109.354, 104.790, 104.405,
       100.000, 95.788, 90.0062, 87.6987, 83.6992, 80.2146, 78.2842, 71.6091)

# haemoglobin molar extinction, cm^-1 / (mol/L) (Prahl's compilation, Gratzer / Kollias)
EPS_HBO2 = (266232.0, 480360.0, 103292.0, 44480.0, 26629.2, 20932.8, 20035.2, 53236.0,
            32613.2, 50104.0, 3200.0, 942.0, 442.0, 319.6, 294.0, 290.0)
EPS_HB = (223296.0, 407920.0, 413280.0, 23388.8, 14550.0, 20862.0, 25773.6, 46592.0,
          53412.0, 37020.0, 14677.2, 6509.6, 4345.2, 3226.56, 2407.92, 1794.28)

# whole blood (Jacques 2013): 150 g/L haemoglobin, 64,500 g/mol; mu_a = ln(10) * eps * c
BLOOD_HB_G_PER_L = 150.0
HB_G_PER_MOL = 64500.0

# melanosome absorption mu_a = MELANIN_A * lambda^MELANIN_EXP (cm^-1, lambda in nm)
MELANIN_A = 6.6e11
MELANIN_EXP = -3.33

# bloodless skin baseline absorption, cm^-1: B0 + B1 exp(-(lambda - B2) / B3)
BASELINE = (0.244, 85.3, 154.0, 66.2)

# reduced scattering of skin, cm^-1: a' (lambda / 500 nm)^-b
SCATTER_A = 46.0
SCATTER_B = 1.421

# typical epidermis thickness, cm (Jacques 2013 uses 60-100 um for the epidermis)
EPIDERMIS_CM = 0.008

# IEC 61966-2-1: CIE XYZ (D65) -> linear sRGB
XYZ_TO_LINEAR_SRGB = (
    (3.2406, -1.5372, -0.4986),
    (-0.9689, 1.8758, 0.0415),
    (0.0557, -0.2040, 1.0570),
)

# published melanosome volume fractions of the epidermis (OMLC "melanin" note after Jacques):
# light-skinned adults 1.3-6.3 %, moderately pigmented 11-16 %, darkly pigmented 18-43 %
MELANIN_RANGES = {"light": (0.013, 0.063), "moderate": (0.11, 0.16), "dark": (0.18, 0.43)}
