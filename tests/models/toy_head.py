"""A small synthetic head that follows the contract of the embedded default head (tests only).

Tissues ``skull``, ``mandible``, ``face`` (closed ellipsoid meshes, mm, RAS frame, origin
mid-porion); joints root + jaw (the jaw regressed from the two condyle vertices of the
mandible); spaces ``shape`` (skull + face), ``trait`` (mandibular advancement and maxillary
impaction, the face following), ``expression`` (face only); 9 jaw correctives on the face;
skeletal and soft-tissue landmarks; jaw limits in ``extras``.
"""

from __future__ import annotations

import math

import torch

from anatomy.io import ModelData, TissueSpec

TMJ = (0.0, 12.0, -8.0)
CHIN_DIR = (0.0, 68.0, -92.0)  # TMJ -> menton, mm
TRAIT_NAMES = ["mandibular_advancement", "maxillary_impaction"]
EXPRESSION_NAMES = ["smile", "pucker", "brow_raise"]
SKELETAL = ["nasion", "menton", "gonion_R"]
SOFT = ["pronasale", "soft_pogonion"]


def _ellipsoid(center: torch.Tensor, axes: torch.Tensor, n_lat: int, n_lon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """UV ellipsoid ``center + axes @ unit``; the unit points with longitude 0 / pi on the equator
    are ``+-axes[:, 0]``. Returns vertices ``(2 + (n_lat - 1) n_lon, 3)`` and outward triangles."""
    pts = [torch.tensor([0.0, 0.0, -1.0])]
    for i in range(1, n_lat):
        lat = -math.pi / 2 + math.pi * i / n_lat
        for j in range(n_lon):
            lon = 2 * math.pi * j / n_lon
            pts.append(torch.tensor([math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)]))
    pts.append(torch.tensor([0.0, 0.0, 1.0]))
    unit = torch.stack(pts).double()
    faces = []
    top = len(pts) - 1
    for j in range(n_lon):
        faces.append([0, 1 + (j + 1) % n_lon, 1 + j])
    for i in range(n_lat - 2):
        a, b = 1 + i * n_lon, 1 + (i + 1) * n_lon
        for j in range(n_lon):
            k = (j + 1) % n_lon
            faces += [[a + j, a + k, b + j], [a + k, b + k, b + j]]
    last = 1 + (n_lat - 2) * n_lon
    for j in range(n_lon):
        faces.append([last + j, last + (j + 1) % n_lon, top])
    return center + unit @ axes.t(), torch.tensor(faces, dtype=torch.long)


def _nearest_face(verts: torch.Tensor, faces: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    centroids = verts[faces].mean(1)
    return faces[int((centroids - point).norm(dim=1).argmin())]


def make_toy_head_model_data(seed: int = 0, dtype: torch.dtype = torch.float64) -> ModelData:
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    skull, skull_f = _ellipsoid(torch.tensor([0.0, 10.0, 30.0], dtype=f64), torch.diag(torch.tensor(
        [70.0, 95.0, 75.0], dtype=f64)), 6, 8)
    chin = torch.tensor(CHIN_DIR, dtype=f64)
    side = torch.linalg.cross(torch.tensor([1.0, 0.0, 0.0], dtype=f64), chin / chin.norm()) * 15.0
    axes = torch.stack([torch.tensor([50.0, 0.0, 0.0], dtype=f64), chin, side], 1)
    mand, mand_f = _ellipsoid(torch.tensor(TMJ, dtype=f64), axes, 4, 8)
    face, face_f = _ellipsoid(torch.tensor([0.0, 20.0, -10.0], dtype=f64), torch.diag(torch.tensor(
        [90.0, 125.0, 130.0], dtype=f64)), 7, 10)
    ns, nm, nf = len(skull), len(mand), len(face)
    v = ns + nm + nf
    template = torch.cat([skull, mand, face])
    face_ids = torch.arange(ns + nm, v)
    mand_ids = torch.arange(ns, ns + nm)

    # condyles: the mandible's equator points at +-x (longitude 0 and pi)
    lat_mid = 1 + (4 // 2 - 1) * 8
    condyles = [ns + lat_mid + 0, ns + lat_mid + 4]
    jreg = torch.zeros(2, v, dtype=f64)
    jreg[0, :ns] = 1.0 / ns
    jreg[1, condyles] = 0.5

    weights = torch.zeros(v, 2, dtype=f64)
    weights[:ns, 0] = 1.0
    weights[ns:ns + nm, 1] = 1.0
    jaw_w = torch.sigmoid((-face[:, 2] - 40.0) / 10.0) * torch.sigmoid((face[:, 1] - 10.0) / 10.0)
    weights[ns + nm:, 1] = jaw_w
    weights[ns + nm:, 0] = 1.0 - jaw_w

    # spaces (normalised: one standard deviation each)
    shape = torch.zeros(4, v, 3, dtype=f64)
    shape[0] = template * 0.04  # overall size about the origin
    shape[1, :, 1] = template[:, 1] * 0.05  # depth
    shape[2, ns + nm:] = torch.randn(nf, 3, generator=gen, dtype=f64)  # soft tissue
    shape[3, :ns] = torch.randn(ns, 3, generator=gen, dtype=f64)
    shape[3, ns + nm:] = 0.5 * shape[3, :ns].mean(0)
    trait = torch.zeros(2, v, 3, dtype=f64)
    trait[0, mand_ids, 1] = 3.0  # mandibular advancement: bone +3 mm, the lower face follows by 0.8 of it
    trait[0, face_ids, 1] = 2.4 * jaw_w
    front = (skull[:, 1] > 40.0) & (skull[:, 2] < 30.0)
    trait[1, :ns][front, 2] = -2.0  # maxillary impaction
    trait[1, face_ids, 2] = -1.0 * torch.sigmoid((face[:, 1] - 40.0) / 10.0) * (1.0 - jaw_w)
    expression = torch.zeros(3, v, 3, dtype=f64)
    expression[:, ns + nm:] = torch.randn(3, nf, 3, generator=gen, dtype=f64) * 1.5
    pose_basis = torch.zeros(9, v, 3, dtype=f64)
    pose_basis[:, ns + nm:] = torch.randn(9, nf, 3, generator=gen, dtype=f64) * jaw_w[None, :, None] * 2.0

    # landmarks: barycentres of the faces nearest to named points
    def on(verts: torch.Tensor, faces: torch.Tensor, offset: int, point: tuple[float, float, float]) -> list[int]:
        return (_nearest_face(verts, faces, torch.tensor(point, dtype=f64)) + offset).tolist()

    tmj = torch.tensor(TMJ, dtype=f64)
    points = {
        "nasion": (skull, skull_f, 0, (0.0, 105.0, 30.0)),
        "menton": (mand, mand_f, ns, tuple((tmj + chin).tolist())),
        "gonion_R": (mand, mand_f, ns, (45.0, 0.0, -40.0)),
        "pronasale": (face, face_f, ns + nm, (0.0, 145.0, 0.0)),
        "soft_pogonion": (face, face_f, ns + nm, (0.0, 100.0, -110.0)),
    }
    names = SKELETAL + SOFT
    lm_ids = torch.tensor([on(*points[n]) for n in names], dtype=torch.long)
    lm_w = torch.tensor([[0.5, 0.3, 0.2]] * len(names), dtype=f64)

    extras = {
        "jaw_rotation_lower": torch.tensor([-0.05, -0.05, -0.15]),
        "jaw_rotation_upper": torch.tensor([0.6, 0.05, 0.15]),
        "jaw_offset_lower": torch.tensor([-3.0, -1.0, -6.0]),
        "jaw_offset_upper": torch.tensor([3.0, 8.0, 1.0]),
    }
    tissues = [TissueSpec("skull", 0, ns, skull_f), TissueSpec("mandible", ns, ns + nm, mand_f),
               TissueSpec("face", ns + nm, v, face_f)]
    meta = {
        "name": "toy-head", "units": "mm", "frame": "RAS, origin mid-porion",
        "trait_names": TRAIT_NAMES, "expression_names": EXPRESSION_NAMES,
        "landmark_groups": {"skeletal": SKELETAL, "soft_tissue": SOFT},
    }
    return ModelData(
        template=template.to(dtype), tissues=tissues, joint_names=["root", "jaw"], parents=[-1, 0],
        joint_regressor=jreg.to(dtype), skinning_weights=weights.to(dtype),
        spaces={"shape": shape.to(dtype), "trait": trait.to(dtype), "expression": expression.to(dtype)},
        pose_basis=pose_basis.to(dtype), pose_feature_joints=[1], landmark_names=names,
        landmark_vertices=lm_ids, landmark_weights=lm_w.to(dtype), extras=extras, meta=meta,
    )
