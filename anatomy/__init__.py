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
from .fitting import FitResult, HeadFit, SurgeryResult, predict_face, predict_skull, simulate_surgery
from .io import ModelData, TissueSpec, load_model, make_toy_model_data, save_model
from .models import ArticulatedModel, ModelOutput, Nimble, Piano, Sculptor

__version__ = "0.1.0"


def fit(model: object, target: object, **options: object) -> FitResult:
    """Fit ``model`` (a layer, ``"hand"``, ``"head"`` or a model file) to ``target`` (keypoints, point clouds,
    a mesh / keypoint file or a CT/MRI volume); see :func:`anatomy.pipeline.fit_target.fit`. Imported on
    first use: the pipeline pulls in the scans package."""
    from .pipeline.fit_target import fit as _fit

    return _fit(model, target, **options)


__all__ = [
    "AnatomyError", "ArticulatedModel", "DeviceError", "DtypeError", "HeadFit", "ModelData", "ModelFileError",
    "ModelOutput", "Nimble", "OptionalDependencyError", "ParameterError", "Piano", "RangeWarning", "Sculptor",
    "ShapeError",
    "SurgeryResult", "fit", "TissueSpec", "TopologyError", "UnsafePickleError", "__version__", "load_model",
    "make_toy_model_data", "predict_face", "predict_skull", "save_model", "simulate_surgery",
]
