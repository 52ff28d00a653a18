"""anatomy.models: ``nn.Module`` layers over the core and their output dataclasses."""

from .articulated import ArticulatedModel
from .nimble import Nimble, NimbleOutput, Piano
from .output import ModelOutput, TissueLayout
from .sculptor import Sculptor, SculptorOutput

__all__ = [
    "ArticulatedModel", "ModelOutput", "Nimble", "NimbleOutput", "Piano", "Sculptor", "SculptorOutput", "TissueLayout",
]
