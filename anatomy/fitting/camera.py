"""A pinhole camera with known intrinsics: projection of world points to pixels, and triangulation.

Convention (OpenCV): the camera looks along its +z axis, x to the right and y down in the image;
a world point ``p`` (mm) is ``q = R p + t`` in the camera frame and lands on pixel
``(fx q_x / q_z + cx, fy q_y / q_z + cy)``. ``rotation``/``translation`` are the world -> camera
extrinsics (``R``, ``t``); the camera centre is ``-R^T t``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.errors import ParameterError, ShapeError

__all__ = ["PinholeCamera", "triangulate"]


def _matrix(value: object, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float64)
    if tuple(t.shape) != shape or not bool(torch.isfinite(t).all()):
        raise ShapeError(f"camera {name} must be {shape} finite numbers, got shape {tuple(t.shape)}.")
    return t


@dataclass(frozen=True)
class PinholeCamera:
    """Intrinsics ``fx, fy`` (pixels per unit focal length), ``cx, cy`` (principal point, pixels) and
    the world -> camera extrinsics ``rotation (3, 3)``, ``translation (3,)`` (mm); default: the
    camera at the world origin looking along +z."""

    fx: float
    fy: float
    cx: float
    cy: float
    rotation: torch.Tensor = field(default_factory=lambda: torch.eye(3, dtype=torch.float64))
    translation: torch.Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.float64))

    def __post_init__(self) -> None:
        for name in ("fx", "fy"):
            value = float(getattr(self, name))
            if not value > 0:
                raise ParameterError(f"camera {name} must be a positive focal length in pixels, got {value}.")
        rot = _matrix(self.rotation, "rotation", (3, 3))
        if float((rot.T @ rot - torch.eye(3, dtype=rot.dtype)).abs().max()) > 1e-5 or float(torch.det(rot)) < 0:
            raise ParameterError("camera rotation must be a rotation matrix (orthonormal, det +1).")
        object.__setattr__(self, "rotation", rot)
        object.__setattr__(self, "translation", _matrix(self.translation, "translation", (3,)))

    @classmethod
    def looking_at(cls, eye: object, target: object, *, fx: float, fy: float | None = None, cx: float = 0.0,
                   cy: float = 0.0, up: object = (0.0, 1.0, 0.0)) -> PinholeCamera:
        """A camera at ``eye`` whose optical axis points at ``target`` (world mm); image y points along
        ``-up`` (image rows grow downwards)."""
        e, c, u = (torch.as_tensor(v, dtype=torch.float64) for v in (eye, target, up))
        z = torch.nn.functional.normalize(c - e, dim=0)
        x = torch.linalg.cross(z, u)
        if float(x.norm()) < 1e-9:
            raise ParameterError("looking_at: up is parallel to the viewing direction; pass another up vector.")
        x = x / x.norm()
        y = torch.linalg.cross(z, x)
        rot = torch.stack([x, y, z])
        return cls(fx, fx if fy is None else fy, cx, cy, rot, -rot @ e)

    def to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """World points ``(..., 3)`` -> camera-frame points ``(..., 3)``."""
        rot = self.rotation.to(points.dtype).to(points.device)
        return points @ rot.T + self.translation.to(points.dtype).to(points.device)

    def project(self, points: torch.Tensor, *, min_depth: float = 1e-3) -> torch.Tensor:
        """World points ``(..., 3)`` (mm) -> pixels ``(..., 2)``; differentiable. Depths below ``min_depth``
        (points behind the camera) are clamped there, which keeps the value and gradient finite."""
        if points.shape[-1] != 3:
            raise ShapeError(f"points must be (..., 3), got {tuple(points.shape)}.")
        q = self.to_camera(points)
        z = q[..., 2].clamp_min(min_depth)
        return torch.stack([self.fx * q[..., 0] / z + self.cx, self.fy * q[..., 1] / z + self.cy], -1)

    def projection_matrix(self) -> torch.Tensor:
        """``(3, 4)`` float64 ``K [R | t]``."""
        k = torch.tensor([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=torch.float64)
        return k @ torch.cat([self.rotation, self.translation[:, None]], 1)


def triangulate(pixels: list[torch.Tensor], cameras: list[PinholeCamera],
                weights: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Linear (DLT) triangulation: ``pixels`` one ``(B, K, 2)`` per view -> world points ``(B, K, 3)``
    float64 (Hartley & Zisserman, *Multiple View Geometry*, 2nd ed., section 12.2); ``weights`` one
    ``(B, K)`` per view (0: the keypoint is not seen there). Needs two views."""
    if len(pixels) != len(cameras) or len(pixels) < 2:
        raise ParameterError(f"triangulate needs the same number (>= 2) of pixel sets and cameras, got "
                             f"{len(pixels)} and {len(cameras)}.")
    rows = []
    for i, (px, cam) in enumerate(zip(pixels, cameras)):
        p = cam.projection_matrix().to(px.device)
        px = px.double()
        w = torch.ones(px.shape[:-1], dtype=torch.float64, device=px.device) if weights is None else weights[i].double()
        rows.append(w[..., None] * (px[..., 0:1] * p[2] - p[0]))
        rows.append(w[..., None] * (px[..., 1:2] * p[2] - p[1]))
    a = torch.stack(rows, -2)  # (B, K, 2V, 4)
    vh = torch.linalg.svd(a).Vh
    h = vh[..., -1, :]
    return h[..., :3] / h[..., 3:].where(h[..., 3:].abs() > 1e-12, torch.full_like(h[..., 3:], 1e-12))
