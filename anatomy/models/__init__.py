"""anatomy.models: ``nn.Module`` layers over the core and their output dataclasses."""

from .articulated import ArticulatedModel
from .output import ModelOutput, TissueLayout

__all__ = ["ArticulatedModel", "ModelOutput", "TissueLayout"]
