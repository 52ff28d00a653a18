"""Conversions users keep asking for: hand parameters <-> 21 keypoints, MANO-topology meshes, axis-angle <->
pose PCA, left <-> right, millimetres <-> metres.

* :func:`params_to_keypoints`: the layer's forward pass, keypoints only. :func:`keypoints_to_params`:
  the 3D keypoint fit (:func:`~.fit.fit` with :class:`~.fit_targets.Keypoints3D`).
* :func:`mano_to_params`: a mesh in MANO topology (778 vertices) -> hand parameters. The skin is fitted to the
  vertices as a point cloud; with an official MANO link (``model.has_mano``) the vertices are also in
  correspondence (``model.mano_vertices``) and :func:`params_to_mano` gives them back.
* :func:`axis_angle_to_pca` / :func:`pca_to_axis_angle`: the PCA pose of ``Nimble(pose_mode="pca")``
  (``full = theta @ pca_scaled_basis + pca_offset``); axis-angle -> PCA by least squares (exact inside the
  PCA span).
* :func:`mirror_params`: left <-> right. DESIGN §4: the mirror negates x, so axis-angle rows become
  ``(x, -y, -z)`` and the translation ``(-x, y, z)``; shape coefficients are unchanged (the mirrored model
  mirrors its bases). A left layer (``Nimble(side="left")`` / ``from_official(side="left")``) posed with
  the mirrored parameters gives the mirrored right hand.
* :func:`to_mm` / :func:`to_m`.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.errors import ParameterError, ShapeError
from ..models.nimble import Nimble

__all__ = ["axis_angle_to_pca", "keypoints_to_params", "mano_to_params", "mirror_params", "params_to_keypoints",
           "params_to_mano", "pca_to_axis_angle", "to_m", "to_mm"]

_MIRROR_AA = (1.0, -1.0, -1.0)
_MIRROR_T = (-1.0, 1.0, 1.0)


def params_to_keypoints(model: Nimble, **params: torch.Tensor) -> torch.Tensor:
    """``(B, 21, 3)`` keypoints (mm, ``model.keypoint_names`` order) of the layer's keyword arguments."""
    return model(**params).keypoints


def keypoints_to_params(model: Nimble, keypoints: Any, **options: Any) -> dict[str, torch.Tensor]:
    """Hand parameters (the layer's keyword arguments) from ``keypoints (B, 21, 3)``: the 3D keypoint fit."""
    from .fit import fit
    from .fit_targets import Keypoints3D

    return fit(model, Keypoints3D(keypoints), **{"output": False, **options}).params


def mano_to_params(model: Nimble, vertices: Any, **options: Any) -> dict[str, torch.Tensor]:
    """Hand parameters from MANO-topology vertices ``(B, 778, 3)`` (mm): the skin fitted to them as a point
    cloud (the MANO surface covers the hand without the forearm cut, like the skin)."""
    from .fit import fit
    from .fit_targets import PointCloud

    v = torch.as_tensor(vertices)
    if v.dim() == 2:
        v = v[None]
    if v.dim() != 3 or v.shape[1:] != (778, 3):
        raise ShapeError(f"MANO vertices must be (B, 778, 3), got {tuple(v.shape)}.")
    return fit(model, PointCloud(list(v), tissue="skin"), **{"output": False, **options}).params


def params_to_mano(model: Nimble, **params: torch.Tensor) -> torch.Tensor:
    """``(B, 778, 3)`` MANO vertices of the fitted hand (needs the official MANO link, ``model.has_mano``)."""
    return model.mano_vertices(model(**params))


def _pca_layer(model: Nimble) -> None:
    if getattr(model, "pose_mode", None) != "pca":
        raise ParameterError("pose PCA conversions need a layer built with pose_mode='pca' "
                             "(e.g. anatomy.Nimble(pose_mode='pca')).")


def pca_to_axis_angle(model: Nimble, theta: torch.Tensor) -> torch.Tensor:
    """PCA coefficients ``(B, k)`` -> axis-angle ``(B, 20, 3)`` (root row zero), the layer's own formula."""
    _pca_layer(model)
    k = theta.shape[-1]
    if theta.dim() != 2 or k > model.num_pose_pca:
        raise ShapeError(f"theta must be (B, k) with k <= {model.num_pose_pca}, got {tuple(theta.shape)}.")
    full = theta @ model.pca_scaled_basis[:k] + model.pca_offset
    return torch.cat([full.new_zeros(full.shape[0], 1, 3), full.view(-1, 19, 3)], 1)


def axis_angle_to_pca(model: Nimble, pose: torch.Tensor) -> torch.Tensor:
    """Axis-angle ``(B, 20, 3)`` -> the PCA coefficients ``(B, num_pose_pca)`` whose pose is closest in the
    least-squares sense over rows 1..19 (the root row is not part of the PCA: use ``global_orient``)."""
    _pca_layer(model)
    if pose.dim() != 3 or pose.shape[1:] != (20, 3):
        raise ShapeError(f"pose must be (B, 20, 3) axis-angle, got {tuple(pose.shape)}.")
    basis = model.pca_scaled_basis.double()  # (n, 57)
    rhs = (pose[:, 1:].reshape(pose.shape[0], 57).double() - model.pca_offset.double())
    sol = torch.linalg.lstsq(basis.T, rhs.T).solution  # (n, B)
    return sol.T.to(pose.dtype)


def mirror_params(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Left <-> right hand parameters (see the module text); its own inverse."""
    out = dict(params)
    for key in ("pose", "global_orient"):
        if key in out and out[key] is not None:
            v = out[key]
            if v.shape[-1] != 3:
                raise ShapeError(f"{key} must be axis-angle (..., 3) to mirror, got {tuple(v.shape)}; PCA "
                                 f"coefficients: convert with pca_to_axis_angle first.")
            out[key] = v * v.new_tensor(_MIRROR_AA)
    if "transl" in out and out["transl"] is not None:
        out["transl"] = out["transl"] * out["transl"].new_tensor(_MIRROR_T)
    return out


def to_mm(x: torch.Tensor) -> torch.Tensor:
    """Metres -> millimetres."""
    return x * 1000.0


def to_m(x: torch.Tensor) -> torch.Tensor:
    """Millimetres -> metres."""
    return x / 1000.0
