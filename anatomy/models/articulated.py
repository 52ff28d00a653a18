"""A generic articulated model over several tissues in one vertex stack.

:class:`ArticulatedModel` is the layer every model builds on (the hand and head
layers add their parameterisations). It holds the model's arrays as buffers,
precomputed once for the core's forward pass (:mod:`anatomy.core.lbs`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..core.checks import check_floating, check_like, value_checks_off
from ..core.errors import ParameterError, ShapeError
from ..core.geometry import barycentric_interpolate
from ..core.kinematics import KinematicTree
from ..core.lbs import LbsBuffers, blend_skin, prepare
from ..io.model_data import ModelData
from ..io.model_file import load_model
from .output import ModelOutput, TissueLayout
from .params import as_rotations, batch_size_of, expand_batch, pad_coeffs

#: Sparse skinning weights up to this dense size are densified in the layer: the dense GEMM is
#: much faster than torch's sparse matmul, which zero-fills its output and runs one thread
#: (embedded hand, batch 64, 2 threads: forward 186 -> 126 ms). Files keep them sparse.
DENSE_WEIGHTS_BYTES = 64 << 20


class ArticulatedModel(nn.Module):
    """Blend shapes + linear blend skinning over a multi-tissue vertex stack.

    Args:
        model: a :class:`ModelData` or the path of a model file (``.safetensors``
            with its ``.json`` sidecar).
        dtype, device: where the buffers live (default float32, CPU); ``.to()``
            moves them later.

    Call ``model(pose, shape=beta, ...)``: ``pose`` is ``(B, J, 3)`` axis-angle or
    ``(B, J, 3, 3)`` matrices, one row per joint (root first); every linear space of
    the model (``model.space_sizes``) is a keyword taking ``(B, k)`` normalised
    coefficients with ``k <= K`` (missing trailing ones are zero). Inputs with batch
    1 broadcast against the others.
    """

    template: torch.Tensor
    basis_t: torch.Tensor | None
    basis: torch.Tensor | None
    joint_template: torch.Tensor
    joint_basis: torch.Tensor | None
    weights: torch.Tensor
    landmark_ids: torch.Tensor
    landmark_weights: torch.Tensor

    def __init__(
        self,
        model: ModelData | str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        data = model if isinstance(model, ModelData) else load_model(model)
        self.data_meta = dict(data.meta)
        self.joint_names = tuple(data.joint_names)
        self.tree = KinematicTree.from_parents(data.parents)
        self.space_sizes = {name: int(b.shape[0]) for name, b in data.spaces.items()}
        self.landmark_names = tuple(data.landmark_names)
        template = data.template.to(dtype)
        bases = torch.cat([b.to(dtype) for b in data.spaces.values()], 0) if data.spaces else None
        weights = data.skinning_weights.to(dtype)
        if weights.is_sparse and weights.shape[0] * weights.shape[1] * weights.element_size() <= DENSE_WEIGHTS_BYTES:
            weights = weights.to_dense()
        buffers = prepare(
            template,
            weights,
            data.joint_regressor.to(dtype),
            data.parents,
            space_bases=bases,
            pose_basis=None if data.pose_basis is None else data.pose_basis.to(dtype),
            pose_feature_joints=data.pose_feature_joints,
        )
        self.num_coeffs = buffers.num_coeffs
        self.pose_feature_joints = buffers.pose_feature_joints
        self.register_buffer("template", buffers.template, persistent=False)
        self.register_buffer("basis_t", buffers.basis_t, persistent=False)
        self.register_buffer("basis", buffers.basis, persistent=False)
        self.register_buffer("joint_template", buffers.joint_template, persistent=False)
        self.register_buffer("joint_basis", buffers.joint_basis, persistent=False)
        self.register_buffer("weights", buffers.weights, persistent=False)
        lm_ids = data.landmark_vertices if data.landmark_vertices is not None else torch.zeros(0, 3)
        lm_w = data.landmark_weights if data.landmark_weights is not None else torch.zeros(0, 3)
        self.register_buffer("landmark_ids", lm_ids.long(), persistent=False)
        self.register_buffer("landmark_weights", lm_w.to(dtype), persistent=False)
        self._tissue_specs = list(data.tissues)
        for i, t in enumerate(data.tissues):
            self.register_buffer(f"_faces_{i}", t.faces.long(), persistent=False)
            self.register_buffer(f"_tets_{i}", None if t.tets is None else t.tets.long(), persistent=False)
            self.register_buffer(f"_parts_{i}", None if t.part_ids is None else t.part_ids.long(), persistent=False)
        if device is not None:
            self.to(device)

    # -- structure ---------------------------------------------------------------------------------------
    @property
    def num_joints(self) -> int:
        return self.tree.num_joints

    @property
    def num_vertices(self) -> int:
        return int(self.template.shape[0])

    @property
    def layout(self) -> tuple[TissueLayout, ...]:
        out = []
        for i, t in enumerate(self._tissue_specs):
            out.append(TissueLayout(
                name=t.name, start=t.start, stop=t.stop, faces=getattr(self, f"_faces_{i}"),
                tets=getattr(self, f"_tets_{i}"), part_names=tuple(t.part_names),
                part_ids=getattr(self, f"_parts_{i}"),
            ))
        return tuple(out)

    def lbs_buffers(self) -> LbsBuffers:
        """The core's precomputed buffers on the module's current device and dtype."""
        return LbsBuffers(
            template=self.template, basis_t=self.basis_t, basis=self.basis, num_coeffs=self.num_coeffs,
            joint_template=self.joint_template, joint_basis=self.joint_basis, weights=self.weights,
            tree=self.tree, pose_feature_joints=self.pose_feature_joints,
        )

    # -- forward -----------------------------------------------------------------------------------------
    def forward(
        self,
        pose: torch.Tensor | None = None,
        *,
        global_orient: torch.Tensor | None = None,
        transl: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        joint_offsets: torch.Tensor | None = None,
        **coeffs: torch.Tensor | None,
    ) -> ModelOutput:
        """Pose the model.

        Args:
            pose: ``(B, J, 3)`` axis-angle or ``(B, J, 3, 3)`` local rotations; ``None`` = rest.
            global_orient: ``(B, 3)`` axis-angle or ``(B, 3, 3)``, applied on top of the
                root's rotation (about the root joint).
            transl: ``(B, 3)`` world translation (mm), applied last.
            scale: ``(B,)`` uniform scale about the model origin, applied before ``transl``.
            joint_offsets: ``(B, J, 3)`` per-joint translation relative to the parent (mm).
            **coeffs: one ``(B, k)`` tensor per linear space, by name.
        """
        unknown = set(coeffs) - set(self.space_sizes)
        if unknown:
            raise ParameterError(
                f"unknown parameter(s) {sorted(unknown)}; this model's linear spaces are "
                f"{list(self.space_sizes)} (pass them as keywords)."
            )
        rotations = None if pose is None else as_rotations(pose, "pose", self.num_joints, self.template)
        return self.pose_rotations(rotations, global_orient=global_orient, transl=transl, scale=scale,
                                   joint_offsets=joint_offsets, coeffs=coeffs)

    def pose_rotations(
        self,
        rotations: torch.Tensor | None,
        *,
        global_orient: torch.Tensor | None = None,
        transl: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        joint_offsets: torch.Tensor | None = None,
        coeffs: dict[str, torch.Tensor | None] | None = None,
    ) -> ModelOutput:
        """:meth:`forward` with the pose given as ``(B, J, 3, 3)`` local rotations (or ``None``)."""
        ref = self.template
        coeffs = {} if coeffs is None else coeffs
        go = None
        if global_orient is not None:
            go = as_rotations(global_orient.unsqueeze(1), "global_orient", 1, ref)
        inputs: dict[str, torch.Tensor | None] = {"pose": rotations, "global_orient": go, "transl": transl,
                                                  "scale": scale, "joint_offsets": joint_offsets, **coeffs}
        dims = {"pose": 3, "global_orient": 3, "transl": 1, "scale": 0, "joint_offsets": 2,
                **{k: 1 for k in coeffs}}
        batch = batch_size_of(inputs, dims)
        num_j = self.num_joints
        if rotations is None:
            rotations = torch.eye(3, dtype=ref.dtype, device=ref.device).expand(batch, num_j, 3, 3)
        rotations = expand_batch(rotations, batch)
        if go is not None:
            root = expand_batch(go[:, 0], batch) @ rotations[:, 0]
            rotations = torch.cat([root[:, None], rotations[:, 1:]], 1)
        stacked = None
        if self.num_coeffs:
            parts = []
            for name, size in self.space_sizes.items():
                value = coeffs.get(name)
                if value is None:
                    parts.append(ref.new_zeros(batch, size))
                else:
                    parts.append(expand_batch(pad_coeffs(value, name, size, ref), batch))
            stacked = torch.cat(parts, 1)
        extra = {}
        for name, value in (("transl", transl), ("scale", scale), ("joint_offsets", joint_offsets)):
            if value is not None:
                check_floating(value, name)
                check_like(value, name, ref, "the model")
                extra[name] = expand_batch(value, batch)
        if "joint_offsets" in extra and extra["joint_offsets"].shape[1:] != (num_j, 3):
            raise ShapeError(
                f"joint_offsets must have shape (B, {num_j}, 3), got {tuple(extra['joint_offsets'].shape)}."
            )
        if "scale" in extra and not value_checks_off() and not (extra["scale"] > 0).all():
            raise ParameterError("scale must be positive; pass e.g. torch.ones(B).")
        out = blend_skin(
            self.lbs_buffers(), rotations, stacked, offsets=extra.get("joint_offsets"),
            scale=extra.get("scale"), translation=extra.get("transl"),
        )
        landmarks = None
        if self.landmark_ids.shape[0]:
            landmarks = barycentric_interpolate(out.vertices, self.landmark_ids, self.landmark_weights)
        return ModelOutput(
            vertices=out.vertices, joints=out.joints, rest_joints=out.rest_joints, rotations=out.rotations,
            transforms=out.transforms, landmarks=landmarks, layout=self.layout,
            joint_names=self.joint_names, landmark_names=self.landmark_names,
        )

    def extra_repr(self) -> str:
        tissues = ", ".join(f"{t.name}:{t.num_vertices}v" for t in self._tissue_specs)
        return f"V={self.num_vertices}, J={self.num_joints}, spaces={self.space_sizes}, tissues=[{tissues}]"

