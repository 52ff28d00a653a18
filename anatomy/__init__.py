"""anatomy: parametric anatomical models with explicit interior anatomy.

Units are millimetres and radians; rotation matrices act on column vectors; points
are rows ``(..., 3)``. See the README for the conventions table.
"""

from .core.errors import (
    AnatomyError,
    DeviceError,
    DtypeError,
    ModelFileError,
    OptionalDependencyError,
    ParameterError,
    RangeWarning,
    ShapeError,
    TopologyError,
    UnsafePickleError,
)
from .fitting import HeadFit, SurgeryResult, predict_face, predict_skull, simulate_surgery
from .io import ModelData, TissueSpec, load_model, make_toy_model_data, save_model
from .models import ArticulatedModel, ModelOutput, Nimble, Piano, Sculptor

__version__ = "0.1.0"

__all__ = [
    "AnatomyError", "ArticulatedModel", "DeviceError", "DtypeError", "HeadFit", "ModelData", "ModelFileError",
    "ModelOutput", "Nimble", "OptionalDependencyError", "ParameterError", "Piano", "RangeWarning", "Sculptor",
    "ShapeError",
    "SurgeryResult", "TissueSpec", "TopologyError", "UnsafePickleError", "__version__", "load_model",
    "make_toy_model_data", "predict_face", "predict_skull", "save_model", "simulate_surgery",
]
