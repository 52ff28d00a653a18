"""A small built-in articulated model: a three-segment "finger" made of tubes, in millimetres.

It stands in for the real models in demos and tests: it has every part a
:class:`~anatomy.io.model_data.ModelData` can hold (two tissues, one with tetrahedra,
per-vertex parts, a shape space, pose correctives, landmarks, an extra tensor) while
staying a few hundred vertices. It is deterministic for a given ``seed``.

Geometry: the finger points along +y from the origin, its back (dorsal side) faces +z
and it flexes about the x axis. Tissue ``bone`` holds one closed tube per segment
(parts ``proximal``, ``middle``, ``distal``), tissue ``skin`` a closed outer tube with a
rounded tip plus, when ``with_tets`` is true, an inner layer of vertices and the
tetrahedra filling the soft-tissue shell between the two (``extras['skin_surface_mask']``
marks the surface vertices). Joints: ``mcp`` (root, at the origin), ``pip``, ``dip`` and the
fingertip ``tip``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from ..core.errors import ParameterError
from .model_data import ModelData, TissueSpec

__all__ = ["make_toy_model_data"]

_SEGMENTS = (40.0, 25.0, 20.0)  # proximal, middle, distal phalanx lengths in mm (index-finger-like)
_JOINTS = ("mcp", "pip", "dip", "tip")
_BONES = ("proximal", "middle", "distal")
_BONE_RADIUS = 4.0
_SKIN_RADIUS = 9.0
_INNER_RADIUS = 6.5
_JOINT_GAP = 1.5  # half the space between two bones at a joint
_BLEND_WIDTH = 2.5  # mm, width of the skin's skinning-weight transition at a joint
_RING_STEP = 5.0  # mm between skin rings


class _Mesh:
    """Vertex / face accumulator in float64 numpy."""

    def __init__(self) -> None:
        self.verts: list[np.ndarray] = []
        self.count = 0

    def add(self, v: np.ndarray) -> np.ndarray:
        v = np.atleast_2d(v)
        ids = np.arange(self.count, self.count + len(v))
        self.verts.append(v)
        self.count += len(v)
        return ids

    def array(self) -> np.ndarray:
        return np.concatenate(self.verts, 0)


def _rings(mesh: _Mesh, ys: np.ndarray, radii: np.ndarray, n: int) -> np.ndarray:
    """Add rings of ``n`` vertices (x = r cos t, z = r sin t) at heights ``ys``; return ids (R, n)."""
    theta = 2.0 * np.pi * np.arange(n) / n
    pts = np.stack(
        [radii[:, None] * np.cos(theta), np.broadcast_to(ys[:, None], (len(ys), n)),
         radii[:, None] * np.sin(theta)],
        -1,
    )
    return mesh.add(pts.reshape(-1, 3)).reshape(len(ys), n)


def _tube_faces(ring_ids: np.ndarray, start_cap: int, end_cap: int) -> np.ndarray:
    """Outward-facing triangles of a closed tube: lateral quads split in two, fans at both ends."""
    n = ring_ids.shape[1]
    faces = []
    for i in range(ring_ids.shape[0] - 1):
        for j in range(n):
            a, b = ring_ids[i, j], ring_ids[i, (j + 1) % n]
            c, d = ring_ids[i + 1, j], ring_ids[i + 1, (j + 1) % n]
            faces += [(a, c, b), (b, c, d)]
    for j in range(n):
        faces.append((start_cap, ring_ids[0, j], ring_ids[0, (j + 1) % n]))
        faces.append((end_cap, ring_ids[-1, (j + 1) % n], ring_ids[-1, j]))
    return np.asarray(faces, dtype=np.int64)


def _shell_tets(inner: np.ndarray, outer: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Tetrahedra filling the shell between two ring grids (R, n): 6 per hexahedral cell.

    The cells are split the Kuhn way (one tetrahedron per ordering of the three cell axes),
    which gives a conforming mesh; each tetrahedron is oriented to positive volume.
    """
    layers = (inner, outer)
    num_r, n = inner.shape
    tets = []
    for i in range(num_r - 1):
        for j in range(n):
            def corner(layer: int, di: int, dj: int, i: int = i, j: int = j) -> int:
                return int(layers[layer][i + di, (j + dj) % n])

            for order in itertools.permutations(range(3)):
                step = [0, 0, 0]
                path = [corner(0, 0, 0)]
                for axis in order:
                    step[axis] = 1
                    path.append(corner(step[0], step[1], step[2]))
                tets.append(path)
    t = np.asarray(tets, dtype=np.int64)
    p = verts[t]
    vol = np.einsum("ij,ij->i", np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), p[:, 3] - p[:, 0])
    flip = vol < 0
    t[flip, 2], t[flip, 3] = t[flip, 3].copy(), t[flip, 2].copy()
    return t


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def make_toy_model_data(
    *,
    num_shape: int = 3,
    with_tets: bool = True,
    ring_size: int = 12,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> ModelData:
    """Build the toy finger model (see the module docstring); deterministic for a given ``seed``.

    ``num_shape`` (0..3) shape components, normalised (one standard deviation each):
    0 overall length (+8 %), 1 girth (+10 %), 2 a smooth soft-tissue bulge of the skin
    (seeded). Pose correctives are driven by the ``pip`` and ``dip`` rotations: small
    (about 1 mm per unit of ``R - I``) seeded radial bulges of the skin around each joint.
    ``ring_size`` is the number of vertices around every ring (>= 3).
    """
    if not 0 <= num_shape <= 3:
        raise ParameterError(f"num_shape must be in [0, 3], got {num_shape}; the toy model has 3 components.")
    if ring_size < 3:
        raise ParameterError(f"ring_size must be >= 3, got {ring_size}; use e.g. 12.")
    if not dtype.is_floating_point:
        raise ParameterError(
            f"dtype must be a floating dtype, got {dtype}; use torch.float32 or torch.float64."
        )
    rng = np.random.default_rng(seed)
    n = ring_size
    joint_y = np.concatenate([[0.0], np.cumsum(_SEGMENTS)])  # mcp, pip, dip, tip
    length = float(joint_y[-1])

    # ---- bone tissue: one closed, waisted tube per segment -------------------------------
    bone = _Mesh()
    bone_faces, part_ids, bone_rings = [], [], []
    for s in range(len(_SEGMENTS)):
        y0 = joint_y[s] + (_JOINT_GAP if s > 0 else 0.0)
        y1 = joint_y[s + 1] - _JOINT_GAP
        t = np.linspace(0.0, 1.0, 5)
        ids = _rings(bone, y0 + (y1 - y0) * t, _BONE_RADIUS * (1.0 - 0.25 * np.sin(np.pi * t)), n)
        caps = bone.add(np.array([[0.0, y0 - 0.5 * _BONE_RADIUS, 0.0], [0.0, y1 + 0.5 * _BONE_RADIUS, 0.0]]))
        bone_faces.append(_tube_faces(ids, int(caps[0]), int(caps[1])))
        part_ids.append(np.full(ids.size + 2, s))
        bone_rings.append(ids)
    bone_v = bone.array()
    num_bone = len(bone_v)

    # ---- skin tissue: outer tube with a rounded tip (+ inner layer for the tets) ---------
    skin = _Mesh()
    y_base = -2.0
    num_lat = int(math.ceil((length - y_base) / _RING_STEP)) + 1
    phi = np.linspace(0.0, np.pi / 2, 5)[1:-1]  # hemisphere rings beyond the tip joint
    ys = np.concatenate([np.linspace(y_base, length, num_lat), length + _SKIN_RADIUS * np.sin(phi)])
    shape_r = np.concatenate([np.ones(num_lat), np.cos(phi)])
    outer = _rings(skin, ys, _SKIN_RADIUS * shape_r, n)
    caps = skin.add(np.array([[0.0, y_base - 1.0, 0.0], [0.0, length + _SKIN_RADIUS, 0.0]]))
    skin_faces = _tube_faces(outer, int(caps[0]), int(caps[1]))
    num_surface = skin.count
    inner = _rings(skin, ys, _INNER_RADIUS * shape_r, n) if with_tets else None
    skin_v = skin.array()
    skin_tets = None if inner is None else _shell_tets(inner, outer, skin_v)
    num_skin = len(skin_v)

    verts = np.concatenate([bone_v, skin_v], 0)
    num_v = len(verts)
    is_skin = np.arange(num_v) >= num_bone

    # ---- joints: regressed from bone ring centres ----------------------------------------
    num_j = len(_JOINTS)
    jreg = np.zeros((num_j, num_v))
    jreg[0, bone_rings[0][0]] = 1.0 / n
    for k in range(1, len(_SEGMENTS)):
        jreg[k, bone_rings[k - 1][-1]] = 0.5 / n
        jreg[k, bone_rings[k][0]] = 0.5 / n
    jreg[3, bone_rings[-1][-1]] = 1.0 / n

    # ---- skinning: bones rigid to their segment, skin blended smoothly at the joints -----
    weights = np.zeros((num_v, num_j))
    weights[np.arange(num_bone), np.concatenate(part_ids)] = 1.0
    y_skin = skin_v[:, 1]
    cum = [np.ones(num_skin)] + [_sigmoid((y_skin - joint_y[k]) / (_BLEND_WIDTH / 4)) for k in (1, 2)]
    cum.append(np.zeros(num_skin))
    for s in range(len(_SEGMENTS)):
        weights[num_bone:, s] = cum[s] - cum[s + 1]

    # ---- shape space ---------------------------------------------------------------------
    radial = np.zeros_like(verts)
    rho = np.hypot(verts[:, 0], verts[:, 2])
    on_ring = rho > 1e-9
    radial[on_ring, 0] = verts[on_ring, 0] / rho[on_ring]
    radial[on_ring, 2] = verts[on_ring, 2] / rho[on_ring]
    theta = np.arctan2(verts[:, 2], verts[:, 0])
    phase, direction = rng.uniform(0.0, 2.0 * np.pi, size=2)
    comps = [
        np.stack([np.zeros(num_v), 0.08 * verts[:, 1], np.zeros(num_v)], -1),
        0.1 * np.stack([verts[:, 0], np.zeros(num_v), verts[:, 2]], -1),
        (is_skin * 0.6 * np.sin(2 * np.pi * verts[:, 1] / length + phase)
         * (1.0 + np.cos(theta - direction)) * (rho / _SKIN_RADIUS))[:, None] * radial,
    ]
    shape_basis = np.stack(comps[:num_shape], 0) if num_shape else np.zeros((0, num_v, 3))

    # ---- pose correctives: radial skin bulges around pip and dip -------------------------
    feature_joints = [1, 2]
    coef = rng.normal(0.0, 1.0, size=(len(feature_joints), 9))
    pose_basis = np.zeros((9 * len(feature_joints), num_v, 3))
    for m, k in enumerate(feature_joints):
        bump = is_skin * np.exp(-(((verts[:, 1] - joint_y[k]) / 4.0) ** 2))
        for e in range(9):
            pose_basis[9 * m + e] = coef[m, e] * bump[:, None] * radial

    # ---- landmarks on the skin surface ---------------------------------------------------
    lm_names = ["tip"]
    lm_ids = [[int(caps[1]), int(outer[-1, 0]), int(outer[-1, 1])]]
    lm_w = [[1.0, 0.0, 0.0]]
    for k in (1, 2):
        i = int(np.argmin(np.abs(ys[: num_lat - 1] - joint_y[k])))
        for side, j in (("dorsal", n // 4), ("palmar", (3 * n) // 4)):
            a, b, c = outer[i, j], outer[i + 1, j], outer[i, (j + 1) % n]
            lm_names.append(f"{_JOINTS[k]}_{side}")
            lm_ids.append([int(a), int(b), int(c)])
            lm_w.append([0.5, 0.25, 0.25])
    lm_vertices = np.asarray(lm_ids, dtype=np.int64) + num_bone

    def f(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64).to(dtype)

    def i64(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.int64)

    tissues = [
        TissueSpec("bone", 0, num_bone, i64(np.concatenate(bone_faces)), None, list(_BONES),
                   i64(np.concatenate(part_ids))),
        TissueSpec("skin", num_bone, num_v, i64(skin_faces), None if skin_tets is None else i64(skin_tets)),
    ]
    mask = np.zeros(num_skin, dtype=bool)
    mask[:num_surface] = True
    return ModelData(
        template=f(verts),
        tissues=tissues,
        joint_names=list(_JOINTS),
        parents=[-1, 0, 1, 2],
        joint_regressor=f(jreg),
        skinning_weights=f(weights),
        spaces={"shape": f(shape_basis)},
        pose_basis=f(pose_basis),
        pose_feature_joints=feature_joints,
        landmark_names=lm_names,
        landmark_vertices=i64(lm_vertices),
        landmark_weights=f(np.asarray(lm_w)),
        extras={"skin_surface_mask": torch.as_tensor(mask)},
        meta={
            "name": "toy_finger",
            "units": "mm",
            "handedness": "right",
            "description": "Built-in three-segment tube finger (bone + skin tissues) for demos and tests.",
            "licence": "Apache-2.0",
            "provenance": f"anatomy.io.toy.make_toy_model_data(num_shape={num_shape}, with_tets={with_tets}, "
                          f"ring_size={ring_size}, seed={seed})",
        },
    )
