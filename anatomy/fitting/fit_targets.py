"""What :func:`anatomy.fitting.fit` fits to: batched in-memory targets.

* :class:`Keypoints3D`: ``points (B, K, 3)`` (mm, or m with ``units``), optional ``confidence (B, K)``
  and ``names`` (default: the hand's 21 keypoints in order; for the head: landmark names, required).
* :class:`Keypoints2D`: ``points (B, K, 2)`` pixels seen by one :class:`~.camera.PinholeCamera`;
  several views are several targets.
* :class:`PointCloud`: ``points`` ``(B, N, 3)`` or a list of ``(N_b, 3)``, optional normals, the model
  tissue they sample (default ``skin`` for the hand, ``face`` for the head), and ``partial``: the cloud
  covers only part of that tissue (then only a trimmed target -> model term is used).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..core.errors import ParameterError, ShapeError
from .camera import PinholeCamera

__all__ = ["Keypoints2D", "Keypoints3D", "PointCloud", "Target", "as_targets", "batch_of"]


def _points(value: Any, name: str, width: int) -> torch.Tensor:
    t = torch.as_tensor(value)
    if not t.is_floating_point():
        t = t.double()
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3 or t.shape[-1] != width or t.shape[1] < 1:
        raise ShapeError(f"{name} must be (B, K, {width}) (or (K, {width}) for one target), got {tuple(t.shape)}.")
    if not bool(torch.isfinite(t).all()):
        raise ParameterError(f"{name} holds NaN or inf; give missing points confidence 0 and any finite value.")
    return t


def _confidence(value: Any, points: torch.Tensor) -> torch.Tensor:
    if value is None:
        return torch.ones(points.shape[:2], dtype=points.dtype, device=points.device)
    c = torch.as_tensor(value, dtype=points.dtype, device=points.device)
    if c.dim() == 1:
        c = c[None]
    if c.shape != points.shape[:2] or not bool(torch.isfinite(c).all()) or bool((c < 0).any()):
        raise ShapeError(f"confidence must be (B, K) = {tuple(points.shape[:2])} non-negative finite values, "
                         f"got {tuple(c.shape)}.")
    return c.expand(points.shape[0], -1)


def _names(names: Sequence[str] | None, count: int) -> tuple[str, ...] | None:
    if names is None:
        return None
    out = tuple(str(n) for n in names)
    if len(out) != count:
        raise ShapeError(f"names has {len(out)} entries but the points have {count} keypoints; give one name each.")
    return out


class _Confident:
    """Keypoints with ``confidence (B, K)`` set in ``__post_init__``."""

    confidence: torch.Tensor | None

    @property
    def weight(self) -> torch.Tensor:
        """``(B, K)`` confidences (ones when none were given)."""
        assert self.confidence is not None  # set in __post_init__
        return self.confidence


@dataclass(frozen=True)
class Keypoints3D(_Confident):
    """3D keypoints ``points (B, K, 3)``; see the module text."""

    points: torch.Tensor
    confidence: torch.Tensor | None = None
    names: Sequence[str] | None = None

    def __post_init__(self) -> None:
        pts = _points(self.points, "Keypoints3D.points", 3)
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "confidence", _confidence(self.confidence, pts))
        object.__setattr__(self, "names", _names(self.names, pts.shape[1]))


@dataclass(frozen=True)
class Keypoints2D(_Confident):
    """2D keypoints ``points (B, K, 2)`` in pixels of ``camera``; see the module text."""

    points: torch.Tensor
    camera: PinholeCamera
    confidence: torch.Tensor | None = None
    names: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.camera, PinholeCamera):
            raise ParameterError(f"Keypoints2D.camera must be a PinholeCamera, got {type(self.camera).__name__}.")
        pts = _points(self.points, "Keypoints2D.points", 2)
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "confidence", _confidence(self.confidence, pts))
        object.__setattr__(self, "names", _names(self.names, pts.shape[1]))


@dataclass(frozen=True)
class PointCloud:
    """Points sampling one model tissue: ``points (B, N, 3)`` or a list of ``(N_b, 3)``; see the module text."""

    points: Any
    normals: Any = None
    tissue: str | None = None
    partial: bool = False

    def __post_init__(self) -> None:
        clouds = list(self.points) if isinstance(self.points, (list, tuple)) else list(_points(self.points,
                                                                                               "PointCloud.points", 3))
        clouds = [_points(c, f"PointCloud.points[{i}]", 3)[0] for i, c in enumerate(clouds)]
        if any(c.shape[0] < 10 for c in clouds):
            raise ShapeError("each point cloud needs at least 10 points.")
        object.__setattr__(self, "points", clouds)
        if self.normals is not None:
            nrm = list(self.normals) if isinstance(self.normals, (list, tuple)) else list(torch.as_tensor(self.normals)
                                                                                         .reshape(len(clouds), -1, 3))
            nrm = [torch.nn.functional.normalize(torch.as_tensor(n, dtype=c.dtype).reshape(-1, 3), dim=-1)
                   for n, c in zip(nrm, clouds)]
            if len(nrm) != len(clouds) or any(n.shape != c.shape for n, c in zip(nrm, clouds)):
                raise ShapeError("PointCloud.normals must match the points one to one.")
            object.__setattr__(self, "normals", nrm)


Target = Keypoints3D | Keypoints2D | PointCloud


def as_targets(targets: Any) -> list[Target]:
    """One target or a sequence of them -> a checked list (all with the same batch size)."""
    items = list(targets) if isinstance(targets, (list, tuple)) else [targets]
    if not items:
        raise ParameterError("fit needs at least one target (Keypoints3D, Keypoints2D or PointCloud).")
    for t in items:
        if not isinstance(t, (Keypoints3D, Keypoints2D, PointCloud)):
            raise ParameterError(f"targets must be Keypoints3D, Keypoints2D or PointCloud objects (or a file path "
                                 f"for anatomy.fit), got {type(t).__name__}.")
    sizes = {batch_of(t) for t in items}
    if len(sizes) != 1:
        raise ShapeError(f"all targets must have the same batch size, got {sorted(sizes)}.")
    return items


def batch_of(target: Target) -> int:
    return len(target.points) if isinstance(target, PointCloud) else int(target.points.shape[0])
