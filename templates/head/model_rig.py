"""Rig of the default head model: geometry loading, joint regressor, face skinning, jaw limits.

Used by ``build_model.py``. Everything here is numpy/scipy, float64, in the head frame (RAS+, mm,
origin mid-porion).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve
from scipy.spatial import cKDTree

HERE = Path(__file__).resolve().parent
GEOMETRY = HERE / "build" / "head_geometry.npz"
LANDMARKS = HERE / "build" / "landmarks.json"
TISSUES = ("skull", "mandible", "face")

# -------------------------------------------------------------------------------------------------
# published ranges of mandibular movement (used for the jaw limits in the model's extras)
# -------------------------------------------------------------------------------------------------
# Maximal interincisal opening of healthy adults: about 40-60 mm, means ~50 mm (Agerberg 1974, Swed
# Dent J 67:81, maximal mandibular movements in young men and women; Mezitis, Rallis & Zachariades
# 1989, J Oral Maxillofac Surg 47:1028, "The normal range of mouth opening"). We use 50 mm.
MAX_INTERINCISAL_OPENING_MM = 50.0
# Maximal protrusion ~7-10 mm and laterotrusion ~8-12 mm to each side (Agerberg 1974; the same
# order in the clinical norms of the RDC/TMD examination, Dworkin & LeResche 1992).
MAX_PROTRUSION_MM = 9.0
MAX_RETRUSION_MM = 1.0  # retruded contact position lies ~1 mm behind intercuspation (Posselt 1952)
MAX_LATEROTRUSION_MM = 10.0
# The condyle glides forward and DOWN the articular eminence (eminence inclination ~30-40 deg to
# the Frankfurt plane, e.g. Katsavrias 2002, Am J Orthod Dentofacial Orthop 122:591): a 9 mm
# protrusive glide lowers the condyle by ~9 * tan(35 deg) ~ 6 mm.
CONDYLE_DROP_MM = 6.0
# Lateral excursion is mostly a rotation about a vertical axis through the working condyle; the
# incisor path of ~10 mm at ~70 mm from the joint is ~0.14 rad. Roll (about +y) stays small.
MAX_ROLL_RAD = 0.05
# The condyles themselves shift sideways only a little in laterotrusion (the Bennett movement, or
# immediate side shift: ~0-3 mm, about 1 mm on average; e.g. Lundeen HC & Wirth CG 1973, J Prosthet
# Dent 30:866, approximate). The incisor path above is already the yaw, so the lateral condylar
# OFFSET is bounded by the side shift, not by MAX_LATEROTRUSION_MM: a +-10 mm offset on top of the
# yaw counted the excursion twice (up to ~23 mm at the incisors) and pushed the ramus 10 mm into
# the cheek.
MAX_SIDE_SHIFT_MM = 2.0


@dataclass
class HeadGeometry:
    """The three meshes, landmark embeddings and TMJ centres of the geometry build."""

    verts: dict[str, np.ndarray]
    faces: dict[str, np.ndarray]
    lip_upper: np.ndarray
    lip_lower: np.ndarray
    tmj: np.ndarray  # (2, 3) rows R, L
    landmarks: dict[str, dict] = field(default_factory=dict)  # name -> {mesh, face, bary, group}

    @property
    def offsets(self) -> dict[str, int]:
        out, start = {}, 0
        for t in TISSUES:
            out[t] = start
            start += len(self.verts[t])
        return out

    @property
    def num_vertices(self) -> int:
        return sum(len(self.verts[t]) for t in TISSUES)

    def point(self, name: str) -> np.ndarray:
        d = self.landmarks[name]
        return np.asarray(d["bary"], float) @ self.verts[d["mesh"]][self.faces[d["mesh"]][d["face"]]]

    def has(self, name: str) -> bool:
        return name in self.landmarks

    def names(self, group: str) -> list[str]:
        return [k for k, d in self.landmarks.items() if d["group"] == group]


def load_geometry(npz: Path = GEOMETRY, lm_json: Path = LANDMARKS) -> HeadGeometry:
    g = np.load(npz)
    doc = json.loads(lm_json.read_text())
    verts = {t: g[f"{t}_vertices"].astype(np.float64) for t in TISSUES}
    faces = {t: g[f"{t}_faces"].astype(np.int64) for t in TISSUES}
    lms: dict[str, dict] = {}
    for key, group in (("skeletal_landmarks", "skeletal"), ("soft_tissue_landmarks", "soft_tissue")):
        for name, d in doc[key].items():
            lms[name] = {"mesh": d["mesh"], "face": int(d["face"]), "bary": [float(x) for x in d["bary"]],
                         "group": group}
    return HeadGeometry(verts, faces, g["lip_upper_boundary"].astype(np.int64),
                        g["lip_lower_boundary"].astype(np.int64), g["tmj_centres"].astype(np.float64), lms)


# -------------------------------------------------------------------------------------------------
# joint regressor
# -------------------------------------------------------------------------------------------------


def landmark_row(geo: HeadGeometry, name: str) -> np.ndarray:
    """A (V,) row that reproduces a landmark exactly (its barycentric weights, global ids)."""
    d = geo.landmarks[name]
    row = np.zeros(geo.num_vertices)
    ids = geo.faces[d["mesh"]][d["face"]] + geo.offsets[d["mesh"]]
    np.add.at(row, ids, d["bary"])
    return row


def condyle_head_ids(geo: HeadGeometry, side: str) -> np.ndarray:
    """Mandible vertices of one condylar head: within 12 mm of condylion and less than 8 mm below
    it (the definition ``tmj_centres`` was computed with in the geometry build)."""
    v = geo.verts["mandible"]
    c = geo.point(f"condylion_{side}")
    return np.flatnonzero((np.linalg.norm(v - c, axis=1) < 12) & (v[:, 2] > c[2] - 8))


def joint_regressor(geo: HeadGeometry) -> tuple[np.ndarray, np.ndarray]:
    """(2, V) rows and the (2, 3) joints they give: root = mid-porion (skull), jaw = midpoint of
    the two condylar-head centroids (mandible)."""
    root = 0.5 * (landmark_row(geo, "porion_R") + landmark_row(geo, "porion_L"))
    jaw = np.zeros(geo.num_vertices)
    for side in ("R", "L"):
        ids = condyle_head_ids(geo, side) + geo.offsets["mandible"]
        jaw[ids] += 0.5 / len(ids)
    rows = np.stack([root, jaw])
    stack = np.concatenate([geo.verts[t] for t in TISSUES])
    return rows, rows @ stack


# -------------------------------------------------------------------------------------------------
# face skinning: smooth jaw weight
# -------------------------------------------------------------------------------------------------


def mesh_edges(f: np.ndarray) -> np.ndarray:
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    return np.unique(e, axis=0)


def graph_laplacian(n: int, edges: np.ndarray) -> sp.csr_matrix:
    """Uniform (umbrella) graph Laplacian L = D - A of an edge list (positive semi-definite)."""
    i, j = edges[:, 0], edges[:, 1]
    a = sp.coo_matrix((np.ones(2 * len(i)), (np.r_[i, j], np.r_[j, i])), shape=(n, n)).tocsr()
    return (sp.diags(np.asarray(a.sum(1)).ravel()) - a).tocsr()


def harmonic_fill(lap: sp.csr_matrix, known: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Solve L x = 0 on the unknown vertices with x[known] = values (columns solved together)."""
    n = lap.shape[0]
    vals = values.reshape(len(known), -1)
    free = np.setdiff1d(np.arange(n), known)
    out = np.zeros((n, vals.shape[1]))
    out[known] = vals
    a = lap[free][:, free].tocsc()
    b = -lap[free][:, known] @ vals
    sol = spsolve(a, b)
    out[free] = sol.reshape(len(free), -1)
    return out.reshape((n,) + values.shape[1:])


def face_jaw_weights(geo: HeadGeometry, margin: float = 4.0, band: float = 12.0) -> tuple[np.ndarray, dict]:
    """Jaw weight per face vertex in [0, 1]: 1 on the lower lip sheet and on skin that covers the
    mandible (chin, jaw line, lower cheeks), 0 on the upper lip sheet and on skin over the
    cranium/maxilla (upper lip, nose, forehead, temples); harmonic (heat-equilibrium) fill in
    between, on the face mesh whose mouth slit separates the two lip sheets.

    A vertex is "over the mandible" when its nearest mandible point is ``margin`` mm closer than
    its nearest skull point and it lies ``band`` mm below the mouth slit; "over the skull" in the
    opposite case above the slit, or anywhere above the subnasale level.
    """
    fv, ff = geo.verts["face"], geo.faces["face"]
    d_m = cKDTree(geo.verts["mandible"]).query(fv)[0]
    d_s = cKDTree(geo.verts["skull"]).query(fv)[0]
    corners = np.intersect1d(geo.lip_upper, geo.lip_lower)
    slit_z = fv[np.r_[geo.lip_upper, geo.lip_lower], 2].mean()
    nose_z = geo.point("subnasale")[2] if geo.has("subnasale") else slit_z + 15.0
    jaw_z = 0.5 * (geo.tmj[0, 2] + slit_z)  # skin above this height stays with the head
    # the two fixed regions stay >= ~10 mm apart (except along the lips), so the weight ramps smoothly
    below = fv[:, 2] < slit_z - band
    go_y = 0.5 * (geo.point("gonion_R")[1] + geo.point("gonion_L")[1]) if geo.has("gonion_R") else -1e9
    one = below & (d_m + margin < d_s) & (fv[:, 2] < jaw_z) & (fv[:, 1] > go_y)  # not behind the ramus
    zero = (fv[:, 2] > nose_z) | ((d_s + margin < d_m) & (fv[:, 2] > slit_z + 2.0))
    one[np.setdiff1d(geo.lip_lower, corners)] = True
    zero[np.setdiff1d(geo.lip_upper, corners)] = True
    one &= ~zero | np.isin(np.arange(len(fv)), geo.lip_lower)
    zero &= ~one
    known = np.flatnonzero(one | zero)
    lap = graph_laplacian(len(fv), mesh_edges(ff))
    w = harmonic_fill(lap, known, one[known].astype(float))
    w = np.clip(w, 0.0, 1.0)
    info = {"fixed_to_jaw": int(one.sum()), "fixed_to_root": int(zero.sum()),
            "free": int(len(fv) - len(known)), "margin_mm": margin, "band_mm": band,
            "lower_lip_mean_weight": float(w[np.setdiff1d(geo.lip_lower, corners)].mean()),
            "upper_lip_mean_weight": float(w[np.setdiff1d(geo.lip_upper, corners)].mean())}
    return w, info


def welded_normals(geo: HeadGeometry) -> np.ndarray:
    """Area-weighted face vertex normals computed with the two lip sheets welded along the mouth
    slit (each lower-boundary vertex mapped onto the coincident upper one), so that the coincident
    copies get one normal and normal-driven fields do not open or cross the slit."""
    from _mesh import vertex_normals

    fv, ff = geo.verts["face"], geo.faces["face"]
    upper = geo.lip_upper
    d, j = cKDTree(fv[upper]).query(fv[geo.lip_lower])
    remap = np.arange(len(fv))
    close = d < 1e-3
    remap[geo.lip_lower[close]] = upper[j[close]]
    n = vertex_normals(fv, remap[ff])
    n[geo.lip_lower[close]] = n[upper[j[close]]]
    return n


# -------------------------------------------------------------------------------------------------
# jaw limits
# -------------------------------------------------------------------------------------------------


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def lower_incisal_edge(geo: HeadGeometry) -> np.ndarray:
    """Tip of the lower central incisors: the highest mandible vertex within 4 mm of the midline
    in front of the second molars."""
    v = geo.verts["mandible"]
    y_min = geo.point("sub_M2_R")[1] if geo.has("sub_M2_R") else v[:, 1].max() - 25.0
    sel = np.flatnonzero((np.abs(v[:, 0] - geo.point("pogonion")[0]) < 4.0) & (v[:, 1] > y_min))
    return v[sel[np.argmax(v[sel, 2])]]


def opening_angle(incisor: np.ndarray, joint: np.ndarray, opening: float) -> float:
    """Rotation (rad) about the inter-condylar axis (+x through ``joint``) that moves ``incisor`` by
    the chord ``opening`` mm (the interincisal distance, measured incisal edge to incisal edge).
    NEGATIVE: in RAS a positive rotation about +x lifts points in front of the axis (closes)."""
    reach = float(np.hypot(*(incisor - joint)[1:]))
    return -2.0 * float(np.arcsin(min(opening / (2.0 * reach), 1.0)))


def anatomical_to_head(angles: np.ndarray) -> np.ndarray:
    """Head-frame intrinsic XYZ angles of a jaw rotation given as anatomical angles
    (opening, roll, yaw) in ``JAW_FRAME = diag(-1, -1, 1)``: R_head = F R_anat F^T, i.e.
    Rx(-opening) Ry(-roll) Rz(yaw)."""
    a = np.asarray(angles, float)
    return np.array([-a[0], -a[1], a[2]])


def jaw_limits(geo: HeadGeometry, jaw_joint: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
    """Jaw rotation limits as anatomical angles (opening, roll, yaw) in rad, read in the frame
    ``JAW_FRAME = diag(-1, -1, 1)`` of ``anatomy.models.head_limits`` (a POSITIVE opening opens
    the mouth; in head-frame axis-angle that is a negative rotation about +x), and condylar offset
    limits (mm, head frame: +x right, +y protrusion, +z up)."""
    inc = lower_incisal_edge(geo)
    open_rad = -opening_angle(inc, jaw_joint, MAX_INTERINCISAL_OPENING_MM)
    reach = float(np.hypot(*(inc - jaw_joint)[1:]))
    yaw = float(np.arcsin(min(MAX_LATEROTRUSION_MM / max(inc[1] - jaw_joint[1], 1.0), 1.0)))
    lim = {
        "jaw_rotation_lower": np.array([0.0, -MAX_ROLL_RAD, -yaw]),
        "jaw_rotation_upper": np.array([open_rad, MAX_ROLL_RAD, yaw]),
        "jaw_offset_lower": np.array([-MAX_SIDE_SHIFT_MM, -MAX_RETRUSION_MM, -CONDYLE_DROP_MM]),
        "jaw_offset_upper": np.array([MAX_SIDE_SHIFT_MM, MAX_PROTRUSION_MM, 0.0]),
        "jaw_frame": np.diag([-1.0, -1.0, 1.0]),
    }
    info = {"lower_incisal_edge_mm": inc.round(3).tolist(), "condyle_to_incisor_mm": round(reach, 2),
            "max_interincisal_opening_mm": MAX_INTERINCISAL_OPENING_MM,
            "opening_rotation_rad": round(open_rad, 5), "opening_rotation_deg": round(float(np.degrees(open_rad)), 2),
            "laterotrusion_yaw_rad": round(yaw, 5), "condylar_side_shift_mm": MAX_SIDE_SHIFT_MM}
    return lim, info
