"""Joint limits: angle decomposition, penalty, clamping, gradients, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from anatomy.constraints import JointLimits
from anatomy.core.errors import ParameterError, ShapeError
from anatomy.core.rotations import axis_angle_to_matrix

D = torch.float64


def _limits(num_j: int = 4) -> JointLimits:
    frames = axis_angle_to_matrix(torch.randn(num_j, 3, dtype=D) * 0.7)
    lower = torch.tensor([[-0.3, -0.2, 0.0]], dtype=D).expand(num_j, 3).clone()
    upper = torch.tensor([[1.6, 0.3, 0.0]], dtype=D).expand(num_j, 3).clone()
    lower[0] = torch.tensor([-1.0, -1.0, -1.0])  # a free-ish ball joint
    upper[0] = torch.tensor([1.0, 1.0, 1.0])
    return JointLimits(frames, lower, upper)


def test_angles_round_trip_and_frame_axes() -> None:
    lim = _limits()
    angles = torch.tensor([[[0.5, -0.1, 0.2], [1.2, 0.2, 0.0], [0.0, 0.0, 0.0], [-0.2, 0.1, 0.0]]], dtype=D)
    rot = lim.rotations(angles)
    torch.testing.assert_close(lim.angles(rot), angles, atol=1e-12, rtol=0)
    # pure flexion is a rotation about the frame's first column
    flex = torch.zeros(1, 4, 3, dtype=D)
    flex[0, :, 0] = 0.8
    expected = axis_angle_to_matrix(lim.frames[:, :, 0] * 0.8)
    torch.testing.assert_close(lim.rotations(flex)[0], expected, atol=1e-12, rtol=0)


def test_penalty_zero_inside_and_quadratic_outside() -> None:
    lim = _limits()
    inside = lim.rotations(torch.tensor([[[0.2, 0.1, 0.0], [1.0, 0.0, 0.0], [0.5, -0.1, 0.0], [0.0, 0.2, 0.0]]],
                                        dtype=D))
    assert float(lim.penalty(inside)) == pytest.approx(0.0, abs=1e-20)
    over = torch.tensor([[[0.2, 0.1, 0.0], [1.9, 0.0, 0.0], [0.5, -0.1, 0.0], [0.0, 0.2, 0.0]]], dtype=D)
    # joint 1 flexes 0.3 rad past its 1.6 rad limit
    assert float(lim.penalty(lim.rotations(over))) == pytest.approx(0.09, abs=1e-10)
    w = torch.tensor([1.0, 2.0, 1.0, 1.0], dtype=D)
    assert float(lim.penalty(lim.rotations(over), w)) == pytest.approx(0.18, abs=1e-10)


def test_clamp_puts_every_angle_in_range_and_keeps_valid_poses() -> None:
    lim = _limits()
    rot = axis_angle_to_matrix(torch.randn(64, 4, 3, dtype=D) * 0.8)
    clamped = lim.clamp(rot)
    a = lim.angles(clamped)
    assert bool((a >= lim.lower - 1e-9).all() and (a <= lim.upper + 1e-9).all())
    assert float(lim.penalty(clamped).max()) < 1e-16
    inside = lim.clamp(clamped)
    torch.testing.assert_close(inside, clamped, atol=1e-10, rtol=0)


def test_penalty_gradcheck_and_descent_reaches_the_range() -> None:
    lim = _limits()
    aa = torch.tensor([[[0.9, 0.1, 0.3], [0.2, 1.5, 0.1], [0.1, 0.2, 0.1], [0.3, 0.1, 0.4]]], dtype=D)
    aa.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: lim.penalty(axis_angle_to_matrix(x)), (aa,))
    opt = torch.optim.SGD([aa], lr=0.2)
    start = float(lim.penalty(axis_angle_to_matrix(aa)))
    for _ in range(200):
        opt.zero_grad()
        loss = lim.penalty(axis_angle_to_matrix(aa)).sum()
        loss.backward()
        opt.step()
    assert start > 0.1 and float(lim.penalty(axis_angle_to_matrix(aa))) < 1e-4 * start


def test_bad_limits_and_inputs() -> None:
    lim = _limits()
    with pytest.raises(ParameterError, match="lower > upper"):
        JointLimits(lim.frames, lim.upper, lim.lower - 1)
    with pytest.raises(ParameterError, match="degrees"):
        JointLimits(lim.frames, lim.lower, lim.upper + math.radians(180))
    with pytest.raises(ParameterError, match="rotation matrices"):
        JointLimits(lim.frames * 2, lim.lower, lim.upper)
    with pytest.raises(ShapeError):
        lim.penalty(torch.eye(3, dtype=D).expand(1, 5, 3, 3))
