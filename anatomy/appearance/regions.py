"""Where the embedded default models' skin charts and pigment regions are.

* The hand: every skin vertex belongs to the palm or to one finger (its summed skinning weight
  over the joints of that finger) and lies on the dorsal or palmar side of a plane: the palm's
  plane (fitted to the carpal and metacarpal joints, its normal pointing the way the fingers
  flex) or, for a finger, the plane through the finger's joint line containing the palm normal's
  part orthogonal to it. Charts: (group, side); melanin on the palmar side is 30 % of the dorsal
  value (palmar/plantar skin: melanocyte density and melanin content several times lower than
  dorsal skin, Yamaguchi et al. 2004, J Invest Dermatol 122) and the palm carries 20 % more blood.
* The face: blood raised on the lips (x 2.5) and cheeks (x 1.6) with smooth (Gaussian) fall-off
  around soft-tissue landmarks; melanin uniform.

All fields are per tissue vertex (tissue-local), numpy float64, computed from the rest mesh.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.errors import ParameterError

__all__ = ["HAND_GROUPS", "face_fields", "hand_fields", "hand_sides"]

#: joints of each skin group of the NIMBLE hand (DESIGN §4 joint order): palm, thumb, index..little
HAND_GROUPS = ((0, 5, 10, 15, 20), (1, 2, 3, 4), (6, 7, 8, 9), (11, 12, 13, 14), (16, 17, 18, 19), (21, 22, 23, 24))
_PALMAR_MELANIN = 0.3
_PALM_BLOOD = 1.2
_SIDE_WIDTH_MM = 3.0


def hand_sides(skin: np.ndarray, weights: np.ndarray, joints: np.ndarray, flexed_tip: np.ndarray,
               rest_tip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per skin vertex: group ``(V,)`` (0 palm, 1-5 thumb..little) and signed distance ``(V,)`` in mm
    to its side plane, positive on the palmar side.

    ``weights (V, 25)`` skinning weights of the skin vertices, ``joints (25, 3)`` rest joints,
    ``flexed_tip`` / ``rest_tip (3,)``: a fingertip with its finger flexed and at rest (gives the
    palmar direction)."""
    if weights.shape != (len(skin), 25) or joints.shape != (25, 3):
        raise ParameterError(f"hand_sides needs weights (V, 25) and joints (25, 3) of the NIMBLE rig, got "
                             f"{weights.shape} and {joints.shape}.")
    group_w = np.stack([weights[:, list(g)].sum(1) for g in HAND_GROUPS], 1)
    group = np.argmax(group_w, 1)
    palm = joints[list(HAND_GROUPS[0])]
    centre = palm.mean(0)
    normal = np.linalg.svd(palm - centre)[2][2]
    if normal @ (flexed_tip - rest_tip) < 0:
        normal = -normal
    dist = (skin - centre) @ normal
    for g in range(1, len(HAND_GROUPS)):
        ids = HAND_GROUPS[g]
        base, tip = joints[ids[0]], joints[ids[-1]]
        axis = (tip - base) / np.linalg.norm(tip - base)
        d = normal - (normal @ axis) * axis
        d /= np.linalg.norm(d)
        m = group == g
        dist[m] = (skin[m] - base) @ d
    return group, dist


def hand_fields(group: np.ndarray, dist: np.ndarray) -> dict[str, np.ndarray]:
    """Melanin and blood multipliers ``(V,)`` of the hand skin from :func:`hand_sides`."""
    palmar = 1.0 / (1.0 + np.exp(-dist / _SIDE_WIDTH_MM))
    melanin = 1.0 - (1.0 - _PALMAR_MELANIN) * palmar
    blood = 1.0 + (_PALM_BLOOD - 1.0) * palmar * (group == 0)
    return {"melanin": melanin, "blood": blood}


def _bump(points: np.ndarray, centre: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((points - centre) ** 2).sum(1) / sigma**2)


def _segment_bump(points: np.ndarray, a: np.ndarray, b: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian of the distance to the segment ``a``-``b``."""
    ab = b - a
    t = np.clip((points - a) @ ab / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return _bump(points - t[:, None] * ab, a, sigma)


def face_fields(face: np.ndarray, landmarks: dict[str, torch.Tensor | np.ndarray]) -> dict[str, np.ndarray]:
    """Melanin and blood multipliers ``(V,)`` of the face from its rest vertices and named landmarks
    (needs ``labrale_superius``, ``labrale_inferius``, ``stomion``, ``cheilion_R/L``, ``exocanthion_R/L``)."""
    need = ("labrale_superius", "labrale_inferius", "stomion", "cheilion_R", "cheilion_L", "exocanthion_R",
            "exocanthion_L")
    missing = [n for n in need if n not in landmarks]
    if missing:
        raise ParameterError(f"face_fields needs the soft-tissue landmarks {missing}; this head model lacks them.")
    lm = {k: np.asarray(landmarks[k], dtype=np.float64).reshape(3) for k in need}
    # the lips: around the outlines corner -> labrale superius / inferius -> other corner
    lips = np.maximum.reduce([_segment_bump(face, lm[c], lm[mid], 4.0) for c in ("cheilion_R", "cheilion_L")
                              for mid in ("labrale_superius", "labrale_inferius")])
    cheeks = np.zeros(len(face))
    for side in ("R", "L"):
        # the cheek's apex: below the outer eye corner, level with the nose, pulled onto the surface
        target = lm[f"exocanthion_{side}"] * 0.6 + lm[f"cheilion_{side}"] * 0.4
        apex = face[np.argmin(((face - target) ** 2).sum(1))]
        cheeks = np.maximum(cheeks, _bump(face, apex, 14.0))
    blood = 1.0 + 1.5 * lips + 0.6 * cheeks * (1.0 - lips)
    return {"melanin": np.ones(len(face)), "blood": blood}
