"""A pose PCA learned from fitted hand poses, in the layout ``Nimble(..., pose_mode="pca")`` reads.

The fitted poses ``(N, 20, 3)`` are axis-angle rows, one per bone, row 0 the global rotation. The PCA
is of rows 1..19 flattened to ``(N, 57)`` (the root is not part of a hand's pose space; ``pca`` mode
poses with a zero root). In the model's extras (see :class:`anatomy.Nimble`):

* ``pose_pca_basis (C, 57)``: orthonormal directions (rows), largest variance first;
* ``pose_pca_mean (57,)``: the mean pose;
* ``pose_pca_pm_std (C,)``: the standard deviation of each coefficient over the training poses;
* ``pose_pca_pm_mean (C,)``: zero (the coefficients are centred by construction),

so ``full = basis^T (theta * pm_std + pm_mean) + mean`` and ``theta ~ N(0, 1)`` over the training poses.

:func:`bulge_correctives` makes a known pose-corrective basis (smooth bulges at the joints) to test and
benchmark the learning of correctives against.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.errors import ParameterError, ShapeError
from .shape_space import fit_linear_space

__all__ = ["bulge_correctives", "pose_pca", "pose_pca_coefficients"]

#: ``Nimble(data, pose_mode="pca")`` keeps 30 components unless told otherwise.
NIMBLE_DEFAULT_COMPONENTS = 30


def _poses(value: Any) -> torch.Tensor:
    p = torch.as_tensor(value)
    if p.dim() != 3 or p.shape[1] < 2 or p.shape[2] != 3:
        raise ShapeError(f"poses must be (N, B, 3) axis-angle rows (one per bone, row 0 the root), e.g. (N, 20, 3) "
                         f"for a hand; got shape {tuple(p.shape)}.")
    if not p.is_floating_point() or not bool(torch.isfinite(p).all()):
        raise ParameterError("poses must be finite floating-point axis-angle values.")
    return p.double()


def pose_pca(poses: Any, *, components: int | None = None, variance: float = 0.999,
             pad_to: int = NIMBLE_DEFAULT_COMPONENTS) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The pose PCA extras of fitted poses ``(N, B, 3)`` (see the module docs) and a report.

    ``components`` (or the fewest explaining ``variance``) are learned, at most ``N - 1``. The basis is
    then completed with orthonormal directions of zero variance (``pm_std`` 0, so they move nothing) up
    to ``pad_to`` rows, so ``Nimble(data, pose_mode="pca")`` with its default 30 components loads it;
    the report's ``components`` says how many were learned.
    """
    p = _poses(poses)
    if p.shape[0] < 2:
        raise ShapeError(f"a pose PCA needs at least 2 poses; got {p.shape[0]}.")
    rows = p[:, 1:]  # (N, B - 1, 3): the root is not part of the pose space
    space = fit_linear_space(rows, components=components, variance=variance)
    k, d = space.num_components, rows.shape[1] * 3
    std = space.variance.sqrt()
    unit = space.basis.reshape(k, d) / std[:, None]
    total = min(max(k, pad_to), d)
    if total > k:  # orthonormal completion: the trailing columns of a full QR of the learned directions
        q, _ = torch.linalg.qr(unit.T, mode="complete")
        unit = torch.cat([unit, q[:, k:total].T], 0)
        std = torch.cat([std, std.new_zeros(total - k)])
    extras = {"pose_pca_basis": unit, "pose_pca_mean": space.mean.reshape(d), "pose_pca_pm_std": std,
              "pose_pca_pm_mean": std.new_zeros(total)}
    report = {"poses": int(p.shape[0]), "components": k, "stored": total,
              "explained": [round(float(e), 6) for e in space.explained]}
    return extras, report


def pose_pca_coefficients(extras: dict[str, torch.Tensor], poses: Any) -> torch.Tensor:
    """Normalised coefficients ``(N, C)`` of poses ``(N, B, 3)`` (root ignored) in a pose PCA's learned
    components (padding components, of zero ``pm_std``, get 0)."""
    p = _poses(poses)
    basis = extras["pose_pca_basis"].double()
    if basis.shape[1] != (p.shape[1] - 1) * 3:
        raise ShapeError(f"poses have {p.shape[1] - 1} non-root rows but the pose PCA has {basis.shape[1] // 3}.")
    std = extras["pose_pca_pm_std"].double()
    proj = (p[:, 1:].reshape(p.shape[0], -1) - extras["pose_pca_mean"].double()) @ basis.T
    theta = (proj - extras["pose_pca_pm_mean"].double()) / std.where(std > 0, torch.ones_like(std))
    return theta * (std > 0)


def bulge_correctives(template: torch.Tensor, weights: torch.Tensor, joints: torch.Tensor, parents: list[int],
                      feature_joints: list[int], *, amplitude: float = 4.0, sigma: float = 10.0,
                      seed: int = 0, rigid: torch.Tensor | None = None) -> torch.Tensor:
    """A synthetic pose-corrective basis ``(9 F, V, 3)`` (``ModelData.pose_basis`` convention): for feature
    joint ``j`` and entry ``e`` of ``R_j - I``, a bulge of ``amplitude`` mm along a random fixed direction,
    a Gaussian of ``sigma`` mm about the joint centre times the skinning weight of ``j`` and its parent
    (so it stays on the two bones the joint bends). Vertices of ``rigid (V,)`` (bool, e.g. the bones) get none."""
    w = (weights.to_dense() if weights.is_sparse else weights).double()
    x = template.double()
    g = torch.Generator().manual_seed(seed)
    basis = torch.zeros(9 * len(feature_joints), x.shape[0], 3, dtype=torch.float64)
    for i, j in enumerate(feature_joints):
        near = w[:, j] + (w[:, parents[j]] if parents[j] >= 0 else 0.0)
        bump = near * torch.exp(-(x - joints[j].double()).pow(2).sum(1) / (2 * sigma**2))
        d = torch.randn(9, 3, generator=g, dtype=torch.float64)
        basis[9 * i:9 * i + 9] = amplitude * bump[None, :, None] * (d / d.norm(dim=1, keepdim=True))[:, None]
    if rigid is not None:
        basis[:, torch.as_tensor(rigid, dtype=torch.bool)] = 0.0
    return basis
