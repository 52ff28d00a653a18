"""Trait space of the default head: orthognathic-surgery changes, one named component each.

A component moves one bony segment rigidly by a typical surgical amount per unit (the segment
blends into the unmoved bone over a few millimetres at the osteotomy), and the face follows: the
skin moves with the segment, fading with its distance to the moved bone (Gaussian, 15 mm), times a
soft-to-hard-tissue ratio field interpolated from published ratios at soft-tissue landmarks,
and restricted to the skin of the moving jaw by the face's jaw weight (mandible and chin: w; maxilla:
1 - w), so the lips follow their own jaw.

Ratios (soft-tissue movement / bony movement, horizontal unless stated), approximate means:
* BSSO mandibular advancement: soft pogonion ~1:1 (0.9-1.0), soft B point ~0.9-1.0, lower lip
  ~0.6-1.0 (Joss CU, Joss-Vassalli IM, Bergé SJ, Kuijpers-Jagtman AM 2010, "Soft tissue profile
  changes after bilateral sagittal split osteotomy for mandibular advancement: a systematic
  review", J Oral Maxillofac Surg 68:1260-1269).
* BSSO mandibular setback: soft pogonion ~0.9-1.0, lower lip ~0.6-0.8 (Joss CU, Vassalli IM,
  Thüer UW 2008, "Stability of soft tissue profile after mandibular setback in sagittal split
  osteotomies: a longitudinal and long-term follow-up study", J Oral Maxillofac Surg 66:1610, and
  the reviews cited there).
* Le Fort I advancement: upper lip (labrale superius) ~0.5-0.8, subnasale ~0.5-0.6, nasal tip
  ~0.2-0.3 (Mansour S, Burstone C, Legan H 1983, "An evaluation of soft-tissue changes resulting
  from Le Fort I maxillary surgery", Am J Orthod 84:37-47).
* Le Fort I superior repositioning (impaction): upper lip ~0.3-0.5 and subnasale ~0.3 of the
  vertical movement, nasal tip ~0.15 (Mansour et al. 1983; Proffit WR, White RP, Sarver DM 2003,
  "Contemporary treatment of dentofacial deformity", Mosby, soft-tissue response tables).
* Advancement genioplasty: soft pogonion ~0.8-0.9, lower lip ~0.2-0.3 (San Miguel Moragas J,
  Oth O, Büttner M, Mommaerts MY 2015, "A systematic review on soft-to-hard tissue ratios in
  orthognathic surgery part II: chin procedures", J Craniomaxillofac Surg 43:1530-1540).
Typical movements per unit: BSSO 5 mm, Le Fort I advancement 4 mm, impaction 3 mm, genioplasty
5 mm (common clinical ranges 3-8 mm).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from spaces_fields import shepard, smoothstep, soft_point

TRAITS = [
    # name, segment, movement per unit (mm, RAS), {soft landmark: ratio}, description
    ("mandibular_advancement", "mandible_distal", (0.0, 5.0, 0.0),
     {"soft_pogonion": 0.95, "soft_b_point": 0.95, "labrale_inferius": 0.8},
     "BSSO: mandible anterior to the ramus split 5 mm forward"),
    ("mandibular_setback", "mandible_distal", (0.0, -5.0, 0.0),
     {"soft_pogonion": 0.95, "soft_b_point": 0.9, "labrale_inferius": 0.7},
     "BSSO: mandible anterior to the ramus split 5 mm back"),
    ("maxillary_advancement", "maxilla_le_fort_1", (0.0, 4.0, 0.0),
     {"labrale_superius": 0.65, "subnasale": 0.55, "pronasale": 0.25},
     "Le Fort I: maxilla below the osteotomy 4 mm forward"),
    ("maxillary_impaction", "maxilla_le_fort_1", (0.0, 0.0, 3.0),
     {"labrale_superius": 0.4, "subnasale": 0.3, "pronasale": 0.15},
     "Le Fort I: maxilla below the osteotomy 3 mm up (no mandibular autorotation)"),
    ("genioplasty_advancement", "chin", (0.0, 5.0, 0.0),
     {"soft_pogonion": 0.85, "labrale_inferius": 0.25},
     "sliding genioplasty: chin below the cut 5 mm forward"),
]
REACH_MM = 15.0  # Gaussian reach of a moved segment into the skin over and around it
SEGMENT_LANDMARK = {"mandible_distal": "pogonion", "maxilla_le_fort_1": "prosthion", "chin": "pogonion"}
SOFT_FROM_BONE = {  # soft landmark -> (bony landmark, ray direction) when the geometry lacks it
    "soft_pogonion": ("pogonion", (0.0, 1.0, 0.0)),
    "soft_b_point": ("supramentale", (0.0, 1.0, 0.0)),
    "labrale_inferius": ("infradentale", (0.0, 1.0, -0.3)),
    "labrale_superius": ("prosthion", (0.0, 1.0, 0.0)),
    "subnasale": ("anterior_nasal_spine", (0.0, 1.0, 0.0)),
    "pronasale": ("rhinion", (0.0, 1.0, -1.0)),
}


def segment_weights(geo) -> dict[str, tuple[str, np.ndarray]]:
    """Per segment: (the bone it belongs to, per-vertex weight of that bone in [0, 1])."""
    P = geo.point
    m, s = geo.verts["mandible"], geo.verts["skull"]
    go_y = 0.5 * (P("gonion_R")[1] + P("gonion_L")[1])
    # BSSO: the split runs down the ramus; the distal (tooth-bearing) segment starts in front of it
    distal = smoothstep(m[:, 1], go_y + 8.0, go_y + 20.0)
    # Le Fort I: horizontal cut ~5 mm above the nasal floor level (anterior nasal spine), ending at
    # the pterygomaxillary junction (behind the second molars)
    cut_z = P("anterior_nasal_spine")[2] + 5.0
    back = P("supra_M2_R")[1] - 12.0 if geo.has("supra_M2_R") else 25.0
    lf1 = smoothstep(s[:, 2], cut_z + 2.0, cut_z - 3.0) * smoothstep(s[:, 1], back - 6.0, back + 4.0)
    # genioplasty: cut below the canine apices, ~45 % of the infradentale-menton height below
    # infradentale, in front of the mental foramina
    idz, mez = P("infradentale")[2], P("menton")[2]
    g_cut = idz - 0.45 * (idz - mez)
    chin = smoothstep(m[:, 2], g_cut + 1.5, g_cut - 2.5) * smoothstep(m[:, 1], go_y + 30.0, go_y + 40.0)
    return {"mandible_distal": ("mandible", distal), "maxilla_le_fort_1": ("skull", lf1), "chin": ("mandible", chin)}


def soft_control(geo, name: str) -> int | None:
    """Face vertex of a soft landmark (its largest barycentric vertex), or a ray-cast stand-in."""
    if geo.has(name) and geo.landmarks[name]["mesh"] == "face":
        d = geo.landmarks[name]
        return int(geo.faces["face"][d["face"]][int(np.argmax(d["bary"]))])
    bone, direction = SOFT_FROM_BONE[name]
    if not geo.has(bone):
        return None
    return soft_point(geo.verts["face"], geo.point(bone), np.asarray(direction))


def build_trait_space(geo, w_face: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    sl_off = geo.offsets
    segs = segment_weights(geo)
    fv = geo.verts["face"]
    basis = np.zeros((len(TRAITS), geo.num_vertices, 3))
    infos = []
    for k, (name, seg, move_mm, ratios, desc) in enumerate(TRAITS):
        bone, wseg = segs[seg]
        move = np.asarray(move_mm, float)
        bdisp = wseg[:, None] * move
        bv = geo.verts[bone]
        basis[k, sl_off[bone]:sl_off[bone] + len(bv)] = bdisp
        follow = w_face if bone == "mandible" else 1.0 - w_face
        # skin carried by the segment: full over it, fading with the distance to the moved bone
        moved = bv[wseg > 0.5]
        d_seg = cKDTree(moved).query(fv)[0]
        reach = np.exp(-0.5 * (d_seg / REACH_MM) ** 2)
        ctrl = {n: soft_control(geo, n) for n in ratios}
        ctrl = {n: v for n, v in ctrl.items() if v is not None}
        names = list(ctrl)
        anchors = fv[[ctrl[n] for n in names]]
        target = np.array([ratios[n] for n in names])
        u = move / np.linalg.norm(move)
        c = target.copy()
        for _ in range(8):  # calibrate the anchor values so the realised ratios hit the targets
            r = shepard(fv, anchors, c[:, None], 10.0)[:, 0]
            face_d = (follow * np.minimum(r * reach, 1.0))[:, None] * move  # skin never outruns the bone
            real = np.array([face_d[ctrl[n]] @ u for n in names]) / np.linalg.norm(move)
            c = np.clip(c * target / np.maximum(real, 1e-6), 0.0, 3.0)
        r = shepard(fv, anchors, c[:, None], 10.0)[:, 0]
        face_d = (follow * np.minimum(r * reach, 1.0))[:, None] * move
        basis[k, sl_off["face"]:] = face_d
        bony = SEGMENT_LANDMARK[seg]
        bony_moved = float((np.asarray(geo.landmarks[bony]["bary"])
                            @ basis[k, sl_off[bone] + geo.faces[bone][geo.landmarks[bony]["face"]]]) @ u)
        real = {n: round(float(face_d[ctrl[n]] @ u / np.linalg.norm(move)), 4) for n in names}
        infos.append({
            "index": k, "name": name, "description": desc, "segment": seg, "bone": bone,
            "movement_per_unit_mm": move.tolist(), "bony_landmark": bony,
            "bony_landmark_movement_mm": round(bony_moved, 4),
            "soft_tissue_ratio_target": {n: ratios[n] for n in names},
            "soft_tissue_ratio_realised": real,
            "soft_tissue_control_vertex": {n: int(ctrl[n] + sl_off["face"]) for n in names},
            "max_skin_displacement_mm": round(float(np.linalg.norm(face_d, axis=1).max()), 3),
        })
    return basis, infos
