"""Label-map phantoms: a model output (hand or head) voxelised into tissue fractions and labels.

Each closed surface is filled by scan-line crossing counts (:mod:`.phantom_fill`; robust to small
holes such as the 8 open edges of the default skull), tissues in the order bone, muscle, skin: a
sub-sample belongs to the first surface it is inside.

Head skin: the default face is an open sheet. It is closed by fanning each boundary loop to the
loop's centroid (the big rim becomes a cap behind the face, mouth/eye openings are shut), and
"inside the skin" is inside that closed surface; bone outside it stays bone in air.

Bone: voxels whose centre lies within ``cortical_mm`` of the bone surface (Euclidean distance
transform of the voxel bone mask, less half a voxel) are cortical, deeper ones cancellous. The
default skull is a solid outer hull, so skull bone deeper than ``skull_shell_mm`` (7 mm, near the
mean cranial vault thickness of adults, e.g. Lynnerup, Forensic Sci. Int. 147 (2005) 1-6) is the
cranial cavity and is given the soft-tissue label (MUSCLE). Teeth: skull bone within ``teeth_mm``
below the upper alveolar plane (prosthion, supra_M2_R/L) and mandible bone within ``teeth_mm``
above the lower one (infradentale, sub_M2_R/L), no further back than 8 mm behind the second-molar
landmarks; each plane moves with its bone, so an open jaw keeps its teeth.

Partial volume: each voxel is sampled ``supersample**3`` times; ``fractions[name]`` holds the
share of each label (they sum to 1) and the label map takes the largest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Any

import numpy as np
from scipy import ndimage

from ..core.errors import ParameterError, ShapeError
from .phantom_fill import cap_holes, fill_columns
from .volume import Volume

__all__ = ["PhantomTissue", "grid_bytes", "phantom_labels", "tissue_fractions", "voxel_spacing"]


class PhantomTissue(IntEnum):
    """Label codes of a phantom (``fractions`` keys are the lower-case names)."""

    AIR = 0
    SKIN = 1  # skin and subcutaneous fat (everything inside the skin that is neither muscle nor bone)
    MUSCLE = 2  # muscle / other soft tissue (also the cranial cavity of the head)
    CORTICAL = 3
    CANCELLOUS = 4
    TEETH = 5


_MAX_BYTES = 2 << 30  # default memory limit
# peak memory per voxel, measured on the default head at 1 mm (float32 fractions and per-surface
# shares, float64 bone depths, float32 voxel centres, masks and their temporaries)
_BYTES_PER_VOXEL = 96
_SLAB_SAMPLES = 1 << 23  # sub-samples filled per slab


Mesh = tuple[np.ndarray, np.ndarray]
Spacing = float | Sequence[float] | np.ndarray  # mm: one number (isotropic) or per axis x, y, z
_ROLE_OF = {"bones": "bone", "bone": "bone", "muscles": "muscle", "muscle": "muscle", "skin": "skin"}


def _meshes(value: Any, name: str) -> list[Mesh]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        verts = np.asarray(item[0], dtype=np.float64)
        faces = np.asarray(item[1], dtype=np.int64)
        if verts.ndim != 2 or verts.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
            raise ShapeError(f"phantom tissue {name!r}: need vertices (V, 3) and faces (F, 3); got "
                             f"{verts.shape} and {faces.shape}.")
        out.append((verts, faces))
    return out


def _from_output(output: Any, index: int | None) -> tuple[dict[str, list[Mesh]], dict[str, np.ndarray]]:
    """Closed surfaces per role (``skin``, ``muscle``, ``bone``, ``skull``, ``mandible``) and landmarks."""
    if output.batch_size > 1 and index is None:
        raise ParameterError(f"the output holds {output.batch_size} samples; pick one with index=0..."
                             f"{output.batch_size - 1}.")
    i = 0 if index is None else index
    if not 0 <= i < output.batch_size:
        raise ParameterError(f"index={index} is out of range for a batch of {output.batch_size}.")

    def mesh(name: str) -> Mesh:
        return (output.tissue(name)[i].detach().cpu().double().numpy(), output.faces(name).cpu().numpy())

    names = set(output.tissue_names)
    marks = {} if output.landmarks is None else {
        n: output.landmarks[i, j].detach().cpu().double().numpy() for j, n in enumerate(output.landmark_names)}
    if {"skull", "mandible", "face"} <= names:
        return {"skin": [cap_holes(*mesh("face"))], "skull": [mesh("skull")], "mandible": [mesh("mandible")]}, marks
    roles = {role: [mesh(name)] for name, role in _ROLE_OF.items() if name in names}
    if "skin" in roles and "bone" in roles:
        return roles, marks
    raise ParameterError(f"phantom_labels knows hands and the toy model (bone(s), muscle(s), skin) and heads (skull, "
                         f"mandible, face); "
                         f"this output has {sorted(names)}. Pass a dict of (vertices, faces) per role instead.")


def _mm(size: np.ndarray) -> str:
    return f"{size[0]:g}" if np.all(size == size[0]) else "x".join(f"{s:g}" for s in size)


def _plane(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> tuple[np.ndarray, float]:
    normal = np.cross(p1 - p0, p2 - p0)
    normal = normal / np.linalg.norm(normal) * (1.0 if normal[2] >= 0 else -1.0)  # pointing up (+z, RAS)
    return normal, float(normal @ p0)


def _teeth_zone(centres: np.ndarray, marks: dict[str, np.ndarray],
                teeth_mm: float) -> tuple[np.ndarray, np.ndarray, list[list[float]]]:
    """Masks (upper, lower) over ``centres (..., 3)`` of the tooth-bearing slabs (see module doc) and
    filling sites (each second molar's landmark moved 0.7 ``teeth_mm`` into the mouth)."""
    zones, sites = [], []
    for front, right, left, side in (("prosthion", "supra_M2_R", "supra_M2_L", -1.0),
                                     ("infradentale", "sub_M2_R", "sub_M2_L", 1.0)):
        p0, p1, p2 = marks[front], marks[right], marks[left]
        normal, offset = _plane(p0, p1, p2)
        height = side * (centres @ normal - offset)  # into the mouth from the alveolar plane
        molars = 0.5 * (p1 + p2)
        forward = p0 - molars
        forward -= normal * (forward @ normal)
        forward /= np.linalg.norm(forward)
        ahead = (centres - molars) @ forward
        zones.append((height >= 0) & (height <= teeth_mm) & (ahead >= -8.0))
        sites += [(p + side * 0.7 * teeth_mm * normal).tolist() for p in (p1, p2)]
    return zones[0], zones[1], sites


def _depth(solid: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Depth (mm) of each voxel centre of ``solid`` below its surface; the transform runs on its bounding box.

    The distance to the nearest outside voxel centre less half a voxel (for anisotropic voxels
    half their mean size: exact for a surface across the axis of that mean size, off by less than
    half the spread of the sizes otherwise)."""
    depth = np.zeros(solid.shape, dtype=np.float64)
    hit = np.argwhere(solid)
    if len(hit) == 0:
        return depth
    box = tuple(slice(max(lo - 1, 0), hi + 2) for lo, hi in zip(hit.min(0), hit.max(0), strict=True))
    sampling = [float(s) for s in spacing]
    depth[box] = ndimage.distance_transform_edt(solid[box], sampling=sampling) - float(np.mean(spacing)) / 2
    return depth


def voxel_spacing(spacing: Any) -> np.ndarray:
    """``spacing`` (a number or a sequence of 3, mm per voxel axis x, y, z) as a float64 ``(3,)`` array."""
    try:
        arr = np.asarray(spacing, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.array([np.nan])
    if arr.ndim == 0:
        arr = np.repeat(arr, 3)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ParameterError(f"spacing must be a positive number of mm or three of them (x, y, z); got {spacing!r}.")
    return arr


def grid_bytes(lo: Any, hi: Any, spacing: Any) -> tuple[tuple[int, int, int], int]:
    """Voxel grid ``(X, Y, Z)`` from the first voxel centre ``lo`` to at least ``hi`` (mm; the surfaces'
    bounding box grown by the margin) and its estimated peak memory in bytes (compared with ``max_bytes``)."""
    size = voxel_spacing(spacing)
    span = np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64)
    x, y, z = (int(s) for s in np.ceil(span / size).astype(np.int64) + 1)
    return (x, y, z), x * y * z * _BYTES_PER_VOXEL


def tissue_fractions(source: Any, *, spacing: Spacing = 1.0, margin: float = 5.0, supersample: int = 2,
                     index: int | None = None, cortical_mm: float = 1.5, skull_shell_mm: float = 7.0,
                     teeth_mm: float = 10.0, max_bytes: int = _MAX_BYTES,
                     ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """Voxel grid affine ``(4, 4)``, per-label fractions ``(X, Y, Z)`` float32 and extra facts
    (``filling_sites`` of a head) (see :func:`phantom_labels`)."""
    size = voxel_spacing(spacing)
    if not np.isfinite(margin) or margin < 0:
        raise ParameterError(f"margin must be >= 0 mm; got {margin}.")
    if int(supersample) != supersample or not 1 <= supersample <= 8:
        raise ParameterError(f"supersample must be an integer 1..8 (sub-samples per voxel axis); got {supersample}.")
    n = int(supersample)
    if isinstance(source, Mapping):
        unknown = set(source) - {"skin", "muscle", "bone"}
        if unknown:
            raise ParameterError(f"unknown phantom roles {sorted(unknown)}; use 'skin', 'muscle' and 'bone'.")
        roles = {k: _meshes(v, k) for k, v in source.items()}
        marks: dict[str, np.ndarray] = {}
    else:
        roles, marks = _from_output(source, index)
    points = np.concatenate([v for meshes in roles.values() for v, _ in meshes])
    if not np.all(np.isfinite(points)):
        raise ParameterError("the surfaces have NaN or Inf vertices.")
    lo, hi = points.min(0) - margin, points.max(0) + margin
    shape, need = grid_bytes(lo, hi, size)
    if need > max_bytes:
        raise ParameterError(f"a {shape[0]}x{shape[1]}x{shape[2]} phantom at {_mm(size)} mm needs about "
                             f"{need / 2**30:.1f} GiB (limit {max_bytes / 2**30:.1f} GiB): use a coarser spacing or "
                             f"raise max_bytes.")
    affine = np.diag([*size, 1.0])
    affine[:3, 3] = lo
    step = size / n
    origin = lo - size / 2 + step / 2
    inside = {role: np.zeros(shape, dtype=np.float32) for role in roles}
    slab = max(1, _SLAB_SAMPLES // (shape[1] * shape[2] * n ** 3))
    for x0 in range(0, shape[0], slab):
        nxv = min(slab, shape[0] - x0)
        fine = (nxv * n, shape[1] * n, shape[2] * n)
        o = origin + np.array([x0 * size[0], 0.0, 0.0])
        covered = np.zeros(fine, dtype=bool)
        for role in ("bone", "skull", "mandible", "muscle", "skin"):  # one tissue per sub-sample, bone first
            if role not in roles:
                continue
            mask = np.zeros(fine, dtype=bool)
            for verts, faces in roles[role]:
                mask |= fill_columns(verts, faces, o, step, fine)
            mask &= ~covered
            covered |= mask
            inside[role][x0:x0 + nxv] = mask.reshape(nxv, n, shape[1], n, shape[2], n).mean(axis=(1, 3, 5))
    frac = {t.name.lower(): np.zeros(shape, dtype=np.float32) for t in PhantomTissue}
    frac["skin"] += inside.get("skin", 0.0)
    frac["muscle"] += inside.get("muscle", 0.0)
    depth_of = {}
    for role in ("bone", "skull", "mandible"):
        if role in roles:
            depth_of[role] = _depth(inside[role] >= 0.5, size)
    centres = None
    if marks and all(k in marks for k in ("prosthion", "supra_M2_R", "infradentale", "sub_M2_R")):
        centres = np.moveaxis(np.indices(shape, dtype=np.float32), 0, -1)
        centres *= size.astype(np.float32)
        centres += lo.astype(np.float32)
    upper = lower = np.zeros(shape, dtype=bool)
    facts: dict[str, Any] = {}
    if centres is not None and "skull" in roles:
        upper, lower, facts["filling_sites"] = _teeth_zone(centres, marks, teeth_mm)
    for role, depth in depth_of.items():
        share = inside[role]
        teeth = upper if role == "skull" else lower if role == "mandible" else np.zeros(shape, dtype=bool)
        cavity = (depth > skull_shell_mm) if role == "skull" else np.zeros(shape, dtype=bool)
        cortical = (depth <= cortical_mm) & ~teeth & ~cavity
        frac["teeth"] += np.where(teeth, share, 0)
        frac["muscle"] += np.where(cavity & ~teeth, share, 0)
        frac["cortical"] += np.where(cortical, share, 0)
        frac["cancellous"] += np.where(~cortical & ~teeth & ~cavity, share, 0)
    frac["air"] = np.clip(1.0 - sum(frac[t.name.lower()] for t in PhantomTissue if t != PhantomTissue.AIR), 0.0, 1.0)
    return affine, frac, facts


def phantom_labels(source: Any, spacing: Spacing = 1.0, margin: float = 5.0, supersample: int = 2, *,
                   index: int | None = None, cortical_mm: float = 1.5, skull_shell_mm: float = 7.0,
                   teeth_mm: float = 10.0, max_bytes: int = _MAX_BYTES) -> tuple[Volume, dict[str, np.ndarray]]:
    """A label map of a model output and its partial-volume fractions.

    Args:
        source: a hand (``bones``, ``muscles``, ``skin``) or head (``skull``, ``mandible``, ``face``)
            model output, or a dict ``{"skin" | "muscle" | "bone": (vertices, faces) or a list of them}``
            of closed surfaces (mm).
        spacing: voxel size in mm: one number (isotropic) or three (x, y, z, e.g. ``(0.48, 0.48, 1.0)``
            for a clinical head CT); the affine is ``diag(spacing)`` + origin. The grid spans the
            surfaces' bounding box + ``margin``.
        supersample: sub-samples per voxel axis for the partial-volume fractions.
        index: which sample of a batched output (required when the batch holds more than one).
        cortical_mm, skull_shell_mm, teeth_mm: see the module doc.
        max_bytes: refuse grids whose estimated memory exceeds this (a :class:`ParameterError`
            names the estimate).

    Returns:
        ``(labels, fractions)``: a ``Volume(modality="labels")`` of uint8 :class:`PhantomTissue` codes on an
        axis-aligned RAS+ grid (affine ``diag(spacing)`` + origin) and ``{"air", "skin", "muscle",
        "cortical", "cancellous", "teeth"}`` -> float32 ``(X, Y, Z)`` fractions summing to 1.
    """
    affine, frac, facts = tissue_fractions(source, spacing=spacing, margin=margin, supersample=supersample, index=index,
                                    cortical_mm=cortical_mm, skull_shell_mm=skull_shell_mm, teeth_mm=teeth_mm,
                                    max_bytes=max_bytes)
    stack = np.stack([frac[t.name.lower()] for t in PhantomTissue])
    labels = np.argmax(stack, axis=0).astype(np.uint8)
    size = voxel_spacing(spacing)
    meta = {"source": "phantom", "spacing_mm": float(size[0]) if np.all(size == size[0]) else size.tolist(),
            "supersample": int(supersample), **facts}
    return Volume(labels, affine, "labels", meta), frac
