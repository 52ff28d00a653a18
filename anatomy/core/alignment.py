"""Weighted Procrustes / similarity alignment (Kabsch-Umeyama), batched and differentiable.

Points are rows, rotations act on column vectors: a set ``X (N, 3)`` maps to ``s X R.T + t``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._geometry_common import (
    _check_points,
)
from .checks import (
    check_finite,
    check_like,
    check_shape,
    check_tensor,
)
from .errors import ParameterError, ShapeError

# --------------------------------------------------------------------------------------
# Procrustes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Similarity:
    """A similarity transform ``x -> scale * R x + t`` acting on row points.

    Attributes:
        rotation: ``(..., 3, 3)`` proper rotation (det +1).
        translation: ``(..., 3)``.
        scale: ``(...)``; ones when the fit had ``scale=False``.
    """

    rotation: torch.Tensor
    translation: torch.Tensor
    scale: torch.Tensor

    def apply(self, points: torch.Tensor) -> torch.Tensor:
        """Transform ``points (..., P, 3)`` (batch dims broadcast with the transform's)."""
        rotated = points @ self.rotation.transpose(-1, -2)
        return self.scale[..., None, None] * rotated + self.translation[..., None, :]

    def as_matrix(self) -> torch.Tensor:
        """The ``(..., 4, 4)`` homogeneous matrix acting on column vectors."""
        top = torch.cat([self.scale[..., None, None] * self.rotation, self.translation[..., :, None]], -1)
        bottom = torch.zeros_like(top[..., :1, :])
        bottom[..., 0, 3] = 1
        return torch.cat([top, bottom], -2)

    def inverse(self) -> Similarity:
        """The inverse transform ``y -> R^T (y - t) / scale``."""
        rt = self.rotation.transpose(-1, -2)
        inv_s = 1.0 / self.scale
        t = -inv_s[..., None] * (rt @ self.translation[..., :, None])[..., 0]
        return Similarity(rotation=rt, translation=t, scale=inv_s)


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    """The broadcast of two shapes, or None (``torch.broadcast_shapes`` imports sympy on first use: 1-2 s)."""
    n = max(len(a), len(b))
    out = []
    for x, y in zip((1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b):
        if x != y and 1 not in (x, y):
            return None
        out.append(y if x == 1 else x)
    return tuple(out)


def procrustes(
    source: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    scale: bool = False,
) -> Similarity:
    """Weighted least-squares similarity (or rigid) transform taking ``source`` onto ``target``.

    Minimises ``sum_i w_i |s R x_i + t - y_i|^2`` over rotations ``R`` (det +1), ``t`` and,
    when ``scale`` is True, ``s > 0`` (else ``s = 1``): the Kabsch algorithm with Umeyama's
    scale and reflection correction (Umeyama 1991, "Least-squares estimation of transformation
    parameters between two point patterns", eqs. 38-42, with weights).

    Args:
        source: ``(..., N, 3)`` float, ``N >= 3``.
        target: ``(..., N, 3)``, same dtype/device; batch dims broadcast with ``source``.
        weights: optional ``(..., N)`` non-negative weights (not all zero per batch entry).
        scale: also fit a uniform scale.

    Returns:
        :class:`Similarity` with ``apply(source) ~= target``.

    Degenerate cases (documented, not checked, because they depend on values):
        * collinear or coincident points (cross-covariance rank < 2): the rotation about the
          line is not determined; an arbitrary valid rotation is returned.
        * the gradient goes through ``torch.linalg.svd``; it is finite only when the singular
          values of the weighted cross-covariance are distinct (e.g. not for point sets with a
          rotational symmetry such as the vertices of a regular polygon), and it is inf/NaN
          when two of them coincide.
        * all source points equal with ``scale=True``: the variance is clamped to ``tiny``,
          which gives a huge scale; avoid it.
        * fewer than 3 points with non-zero weight behaves like the collinear case.
    """
    source = _check_points(source, "source", batched=True)
    target = _check_points(target, "target", batched=True)
    check_like(target, "target", source, "source")
    n = source.shape[-2]
    if target.shape[-2] != n:
        raise ShapeError(
            f"target must have as many points as source (N={n}), got shape {tuple(target.shape)}; "
            f"pass corresponding points."
        )
    if n < 3:
        raise ShapeError(
            f"procrustes needs at least 3 corresponding points, got N={n} (source shape "
            f"{tuple(source.shape)}); a rotation is not determined by fewer."
        )
    batch = _broadcast(tuple(source.shape[:-2]), tuple(target.shape[:-2]))
    if batch is None:
        raise ShapeError(
            f"the batch dims of source {tuple(source.shape)} and target {tuple(target.shape)} "
            f"do not broadcast; make them equal."
        )
    if weights is None:
        w = source.new_full((*batch, n), 1.0 / n)
    else:
        w = check_tensor(weights, "weights")
        check_shape(w, "weights", ["...", n])
        check_like(w, "weights", source, "source")
        check_finite(w, "weights")
        if bool((w < 0).any()):
            raise ParameterError("weights has negative entries; weights must be >= 0.")
        total = w.sum(-1, keepdim=True)
        if bool((total <= 0).any()):
            raise ParameterError(
                "weights are all zero for at least one batch entry; give each entry a positive weight."
            )
        w = w / total
    w3 = w[..., :, None]
    mu_x = (w3 * source).sum(-2)
    mu_y = (w3 * target).sum(-2)
    xc = source - mu_x[..., None, :]
    yc = target - mu_y[..., None, :]
    cov = (yc * w3).transpose(-1, -2) @ xc  # (..., 3, 3) = sum_i w_i y_i x_i^T
    u, sv, vh = torch.linalg.svd(cov)
    det = torch.linalg.det(u) * torch.linalg.det(vh)
    sign = torch.where(det < 0, -torch.ones_like(det), torch.ones_like(det))
    d = torch.stack([torch.ones_like(sign), torch.ones_like(sign), sign], -1)
    rot = u @ (d[..., :, None] * vh)
    if scale:
        var_x = (w * (xc * xc).sum(-1)).sum(-1)
        s = (sv * d).sum(-1) / var_x.clamp_min(torch.finfo(var_x.dtype).tiny)
    else:
        s = torch.ones_like(sign)
    t = mu_y - s[..., None] * (rot @ mu_x[..., :, None])[..., 0]
    return Similarity(rotation=rot, translation=t, scale=s)
