"""Registration of templates to scans: rigid / similarity (:mod:`.rigid`), non-rigid embedded deformation
(:mod:`.nonrigid`, :mod:`.deformation`), the layers fitted to surfaces (:mod:`.model_based`) and tetrahedral
tissues registered elastically (:mod:`.volumetric`, :mod:`.volumetric_hand`)."""

from .deformation import DeformationGraph, build_graph, deform, farthest_point_sampling
from .hand_start import AmbiguousHandStartWarning, HandStart, estimate_hand_keypoints, search_hand_start
from .model_based import ModelFit, fit_model_to_surfaces
from .nonrigid import NonRigidResult, NonRigidWeights, estimate_normals, nonrigid_register
from .rigid import RigidResult, align_landmarks, icp, principal_axes_init, register_rigid
from .volumetric import VolumetricLog, VolumetricResult, VolumetricWeights, boundary_faces, register_volume
from .volumetric_hand import HAND_WEIGHTS, HandSoftTissueResult, register_hand_soft_tissue

__all__ = ["AmbiguousHandStartWarning", "DeformationGraph", "HandStart", "HAND_WEIGHTS", "HandSoftTissueResult",
           "ModelFit", "NonRigidResult", "NonRigidWeights", "RigidResult", "VolumetricLog", "VolumetricResult",
           "VolumetricWeights", "align_landmarks", "boundary_faces", "build_graph", "deform",
           "estimate_hand_keypoints", "estimate_normals", "farthest_point_sampling", "fit_model_to_surfaces", "icp",
           "nonrigid_register", "principal_axes_init", "register_hand_soft_tissue", "register_rigid",
           "register_volume", "search_hand_start"]
