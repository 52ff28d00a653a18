"""anatomy.constraints: anatomical joint frames and limits, penalties and priors."""

from .limits import JointLimits

__all__ = ["JointLimits"]
