"""anatomy.fitting: fitting the layers to targets, and the applications built on the fits.

* :func:`predict_face` / :func:`predict_skull` (:class:`HeadFit`): forensic facial
  reconstruction from a registered skull, and the bones under a registered face.
* :func:`simulate_surgery` (:class:`SurgeryResult`): the face after an orthognathic movement.
"""

from .head import HeadFit, predict_face, predict_skull
from .surgery import SurgeryResult, simulate_surgery

__all__ = ["HeadFit", "SurgeryResult", "predict_face", "predict_skull", "simulate_surgery"]
