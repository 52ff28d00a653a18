"""The in-memory description of a model, independent of where it came from.

A :class:`ModelData` is what a model file holds and what every layer
(:class:`anatomy.models.ArticulatedModel`, ``Nimble``, ``Sculptor``) is built from.
Official files are converted into it; our own file format stores it as
safetensors tensors plus a JSON sidecar (see :mod:`anatomy.io.model_file`).

Vertices of all tissues live in one stack ``template (V, 3)``; each tissue owns the
contiguous range ``[start, stop)`` and its faces/tets use **local** indices into it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

FORMAT_VERSION = 1


@dataclass
class TissueSpec:
    """One tissue of the vertex stack.

    ``faces (F, 3)`` are the surface triangles and ``tets (T, 4)`` the optional
    tetrahedra, both int64 with indices local to ``[start, stop)``. ``part_ids (n,)``
    optionally labels each vertex with an index into ``part_names`` (e.g. the 20
    bones of the hand), giving per-part access in outputs.
    """

    name: str
    start: int
    stop: int
    faces: torch.Tensor
    tets: torch.Tensor | None = None
    part_names: list[str] = field(default_factory=list)
    part_ids: torch.Tensor | None = None

    @property
    def num_vertices(self) -> int:
        return self.stop - self.start


@dataclass
class ModelData:
    """Everything a blend-shape + LBS model needs, in millimetres.

    * ``template (V, 3)``: rest vertices (mean shape) of all tissues stacked.
    * ``spaces``: ordered mapping name -> basis ``(K, V, 3)`` of a linear space whose
      coefficients are normalised (N(0, 1) per component): e.g. ``shape``, ``trait``,
      ``expression``. Every space feeds the joint regressor (joints follow
      shape, trait and expression); pose correctives do not.
    * ``pose_basis (P, V, 3)`` with ``P = 9 * len(pose_feature_joints)``: pose
      correctives driven by ``R_j - I`` of those joints (row-major 3x3 flattening);
      ``None`` for a model without correctives.
    * ``joint_regressor (J, V)`` and ``skinning_weights (V, J)``: dense or sparse COO.
    * ``landmark_vertices (L, 3)`` global vertex ids and ``landmark_weights (L, 3)``
      barycentric weights of named landmarks on the surface.
    * ``extras``: model-specific tensors (pose PCA, joint limits, texture bases...).
    * ``meta``: JSON-able metadata: name, units, handedness, provenance, licence...
    """

    template: torch.Tensor
    tissues: list[TissueSpec]
    joint_names: list[str]
    parents: list[int]
    joint_regressor: torch.Tensor
    skinning_weights: torch.Tensor
    spaces: dict[str, torch.Tensor] = field(default_factory=dict)
    pose_basis: torch.Tensor | None = None
    pose_feature_joints: list[int] = field(default_factory=list)
    landmark_names: list[str] = field(default_factory=list)
    landmark_vertices: torch.Tensor | None = None
    landmark_weights: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_vertices(self) -> int:
        return int(self.template.shape[0])

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def tissue(self, name: str) -> TissueSpec:
        for t in self.tissues:
            if t.name == name:
                return t
        raise KeyError(f"no tissue named {name!r}; this model has {[t.name for t in self.tissues]}")

    def tissue_mask(self, name: str) -> torch.Tensor:
        """``(V,)`` bool: the vertices of tissue ``name`` in the stacked vertex order."""
        spec = self.tissue(name)
        mask = torch.zeros(self.template.shape[0], dtype=torch.bool)
        mask[spec.start:spec.stop] = True
        return mask
