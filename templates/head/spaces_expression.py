"""Expression space of the default head: face-only components derived from facial muscle anatomy.

Each component is one muscle (both sides summed for paired muscles): a line from its bony origin
(a point on the skull/mandible derived from the skeletal landmarks) to its insertion in the skin
(a point derived from the soft-tissue landmarks). Contraction pulls the skin around the insertion
towards the origin, tangentially to the skin (the skin slides over the deeper layers), with a
compact smooth falloff ``(1 - (r/R)^2)^3`` around the insertion. Muscles inserting into one lip
only act on that lip sheet (masked by the face's jaw weight: lower lip w, upper lip 1 - w), so the
mouth slit stays a slit. Sphincters (orbicularis oris / oculi) close towards their centre, and the
cheek puff pushes the cheek outwards along the skin normal (buccinator relaxed against air
pressure). Each component is scaled so one unit is a moderate expression (peak displacement
PEAK_MM, 5-10 mm). Skull and mandible rows are zero. Components are kept as built (named, not
orthogonalised).

Origins / insertions follow standard anatomy texts (e.g. Standring S (ed.) 2016, Gray's Anatomy,
41st ed., ch. "Face and scalp"); the points are approximations placed relative to our landmarks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from spaces_fields import bump, soft_point, unit

PEAK_MM = 7.0


def _tangential(d: np.ndarray, n: np.ndarray) -> np.ndarray:
    return d - (d * n).sum(1, keepdims=True) * n


def _snap(fv: np.ndarray, p: np.ndarray) -> np.ndarray:
    return fv[int(np.argmin(np.linalg.norm(fv - p, axis=1)))]


def build_expression_space(geo, w_face: np.ndarray, normals: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    P, fv = geo.point, geo.verts["face"]
    sides = (("R", 1.0), ("L", -1.0))
    mouth_c = P("stomion")
    eye = {s: 0.5 * (P(f"endocanthion_{s}") + P(f"exocanthion_{s}")) for s, _ in sides}
    upper, lower, both = 1.0 - w_face, w_face, np.ones_like(w_face)
    comps: list[tuple[str, str, str, Callable[[], np.ndarray]]] = []

    def pull(origin: np.ndarray, insertion: np.ndarray, radius: float, mask: np.ndarray) -> np.ndarray:
        d = unit(origin - insertion)
        fall = bump(np.linalg.norm(fv - insertion, axis=1), radius) * mask
        return fall[:, None] * _tangential(np.broadcast_to(d, fv.shape), normals)

    def paired(fn: Callable[[str, float], np.ndarray]) -> Callable[[], np.ndarray]:
        return lambda: sum((fn(s, sx) for s, sx in sides), np.zeros_like(fv))

    comps.append(("smile", "zygomaticus major",
                  "origin: zygomatic bone in front of the zygomaticotemporal suture; insertion: modiolus (cheilion)",
                  paired(lambda s, sx: pull(P(f"zygion_{s}") + [-sx * 6.0, 8.0, 2.0], P(f"cheilion_{s}"), 24.0,
                                            both))))

    def pucker() -> np.ndarray:
        r = fv - mouth_c
        radial = unit(r * [1.0, 0.0, 1.0])
        d = -0.45 * radial + 0.9 * np.array([0.0, 1.0, 0.0])
        return bump(np.linalg.norm(r, axis=1), 26.0)[:, None] * d

    comps.append(("lip_pucker", "orbicularis oris",
                  "sphincter around the mouth (from the modioli); lips pushed forward and towards the centre",
                  pucker))
    comps.append(("brow_raise", "frontalis",
                  "origin: epicranial aponeurosis (galea) above the frontal eminence; insertion: eyebrow skin",
                  paired(lambda s, sx: pull(P(f"frontal_eminence_{s}") + [0.0, -25.0, 45.0],
                                            _snap(fv, P(f"supraorbital_{s}") + [0.0, 8.0, 6.0]), 30.0, both))))
    comps.append(("frown", "corrugator supercilii",
                  "origin: medial end of the superciliary arch; insertion: skin of the mid eyebrow",
                  paired(lambda s, sx: pull(P("glabella") + [sx * 9.0, -4.0, -6.0],
                                            _snap(fv, P(f"supraorbital_{s}") + [0.0, 8.0, 2.0]), 18.0, both))))

    def eye_close(s: str, sx: float) -> np.ndarray:
        lid = _snap(fv, eye[s] + [0.0, 4.0, 6.0])
        r = np.linalg.norm(fv - lid, axis=1)
        above = np.clip((fv[:, 2] - eye[s][2]) / 4.0, 0.0, 1.0)
        origin = P("nasion") + [sx * 12.0, -6.0, -14.0]  # medial palpebral ligament, frontal process
        d = unit(np.array([0.0, 0.0, -1.0]) + 0.25 * unit(origin - lid))
        return (bump(r, 16.0) * above)[:, None] * _tangential(np.broadcast_to(d, fv.shape), normals)

    comps.append(("eye_closure", "orbicularis oculi (palpebral part)",
                  "origin: medial palpebral ligament / frontal process of the maxilla; upper lid drawn down to "
                  "the canthal line", paired(eye_close)))
    comps.append(("nose_wrinkle", "levator labii superioris alaeque nasi",
                  "origin: frontal process of the maxilla beside the nasal root; insertion: nasal ala and upper lip",
                  paired(lambda s, sx: pull(P("nasion") + [sx * 7.0, -3.0, -12.0],
                                            _snap(fv, P("subnasale") + [sx * 14.0, -3.0, 6.0]), 15.0, upper))))
    comps.append(("lip_corner_depress", "depressor anguli oris",
                  "origin: oblique line of the mandible near the mental tubercle; insertion: modiolus",
                  paired(lambda s, sx: pull(P("menton") + [sx * 24.0, -10.0, 4.0], P(f"cheilion_{s}"), 18.0,
                                            both))))
    comps.append(("lower_lip_depress", "depressor labii inferioris",
                  "origin: mandible between symphysis and mental foramen; insertion: lower lip",
                  paired(lambda s, sx: pull(P("pogonion") + [sx * 13.0, -4.0, -4.0],
                                            _snap(fv, P("labrale_inferius") + [sx * 10.0, -2.0, 0.0]), 16.0, lower))))
    comps.append(("upper_lip_raise", "levator labii superioris",
                  "origin: infraorbital margin above the infraorbital foramen; insertion: upper lip",
                  paired(lambda s, sx: pull(P(f"orbitale_{s}") + [-sx * 3.0, 0.0, -3.0],
                                            _snap(fv, P("labrale_superius") + [sx * 11.0, -2.0, 0.0]), 16.0, upper))))

    def puff(s: str, sx: float) -> np.ndarray:
        mid = 0.5 * (P(f"supra_M2_{s}") + P(f"sub_M2_{s}"))
        hit = soft_point(fv, mid, np.array([sx, 0.25, 0.0]), tube=6.0)
        centre = fv[hit] if hit is not None else _snap(fv, mid + [sx * 25.0, 0.0, 0.0])
        return bump(np.linalg.norm(fv - centre, axis=1), 30.0)[:, None] * normals

    comps.append(("cheek_puff", "buccinator (relaxed, air pressure)",
                  "buccinator: origin alveolar processes at the molars and pterygomandibular raphe, insertion "
                  "modiolus; the cheek over it bulges outwards", paired(puff)))

    basis = np.zeros((len(comps), geo.num_vertices, 3))
    off = geo.offsets["face"]
    infos = []
    for k, (name, muscle, anatomy, fn) in enumerate(comps):
        d = fn()
        peak = float(np.linalg.norm(d, axis=1).max())
        d = d * (PEAK_MM / peak)
        basis[k, off:] = d
        infos.append({"index": k, "name": name, "muscle": muscle, "anatomy": anatomy,
                      "peak_mm": PEAK_MM, "moved_vertices_over_1mm": int((np.linalg.norm(d, axis=1) > 1.0).sum())})
    return basis, infos
