"""anatomy.constraints: anatomical joint limits and tissue penetration (measures, penalties, fix-up)."""

from .limits import JointLimits
from .penetration import PenetrationDepths, TissuePenetration

__all__ = ["JointLimits", "PenetrationDepths", "TissuePenetration"]
