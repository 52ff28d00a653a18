"""Linear spaces learned from meshes in correspondence: shape (PCA after generalised Procrustes) and
trait (PCA of paired pre/post displacements), in the layout of our model files.

* :func:`align_meshes`: generalised Procrustes analysis (Gower 1975, "Generalized Procrustes
  analysis", Psychometrika 40): every mesh is moved (rotation, translation, optionally a uniform
  scale) onto the mean of the aligned set, which is re-estimated until it stops moving.
* :func:`fit_linear_space`: principal components of ``samples - mean`` by a thin SVD. The basis is
  stored scaled by each component's standard deviation, so coefficient 1 is one standard deviation
  and the coefficients of the training set have unit variance — the convention of
  ``ModelData.spaces`` (:mod:`anatomy.io.model_data`).
* :func:`shape_space`: both, for shape spaces; :func:`trait_space`: the displacement space of paired
  scans (e.g. before and after surgery), aligned first on the anatomy that did not move.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..core.alignment import Similarity, procrustes
from ..core.errors import ParameterError, ShapeError

__all__ = ["LinearSpace", "align_meshes", "fit_linear_space", "shape_space", "trait_space"]


@dataclass(frozen=True)
class LinearSpace:
    """A mean and a scaled basis: ``mesh = mean + sum_k c_k basis[k]``.

    Attributes:
        mean: ``(V, 3)``.
        basis: ``(K, V, 3)``, component ``k`` scaled by its standard deviation.
        variance: ``(K,)`` variance of each component's coefficient before scaling (mm^2).
        explained: ``(K,)`` share of the total variance each component explains.
    """

    mean: torch.Tensor
    basis: torch.Tensor
    variance: torch.Tensor
    explained: torch.Tensor

    @property
    def num_components(self) -> int:
        return int(self.basis.shape[0])

    def coefficients(self, meshes: torch.Tensor) -> torch.Tensor:
        """Least-squares coefficients ``(N, K)`` of meshes ``(N, V, 3)`` (already aligned like the training set)."""
        x = _samples(meshes, "meshes", self.mean.shape[0]).to(self.basis)
        flat = self.basis.reshape(self.num_components, -1)
        # the directions are orthogonal, so least squares is a projection divided by the squared norms
        return ((x - self.mean).reshape(x.shape[0], -1) @ flat.T) / (flat * flat).sum(1)

    def reconstruct(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Meshes ``(N, V, 3)`` of coefficients ``(N, k)``, ``k <= K`` (missing ones are 0)."""
        c = torch.as_tensor(coefficients, dtype=self.basis.dtype, device=self.basis.device)
        if c.dim() != 2 or c.shape[1] > self.num_components:
            raise ShapeError(f"coefficients must be (N, k) with k <= {self.num_components}; got {tuple(c.shape)}.")
        k = c.shape[1]
        return self.mean + torch.einsum("nk,kvd->nvd", c, self.basis[:k])


def _samples(value: Any, name: str, vertices: int | None = None) -> torch.Tensor:
    x = torch.as_tensor(value)
    if not x.is_floating_point():
        x = x.double()
    if x.dim() != 3 or x.shape[-1] != 3 or (vertices is not None and x.shape[1] != vertices):
        want = f"(N, {vertices}, 3)" if vertices is not None else "(N, V, 3)"
        raise ShapeError(f"{name} must be {want} meshes in correspondence; got shape {tuple(x.shape)}.")
    if not bool(torch.isfinite(x).all()):
        raise ParameterError(f"{name} holds NaN or inf values; remove or repair those meshes.")
    return x.double()


def align_meshes(
    meshes: Any, *, scale: bool = False, weights: Any = None, iterations: int = 20, tol: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor, Similarity]:
    """Generalised Procrustes alignment of meshes ``(N, V, 3)`` in correspondence.

    Args:
        meshes: the meshes (mm).
        scale: also remove a uniform scale per mesh (the mean keeps the first mesh's size).
        weights: optional ``(V,)`` vertex weights of the fit (e.g. 1 on the cranium, 0 on a moving jaw).
        iterations, tol: stop when the mean moves less than ``tol`` mm (max per vertex).

    Returns:
        ``(aligned (N, V, 3), mean (V, 3), transforms)``: float64; ``transforms.apply(meshes) == aligned``.
    """
    x = _samples(meshes, "meshes")
    n, v = x.shape[:2]
    if n < 1 or v < 3:
        raise ShapeError(f"align_meshes needs at least one mesh of 3 vertices; got {n} of {v}.")
    w = None
    if weights is not None:
        w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        if w.shape[0] != v or bool((w < 0).any()) or not float(w.sum()) > 0:
            raise ParameterError(f"weights must be ({v},) non-negative, not all zero; got shape {tuple(w.shape)}.")
    ref = x[0]
    fit = procrustes(x, ref.expand_as(x), None if w is None else w.expand(n, v), scale=scale)
    for _ in range(iterations):
        aligned = fit.apply(x)
        new = aligned.mean(0)
        # keep the reference where the first mesh put it (size and pose): the mean's own drift is arbitrary
        hold = procrustes(new, ref, w, scale=scale)
        new = hold.apply(new)
        moved = float((new - ref).abs().max())
        ref = new
        fit = procrustes(x, ref.expand_as(x), None if w is None else w.expand(n, v), scale=scale)
        if moved < tol:
            break
    return fit.apply(x), ref, fit


def fit_linear_space(
    samples: Any, *, components: int | None = None, variance: float = 0.99, mean: Any = None
) -> LinearSpace:
    """Principal components of ``samples (N, V, 3)`` about their mean (or the given ``mean (V, 3)``,
    e.g. zeros for displacements).

    Keeps ``components`` components, or the fewest that explain ``variance`` of the total; at most
    ``N - 1`` about the sample mean (``N`` about a given mean), and none with zero variance.
    """
    x = _samples(samples, "samples")
    n, v = x.shape[:2]
    if mean is None:
        if n < 2:
            raise ShapeError(f"fit_linear_space needs at least 2 samples; got {n}.")
        centre = x.mean(0)
        dof = n - 1
    else:
        centre = _samples(torch.as_tensor(mean)[None], "mean", v)[0]
        dof = n
    if not 0.0 < variance <= 1.0:
        raise ParameterError(f"variance must be in (0, 1] (the share of variance to keep); got {variance}.")
    flat = (x - centre).reshape(n, -1)
    _, s, vt = torch.linalg.svd(flat, full_matrices=False)
    var = s * s / dof
    total = float(var.sum())
    if total <= 0:
        raise ParameterError("the samples do not vary: there is no space to learn.")
    ratio = var / total
    usable = int((var > total * 1e-12).sum())
    if components is None:
        k = int(torch.searchsorted(torch.cumsum(ratio, 0), torch.tensor(variance, dtype=ratio.dtype) - 1e-12)) + 1
    else:
        if isinstance(components, bool) or not isinstance(components, int) or components < 1:
            raise ParameterError(f"components must be a positive integer; got {components!r}.")
        if components > usable:
            raise ParameterError(f"components={components} but the {n} samples span only {usable} "
                                 f"non-zero components; ask for at most {usable}.")
        k = components
    k = min(k, usable)
    basis = (vt[:k] * var[:k, None].sqrt()).reshape(k, v, 3)
    return LinearSpace(mean=centre, basis=basis, variance=var[:k], explained=ratio[:k])


def shape_space(
    meshes: Any, *, components: int | None = None, variance: float = 0.99, scale: bool = False, weights: Any = None
) -> LinearSpace:
    """A shape space of meshes ``(N, V, 3)`` in correspondence: :func:`align_meshes` (rigid, or similarity
    with ``scale``), then :func:`fit_linear_space` about the aligned mean."""
    aligned, _, _ = align_meshes(meshes, scale=scale, weights=weights)
    return fit_linear_space(aligned, components=components, variance=variance)


def trait_space(
    pre: Any, post: Any, *, fixed: Any = None, movements: Any = None, components: int | None = None,
    variance: float = 0.99,
) -> LinearSpace:
    """The space of changes ``post - pre`` of paired meshes ``(N, V, 3)`` (e.g. before and after surgery).

    Each ``post`` is first aligned rigidly onto its ``pre`` on the ``fixed`` vertices (ids or a ``(V,)``
    bool mask: the anatomy the intervention does not move, e.g. the cranium; default all vertices).

    * Without ``movements``: principal components of the changes about zero (a change of 0 is "no
      surgery"), unnamed.
    * With ``movements (N, T)`` (the planned amount of each named movement per pair, e.g. the trait
      coefficients of a plan): one field per movement by least squares, ``change = sum_t m_t field_t``,
      so each learned component keeps its movement's name and unit. A movement that no pair made
      (a zero column) gets a zero field; ``variance`` then holds each movement's variance over the pairs
      and ``explained`` its share of the fitted change.

    The returned ``mean`` is zero.
    """
    a = _samples(pre, "pre")
    b = _samples(post, "post", a.shape[1])
    if b.shape[0] != a.shape[0]:
        raise ShapeError(f"pre and post must hold the same number of meshes; got {a.shape[0]} and {b.shape[0]}.")
    w = torch.ones(a.shape[1], dtype=torch.float64)
    if fixed is not None:
        f = torch.as_tensor(fixed)
        if f.dtype == torch.bool:
            if f.shape != (a.shape[1],):
                raise ShapeError(f"fixed as a mask must be ({a.shape[1]},); got {tuple(f.shape)}.")
            w = f.double()
        else:
            w = torch.zeros(a.shape[1], dtype=torch.float64)
            w[f.long()] = 1.0
        if int((w > 0).sum()) < 3:
            raise ParameterError("fixed must name at least 3 vertices (the anatomy that did not move).")
    moved = procrustes(b, a, w.expand(a.shape[0], -1), scale=False).apply(b)
    change = moved - a
    if movements is None:
        return fit_linear_space(change, components=components, variance=variance, mean=torch.zeros_like(a[0]))
    m = torch.as_tensor(movements, dtype=torch.float64)
    if m.dim() != 2 or m.shape[0] != a.shape[0]:
        raise ShapeError(f"movements must be (N, T) with N = {a.shape[0]} pairs; got {tuple(m.shape)}.")
    if not bool(torch.isfinite(m).all()):
        raise ParameterError("movements holds NaN or inf values.")
    made = m.abs().sum(0) > 0
    if int(torch.linalg.matrix_rank(m[:, made])) < int(made.sum()):
        raise ParameterError(f"the {a.shape[0]} pairs do not tell the {int(made.sum())} movements apart (their "
                             f"amounts are linearly dependent); add pairs with other combinations.")
    fields = torch.zeros(m.shape[1], *a.shape[1:], dtype=torch.float64)
    solved = torch.linalg.lstsq(m[:, made], change.reshape(a.shape[0], -1)).solution
    fields[made] = solved.reshape(-1, *a.shape[1:])
    fitted = torch.einsum("nt,tvd->ntvd", m, fields).pow(2).sum((0, 2, 3))
    return LinearSpace(mean=torch.zeros_like(a[0]), basis=fields, variance=m.var(0, correction=0),
                       explained=fitted / fitted.sum().clamp_min(1e-300))
