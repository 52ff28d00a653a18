"""Registration of templates to scans: rigid / similarity (:mod:`.rigid`) and non-rigid embedded
deformation (:mod:`.nonrigid`, :mod:`.deformation`), and the layers fitted to surfaces (:mod:`.model_based`)."""

from .deformation import DeformationGraph, build_graph, deform, farthest_point_sampling
from .model_based import ModelFit, fit_model_to_surfaces
from .nonrigid import NonRigidResult, NonRigidWeights, estimate_normals, nonrigid_register
from .rigid import RigidResult, align_landmarks, icp, principal_axes_init, register_rigid

__all__ = ["DeformationGraph", "ModelFit", "fit_model_to_surfaces", "NonRigidResult", "NonRigidWeights", "RigidResult", "align_landmarks", "build_graph",
           "deform", "estimate_normals", "farthest_point_sampling", "icp", "nonrigid_register",
           "principal_axes_init", "register_rigid"]
