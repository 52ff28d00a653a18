"""Learned spaces into a model file: a base model's rig (tissues, joints, skinning, landmarks) with a new
template and new linear spaces, and a record of how they were learned."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch

from ..core.alignment import procrustes
from ..core.errors import ParameterError, ShapeError
from ..io.model_data import ModelData
from .shape_space import LinearSpace

__all__ = ["with_learned_spaces"]


def with_learned_spaces(
    base: ModelData,
    spaces: Mapping[str, LinearSpace],
    *,
    template_from: str | None = "shape",
    provenance: Mapping[str, Any] | None = None,
    named: tuple[str, ...] = (),
    dtype: torch.dtype = torch.float32,
) -> ModelData:
    """A copy of ``base`` whose spaces ``spaces`` (e.g. ``{"shape": ..., "trait": ...}``) are replaced by
    learned ones (stored in ``dtype``), other spaces kept; with ``template_from`` the template becomes
    that space's mean. The joint regressor, skinning weights, landmarks and faces stay the base's: the
    learned meshes must be in the base's vertex order (registrations in template correspondence).
    The learned spaces are first turned rigidly into the base's frame (their mean aligned to the base
    template by Procrustes), since joint axes, limits and landmarks are defined there.

    ``provenance`` (JSON-able: scans, settings, errors) is recorded under ``meta["provenance"]["learned"]``.
    The base's descriptions of a replaced space's components (``meta["<space>_components"]`` and
    ``meta["<space>_names"]``) are dropped, since principal components mean something else, unless the
    space is in ``named``: learned component by component in the base's units (e.g. traits regressed on
    the planned trait coefficients, :func:`~anatomy.learning.trait_space` with ``movements``).
    Save the result with :func:`anatomy.io.save_model`; ``Nimble(path)`` / ``Sculptor(path)`` load it.
    """
    if not spaces:
        raise ParameterError("spaces is empty: pass at least one learned space, e.g. {'shape': space}.")
    v = base.num_vertices
    for name, space in spaces.items():
        if not isinstance(space, LinearSpace):
            raise ParameterError(f"spaces[{name!r}] must be a LinearSpace; got {type(space).__name__}.")
        if tuple(space.mean.shape) != (v, 3):
            raise ShapeError(f"spaces[{name!r}] has {space.mean.shape[0]} vertices; the base model has {v} "
                             f"(learn from meshes in the base model's vertex order).")
    if template_from is not None and template_from not in spaces:
        raise ParameterError(f"template_from={template_from!r} is not one of the learned spaces {list(spaces)}.")
    reference = spaces[template_from if template_from is not None else next(iter(spaces))].mean.detach().double()
    frame = procrustes(reference.cpu(), base.template.detach().double().cpu())
    out = copy.copy(base)
    out.spaces = dict(base.spaces)
    for name, space in spaces.items():
        turned = space.basis.detach().double().cpu() @ frame.rotation.T  # directions: rotation only
        out.spaces[name] = turned.to(dtype).contiguous()
    if template_from is not None:
        out.template = frame.apply(reference.cpu()).to(base.template.dtype).contiguous()
    meta = copy.deepcopy(base.meta)
    for name in spaces:
        if name not in named:
            meta.pop(f"{name}_components", None)
            meta.pop(f"{name}_names", None)
    record = meta.setdefault("provenance", {})
    if not isinstance(record, dict):
        record = meta["provenance"] = {"base": record}
    record["learned"] = {
        "spaces": {name: {"components": s.num_components, "explained": [round(float(e), 6) for e in s.explained]}
                   for name, s in spaces.items()},
        "template_from": template_from,
        "named": list(named),
        **dict(provenance or {}),
    }
    out.meta = meta
    return out


def with_learned_articulation(
    base: ModelData, shape: LinearSpace, weights: torch.Tensor, regressor: torch.Tensor, pose_basis: torch.Tensor,
    feature_joints: tuple[int, ...], *, pose_extras: Mapping[str, torch.Tensor] | None = None,
    provenance: Mapping[str, Any] | None = None, dtype: torch.dtype = torch.float32,
) -> ModelData:
    """:func:`with_learned_spaces` with ``{"shape": shape}``, plus a learned rig: skinning ``weights (V, J)``
    and joint ``regressor (J, V)`` (stored sparse), pose correctives ``pose_basis (9 F, V, 3)`` driven by
    ``feature_joints`` (turned into the base's frame with the shape space), and optionally new extras
    (e.g. the pose PCA of :func:`~anatomy.learning.pose_pca`). ``provenance`` goes to
    ``meta["provenance"]["learned"]`` (see :func:`with_learned_spaces`).
    """
    v, j = base.num_vertices, base.num_joints
    if tuple(weights.shape) != (v, j) or tuple(regressor.shape) != (j, v):
        raise ShapeError(f"weights must be ({v}, {j}) and regressor ({j}, {v}) for the base model; got "
                         f"{tuple(weights.shape)} and {tuple(regressor.shape)}.")
    if tuple(pose_basis.shape) != (9 * len(feature_joints), v, 3):
        raise ShapeError(f"pose_basis must be ({9 * len(feature_joints)}, {v}, 3) for {len(feature_joints)} "
                         f"feature joints; got {tuple(pose_basis.shape)}.")
    out = with_learned_spaces(base, {"shape": shape}, provenance=provenance, dtype=dtype)
    frame = procrustes(shape.mean.detach().double().cpu(), base.template.detach().double().cpu())
    out.skinning_weights = weights.detach().double().cpu().to(dtype).to_sparse_coo().coalesce()
    out.joint_regressor = regressor.detach().double().cpu().to(dtype).to_sparse_coo().coalesce()
    out.pose_basis = (pose_basis.detach().double().cpu() @ frame.rotation.T).to(dtype).contiguous()
    out.pose_feature_joints = [int(f) for f in feature_joints]
    out.extras = dict(base.extras)
    for key, value in (pose_extras or {}).items():
        out.extras[key] = value.detach().cpu().to(dtype).contiguous()
    return out
