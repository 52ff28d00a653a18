"""The pinhole camera: projection against a float64 reference, gradients (gradcheck), triangulation."""

import math

import pytest
import torch

from anatomy.core.errors import ParameterError, ShapeError
from anatomy.fitting import PinholeCamera, triangulate


def _camera() -> PinholeCamera:
    return PinholeCamera.looking_at((100.0, 50.0, -500.0), (0.0, 0.0, 0.0), fx=1000.0, fy=980.0, cx=320.0, cy=240.0)


def test_project_matches_reference_and_looks_at_target():
    cam = _camera()
    pts = torch.randn(4, 7, 3, dtype=torch.float64) * 50
    px = cam.project(pts)
    ref = torch.empty_like(px)
    for b in range(4):  # independent float64 loop: q = R p + t, u = fx qx / qz + cx
        for k in range(7):
            q = cam.rotation @ pts[b, k] + cam.translation
            ref[b, k, 0] = 1000.0 * q[0] / q[2] + 320.0
            ref[b, k, 1] = 980.0 * q[1] / q[2] + 240.0
    assert torch.allclose(px, ref, atol=1e-9)
    centre = cam.project(torch.zeros(1, 3, dtype=torch.float64))
    assert torch.allclose(centre, torch.tensor([[320.0, 240.0]], dtype=torch.float64), atol=1e-9)
    eye = -cam.rotation.T @ cam.translation
    assert torch.allclose(eye, torch.tensor([100.0, 50.0, -500.0], dtype=torch.float64), atol=1e-9)


def test_project_gradients():
    cam = _camera()
    pts = (torch.randn(2, 5, 3, dtype=torch.float64) * 30).requires_grad_(True)
    assert torch.autograd.gradcheck(cam.project, (pts,))
    # analytic derivative of u w.r.t. the camera-frame point: (fx / z, 0, -fx x / z^2)
    q = cam.to_camera(pts.detach())[0, 0]
    grad = torch.autograd.grad(cam.project(pts)[0, 0, 0], pts)[0][0, 0]
    expected = torch.tensor([1000.0 / q[2], 0.0, -1000.0 * q[0] / q[2] ** 2], dtype=torch.float64) @ cam.rotation
    assert torch.allclose(grad, expected, atol=1e-12)


def test_triangulate_recovers_points():
    pts = torch.randn(3, 6, 3, dtype=torch.float64) * 40
    cams = [PinholeCamera.looking_at((500 * math.sin(a), 30.0, 500 * math.cos(a)), (0.0, 0.0, 0.0), fx=900.0)
            for a in (0.0, 1.3, 2.5)]
    back = triangulate([c.project(pts) for c in cams], cams)
    assert torch.allclose(back, pts, atol=1e-6)


def test_bad_camera():
    with pytest.raises(ParameterError, match="focal"):
        PinholeCamera(-1.0, 1.0, 0.0, 0.0)
    with pytest.raises(ShapeError, match="rotation"):
        PinholeCamera(1.0, 1.0, 0.0, 0.0, rotation=torch.eye(2))
    with pytest.raises(ParameterError, match="rotation matrix"):
        PinholeCamera(1.0, 1.0, 0.0, 0.0, rotation=2 * torch.eye(3))
