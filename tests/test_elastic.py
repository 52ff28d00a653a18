"""anatomy.core.elastic: stable Neo-Hookean energy, its gradient and the quasi-static solver."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from anatomy.core.elastic import (
    StableNeoHookean,
    _Forces,
    deformation_gradients,
    elastic_energy,
    inverted_tets,
    lame_parameters,
    solve_quasistatic,
    tet_rest_data,
    tet_volumes,
)
from anatomy.core.errors import ParameterError, ShapeError
from anatomy.core.rotations import axis_angle_to_matrix


def box_mesh(nx: int, ny: int, nz: int, size: tuple[float, float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid of ``nx x ny x nz`` cells over ``[0, size]``, 6 positively oriented tets per cell (Kuhn)."""
    axes = [torch.linspace(0.0, s, k + 1, dtype=torch.float64) for s, k in zip(size, (nx, ny, nz))]
    pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    idx = torch.arange(len(pts)).reshape(nx + 1, ny + 1, nz + 1)
    corner = torch.stack(torch.meshgrid(torch.arange(nx), torch.arange(ny), torch.arange(nz), indexing="ij"),
                         -1).reshape(-1, 3)
    tets = []
    for perm in itertools.permutations(range(3)):
        c = corner.clone()
        nodes = [idx[c[:, 0], c[:, 1], c[:, 2]]]
        for ax in perm:
            c[:, ax] += 1
            nodes.append(idx[c[:, 0], c[:, 1], c[:, 2]])
        tets.append(torch.stack(nodes, 1))
    t = torch.cat(tets)
    flip = tet_volumes(pts, t) < 0
    t[flip] = t[flip][:, [1, 0, 2, 3]]
    return pts, t


@pytest.fixture(scope="module")
def cube() -> tuple[torch.Tensor, torch.Tensor]:
    return box_mesh(3, 3, 3, (1.0, 1.0, 1.0))


def reference_density(F: torch.Tensor, young: float, nu: float) -> torch.Tensor:
    """Independent float64 evaluation: Lamé from E, nu by hand, J from the triple product."""
    mu = young / (2 * (1 + nu))
    lam = young * nu / ((1 + nu) * (1 - 2 * nu)) + mu
    alpha = 1 + mu / lam
    a, b, c = F[..., :, 0], F[..., :, 1], F[..., :, 2]
    j = (a * torch.linalg.cross(b, c)).sum(-1)
    ic = torch.einsum("...ij,...ij->...", F, F)
    return mu / 2 * (ic - 3) + lam / 2 * (j - alpha) ** 2 - mu * mu / (2 * lam)


def test_lame_parameters_textbook() -> None:
    mu, lam = lame_parameters(10.0, 0.25)
    assert mu == pytest.approx(4.0) and lam == pytest.approx(4.0)
    for bad in (0.0, 0.5, -0.1, 0.7):
        with pytest.raises(ParameterError, match="poisson"):
            StableNeoHookean(10.0, bad)
    with pytest.raises(ParameterError, match="young"):
        StableNeoHookean(-1.0, 0.3)


def test_density_matches_reference_and_is_finite_for_inverted() -> None:
    g = torch.Generator().manual_seed(1)
    F = torch.eye(3, dtype=torch.float64) + 0.4 * torch.randn(50, 3, 3, generator=g, dtype=torch.float64)
    F[:10, :, 0] *= -1  # inverted
    mat = StableNeoHookean(7.0, 0.42)
    psi = mat.density(F)
    assert torch.allclose(psi, reference_density(F, 7.0, 0.42), rtol=1e-12, atol=1e-12)
    assert bool(torch.isfinite(psi).all())
    assert float(mat.density(torch.eye(3, dtype=torch.float64))) == pytest.approx(0.0, abs=1e-14)


def test_small_strain_linearisation_is_linear_elasticity() -> None:
    """Psi(I + eps) = mu_LE |eps|^2 + lambda_LE / 2 tr(eps)^2 + O(eps^3) for symmetric eps."""
    young, nu = 12.0, 0.35
    mu, lam = lame_parameters(young, nu)
    g = torch.Generator().manual_seed(2)
    e = torch.randn(3, 3, generator=g, dtype=torch.float64)
    e = 1e-4 * (e + e.T) / 2
    psi = float(StableNeoHookean(young, nu).density(torch.eye(3, dtype=torch.float64) + e))
    lin = mu * float((e * e).sum()) + lam / 2 * float(torch.trace(e)) ** 2
    assert psi == pytest.approx(lin, rel=1e-3)


def test_energy_and_gradient_zero_at_rest(cube: tuple[torch.Tensor, torch.Tensor]) -> None:
    pts, tets = cube
    data = tet_rest_data(pts, tets)
    assert float(data.volume.sum()) == pytest.approx(1.0, rel=1e-12)
    x = pts.clone().requires_grad_()
    e = elastic_energy(x, data, StableNeoHookean())
    (grad,) = torch.autograd.grad(e, x)
    assert abs(float(e.detach())) < 1e-12
    assert float(grad.abs().max()) < 1e-12
    assert torch.allclose(deformation_gradients(pts, data), torch.eye(3, dtype=torch.float64).expand(len(tets), 3, 3),
                          atol=1e-14)


def test_rigid_motion_invariance(cube: tuple[torch.Tensor, torch.Tensor]) -> None:
    pts, tets = cube
    data = tet_rest_data(pts, tets)
    g = torch.Generator().manual_seed(3)
    x = pts + 0.1 * torch.randn(pts.shape, generator=g, dtype=torch.float64)
    rot = axis_angle_to_matrix(torch.tensor([0.7, -1.1, 0.4], dtype=torch.float64))
    moved = x @ rot.T + torch.tensor([3.0, -2.0, 5.0], dtype=torch.float64)
    mat = StableNeoHookean(10.0, 0.45)
    e0, e1 = float(elastic_energy(x, data, mat)), float(elastic_energy(moved, data, mat))
    assert e0 > 1e-3
    assert e1 == pytest.approx(e0, rel=1e-12)
    assert float(elastic_energy(pts @ rot.T + 1.0, data, mat)) == pytest.approx(0.0, abs=1e-11)


def test_gradient_finite_differences_gradcheck_and_fast_forces() -> None:
    g = torch.Generator().manual_seed(4)
    rest = torch.randn(8, 3, generator=g, dtype=torch.float64)
    tets = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [0, 2, 4, 6], [1, 3, 5, 7]])
    flip = tet_volumes(rest, tets) < 0
    tets[flip] = tets[flip][:, [1, 0, 2, 3]]
    data = tet_rest_data(rest, tets)
    mat = StableNeoHookean(5.0, 0.3)
    x = rest + 0.3 * torch.randn(rest.shape, generator=g, dtype=torch.float64)
    x[0] = x[1] + (x[1] - x[0])  # likely inverts a tet: the energy must stay smooth
    xr = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(elastic_energy(xr, data, mat), xr)
    h = 1e-6
    fd = torch.zeros_like(x)
    for i in range(x.shape[0]):
        for k in range(3):
            d = torch.zeros_like(x)
            d[i, k] = h
            fd[i, k] = (elastic_energy(x + d, data, mat) - elastic_energy(x - d, data, mat)) / (2 * h)
    assert torch.allclose(grad, fd, rtol=1e-6, atol=1e-7)
    assert torch.autograd.gradcheck(lambda y: elastic_energy(y, data, mat), (xr,))
    e_fast, g_fast = _Forces(data, mat)(x)
    assert float(e_fast) == pytest.approx(float(elastic_energy(x, data, mat)), rel=1e-12)
    assert torch.allclose(g_fast, grad, rtol=1e-10, atol=1e-12)


def test_rest_data_rejects_bad_meshes(cube: tuple[torch.Tensor, torch.Tensor]) -> None:
    pts, tets = cube
    with pytest.raises(ParameterError, match="inverted"):
        tet_rest_data(pts, tets[:, [1, 0, 2, 3]])
    flat = tets.clone()
    flat[0] = torch.tensor([0, 1, 2, 2])
    with pytest.raises(ParameterError, match="degenerate"):
        tet_rest_data(pts, flat)
    with pytest.raises(ShapeError):
        tet_rest_data(pts, tets[:, :3])
    with pytest.raises(ShapeError):
        tet_rest_data(pts[:, :2], tets)
    with pytest.raises(ParameterError):
        tet_rest_data(pts, tets + len(pts))


def test_solver_argument_checks(cube: tuple[torch.Tensor, torch.Tensor]) -> None:
    pts, tets = cube
    mask = torch.zeros(len(pts), dtype=torch.bool)
    mask[:3] = True
    with pytest.raises(ShapeError, match="fixed_pos"):
        solve_quasistatic(pts, tets, pts, mask, pts[:5])
    with pytest.raises(ShapeError, match="x0"):
        solve_quasistatic(pts, tets, pts[:-1], mask, pts)
    with pytest.raises(ParameterError, match="bool"):
        solve_quasistatic(pts, tets, pts, mask.long(), pts)
    with pytest.raises(ParameterError, match="rtol"):
        solve_quasistatic(pts, tets, pts, mask, pts, rtol=-1.0)
    with pytest.raises(ParameterError, match="max_iter"):
        solve_quasistatic(pts, tets, pts, mask, pts, max_iter=-2)


def test_patch_test_reproduces_affine_map(cube: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Affine Dirichlet data on the boundary: a homogeneous solid is in equilibrium under the affine map."""
    pts, tets = cube
    A = torch.tensor([[1.05, 0.02, -0.01], [0.03, 0.97, 0.04], [-0.02, 0.01, 1.02]], dtype=torch.float64)
    t = torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64)
    target = pts @ A.T + t
    boundary = ((pts == 0) | (pts == 1)).any(1)
    assert int((~boundary).sum()) == 8
    x0 = pts + t  # interior starts off the affine map
    res = solve_quasistatic(pts, tets, x0, boundary, target[boundary], material=StableNeoHookean(10.0, 0.45),
                            rtol=1e-12, atol=1e-12)
    rep = res.reports[0]
    assert rep.energy_after < rep.energy_before
    assert float((res.positions - target).abs().max()) < 1e-6
    assert torch.equal(res.positions[boundary], target[boundary])


def _bar_stretch(nu: float, strain: float) -> tuple[float, float, float]:
    """Bar 4 x 1 x 1 mm, ends held in x only (one corner pinned against rigid motion), stretched by
    ``strain``: (axial strain, lateral strain at mid-length, volume ratio)."""
    length = 4.0
    pts, tets = box_mesh(8, 2, 2, (length, 1.0, 1.0))
    mask = torch.zeros(len(pts), 3, dtype=torch.bool)
    ends = (pts[:, 0] == 0) | (pts[:, 0] == length)
    mask[ends, 0] = True
    origin = int(torch.nonzero((pts == 0).all(1))[0])
    mask[origin] = True  # y, z of one corner: no translation
    side = int(torch.nonzero((pts[:, 0] == 0) & (pts[:, 1] == 1) & (pts[:, 2] == 0))[0])
    mask[side, 2] = True  # no rotation about x
    target = pts.clone()
    target[:, 0] *= 1 + strain
    res = solve_quasistatic(pts, tets, target, mask, target, material=StableNeoHookean(10.0, nu),
                            rtol=1e-8, atol=1e-10)
    x = res.positions
    assert res.reports[0].grad_after < 1e-6 * res.reports[0].grad_before
    mid = (pts[:, 0] - length / 2).abs() < 1e-9
    top, bottom = mid & (pts[:, 1] == 1), mid & (pts[:, 1] == 0)
    width = float(x[top, 1].mean() - x[bottom, 1].mean())
    vol = float(tet_volumes(x, tets).sum()) / float(tet_volumes(pts, tets).sum())
    return strain, width - 1.0, vol


def test_uniaxial_stretch_poisson_ratio() -> None:
    axial, lateral, _ = _bar_stretch(0.3, 0.01)
    assert -lateral / axial == pytest.approx(0.3, rel=0.03)


def test_nearly_incompressible_stretch_keeps_volume() -> None:
    _, _, vol_49 = _bar_stretch(0.49, 0.2)
    _, _, vol_30 = _bar_stretch(0.3, 0.2)
    assert abs(vol_49 - 1) < 0.01  # linear theory: (1 - 2 nu) * 0.2 = 0.004
    assert vol_30 - 1 > 0.05  # a compressible bar gains volume: the contrast is real


def test_solver_untangles_and_batches(cube: tuple[torch.Tensor, torch.Tensor]) -> None:
    pts, tets = cube
    data = tet_rest_data(pts, tets)
    boundary = ((pts == 0) | (pts == 1)).any(1)
    interior = torch.nonzero(~boundary).flatten()
    x0 = pts.clone()
    x0[interior] = x0[interior].flip(0)  # scrambled interior: many inverted tets
    rot = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 3], dtype=torch.float64))
    batch = torch.stack([x0, x0 @ rot.T])
    fixed = torch.stack([pts, pts @ rot.T])
    res = solve_quasistatic(pts, tets, batch, boundary, fixed, rtol=1e-10, atol=1e-12)
    assert res.positions.shape == (2, len(pts), 3)
    assert all(r.inverted_before > 0 and r.inverted_after == 0 for r in res.reports)
    assert int(inverted_tets(x0, data)) > 0
    assert float((res.positions[0] - pts).abs().max()) < 1e-6
    assert float((res.positions[1] - pts @ rot.T).abs().max()) < 1e-6
