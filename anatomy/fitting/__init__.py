"""anatomy.fitting: fitting the layers to targets, and the applications built on the fits.

* :func:`predict_face` / :func:`predict_skull` (:class:`HeadFit`): forensic facial
  reconstruction from a registered skull, and the bones under a registered face.
* :func:`simulate_surgery` (:class:`SurgeryResult`): the face after an orthognathic movement.
* :func:`fit` (:class:`FitOptions`, :class:`FitResult`): the hand or head fitted to a batch of targets,
  :class:`Keypoints3D`, :class:`Keypoints2D` (with a :class:`PinholeCamera`) or :class:`PointCloud`;
  conversions in :mod:`.convert`.
"""

from .camera import PinholeCamera, triangulate
from .fit import FitOptions, FitResult, fit
from .fit_targets import Keypoints2D, Keypoints3D, PointCloud
from .head import HeadFit, predict_face, predict_skull
from .surgery import SurgeryResult, simulate_surgery

__all__ = ["FitOptions", "FitResult", "HeadFit", "Keypoints2D", "Keypoints3D", "PinholeCamera", "PointCloud",
           "SurgeryResult", "fit", "predict_face", "predict_skull", "simulate_surgery", "triangulate"]
