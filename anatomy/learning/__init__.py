"""anatomy.learning: model spaces learned from meshes in correspondence (registrations or phantoms).

* :func:`align_meshes` (generalised Procrustes), :func:`fit_linear_space` (PCA with the model files'
  N(0, 1) coefficient convention), :func:`shape_space`, :func:`trait_space` (paired pre/post changes);
  :class:`LinearSpace` holds a mean and a scaled basis. A pose PCA is :func:`fit_linear_space` of
  axis-angle poses ``(N, J, 3)``.
* :func:`with_learned_spaces`: a base model file's rig with a learned template and spaces, ready for
  :func:`anatomy.io.save_model`.
* :func:`read_registrations` (folders of meshes in template correspondence, or a phantom dataset's
  manifest) and :func:`learn_model` (head: trait and shape spaces; hand: shape space, and from posed
  registrations with their poses the articulation too: :func:`learn_posed_hand`).
* :func:`learn_articulation` (SMPL-style skinning weights, pose correctives, joint regressor and pose
  re-fits from posed meshes), :func:`fit_poses`, :func:`pose_pca` (pose PCA in Nimble's extras layout),
  :func:`with_learned_articulation`.
"""

from .articulation import Articulation, fit_poses, learn_articulation
from .learn import in_model_frame, learn_model, learn_posed_hand, leave_one_out_error
from .model_file import with_learned_articulation, with_learned_spaces
from .pose_space import bulge_correctives, pose_pca, pose_pca_coefficients
from .registrations import Registration, read_registrations
from .shape_space import LinearSpace, align_meshes, fit_linear_space, shape_space, trait_space

__all__ = ["Articulation", "LinearSpace", "Registration", "align_meshes", "bulge_correctives", "fit_linear_space",
           "fit_poses", "in_model_frame", "learn_articulation", "learn_model", "learn_posed_hand",
           "leave_one_out_error", "pose_pca", "pose_pca_coefficients", "read_registrations", "shape_space",
           "trait_space", "with_learned_articulation", "with_learned_spaces"]
