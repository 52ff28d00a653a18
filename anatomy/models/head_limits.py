"""Limits of the jaw: rotation angles (a one-row :class:`JointLimits`) and the condylar offset box.

A head model file may carry, in ``extras`` (head frame RAS: +x towards the right porion,
+y anterior, +z superior):

* ``jaw_rotation_lower``, ``jaw_rotation_upper`` ``(3,)``, radians: ranges of the jaw's
  anatomical angles ``(opening, roll, yaw)`` (see :data:`JAW_FRAME`);
* ``jaw_offset_lower``, ``jaw_offset_upper`` ``(3,)``, mm: ranges of the condylar translation
  ``(x lateral excursion, y protrusion, z glide)`` added to the jaw joint in the head frame.

**Sign convention.** Unless the model gives its own ``extras['jaw_frame'] (3, 3)`` (a rotation,
columns as below), the angles are the intrinsic XYZ angles of the jaw's local rotation read
in the frame ``JAW_FRAME = diag(-1, -1, 1)`` (columns: the inter-condylar axis pointing to the
*left*, the posterior axis, the superior axis). A positive first angle rotates about ``-x``:
the mouth opens (the chin goes down and back); the second rolls the chin about ``-y``; the
third turns it about ``+z`` (positive: the chin goes to the subject's left). In head-frame
axis-angle, opening by ``a`` radians is ``jaw_pose = (-a, 0, 0)``.
"""

from __future__ import annotations

import torch

from ..constraints import JointLimits
from ..core.errors import ParameterError

JAW_FRAME = ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))
JAW_ANGLE_NAMES = ("opening", "roll", "yaw")
ROTATION_KEYS = ("jaw_rotation_lower", "jaw_rotation_upper")
OFFSET_KEYS = ("jaw_offset_lower", "jaw_offset_upper")


def _pair(extras: dict[str, torch.Tensor], keys: tuple[str, str], what: str) -> tuple[torch.Tensor, torch.Tensor]:
    missing = [k for k in keys if k not in extras]
    if missing:
        raise ParameterError(
            f"this head model has no jaw {what} limits (missing extras {missing}); the embedded default head has "
            f"them, official SCULPTOR files do not: add them to the model file's extras (3 values each)."
        )
    lower, upper = (extras[k].reshape(-1).double() for k in keys)
    if lower.shape != (3,) or upper.shape != (3,):
        raise ParameterError(f"extras {list(keys)} must hold 3 values each, got {tuple(lower.shape)} and "
                             f"{tuple(upper.shape)}.")
    if bool((lower > upper).any()):
        raise ParameterError(f"extras {keys[0]} > {keys[1]} for some axis: {lower.tolist()} vs {upper.tolist()}.")
    return lower, upper


def jaw_joint_limits(extras: dict[str, torch.Tensor]) -> JointLimits:
    """One :class:`JointLimits` row for the jaw (float64, CPU), in :data:`JAW_FRAME`."""
    lower, upper = _pair(extras, ROTATION_KEYS, "rotation")
    frame = extras["jaw_frame"].double() if "jaw_frame" in extras else torch.tensor(JAW_FRAME, dtype=torch.float64)
    if frame.shape != (3, 3):
        raise ParameterError(f"extras['jaw_frame'] must be a (3, 3) rotation, got {tuple(frame.shape)}.")
    return JointLimits(frame[None], lower[None], upper[None])


def jaw_offset_box(extras: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lower, upper)`` ``(3,)`` float64 condylar offset ranges in mm (head frame)."""
    return _pair(extras, OFFSET_KEYS, "offset")
