"""Scale the skull to adult norms and place it inside the face by soft-tissue thickness."""

from __future__ import annotations

import _mesh as M
import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

# Adult craniometric norms (mm), sex-pooled, rounded. Cranial measurements follow the
# definitions and the order of magnitude of the European-sample means in Howells WW (1973)
# "Cranial Variation in Man", Papers of the Peabody Museum 67 (GOL glabella-opisthocranion,
# XCB euryon-euryon, ZYB zygion-zygion, NPH nasion-prosthion); facial height n-gn and bigonial
# breadth go-go after Martin R, Saller K (1957) "Lehrbuch der Anthropologie" (measurements 66,
# 69); these are approximate pooled values, not a single sample's figures.
NORMS = {
    "GOL": (("glabella", "opisthocranion"), 183.0, 1),   # axis 1 = y (antero-posterior)
    "XCB": (("euryon_R", "euryon_L"), 140.0, 0),         # axis 0 = x (transverse)
    "ZYB": (("zygion_R", "zygion_L"), 128.0, 0),
    "go-go": (("gonion_R", "gonion_L"), 96.0, 0),
    "NPH": (("nasion", "prosthion"), 69.0, 2),           # axis 2 = z (vertical)
    "n-gn": (("nasion", "gnathion"), 118.0, 2),
}

# De Greef S, Claes P, Vandermeulen D, Mollemans W, Suetens P, Willems G (2006). Large-scale
# in-vivo Caucasian facial soft tissue thickness database for craniofacial reconstruction.
# Forensic Sci Int 159S: S126-S146. Ultrasound, 52 landmarks, 967 adults (457 M / 510 F).
# Values here are sex-pooled means (average of the male and female means), rounded to 0.5 mm,
# mapped to the skeletal landmark of this model that sits under De Greef's measuring point.
#
# Verification (2026-11-27): the study design above (ultrasound, 52 landmarks, 967 subjects,
# 510 women / 457 men, tables by sex, age and BMI) was checked against the paper's abstract
# (KU Leuven repository record lirias.kuleuven.be/handle/123456789/25805). The per-landmark
# means could NOT be checked: no copy of the paper's thickness tables was found in the
# reference corpora searched (documentation, web pages, public code) -- every number below is
# still the earlier transcription and is UNVERIFIED. They lie within the usual adult ranges
# (thin over the forehead, nasion and nasal bones, 10-13 mm over the lips and chin, thickest
# over the molars), which is all that could be said for them here. Whoever has the printed
# Tables 3-4 should replace them (pooled = (male + female) / 2) and re-run the build.
DE_GREEF_2006 = {
    # skeletal landmark: (De Greef point, pooled mean thickness mm)
    "supraglabella": ("mid-forehead", 4.5),
    "glabella": ("glabella", 5.5),
    "nasion": ("nasion", 6.5),
    "rhinion": ("end of nasals", 3.0),
    "subspinale": ("mid-philtrum", 11.5),
    "prosthion": ("upper lip margin", 11.0),
    "infradentale": ("lower lip margin", 12.5),
    "supramentale": ("chin-lip fold", 11.0),
    "pogonion": ("mental eminence", 11.0),
    "menton": ("beneath chin", 7.5),
    "frontal_eminence_R": ("frontal eminence", 4.5),
    "frontal_eminence_L": ("frontal eminence", 4.5),
    "supraorbital_R": ("supraorbital", 6.0),
    "supraorbital_L": ("supraorbital", 6.0),
    "orbitale_R": ("suborbital", 6.0),
    "orbitale_L": ("suborbital", 6.0),
    "lateral_orbit_R": ("lateral orbit", 9.0),
    "lateral_orbit_L": ("lateral orbit", 9.0),
    "zygion_R": ("zygomatic arch", 7.5),
    "zygion_L": ("zygomatic arch", 7.5),
    "supra_M2_R": ("supra M2", 25.0),
    "supra_M2_L": ("supra M2", 25.0),
    "sub_M2_R": ("sub M2", 22.5),
    "sub_M2_L": ("sub M2", 22.5),
    "gonion_R": ("gonion", 14.0),
    "gonion_L": ("gonion", 14.0),
}


# skeletal landmarks on the mandible: not used by the similarity fit (the lower face is rebuilt
# from the mandible, see lower_face.py), but by the warp (warp.py)
MANDIBLE_POINTS = ("infradentale", "supramentale", "pogonion", "menton", "sub_M2_R", "sub_M2_L",
                   "gonion_R", "gonion_L")

# vertical soft/hard relations for the similarity fit: z(soft point) - z(bony point) in mm
# (soft nasion level with the bony nasion; stomion 2 mm above the upper incisal edge, see
# fit_in_face)
VERTICAL_PAIRS = {"nasion": 0.0, "upper_incisal_edge": 2.0}


def norm_scale(P: dict) -> tuple[np.ndarray, dict]:
    """Per-axis scale (x, y, z) = geometric mean of norm / measured over the measurements on
    that axis. Returns the scale and a report of every measurement."""
    logs = {0: [], 1: [], 2: []}
    rep = {}
    for key, ((a, b), norm, ax) in NORMS.items():
        d = float(np.linalg.norm(P[a] - P[b]))
        rep[key] = {"raw_mm": round(d, 1), "norm_mm": norm}
        logs[ax].append(np.log(norm / d))
    s = np.array([np.exp(np.mean(logs[k])) for k in range(3)])
    return s, rep


def fit_in_face(skel_pts: dict, skull_v: np.ndarray, head_v: np.ndarray, head_f: np.ndarray,
                init_t: np.ndarray, crop: dict, soft_pts: dict, incisal: np.ndarray,
                scale_bounds=(0.92, 1.08), margin: float = 1.0):
    """Similarity transform x -> s R (x - c) + c + t of the bones (s within ``scale_bounds``)
    that places the cranium/maxilla in the MRI face. Minimises

    * (thickness_i - table_i)^2 over the CRANIAL landmarks of ``DE_GREEF_2006`` (the mandible's
      region of the face is rebuilt from the bone afterwards, ``lower_face``), thickness = distance
      from the bony landmark to the nearest skin point;
    * two vertical soft/hard relations that nearest-point thickness cannot see (it lets the
      skull slide along the skin): soft nasion at the height of the bony nasion
      (``VERTICAL_PAIRS``) and stomion 2 mm above the upper incisal edge (rest display of the
      upper incisor, Vig RG, Brundo GC (1978) J Prosthet Dent 39: 502-504: ~1.9 mm men, 3.4 mm
      women);
    * 10 * max(0, penetration + margin)^2 over skull vertices above the subnasale (the upper face
      keeps the MRI skin; everything lower is rebuilt and pushed out by ``warp``).

    Distances are taken to the CLOSED skin surface of the whole MRI head; a landmark / vertex
    counts only where its nearest skin point lies on the part kept as the face (in front of the
    ear cut, between the forehead cut and the image's lower border)."""
    samp = M.SurfaceSampler(head_v, head_f, spacing=0.7)
    q = samp.points
    face_part = (q[:, 1] > crop["y_cut"]) & (q[:, 2] < crop["z_top"]) & \
        (q[:, 2] > crop["z_bottom"])
    edge = ~face_part
    names = [k for k in DE_GREEF_2006 if k in skel_pts and k not in MANDIBLE_POINTS]
    X = np.array([skel_pts[k] for k in names])
    T = np.array([DE_GREEF_2006[k][1] for k in names])
    V = np.array([skel_pts["nasion"], incisal])
    Vt = np.array([soft_pts["soft_nasion"][2] - VERTICAL_PAIRS["nasion"],
                   soft_pts["stomion"][2] - VERTICAL_PAIRS["upper_incisal_edge"]])
    c0 = X.mean(0)

    def apply(p, Y):
        R = Rotation.from_rotvec(p[:3]).as_matrix()
        s = np.exp(p[6])
        return s * (Y - c0) @ R.T + c0 + init_t + p[3:6]

    def thick(Y):
        sd, i = samp.signed(Y)
        return -sd, edge[i]

    def resid(p):
        th, on_edge = thick(apply(p, X))
        r1 = np.where(on_edge, 0.0, th - T)
        r2 = apply(p, V)[:, 2] - Vt
        sb, ib = samp.signed(apply(p, B), cap=25.0)
        pen = np.where((ib < 0) | edge[np.maximum(ib, 0)], 0.0, np.maximum(0.0, sb + margin))
        return np.concatenate([r1, r2, 10.0 * pen])

    p0 = np.zeros(7)
    # skull vertices that can reach the upper-face skin during the fit: within 30 mm of it at
    # the start and above the subnasale
    B0 = apply(p0, skull_v)
    near = np.isfinite(samp.signed(B0, cap=30.0)[0]) & (B0[:, 2] > soft_pts["subnasale"][2])
    B = skull_v[near]
    lo = np.r_[-np.ones(6) * np.inf, np.log(scale_bounds[0])]
    hi = np.r_[np.ones(6) * np.inf, np.log(scale_bounds[1])]
    sol = least_squares(resid, p0, bounds=(lo, hi),
                        x_scale=np.array([0.05, 0.05, 0.05, 5, 5, 5, 0.05]),
                        diff_step=1e-3, max_nfev=300)
    p = sol.x
    th, on_edge = thick(apply(p, X))
    report = {
        "scale": round(float(np.exp(p[6])), 4),
        "translation_mm": [round(float(x), 2) for x in init_t + p[3:6]],
        "rotation_deg": round(float(np.degrees(np.linalg.norm(p[:3]))), 2),
        "cost_evaluations": int(sol.nfev),
        "landmarks_used": [n for n, e in zip(names, on_edge) if not e],
        "vertical_residuals_mm": [round(float(x), 2) for x in apply(p, V)[:, 2] - Vt],
        "mean_abs_residual_mm": round(float(np.abs((th - T)[~on_edge]).mean()), 2),
    }

    def transform(Y):
        return apply(p, Y)

    return transform, report
