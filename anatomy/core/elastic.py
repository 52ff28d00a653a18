"""Quasi-static hyperelasticity on tetrahedral meshes (linear tets, pure torch).

* :func:`tet_rest_data`: per-tet inverse rest edge matrix ``Dm^-1`` and rest volume.
* :func:`deformation_gradients`: ``F = Ds Dm^-1`` for batched node positions.
* :class:`StableNeoHookean`: the energy density of Smith, de Goes & Kim 2018, "Stable
  Neo-Hookean Flesh Simulation", ACM TOG 37(2), article 12 (their energy without the log
  term): ``Psi = mu/2 (I_C - 3) + lam/2 (J - alpha)^2``, ``alpha = 1 + mu/lam``. It is finite
  and smooth for degenerate and inverted tets (``J <= 0``), unlike ``log J`` Neo-Hookean.
* :func:`solve_quasistatic`: minimise the total elastic energy over the free nodes with
  Dirichlet (prescribed) positions on the others, in float64.

Units: positions in mm and Young's modulus in kPa give energies in kPa * mm^3 = 1e-6 J (uJ)
and gradients (nodal forces) in kPa * mm^2 = mN. Without body forces (no gravity) and with
Dirichlet conditions only, the minimiser depends on the Poisson ratio alone: scaling the
Young's modulus scales the energy, not the solution.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from .checks import check_finite, check_floating, check_index_range, check_shape, check_tensor
from .errors import ParameterError, ShapeError

__all__ = [
    "QuasiStaticReport", "QuasiStaticResult", "StableNeoHookean", "TetRest", "deformation_gradients",
    "elastic_energy", "inverted_tets", "lame_parameters", "solve_quasistatic", "tet_rest_data", "tet_volumes",
]


def lame_parameters(young: float, poisson: float) -> tuple[float, float]:
    """Linear-elastic Lamé parameters ``(mu, lambda)`` from Young's modulus and Poisson ratio.

    ``mu = E / (2 (1 + nu))``, ``lambda = E nu / ((1 + nu)(1 - 2 nu))``, in the unit of ``young``
    (kPa here). ``nu`` must lie in ``(0, 0.5)`` and ``E > 0``.
    """
    if not (isinstance(young, int | float) and math.isfinite(young) and young > 0):
        raise ParameterError(f"young (Young's modulus, kPa) must be a finite number > 0, got {young!r}.")
    if not (isinstance(poisson, int | float) and 0.0 < poisson < 0.5):
        raise ParameterError(f"poisson must lie in the open interval (0, 0.5), got {poisson!r} "
                             f"(0.5 is incompressible: use e.g. 0.49 instead).")
    mu = young / (2.0 * (1.0 + poisson))
    lam = young * poisson / ((1.0 + poisson) * (1.0 - 2.0 * poisson))
    return mu, lam


@dataclass(frozen=True)
class StableNeoHookean:
    """Stable Neo-Hookean material (Smith, de Goes & Kim 2018) from ``young`` (kPa) and ``poisson``.

    The energy parameters are chosen so that its linearisation at ``F = I`` is linear elasticity
    with the given ``E, nu``: expanding ``Psi`` for ``F = I + H`` gives
    ``mu |sym H|^2 + (lam - mu)/2 (tr H)^2`` (the ``-mu`` comes from the quadratic part of ``J``
    multiplied by ``lam (1 - alpha) = -mu``), so ``mu = mu_LE`` and ``lam = lambda_LE + mu_LE``
    (the same kind of re-parametrisation as the paper's section on Lamé matching, here for the
    energy without the log term). A constant ``mu^2 / (2 lam)`` is subtracted so that the rest
    state has zero energy; it changes neither forces nor minimisers.
    """

    young: float = 10.0
    poisson: float = 0.45

    def __post_init__(self) -> None:
        lame_parameters(self.young, self.poisson)  # validates

    @property
    def mu(self) -> float:
        return lame_parameters(self.young, self.poisson)[0]

    @property
    def lam(self) -> float:
        mu, lam_le = lame_parameters(self.young, self.poisson)
        return lam_le + mu

    def density(self, F: torch.Tensor) -> torch.Tensor:
        """Energy density ``(...,)`` of deformation gradients ``F (..., 3, 3)`` (kPa)."""
        mu, lam = self.mu, self.lam
        alpha = 1.0 + mu / lam
        ic = (F * F).sum((-2, -1))
        j = torch.linalg.det(F)
        return 0.5 * mu * (ic - 3.0) + 0.5 * lam * (j - alpha) ** 2 - 0.5 * mu * mu / lam


@dataclass(frozen=True)
class TetRest:
    """Rest data of a tet mesh: ``tets (T, 4)`` long, ``dm_inv (T, 3, 3)``, ``volume (T,)``,
    ``num_nodes`` and per-node Jacobi weights ``stiffness (N,)`` (``sum_t vol_t |grad N_i|^2``,
    used to precondition the solver)."""

    tets: torch.Tensor
    dm_inv: torch.Tensor
    volume: torch.Tensor
    num_nodes: int
    stiffness: torch.Tensor


def _edge_matrix(x: torch.Tensor, tets: torch.Tensor) -> torch.Tensor:
    """``Ds (..., T, 3, 3)`` whose columns are ``x1 - x0, x2 - x0, x3 - x0`` of every tet."""
    p = x[..., tets, :]  # (..., T, 4, 3)
    return (p[..., 1:, :] - p[..., :1, :]).transpose(-1, -2)


def tet_volumes(x: torch.Tensor, tets: torch.Tensor) -> torch.Tensor:
    """Signed volumes ``(..., T)`` of the tets at node positions ``x (..., N, 3)``."""
    return torch.linalg.det(_edge_matrix(x, tets)) / 6.0


def tet_rest_data(rest: torch.Tensor, tets: torch.Tensor, *, min_volume: float = 1e-12) -> TetRest:
    """Per-tet rest data of the mesh ``(rest (N, 3), tets (T, 4))``.

    Raises :class:`ParameterError` when a tet is degenerate or inverted at rest (signed volume
    ``<= min_volume`` times the mean |volume|): fix the mesh or reorder the tet's nodes
    (swap two of them) so every rest volume is positive.
    """
    check_tensor(rest, "rest")
    check_shape(rest, "rest", ["N", 3])
    check_floating(rest, "rest")
    check_finite(rest, "rest")
    check_tensor(tets, "tets")
    check_shape(tets, "tets", ["T", 4])
    if tets.shape[0] == 0:
        raise ShapeError("tets is empty; pass at least one tetrahedron (T, 4).")
    check_index_range(tets, "tets", rest.shape[0])
    tets = tets.long().to(rest.device)
    dm = _edge_matrix(rest, tets)
    vol = torch.linalg.det(dm) / 6.0
    scale = float(vol.abs().mean())
    bad = vol <= min_volume * max(scale, 1e-300)
    if bool(bad.any()):
        idx = torch.nonzero(bad).flatten()
        raise ParameterError(
            f"{int(bad.sum())} of {len(vol)} tets are degenerate or inverted at rest (first: tet {int(idx[0])} with "
            f"signed volume {float(vol[idx[0]]):.3g}, mean |volume| {scale:.3g}); remove degenerate tets and orient "
            f"every tet positively (swap two of its nodes)."
        )
    dm_inv = torch.linalg.inv(dm)
    # shape-function gradients: node k >= 1 has row k-1 of Dm^-1, node 0 minus their sum
    grads = torch.cat([-dm_inv.sum(1, keepdim=True), dm_inv], 1)  # (T, 4, 3)
    w = vol[:, None] * (grads * grads).sum(-1)  # (T, 4)
    stiffness = torch.zeros(rest.shape[0], dtype=rest.dtype, device=rest.device)
    stiffness.index_add_(0, tets.reshape(-1), w.reshape(-1))
    return TetRest(tets=tets, dm_inv=dm_inv, volume=vol, num_nodes=int(rest.shape[0]), stiffness=stiffness)


def deformation_gradients(x: torch.Tensor, rest: TetRest) -> torch.Tensor:
    """Deformation gradients ``F = Ds Dm^-1`` ``(..., T, 3, 3)`` at node positions ``x (..., N, 3)``."""
    check_shape(x, "x", ["...", rest.num_nodes, 3])
    return _edge_matrix(x, rest.tets) @ rest.dm_inv


def elastic_energy(x: torch.Tensor, rest: TetRest, material: StableNeoHookean) -> torch.Tensor:
    """Total elastic energy ``(...,)`` (kPa * mm^3) at node positions ``x (..., N, 3)``."""
    return (material.density(deformation_gradients(x, rest)) * rest.volume).sum(-1)


def inverted_tets(x: torch.Tensor, rest: TetRest) -> torch.Tensor:
    """Number ``(...,)`` of tets whose signed volume is ``<= 0`` at node positions ``x (..., N, 3)``."""
    check_shape(x, "x", ["...", rest.num_nodes, 3])
    return (tet_volumes(x, rest.tets) <= 0).sum(-1)


@dataclass(frozen=True)
class QuasiStaticReport:
    """What :func:`solve_quasistatic` did for one sample: ``iterations`` (L-BFGS iterations),
    ``evaluations`` (energy + gradient evaluations), ``energy_before``/``energy_after``
    (kPa * mm^3), ``grad_before``/``grad_after`` (max |nodal force| over free nodes, kPa * mm^2),
    ``inverted_before``/``inverted_after`` and ``converged`` (the gradient tolerance was met)."""

    iterations: int
    evaluations: int
    energy_before: float
    energy_after: float
    grad_before: float
    grad_after: float
    inverted_before: int
    inverted_after: int
    converged: bool


@dataclass(frozen=True)
class QuasiStaticResult:
    """``positions (B, N, 3)`` (float64, no gradient; ``(N, 3)`` when ``x0`` was unbatched) and one
    :class:`QuasiStaticReport` per sample."""

    positions: torch.Tensor
    reports: tuple[QuasiStaticReport, ...]


def _check_fixed(fixed_mask: torch.Tensor, fixed_pos: torch.Tensor, n: int, batch: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The mask as ``(N, 3)`` (per coordinate) and ``fixed_pos`` as ``(B, N, 3)`` (rows of free nodes zero)."""
    check_tensor(fixed_mask, "fixed_mask")
    if fixed_mask.dim() == 1:
        check_shape(fixed_mask, "fixed_mask", [n])
    else:
        check_shape(fixed_mask, "fixed_mask", [n, 3])
    if fixed_mask.dtype != torch.bool:
        raise ParameterError(f"fixed_mask must be a bool tensor (N,) or (N, 3), got dtype {fixed_mask.dtype}.")
    per_node = fixed_mask.dim() == 1
    k = int(fixed_mask.sum()) if per_node else n
    check_tensor(fixed_pos, "fixed_pos")
    check_floating(fixed_pos, "fixed_pos")
    check_finite(fixed_pos, "fixed_pos")
    if fixed_pos.dim() == 2:
        fixed_pos = fixed_pos.expand(batch, *fixed_pos.shape)
    if fixed_pos.dim() != 3 or fixed_pos.shape[0] != batch or fixed_pos.shape[2] != 3 \
            or fixed_pos.shape[1] not in (k, n):
        raise ShapeError(f"fixed_pos must have shape ([B,] N, 3) with N = {n} (only the fixed entries are read) or, "
                         f"for a per-node fixed_mask, ([B,] K, 3) with K = fixed_mask.sum() = {k}; B = {batch}; "
                         f"got {tuple(fixed_pos.shape)}.")
    mask3 = fixed_mask[:, None].expand(n, 3) if per_node else fixed_mask
    if fixed_pos.shape[1] != n:
        full = torch.zeros(batch, n, 3, dtype=fixed_pos.dtype, device=fixed_pos.device)
        full[:, fixed_mask] = fixed_pos
        fixed_pos = full
    return mask3, fixed_pos


def solve_quasistatic(
    rest: torch.Tensor,
    tets: torch.Tensor,
    x0: torch.Tensor,
    fixed_mask: torch.Tensor,
    fixed_pos: torch.Tensor,
    *,
    material: StableNeoHookean | None = None,
    rtol: float = 1e-5,
    atol: float | None = None,
    max_iter: int = 2000,
    history: int = 20,
) -> QuasiStaticResult:
    """Quasi-static equilibrium of an elastic tet mesh with Dirichlet conditions.

    Minimises the :func:`elastic_energy` over the free nodes (``~fixed_mask``) with the fixed
    nodes at ``fixed_pos``, starting from ``x0``, by L-BFGS (``history`` pairs, backtracking
    Armijo line search) in float64 on Jacobi-scaled variables (each free node's
    coordinates divided by ``sqrt`` of its stiffness weight, see :class:`TetRest`), which makes
    meshes with very different tet sizes converge in far fewer iterations.
    Stops when the largest free nodal force is at most ``max(rtol * its value at x0, atol)``
    (``atol`` defaults to ``1e-7 mu h^2`` with ``h`` the mean rest edge length: a residual stress of
    ``1e-7 mu``), when the line search finds no further decrease (float64 noise floor), or after
    ``max_iter`` iterations. Samples of a batch are solved one after the other.

    Args:
        rest: ``(N, 3)`` rest node positions (mm); every tet must have positive rest volume.
        tets: ``(T, 4)`` node indices.
        x0: ``(N, 3)`` or ``(B, N, 3)`` initial guess (e.g. linear blend skinning).
        fixed_mask: ``(N,)`` bool, the Dirichlet nodes, or ``(N, 3)`` per coordinate (e.g. a
            face clamped in x only).
        fixed_pos: ``([B,] N, 3)`` of which only the fixed entries are read, or for a per-node
            mask ``([B,] K, 3)``, the positions of the ``K`` fixed nodes in node order.
        material: :class:`StableNeoHookean` (default ``E = 10 kPa, nu = 0.45``).

    Returns:
        :class:`QuasiStaticResult` (float64 positions without gradient, reports per sample).
    """
    material = StableNeoHookean() if material is None else material
    if not (math.isfinite(rtol) and rtol >= 0):
        raise ParameterError(f"rtol must be a finite number >= 0, got {rtol!r}.")
    if atol is not None and not (math.isfinite(atol) and atol >= 0):
        raise ParameterError(f"atol must be a finite number >= 0 or None, got {atol!r}.")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ParameterError(f"max_iter must be an int >= 0, got {max_iter!r}.")
    if isinstance(history, bool) or not isinstance(history, int) or history < 1:
        raise ParameterError(f"history must be an int >= 1, got {history!r}.")
    rest64 = check_tensor(rest, "rest").detach().double()
    data = tet_rest_data(rest64, tets)
    n = data.num_nodes
    check_tensor(x0, "x0")
    check_floating(x0, "x0")
    check_finite(x0, "x0")
    unbatched = x0.dim() == 2
    xb = x0[None] if unbatched else x0
    check_shape(xb, "x0", ["B", n, 3])
    if xb.shape[0] == 0:
        raise ParameterError("x0 has an empty batch; pass at least one sample.")
    mask, fixed = _check_fixed(check_tensor(fixed_mask, "fixed_mask").to(rest64.device), fixed_pos, n, xb.shape[0])
    if atol is None:
        edges = rest64[data.tets[:, 1:]] - rest64[data.tets[:, :1]]
        h = float(edges.norm(dim=-1).mean())
        atol = 1e-7 * material.mu * h * h
    free = torch.nonzero(~mask.reshape(-1)).flatten()  # free coordinates of the flattened (3N,) positions
    # Jacobi scaling of the free coordinates: x_free = y * scale
    stiff = (material.mu + material.lam) * data.stiffness.clamp_min(1e-300)
    scale = stiff.repeat_interleave(3)[free].rsqrt()
    positions = []
    reports = []
    for b in range(xb.shape[0]):
        x = torch.where(mask, fixed[b].detach().double().to(rest64.device), xb[b].detach().double().to(rest64.device))
        positions_b, report = _lbfgs(x, free, scale, data, material, rtol, atol, max_iter, history)
        positions.append(positions_b)
        reports.append(report)
    out = torch.stack(positions)
    return QuasiStaticResult(positions=out[0] if unbatched else out, reports=tuple(reports))


class _Forces:
    """Energy and nodal forces without autograd: ``F = A x`` and ``dE/dx = A^T (vol P)`` with the
    sparse ``A (9T, 3N)`` holding the shape-function gradients (a few times faster than autograd)."""

    def __init__(self, data: TetRest, material: StableNeoHookean) -> None:
        t, n = data.tets.shape[0], data.num_nodes
        grads = torch.cat([-data.dm_inv.sum(1, keepdim=True), data.dm_inv], 1)  # (T, 4, 3): node k, axis j
        dev = grads.device
        ii = torch.arange(3, device=dev)
        # row (t, i, j) of A holds grads[t, k, j] at column 3 tets[t, k] + i, k = 0..3 (4 entries per row)
        cols = (data.tets[:, None, None, :] * 3 + ii[None, :, None, None]).expand(t, 3, 3, 4).reshape(-1)
        vals = grads.permute(0, 2, 1)[:, None, :, :].expand(t, 3, 3, 4).reshape(-1)
        rows = torch.arange(9 * t, device=dev).repeat_interleave(4)
        order = torch.argsort(cols * (9 * t) + rows)  # the transpose, row-sorted
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            self.a = torch.sparse_csr_tensor(torch.arange(0, 36 * t + 1, 4, device=dev), cols, vals, (9 * t, 3 * n))
            crow = torch.zeros(3 * n + 1, dtype=torch.long, device=dev)
            crow[1:] = torch.cumsum(torch.bincount(cols, minlength=3 * n), 0)
            self.at = torch.sparse_csr_tensor(crow, rows[order], vals[order], (3 * n, 9 * t))
        self.t, self.n, self.vol = t, n, data.volume
        self.mu, self.lam = material.mu, material.lam

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, lam = self.mu, self.lam
        f = (self.a @ x.reshape(-1, 1)).view(self.t, 3, 3)
        r0, r1, r2 = f[:, 0], f[:, 1], f[:, 2]
        cof = torch.stack([torch.linalg.cross(r1, r2), torch.linalg.cross(r2, r0), torch.linalg.cross(r0, r1)], 1)
        r = (r0 * cof[:, 0]).sum(-1) - (1.0 + mu / lam)  # J - alpha; dJ/dF = cofactor matrix
        energy = (0.5 * mu * ((f * f).sum((1, 2)) - 3.0) + 0.5 * lam * r * r - 0.5 * mu * mu / lam) @ self.vol
        stress = (mu * self.vol)[:, None, None] * f + (lam * r * self.vol)[:, None, None] * cof  # vol * dPsi/dF
        return energy, (self.at @ stress.reshape(-1, 1)).view(self.n, 3)


#: step halvings (by 4) tried by the line search before the solve is declared stalled
_BACKTRACKS = 12


def _lbfgs(x: torch.Tensor, free: torch.Tensor, scale: torch.Tensor, data: TetRest, material: StableNeoHookean,
           rtol: float, atol: float, max_iter: int, history: int) -> tuple[torch.Tensor, QuasiStaticReport]:
    """Minimise over ``x[free]`` (others fixed) from ``x`` by L-BFGS (Nocedal & Wright 2006,
    "Numerical Optimization", algorithm 7.4 two-loop recursion, 7.5) with a backtracking Armijo
    line search; returns the positions and the report."""
    base = x.reshape(-1).clone()
    forces = _Forces(data, material)
    evaluations = 0

    def energy_grad(y: torch.Tensor) -> tuple[float, torch.Tensor]:
        nonlocal evaluations
        evaluations += 1
        e, g = forces(base.index_put((free,), y * scale))
        return float(e), g.reshape(-1)[free] * scale

    def force(g: torch.Tensor) -> float:  # largest nodal force component dE/dx over the free coordinates
        return float((g / scale).abs().max()) if g.numel() else 0.0

    inv_before = int(inverted_tets(x, data))
    y = base[free] / scale
    e0, g = energy_grad(y)
    e = e0
    force0 = force(g)
    tol = max(rtol * force0, atol)
    converged = force0 <= tol
    pairs: list[tuple[torch.Tensor, torch.Tensor, float]] = []
    iterations = 0
    while not converged and iterations < max_iter:
        # two-loop recursion: d = -H g
        q = g.clone()
        alphas = []
        for s_k, y_k, rho in reversed(pairs):
            a = rho * float((s_k * q).sum())
            alphas.append(a)
            q -= a * y_k
        if pairs:
            s_k, y_k, _ = pairs[-1]
            q *= float((s_k * y_k).sum() / (y_k * y_k).sum())
        for (s_k, y_k, rho), a in zip(pairs, reversed(alphas)):
            q += (a - rho * float((y_k * q).sum())) * s_k
        d = -q
        slope = float((g * d).sum())
        if slope >= 0:  # not a descent direction: restart from steepest descent
            pairs.clear()
            d = -g
            slope = -float((g * g).sum())
        step = 1.0 if pairs else min(1.0, 1.0 / max(float(g.abs().max()), 1e-300))
        for _ in range(_BACKTRACKS):  # Armijo backtracking
            y_new = y + step * d
            e_new, g_new = energy_grad(y_new)
            if e_new <= e + 1e-4 * step * slope:
                break
            step *= 0.25
        iterations += 1
        if not e_new <= e + 1e-4 * step * slope:  # no sufficient decrease: at the float64 noise floor
            break
        s_k, y_k = y_new - y, g_new - g
        sy = float((s_k * y_k).sum())
        if sy > 1e-12 * float((y_k * y_k).sum()) ** 0.5 * float((s_k * s_k).sum()) ** 0.5:
            pairs.append((s_k, y_k, 1.0 / sy))
            if len(pairs) > history:
                pairs.pop(0)
        stalled = e - e_new <= 1e-15 * abs(e_new)
        y, e, g = y_new, e_new, g_new
        converged = force(g) <= tol
        if stalled:
            break
    out = base.index_put((free,), y * scale).view(-1, 3)
    report = QuasiStaticReport(iterations=iterations, evaluations=evaluations, energy_before=e0, energy_after=e,
                               grad_before=force0, grad_after=force(g), inverted_before=inv_before,
                               inverted_after=int(inverted_tets(out, data)), converged=converged)
    return out, report
