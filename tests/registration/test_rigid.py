"""Rigid / similarity registration: landmarks, principal axes + trimmed ICP, partial and noisy targets,
scale recovery and typed errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import anatomy
from anatomy.core import axis_angle_to_matrix
from anatomy.core.errors import ParameterError, ShapeError
from anatomy.fitting.synthetic import random_rigid
from anatomy.registration import align_landmarks, icp, principal_axes_init, register_rigid
from anatomy.registration.nonrigid import corrupt_target


@pytest.fixture(scope="module")
def shapes() -> dict[str, torch.Tensor]:
    """The default skull and the default hand's bones, float64 (N, 3) mm."""
    return {"skull": anatomy.Sculptor()().skull[0].double(), "hand": anatomy.Piano()().bones[0].double()}


def _errors(rot: torch.Tensor, trans: torch.Tensor, size: float, fit: object, pts: torch.Tensor) -> tuple[float, float]:
    """Largest point error (mm) over ``pts`` and rotation error (deg) of ``fit`` against the truth."""
    true = size * pts @ rot.T + trans
    got = fit.apply(pts)  # type: ignore[attr-defined]
    got = torch.as_tensor(got)
    point = float((got - true).norm(dim=-1).max())
    rot_fit = fit.transform.rotation if hasattr(fit, "transform") else fit.rotation  # type: ignore[attr-defined]
    # |R1 - R2|_F = 2 sqrt(2) sin(angle / 2): accurate for small angles, unlike acos of the trace
    chord = float((rot_fit - rot).norm()) / (2 * math.sqrt(2))
    return point, math.degrees(2 * math.asin(min(1.0, chord)))


@pytest.mark.parametrize("name", ["skull", "hand"])
def test_landmarks_exact_similarity(shapes: dict[str, torch.Tensor], name: str) -> None:
    pts = shapes[name]
    rot, trans = random_rigid(1, generator=torch.Generator().manual_seed(0))
    size = 1.13
    target = size * pts @ rot[0].T + trans[0]
    marks = torch.tensor([0, 100, 500, 1200, 2000])
    fit = align_landmarks(pts[marks], target[marks], scale=True)
    point, angle = _errors(rot[0], trans[0], size, fit, pts)
    assert point < 1e-9 and angle < 1e-6
    assert abs(float(fit.scale) - size) < 1e-12
    # the full pipeline from landmarks stays exact
    res = register_rigid(pts, target, landmarks=(pts[marks], target[marks]), scale=True)
    assert _errors(rot[0], trans[0], size, res, pts)[0] < 1e-6
    assert res.rms < 1e-6


@pytest.mark.parametrize("name", ["skull", "hand"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_landmarks_random_rotation(shapes: dict[str, torch.Tensor], name: str, seed: int) -> None:
    pts = shapes[name]
    rot, trans = random_rigid(1, generator=torch.Generator().manual_seed(seed), max_angle=math.pi)
    res = register_rigid(pts, pts @ rot[0].T + trans[0])
    point, angle = _errors(rot[0], trans[0], 1.0, res, pts)
    assert point < 0.05 and angle < 0.05
    assert res.converged


@pytest.mark.parametrize("name", ["skull", "hand"])
@pytest.mark.parametrize("axis", [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)])
def test_half_turn_is_found(shapes: dict[str, torch.Tensor], name: str, axis: tuple[float, float, float]) -> None:
    """A shape turned by 180 deg about each axis: the sign-flip search of the principal axes finds it."""
    pts = shapes[name]
    rot = axis_angle_to_matrix(torch.tensor(axis, dtype=torch.float64) * math.pi)
    trans = torch.tensor([40.0, -25.0, 10.0], dtype=torch.float64)
    res = register_rigid(pts, pts @ rot.T + trans, trim=1.0)
    point, angle = _errors(rot, trans, 1.0, res, pts)
    assert point < 0.05 and angle < 0.05


@pytest.mark.parametrize("name", ["skull", "hand"])
def test_scale_recovery_without_landmarks(shapes: dict[str, torch.Tensor], name: str) -> None:
    pts = shapes[name]
    rot, trans = random_rigid(1, generator=torch.Generator().manual_seed(5), max_angle=2.0)
    res = register_rigid(pts, 0.87 * pts @ rot[0].T + trans[0], scale=True)
    assert abs(float(res.transform.scale) - 0.87) < 1e-4
    assert _errors(rot[0], trans[0], 0.87, res, pts)[0] < 0.05


# measured (seed 3 frame, seed 4 damage, trim 0.7): mean error skull 0.062 mm, hand 0.226 mm;
# plain ICP (trim 1) 14.1 and 6.7 mm. Bounds with margin.
@pytest.mark.parametrize(("name", "bound"), [("skull", 0.3), ("hand", 0.6)])
def test_partial_noisy_target_with_outliers(shapes: dict[str, torch.Tensor], name: str, bound: float) -> None:
    pts = shapes[name]
    rot, trans = random_rigid(1, generator=torch.Generator().manual_seed(3))
    true = pts @ rot[0].T + trans[0]
    bad, _ = corrupt_target(true, missing=0.3, outliers=0.1, noise=2.0, generator=torch.Generator().manual_seed(4))
    res = register_rigid(pts, bad, trim=0.7)
    err = float((torch.from_numpy(res.apply(pts)) - true).norm(dim=-1).mean())
    assert err < bound
    plain = register_rigid(pts, bad, trim=1.0)
    assert float((torch.from_numpy(plain.apply(pts)) - true).norm(dim=-1).mean()) > 5 * err
    assert res.kept_fraction == pytest.approx(0.7, abs=1e-3)


def test_icp_identity_and_numpy_input(shapes: dict[str, torch.Tensor]) -> None:
    pts = shapes["skull"].numpy()
    res = icp(pts, pts, trim=0.9)
    assert res.converged and res.iterations == 1 and res.rms < 1e-12
    assert float((res.transform.rotation - torch.eye(3, dtype=torch.float64)).abs().max()) < 1e-12
    start = principal_axes_init(pts, pts + 3.0)
    assert np.abs(start.apply(torch.from_numpy(pts)).numpy() - (pts + 3.0)).max() < 1e-6


def test_weighted_landmarks_follow_the_weights() -> None:
    src = torch.tensor([[0.0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], dtype=torch.float64)
    dst = src.clone()
    dst[3] += torch.tensor([0.0, 0, 5])  # one landmark off
    heavy = align_landmarks(src, dst, weights=[1.0, 1.0, 1.0, 0.0], scale=False)
    assert float((heavy.apply(src[:3]) - dst[:3]).abs().max()) < 1e-12


def test_typed_errors(shapes: dict[str, torch.Tensor]) -> None:
    pts = shapes["skull"]
    with pytest.raises(ShapeError, match="pair up"):
        align_landmarks(pts[:4], pts[:5])
    with pytest.raises(ShapeError, match="at least 3"):
        align_landmarks(pts[:2], pts[:2])
    nan = pts[:5].clone()
    nan[1, 0] = float("nan")
    with pytest.raises(ShapeError, match="NaN"):
        align_landmarks(nan, pts[:5])
    line = torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]])
    with pytest.raises(ShapeError, match="line"):
        align_landmarks(line, line)
    with pytest.raises(ParameterError, match="weights"):
        align_landmarks(pts[:4], pts[:4], weights=[0, 0, 0, 0])
    with pytest.raises(ShapeError, match=r"\(N, 3\)"):
        icp(pts[:, :2], pts)
    with pytest.raises(ShapeError, match="at least 1"):
        icp(pts, pts[:0])
    for trim in (0.0, 1.5, -0.1):
        with pytest.raises(ParameterError, match="trim"):
            icp(pts, pts, trim=trim)
    with pytest.raises(ParameterError, match="max_iter"):
        icp(pts, pts, max_iter=0)
    with pytest.raises(ParameterError, match="landmarks"):
        register_rigid(pts, pts, landmarks=(pts[:3],))  # type: ignore[arg-type]
