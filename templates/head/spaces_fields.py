"""Small smooth-field helpers shared by the head's shape, trait and expression spaces."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def smoothstep(x: np.ndarray | float, a: float, b: float) -> np.ndarray:
    """C1 ramp: 0 for x <= a, 1 for x >= b (a > b gives the mirrored ramp)."""
    t = np.clip((np.asarray(x, float) - a) / (b - a), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def bump(r: np.ndarray, radius: float) -> np.ndarray:
    """Compact C2 falloff (1 - (r/R)^2)^3 for r < R, 0 beyond; 1 at r = 0."""
    t = np.clip(1.0 - (np.asarray(r) / radius) ** 2, 0.0, 1.0)
    return t**3


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def small_rotation_x(points: np.ndarray, centre: np.ndarray, angle: float) -> np.ndarray:
    """Displacement of ``points`` under a rotation by ``angle`` (rad) about +x through ``centre``
    (exact, not linearised)."""
    c, s = np.cos(angle), np.sin(angle)
    q = points - centre
    out = np.zeros_like(points)
    out[:, 1] = (c - 1.0) * q[:, 1] - s * q[:, 2]
    out[:, 2] = s * q[:, 1] + (c - 1.0) * q[:, 2]
    return out


def shepard(points: np.ndarray, anchors: np.ndarray, values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-weighted (normalised) interpolation of ``values`` at ``anchors`` onto ``points``."""
    d2 = ((points[:, None, :] - anchors[None]) ** 2).sum(-1)
    w = np.exp(-d2 / (2.0 * sigma**2)) + 1e-300
    return (w @ values) / w.sum(1, keepdims=True)


def smooth_carry(points: np.ndarray, src: np.ndarray, disp: np.ndarray, sigma: float, k: int = 48) -> np.ndarray:
    """Displacement at ``points`` as the Gaussian-weighted mean of ``disp`` over the ``k`` nearest
    ``src`` points (the skin carried by the bone under it)."""
    d, idx = cKDTree(src).query(points, k=k)
    w = np.exp(-((d - d[:, :1]) ** 2) / (2.0 * sigma**2))
    w /= w.sum(1, keepdims=True)
    return np.einsum("nk,nkc->nc", w, disp[idx])


def nearest_vertex(verts: np.ndarray, p: np.ndarray) -> int:
    return int(np.argmin(np.linalg.norm(verts - p, axis=1)))


def soft_point(face_v: np.ndarray, bone_pt: np.ndarray, direction: np.ndarray, tube: float = 5.0) -> int | None:
    """Face vertex hit first by the ray ``bone_pt + t * direction`` (t > 0): the vertex within
    ``tube`` mm of the ray with the smallest t; None when the ray misses the face."""
    d = unit(np.asarray(direction, float))
    q = face_v - bone_pt
    t = q @ d
    off = np.linalg.norm(q - t[:, None] * d, axis=1)
    ok = np.flatnonzero((t > 0) & (off < tube))
    if not len(ok):
        return None
    return int(ok[np.argmin(t[ok] + 0.5 * off[ok])])
