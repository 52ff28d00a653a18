"""Shared internals of the geometry modules: input checks, safe math, reductions, KD-tree helpers."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from .checks import (
    check_finite,
    check_floating,
    check_index_range,
    check_like,
    check_shape,
    check_tensor,
)
from .errors import DeviceError, ParameterError

Reduction = Literal["mean", "sum", "none"]

# Point/candidate pairs evaluated per chunk in the closest-point search (bounds memory).
_PAIRS_PER_CHUNK = 1 << 16
# KD-tree leaf size: larger leaves cut the search overhead for points far from the data.
_LEAFSIZE = 32
# Faces incident to this many nearest vertices join the closest-point candidates.
_NEAREST_VERTICES = 1


# --------------------------------------------------------------------------------------
# input checks and small safe primitives
# --------------------------------------------------------------------------------------


def _check_points(x: object, name: str, batched: bool) -> torch.Tensor:
    """A finite floating tensor of shape ``(..., P, 3)`` (or ``(P, 3)``) with ``P >= 1``."""
    t = check_tensor(x, name)
    check_shape(t, name, ["...", None, 3] if batched else [None, 3])
    check_floating(t, name)
    if t.numel() == 0:
        raise ParameterError(
            f"{name} is empty (shape {tuple(t.shape)}); pass at least one point and a non-empty batch."
        )
    check_finite(t, name)
    return t


def _check_faces(faces: object, name: str, n_vertices: int, ref: torch.Tensor) -> torch.Tensor:
    """Integer ``(F, 3)`` indices into ``n_vertices`` vertices, on ``ref``'s device; returns int64."""
    f = check_tensor(faces, name)
    check_shape(f, name, [None, 3])
    check_index_range(f, name, n_vertices)
    if f.shape[0] == 0:
        raise ParameterError(f"{name} has no faces (shape {tuple(f.shape)}); pass at least one face.")
    if f.device != ref.device:
        raise DeviceError(
            f"{name} is on {f.device} but the vertices are on {ref.device}; "
            f"move one of them with .to({str(ref.device)!r})."
        )
    return f.long()


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ParameterError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")


def _check_weights(w: object, name: str, n: int, ref: torch.Tensor) -> torch.Tensor:
    t = check_tensor(w, name)
    check_shape(t, name, [n])
    check_like(t, name, ref, "the points")
    check_finite(t, name)
    if bool((t < 0).any()):
        raise ParameterError(f"{name} has negative entries; weights must be >= 0.")
    if not bool((t > 0).any()):
        raise ParameterError(f"{name} are all zero; give at least one point a positive weight.")
    return t


def _safe_sqrt(sq: torch.Tensor) -> torch.Tensor:
    """``sqrt`` with value 0 and gradient 0 (not inf/NaN) where ``sq == 0``."""
    pos = sq > 0
    return torch.where(pos, torch.where(pos, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


def _safe_normalize(x: torch.Tensor) -> torch.Tensor:
    """Unit vectors along the last axis; zero (value and gradient) for zero-length vectors."""
    sq = (x * x).sum(-1, keepdim=True)
    ok = sq > torch.finfo(x.dtype).tiny
    norm = torch.where(ok, sq, torch.ones_like(sq)).sqrt()
    return torch.where(ok, x / norm, torch.zeros_like(x))


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` with 0 where ``den == 0`` (no inf/NaN in value or gradient)."""
    zero = den == 0
    return torch.where(zero, torch.zeros_like(num), num / torch.where(zero, torch.ones_like(den), den))


def _reduce(x: torch.Tensor, reduction: str, weights: torch.Tensor | None = None) -> torch.Tensor:
    if weights is not None:
        if reduction == "mean":
            return (x * weights).sum() / weights.sum()
        if reduction == "sum":
            return (x * weights).sum()
        return x * weights
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    return x


def _workers(n_queries: int) -> int:
    """KD-tree query threads: all cores for large queries, one for small ones (thread start-up)."""
    return -1 if n_queries >= 4096 else 1


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float64).numpy()
