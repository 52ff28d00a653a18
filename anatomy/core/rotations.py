"""Rotation conversions, batched over any leading dimensions.

Conventions: rotation matrices act on column vectors (``x' = R x``); quaternions are
real-first ``(w, x, y, z)``; axis-angle vectors are ``axis * angle`` in radians; the
6D representation is the first two **columns** of the matrix, concatenated
(Zhou et al., "On the Continuity of Rotation Representations in Neural Networks",
CVPR 2019). Every function keeps finite values and gradients at angle 0, and
:func:`axis_angle_to_matrix` also near and at pi.
"""

from __future__ import annotations

import torch

from .checks import check_floating, check_shape
from .errors import ParameterError

_AXES = {"X": 0, "Y": 1, "Z": 2}


def _skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrix ``[v]_x`` of ``v (..., 3)`` -> ``(..., 3, 3)``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(v.shape[:-1] + (3, 3))


def _sinc_terms(theta2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``sin(t)/t`` and ``(1 - cos t)/t^2`` from ``t^2``, with Taylor series near 0.

    The ``where`` uses a safe argument in the unused branch so neither branch
    produces NaN gradients.
    """
    small = theta2 < 1e-6
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe2.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0 + theta2 * theta2 / 120.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0 + theta2 * theta2 / 720.0, (1.0 - torch.cos(theta)) / safe2)
    return a, b


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula ``R = I + a K + b K^2`` for ``axis_angle (..., 3)`` -> ``(..., 3, 3)``."""
    check_shape(axis_angle, "axis_angle", ["...", 3])
    check_floating(axis_angle, "axis_angle")
    theta2 = (axis_angle * axis_angle).sum(-1)
    a, b = _sinc_terms(theta2)
    k = _skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def quaternion_to_matrix(quaternion: torch.Tensor) -> torch.Tensor:
    """Unit (or non-zero, normalised here) real-first quaternion ``(..., 4)`` -> ``(..., 3, 3)``."""
    check_shape(quaternion, "quaternion", ["...", 4])
    check_floating(quaternion, "quaternion")
    w, x, y, z = quaternion.unbind(-1)
    s = 2.0 / (quaternion * quaternion).sum(-1)
    m = torch.stack(
        [
            1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w),
            s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w),
            s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y),
        ],
        dim=-1,
    )
    return m.reshape(quaternion.shape[:-1] + (3, 3))


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrix ``(..., 3, 3)`` -> unit quaternion ``(..., 4)`` with ``w >= 0``.

    Each of the four classic candidate formulas (Shepperd 1978) is evaluated on a
    clamped, strictly positive denominator and the best-conditioned one is chosen,
    so values and gradients stay finite for every rotation.
    """
    check_shape(matrix, "matrix", ["...", 3, 3])
    check_floating(matrix, "matrix")
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    tr = m00 + m11 + m22
    diag4 = torch.stack([1 + tr, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    r = diag4.clamp_min(1e-12).sqrt()  # (..., 4) = 2 * |q_i| in exact arithmetic
    d21, d02, d10 = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    s21, s02, s10 = m[..., 2, 1] + m[..., 1, 2], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1]
    # candidate k: quaternion * 2 computed from component k (rows: w, x, y, z)
    cands = torch.stack(
        [
            torch.stack([r[..., 0], d21 / r[..., 0], d02 / r[..., 0], d10 / r[..., 0]], -1),
            torch.stack([d21 / r[..., 1], r[..., 1], s10 / r[..., 1], s02 / r[..., 1]], -1),
            torch.stack([d02 / r[..., 2], s10 / r[..., 2], r[..., 2], s21 / r[..., 2]], -1),
            torch.stack([d10 / r[..., 3], s02 / r[..., 3], s21 / r[..., 3], r[..., 3]], -1),
        ],
        dim=-2,
    )
    best = diag4.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2) * 0.5
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def axis_angle_to_quaternion(axis_angle: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` -> real-first unit quaternion ``(..., 4)``."""
    check_shape(axis_angle, "axis_angle", ["...", 3])
    check_floating(axis_angle, "axis_angle")
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)
    small = theta2 < 1e-6
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe2.sqrt()
    # sin(t/2)/t with its Taylor series near 0
    k = torch.where(small, 0.5 - theta2 / 48.0, torch.sin(theta / 2) / theta)
    w = torch.where(small, 1.0 - theta2 / 8.0, torch.cos(theta / 2))
    return torch.cat([w, axis_angle * k], -1)


def quaternion_to_axis_angle(quaternion: torch.Tensor) -> torch.Tensor:
    """Real-first quaternion ``(..., 4)`` -> axis-angle ``(..., 3)`` with angle in [0, pi]."""
    check_shape(quaternion, "quaternion", ["...", 4])
    check_floating(quaternion, "quaternion")
    q = quaternion / quaternion.norm(dim=-1, keepdim=True)
    q = torch.where(q[..., :1] < 0, -q, q)
    w, v = q[..., :1], q[..., 1:]
    s2 = (v * v).sum(-1, keepdim=True)
    small = s2 < 1e-12
    s = torch.where(small, torch.ones_like(s2), s2).sqrt()
    angle = 2.0 * torch.atan2(s, w)
    # angle / sin(angle/2) -> 2 / w near 0 (first-order series in |v|)
    factor = torch.where(small, 2.0 / w - 2.0 * s2 / (3.0 * w**3), angle / s)
    return v * factor


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrix ``(..., 3, 3)`` -> axis-angle ``(..., 3)`` (via the quaternion)."""
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def quaternion_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a * b`` of real-first quaternions (rotation ``b`` then ``a``)."""
    check_shape(a, "a", ["...", 4])
    check_shape(b, "b", ["...", 4])
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """6D (two columns, ``(..., 6)``) -> rotation matrix by Gram-Schmidt."""
    check_shape(d6, "d6", ["...", 6])
    check_floating(d6, "d6")
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrix ``(..., 3, 3)`` -> its first two columns ``(..., 6)``."""
    check_shape(matrix, "matrix", ["...", 3, 3])
    return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], -1)


def _parse_convention(convention: str) -> tuple[int, int, int, float]:
    if len(convention) != 3 or any(c not in _AXES for c in convention) or len(set(convention)) != 3:
        raise ParameterError(
            f"convention must be three distinct axes from 'XYZ' (Tait-Bryan, intrinsic), got "
            f"{convention!r}; e.g. 'XYZ' or 'ZXY'."
        )
    i, j, k = (_AXES[c] for c in convention)
    sign = 1.0 if (j - i) % 3 == 1 else -1.0
    return i, j, k, sign


def _axis_rotation(axis: int, angle: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    o, one = torch.zeros_like(angle), torch.ones_like(angle)
    if axis == 0:
        rows = [one, o, o, o, c, -s, o, s, c]
    elif axis == 1:
        rows = [c, o, s, o, one, o, -s, o, c]
    else:
        rows = [c, -s, o, s, c, o, o, o, one]
    return torch.stack(rows, -1).reshape(angle.shape + (3, 3))


def euler_to_matrix(angles: torch.Tensor, convention: str = "XYZ") -> torch.Tensor:
    """Intrinsic Tait-Bryan angles ``(..., 3)`` -> ``R = R_a(t0) R_b(t1) R_c(t2)`` for ``convention='abc'``."""
    check_shape(angles, "angles", ["...", 3])
    check_floating(angles, "angles")
    i, j, k, _ = _parse_convention(convention)
    a0, a1, a2 = angles.unbind(-1)
    return _axis_rotation(i, a0) @ _axis_rotation(j, a1) @ _axis_rotation(k, a2)


def matrix_to_euler(matrix: torch.Tensor, convention: str = "XYZ") -> torch.Tensor:
    """Inverse of :func:`euler_to_matrix`; the middle angle lies in [-pi/2, pi/2].

    At gimbal lock (middle angle = +-pi/2) the split between the outer angles is not
    unique; the result still reproduces the matrix.
    """
    check_shape(matrix, "matrix", ["...", 3, 3])
    check_floating(matrix, "matrix")
    i, j, k, sign = _parse_convention(convention)
    m = matrix
    mid = torch.asin((sign * m[..., i, k]).clamp(-1.0, 1.0))
    first = torch.atan2(-sign * m[..., j, k], m[..., k, k])
    last = torch.atan2(-sign * m[..., i, j], m[..., i, i])
    # gimbal lock: cos(mid) ~ 0 makes first/last ill-defined; put everything in `first`
    locked = (1.0 - (sign * m[..., i, k]).abs()) < 1e-9
    first_locked = torch.atan2(sign * m[..., k, j], m[..., j, j])
    first = torch.where(locked, first_locked, first)
    last = torch.where(locked, torch.zeros_like(last), last)
    return torch.stack([first, mid, last], -1)
