"""Rotation conversions: scipy oracle, round trips, gradients at 0 and near pi."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from anatomy.core import rotations as rot
from anatomy.core.errors import DtypeError, ParameterError, ShapeError

D = torch.float64


def random_aa(n: int, max_angle: float = math.pi) -> torch.Tensor:
    axis = torch.nn.functional.normalize(torch.randn(n, 3, dtype=D), dim=-1)
    return axis * torch.rand(n, 1, dtype=D) * max_angle


def test_axis_angle_to_matrix_matches_scipy() -> None:
    aa = random_aa(500)
    ours = rot.axis_angle_to_matrix(aa).numpy()
    np.testing.assert_allclose(ours, Rotation.from_rotvec(aa.numpy()).as_matrix(), atol=1e-13)


def test_matrix_to_quaternion_matches_scipy_real_first() -> None:
    aa = random_aa(500)
    q = rot.matrix_to_quaternion(rot.axis_angle_to_matrix(aa)).numpy()
    ref = Rotation.from_rotvec(aa.numpy()).as_quat(scalar_first=True)
    ref *= np.sign(ref[:, :1])
    np.testing.assert_allclose(q, ref, atol=1e-12)


@pytest.mark.parametrize("convention", ["XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"])
def test_euler_matches_scipy_intrinsic(convention: str) -> None:
    angles = (torch.rand(200, 3, dtype=D) - 0.5) * torch.tensor([2 * math.pi, math.pi * 0.98, 2 * math.pi], dtype=D)
    m = rot.euler_to_matrix(angles, convention)
    np.testing.assert_allclose(m.numpy(), Rotation.from_euler(convention, angles.numpy()).as_matrix(), atol=1e-13)
    back = rot.matrix_to_euler(m, convention)
    np.testing.assert_allclose(back.numpy(), angles.numpy(), atol=1e-10)


def test_euler_gimbal_lock_still_reproduces_matrix() -> None:
    angles = torch.tensor([[0.3, math.pi / 2, 0.2], [0.1, -math.pi / 2, -0.4]], dtype=D)
    m = rot.euler_to_matrix(angles, "ZXY")
    back = rot.euler_to_matrix(rot.matrix_to_euler(m, "ZXY"), "ZXY")
    torch.testing.assert_close(back, m, atol=1e-12, rtol=0)


def test_round_trips() -> None:
    aa = random_aa(300, max_angle=math.pi * 0.999)
    m = rot.axis_angle_to_matrix(aa)
    torch.testing.assert_close(rot.matrix_to_axis_angle(m), aa, atol=1e-9, rtol=0)
    torch.testing.assert_close(rot.quaternion_to_axis_angle(rot.axis_angle_to_quaternion(aa)), aa, atol=1e-12, rtol=0)
    torch.testing.assert_close(rot.rotation_6d_to_matrix(rot.matrix_to_rotation_6d(m)), m, atol=1e-12, rtol=0)
    torch.testing.assert_close(rot.quaternion_to_matrix(rot.matrix_to_quaternion(m)), m, atol=1e-12, rtol=0)


def test_quaternion_multiply_composes_rotations() -> None:
    a, b = random_aa(50), random_aa(50)
    qa, qb = rot.axis_angle_to_quaternion(a), rot.axis_angle_to_quaternion(b)
    torch.testing.assert_close(
        rot.quaternion_to_matrix(rot.quaternion_multiply(qa, qb)),
        rot.axis_angle_to_matrix(a) @ rot.axis_angle_to_matrix(b), atol=1e-12, rtol=0,
    )


def test_6d_gram_schmidt_of_noisy_columns_is_a_rotation() -> None:
    d6 = torch.randn(100, 6, dtype=D)
    m = rot.rotation_6d_to_matrix(d6)
    eye = torch.eye(3, dtype=D).expand(100, 3, 3)
    torch.testing.assert_close(m.transpose(1, 2) @ m, eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(m), torch.ones(100, dtype=D), atol=1e-12, rtol=0)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-4, 1.0, math.pi - 1e-6, math.pi])
def test_axis_angle_gradcheck_at_special_angles(angle: float) -> None:
    axis = torch.nn.functional.normalize(torch.tensor([[0.3, -0.5, 0.8]], dtype=D), dim=-1)
    aa = (axis * angle).requires_grad_()
    assert torch.autograd.gradcheck(rot.axis_angle_to_matrix, (aa,))
    assert torch.autograd.gradcheck(rot.axis_angle_to_quaternion, (aa,))


def test_axis_angle_gradient_at_zero_is_the_skew_generator() -> None:
    aa = torch.zeros(1, 3, dtype=D, requires_grad=True)
    m = rot.axis_angle_to_matrix(aa)
    # d R / d a_x at 0 is the generator [e_x]_x, so d R[2, 1] / d a_x = 1 and d R[1, 2] / d a_x = -1
    (g,) = torch.autograd.grad(m[0, 2, 1] - m[0, 1, 2], aa)
    torch.testing.assert_close(g, torch.tensor([[2.0, 0.0, 0.0]], dtype=D))


@pytest.mark.parametrize("angle", [1e-7, 0.5, math.pi - 1e-3])
def test_inverse_conversions_gradcheck(angle: float) -> None:
    axis = torch.nn.functional.normalize(torch.tensor([[0.6, 0.2, -0.7]], dtype=D), dim=-1)
    m = rot.axis_angle_to_matrix(axis * angle).requires_grad_()
    assert torch.autograd.gradcheck(rot.matrix_to_quaternion, (m,))
    q = rot.axis_angle_to_quaternion(axis * angle).requires_grad_()
    assert torch.autograd.gradcheck(rot.quaternion_to_axis_angle, (q,))
    assert torch.autograd.gradcheck(rot.rotation_6d_to_matrix, (torch.randn(2, 6, dtype=D, requires_grad=True),))
    e = torch.tensor([[0.2, 0.4, -0.3]], dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: rot.euler_to_matrix(x, "ZYX"), (e,))


def test_matrix_to_axis_angle_at_pi_has_finite_gradient() -> None:
    m = rot.axis_angle_to_matrix(torch.tensor([[0.0, 0.0, math.pi]], dtype=D)).requires_grad_()
    aa = rot.matrix_to_axis_angle(m)
    assert torch.isfinite(aa).all()
    (g,) = torch.autograd.grad(aa.sum(), m)
    assert torch.isfinite(g).all()
    torch.testing.assert_close(aa.norm(dim=-1), torch.tensor([math.pi], dtype=D))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-20, 20, allow_nan=False), min_size=3, max_size=3))
def test_property_axis_angle_round_trip(values: list[float]) -> None:
    aa = torch.tensor([values], dtype=D)
    m = rot.axis_angle_to_matrix(aa)
    torch.testing.assert_close(m @ m.transpose(1, 2), torch.eye(3, dtype=D)[None], atol=1e-12, rtol=0)
    torch.testing.assert_close(rot.axis_angle_to_matrix(rot.matrix_to_axis_angle(m)), m, atol=1e-9, rtol=0)
    np.testing.assert_allclose(m[0].numpy(), Rotation.from_rotvec(values).as_matrix(), atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=4, max_size=4).filter(
    lambda q: sum(x * x for x in q) > 1e-3))
def test_property_quaternion_round_trip(values: list[float]) -> None:
    q = torch.nn.functional.normalize(torch.tensor([values], dtype=D), dim=-1)
    back = rot.matrix_to_quaternion(rot.quaternion_to_matrix(q))
    assert float(back[0, 0]) >= 0.0
    # q and -q are the same rotation: compare up to sign
    err = min(float((back - q).abs().max()), float((back + q).abs().max()))
    assert err < 1e-10


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=4))
def test_property_bad_shapes_raise_shape_error(dims: list[int]) -> None:
    shape = tuple(dims)
    if shape[-1] == 3:
        shape = shape + (2,)
    with pytest.raises(ShapeError):
        rot.axis_angle_to_matrix(torch.zeros(shape, dtype=D))


def test_bad_inputs_are_typed() -> None:
    with pytest.raises(DtypeError):
        rot.axis_angle_to_matrix(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ShapeError, match="quaternion"):
        rot.quaternion_to_matrix(torch.zeros(2, 3))
    with pytest.raises(ParameterError, match="convention"):
        rot.euler_to_matrix(torch.zeros(1, 3), "XXY")
    with pytest.raises(DtypeError, match="torch.Tensor"):
        rot.axis_angle_to_matrix([0.0, 0.0, 1.0])  # type: ignore[arg-type]
