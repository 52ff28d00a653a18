"""Registration of templates to scans: rigid / similarity (:mod:`.rigid`) and non-rigid (:mod:`.nonrigid`)."""

from .rigid import RigidResult, align_landmarks, icp, principal_axes_init, register_rigid

__all__ = ["RigidResult", "align_landmarks", "icp", "principal_axes_init", "register_rigid"]
