"""anatomy.core: pure torch building blocks (rotations, blend shapes, kinematics, LBS, geometry).

Imports nothing from the rest of the package; everything else is built on it.
"""

from .blend import blend_shapes, pose_features, stack_bases
from .errors import (
    AnatomyError,
    DeviceError,
    DtypeError,
    ModelFileError,
    OptionalDependencyError,
    ParameterError,
    ShapeError,
    UnsafePickleError,
)
from .kinematics import Kinematics, KinematicTree, forward_kinematics
from .lbs import LbsBuffers, LbsOutput, blend_skin, lbs, prepare
from .regress import precompute_joint_regression, regress_joints
from .rotations import (
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    euler_to_matrix,
    matrix_to_axis_angle,
    matrix_to_euler,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    quaternion_multiply,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    rotation_6d_to_matrix,
)
from .skinning import skin_batch_last, skin_vertices

__all__ = [
    "AnatomyError", "DeviceError", "DtypeError", "KinematicTree", "Kinematics", "LbsBuffers", "LbsOutput",
    "ModelFileError", "OptionalDependencyError", "ParameterError", "ShapeError", "UnsafePickleError",
    "axis_angle_to_matrix", "axis_angle_to_quaternion", "blend_shapes", "blend_skin", "euler_to_matrix",
    "forward_kinematics", "lbs", "matrix_to_axis_angle", "matrix_to_euler", "matrix_to_quaternion",
    "matrix_to_rotation_6d", "pose_features", "precompute_joint_regression", "prepare",
    "quaternion_multiply", "quaternion_to_axis_angle", "quaternion_to_matrix", "regress_joints",
    "rotation_6d_to_matrix", "skin_batch_last", "skin_vertices", "stack_bases",
]
