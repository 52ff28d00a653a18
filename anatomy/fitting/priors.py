"""Robust data losses and the priors of the fits (shape, pose, joint limits).

Every term is per target ``(B,)`` so a batch of fits is a sum of independent problems. Residuals are
measured in units of the expected noise ``sigma`` (mm or pixels), so a squared residual of 1 is one
standard deviation and the priors (squared normalised coefficients) weigh against it as in a MAP fit.
"""

from __future__ import annotations

import torch

from ..core.errors import ParameterError

__all__ = ["ROBUST_LOSSES", "pose_prior", "robust", "shape_prior"]

ROBUST_LOSSES = ("l2", "huber", "cauchy", "geman_mcclure")


def robust(sq: torch.Tensor, kind: str, scale: float) -> torch.Tensor:
    """``rho(r^2)`` of squared normalised residuals ``sq``; ``scale`` is the residual (in sigmas) where
    the loss stops growing quadratically. ``rho(x) ~ x`` for small ``x`` for every kind.

    * ``l2``: ``x``; ``huber``: quadratic inside ``scale``, linear outside;
    * ``cauchy``: ``c^2 log(1 + x / c^2)``; ``geman_mcclure``: ``x c^2 / (x + c^2)`` (bounded:
      outliers stop pulling; Geman & McClure 1987, as used by SMPLify, Bogo et al. 2016).
    """
    c2 = float(scale) ** 2
    if kind == "l2":
        return sq
    if kind == "huber":
        r = sq.clamp_min(1e-12).sqrt()
        return torch.where(sq <= c2, sq, 2.0 * scale * r - c2)
    if kind == "cauchy":
        return c2 * torch.log1p(sq / c2)
    if kind == "geman_mcclure":
        return sq * c2 / (sq + c2)
    raise ParameterError(f"robust loss must be one of {ROBUST_LOSSES}, got {kind!r}.")


def shape_prior(coeffs: torch.Tensor) -> torch.Tensor:
    """``(B,)`` squared norm of normalised (N(0, 1)) coefficients ``(B, k)``: the Gaussian prior's -2 log p."""
    return coeffs.square().sum(-1)


def pose_prior(axis_angle: torch.Tensor) -> torch.Tensor:
    """``(B,)`` sum of squared joint angles (rad^2) of ``(B, J, 3)`` axis-angle rows: pulls towards rest."""
    return axis_angle.square().sum((-1, -2))
