"""Anatomical joint angles and limits: differentiable penalty and clamping.

Each joint has an anatomical frame ``F`` (columns: flexion axis, abduction axis, twist
axis, expressed in the joint's local rest frame). A local rotation ``R`` is read in that
frame, ``R_f = F^T R F``, and split into intrinsic angles ``R_f = R_x(flex) R_y(abd)
R_z(twist)``, so flexion happens first about the joint's hinge axis, as in the usual
clinical description of finger joints. A degree of freedom a joint does not have is a
range ``[0, 0]``. Angles in radians.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.checks import check_finite, check_floating, check_like, check_shape
from ..core.errors import ParameterError
from ..core.rotations import euler_to_matrix, matrix_to_euler

_CONVENTION = "XYZ"
ANGLE_NAMES = ("flexion", "abduction", "twist")


@dataclass(frozen=True)
class JointLimits:
    """Per-joint anatomical frames and angle ranges.

    * ``frames (J, 3, 3)``: rotation matrices, columns = flexion, abduction, twist axes.
    * ``lower``, ``upper`` ``(J, 3)``: ranges of (flexion, abduction, twist), radians.
    """

    frames: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor

    def __post_init__(self) -> None:
        sizes = check_shape(self.frames, "frames", ["J", 3, 3])
        check_shape(self.lower, "lower", ["J", 3], sizes)
        check_shape(self.upper, "upper", ["J", 3], sizes)
        for name, t in (("frames", self.frames), ("lower", self.lower), ("upper", self.upper)):
            check_floating(t, name)
            check_finite(t, name)
        check_like(self.lower, "lower", self.frames, "frames")
        check_like(self.upper, "upper", self.frames, "frames")
        if bool((self.lower > self.upper).any()):
            bad = (self.lower > self.upper).nonzero()[0].tolist()
            raise ParameterError(
                f"lower > upper for joint {bad[0]}, angle {ANGLE_NAMES[bad[1]]}; each range must be [lower, upper]."
            )
        if bool((self.lower.abs() > 3.1416).any() or (self.upper.abs() > 3.1416).any()):
            raise ParameterError("limits must lie in [-pi, pi] radians; convert degrees with math.radians.")
        eye = torch.eye(3, dtype=self.frames.dtype, device=self.frames.device)
        err = (self.frames.transpose(1, 2) @ self.frames - eye).abs().amax()
        if float(err) > 1e-4 or bool((torch.linalg.det(self.frames) < 0).any()):
            raise ParameterError("frames must be rotation matrices (orthonormal, det +1); orthonormalise them first.")

    @property
    def num_joints(self) -> int:
        return int(self.frames.shape[0])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> JointLimits:
        """A copy on ``device`` and/or with ``dtype``."""
        return JointLimits(self.frames.to(device, dtype), self.lower.to(device, dtype), self.upper.to(device, dtype))

    def _check(self, rotations: torch.Tensor) -> None:
        check_shape(rotations, "rotations", ["B", self.num_joints, 3, 3])
        check_like(rotations, "rotations", self.frames, "limits")

    def angles(self, rotations: torch.Tensor) -> torch.Tensor:
        """``(B, J, 3, 3)`` local rotations -> ``(B, J, 3)`` (flexion, abduction, twist)."""
        self._check(rotations)
        in_frame = self.frames.transpose(1, 2) @ rotations @ self.frames
        return matrix_to_euler(in_frame, _CONVENTION)

    def rotations(self, angles: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`angles`: ``(B, J, 3)`` -> ``(B, J, 3, 3)`` local rotations."""
        check_shape(angles, "angles", ["B", self.num_joints, 3])
        return self.frames @ euler_to_matrix(angles, _CONVENTION) @ self.frames.transpose(1, 2)

    def violation(self, rotations: torch.Tensor) -> torch.Tensor:
        """Per-angle distance outside the range, ``(B, J, 3)`` radians (0 inside)."""
        a = self.angles(rotations)
        return torch.relu(a - self.upper) + torch.relu(self.lower - a)

    def penalty(self, rotations: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable penalty ``(B,)``: sum of squared violations (optionally weighted ``(J,)``)."""
        v = self.violation(rotations).square().sum(-1)
        if weights is not None:
            check_shape(weights, "weights", [self.num_joints])
            v = v * weights
        return v.sum(-1)

    def clamp(self, rotations: torch.Tensor) -> torch.Tensor:
        """Rotations with every anatomical angle clamped into its range."""
        a = self.angles(rotations)
        return self.rotations(torch.maximum(torch.minimum(a, self.upper), self.lower))
