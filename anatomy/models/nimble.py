"""The NIMBLE hand layer (bones, muscles, skin) and its bone-only predecessor PIANO.

Both reproduce the official formulas (DESIGN §4) on the shared blend-shape + LBS core:
pose is 20 axis-angle rows, one per bone (row 0: global rotation about joint 0; row b:
bone b about the joint with the same name; the five fingertip ``*_end`` joints never
rotate), or 30 normalised PCA coefficients; shape is normalised ``beta``. Outputs add the
common 21 hand keypoints. A left hand is the mirrored model (``side="left"``): pose it with
mirrored parameters (axis-angle ``(x, -y, -z)``, translation ``(-x, y, z)``) to get the
mirrored right hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..constraints import JointLimits
from ..constraints.penetration import TissuePenetration
from ..core.checks import check_finite, check_floating, check_like, check_tensor
from ..core.errors import ParameterError, ShapeError
from ..core.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from ..io.model_data import ModelData
from ..io.model_file import load_model
from ..io.official_nimble import (
    BONE_NAMES,
    BONE_TO_JOINT,
    KEYPOINT_JOINTS,
    KEYPOINT_NAMES,
    mirror_hand_model_data,
    nimble_to_model_data,
    piano_to_model_data,
    read_mano_vreg,
    read_nimble_texture,
)
from .articulated import ArticulatedModel
from .hand_limits import hand_joint_limits
from .hand_penetration import build_penetration, push_skin_out, separate_bones
from .output import ModelOutput
from .params import pad_coeffs

__all__ = ["Nimble", "NimbleOutput", "Piano"]

_NUM_BONES = len(BONE_NAMES)
_SIDES = ("right", "left")
_MODES = ("axis_angle", "pca")
#: name (``meta["name"]``) of the embedded default hand model
DEFAULT_HAND_NAME = "anatomy-default-hand"


def default_hand_path() -> Path:
    """Path of the embedded default hand model (``anatomy.assets``: ``hand.safetensors`` + ``hand.json``).

    In a source checkout the files live in ``templates/assets`` (see ``pyproject.toml``).
    """
    return Path(str(resources.files("anatomy.assets").joinpath("hand.safetensors")))


@dataclass(frozen=True)
class NimbleOutput(ModelOutput):
    """:class:`ModelOutput` plus ``keypoints (B, 21, 3)`` in the common hand order
    (:data:`~anatomy.io.official_nimble.KEYPOINT_NAMES`), taken from the posed joints."""

    keypoints: torch.Tensor


class Nimble(ArticulatedModel):
    """NIMBLE hand layer: tissues ``bones`` (20 parts), ``muscles``, ``skin``; 25 joints.

    Build it from the official files with :meth:`from_official`, or from a converted model
    (a :class:`ModelData` or our model file) directly. ``Nimble()`` without a model loads the
    embedded default hand (``anatomy/assets/hand.safetensors``: real bone geometry, modelled
    muscles and skin, a synthetic shape space; no pose correctives or pose PCA yet).
    ``pose_mode="pca"`` needs the pose PCA tensors in ``extras`` (kept by the converter).

    Call ``model(pose, shape, global_orient=, transl=, scale=)``:

    * ``pose``: ``(B, 20, 3)`` axis-angle (or ``(B, 20, 3, 3)`` matrices) in ``axis_angle``
      mode; ``(B, k)`` normalised PCA coefficients, ``k <= num_pose_pca``, in ``pca`` mode,
      mapped by ``full = pose_basis[:n]^T (theta * pose_pm_std[:n] + pose_pm_mean[:n]) + pose_mean``
      (``n = num_pose_pca``, missing trailing coefficients are zero) with a zero root.
      ``None``: rest pose (axis-angle) or ``theta = 0`` (PCA).
    * ``shape``: ``(B, k)`` normalised ``beta``, ``k <= num_betas``.
    """

    keypoint_names: tuple[str, ...] = KEYPOINT_NAMES
    _bone_joints: torch.Tensor
    _keypoint_joints: torch.Tensor
    pca_scaled_basis: torch.Tensor
    pca_offset: torch.Tensor
    mano_ids: torch.Tensor
    mano_bary: torch.Tensor
    bone_names: tuple[str, ...] = BONE_NAMES

    def __init__(
        self,
        model: ModelData | str | Path | None = None,
        *,
        pose_mode: str = "axis_angle",
        num_pose_pca: int = 30,
        tex_dict: Any = None,
        mano_vreg: Any = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        if model is None:
            model = default_hand_path()
        data = model if isinstance(model, ModelData) else load_model(model)
        if pose_mode not in _MODES:
            raise ParameterError(f"pose_mode must be one of {_MODES}, got {pose_mode!r}.")
        if list(data.joint_names[:1]) != ["carpal"] or len(data.joint_names) != 25:
            raise ParameterError(f"{type(self).__name__} needs the 25 NIMBLE joints (carpal first); this model has "
                                 f"{len(data.joint_names)} joints. Use ArticulatedModel for other models.")
        super().__init__(data, dtype=dtype)
        self.side = str(data.meta.get("handedness", "right"))
        self.pose_mode = pose_mode
        self.register_buffer("_bone_joints", torch.tensor(BONE_TO_JOINT), persistent=False)
        self.register_buffer("_keypoint_joints", torch.tensor(KEYPOINT_JOINTS), persistent=False)
        self._limit_extras: dict[str, torch.Tensor] = {
            k: data.extras[k] for k in ("joint_axes", "joint_ranges", "joint_dof_mask") if k in data.extras
        }
        surface = data.extras.get("skin_surface_mask")
        self._skin_surface = None if surface is None else surface.bool()
        self._penetration: TissuePenetration | None = None
        self.num_pose_pca = 0
        if pose_mode == "pca":
            needed = ("pose_pca_basis", "pose_pca_mean", "pose_pca_pm_std", "pose_pca_pm_mean")
            missing = [k for k in needed if k not in data.extras]
            if missing:
                raise ParameterError(f"pose_mode='pca' needs the pose PCA tensors {missing} in the model's extras "
                                     f"(build the model with Nimble.from_official), or use pose_mode='axis_angle'.")
            avail = int(data.extras["pose_pca_basis"].shape[0])
            if not 0 < num_pose_pca <= avail:
                raise ParameterError(f"num_pose_pca must be in [1, {avail}] (the model's PCA components), "
                                     f"got {num_pose_pca}.")
            self.num_pose_pca = num_pose_pca
            n = num_pose_pca
            basis = data.extras["pose_pca_basis"][:n].to(dtype)
            scaled = data.extras["pose_pca_pm_std"][:n].to(dtype)[:, None] * basis
            offset = data.extras["pose_pca_pm_mean"][:n].to(dtype) @ basis + data.extras["pose_pca_mean"].to(dtype)
            # full (57,) = theta (n,) @ scaled (n, 57) + offset: the official formula, regrouped
            self.register_buffer("pca_scaled_basis", scaled, persistent=False)
            self.register_buffer("pca_offset", offset, persistent=False)
        self.tex: dict[str, int] = {}
        if tex_dict is not None:
            for name, entry in read_nimble_texture(tex_dict).items():
                self.register_buffer(f"tex_{name}_basis", (entry["basis"] * entry["std"]).to(dtype), persistent=False)
                self.register_buffer(f"tex_{name}_mean", entry["mean"].to(dtype), persistent=False)
                self.tex[name] = int(entry["basis"].shape[1])
        self.has_mano = mano_vreg is not None
        if mano_vreg is not None:
            skin = data.tissue("skin")
            faces = skin.faces if self.side == "right" else skin.faces[:, [0, 2, 1]]
            ids, bary = read_mano_vreg(mano_vreg, faces, skin.num_vertices)
            self.register_buffer("mano_ids", ids + skin.start, persistent=False)
            self.register_buffer("mano_bary", bary.to(dtype), persistent=False)
        if device is not None:
            self.to(device)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_official(
        cls,
        pm_dict: Any,
        tex_dict: Any = None,
        mano_vreg: Any = None,
        *,
        side: str = "right",
        pose_mode: str = "axis_angle",
        num_betas: int = 20,
        num_pose_pca: int = 30,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Nimble:
        """Build from ``NIMBLE_DICT_*.pkl`` (+ optional ``NIMBLE_TEX_DICT.pkl`` and
        ``NIMBLE_MANO_VREG.pkl``), each a path, bytes or the loaded dict.

        ``num_betas`` shape components are kept (their means are baked into the template).
        """
        data = _sided(nimble_to_model_data(pm_dict, num_shape=num_betas), side)
        return cls(data, pose_mode=pose_mode, num_pose_pca=num_pose_pca, tex_dict=tex_dict, mano_vreg=mano_vreg,
                   dtype=dtype, device=device)

    # -- joint limits -----------------------------------------------------------------------
    @property
    def has_joint_limits(self) -> bool:
        """Whether the model file holds joint axes and ranges (:meth:`joint_limits` works)."""
        return len(self._limit_extras) == 3

    def joint_limits(self) -> JointLimits:
        """Anatomical limits per pose row (bone), on the layer's device and dtype.

        Needs joint axes and ranges in the model file (the embedded default hand has them,
        from MyoHand); the official NIMBLE files have none.
        """
        limits = hand_joint_limits(self._limit_extras, self.joint_template, BONE_TO_JOINT, self.tree.parents)
        return limits.to(self.template.device, self.template.dtype)

    def sample_pose(self, num: int, *, generator: torch.Generator | None = None,
                    collision_free: bool = False) -> torch.Tensor:
        """``(num, 20, 3)`` axis-angle poses with every angle drawn uniformly inside its limits (root zero).

        Angles are drawn independently per joint, so neighbouring fingers can cross; with
        ``collision_free`` the poses are then passed through :meth:`separate_bones`.
        """
        if num < 1:
            raise ParameterError(f"num must be at least 1, got {num}.")
        limits = self.joint_limits()
        u = torch.rand(num, limits.num_joints, 3, generator=generator, dtype=torch.float64)
        lo, hi = limits.lower.double(), limits.upper.double()
        angles = lo + u * (hi - lo)
        angles[:, 0] = 0.0
        rot = limits.to(dtype=torch.float64).rotations(angles)
        pose = matrix_to_axis_angle(rot).to(self.template.dtype)
        return self.separate_bones(pose) if collision_free else pose

    # -- penetration ------------------------------------------------------------------------
    def penetration(self) -> TissuePenetration:
        """Penetration measures, differentiable penalties and the skin fix-up for this hand.

        Built from the rest tissues on first use (a signed distance grid per bone: a few
        seconds on one CPU core) and cached; it follows the layer's device and dtype. Use it on
        outputs: ``pen.penalty(out.bones, out.skin, out.muscles)``, ``pen.depths(...)``.
        """
        if self._penetration is None:
            self._penetration = build_penetration(self.layout, self.template, self._skin_surface)
        self._penetration = self._penetration.to(self.template.device, self.template.dtype)
        return self._penetration

    def push_skin_out(self, output: NimbleOutput, *, margin: float = 0.5, iterations: int = 12) -> NimbleOutput:
        """``output`` with the skin surface moved out of muscles and bones: the vectorised
        counterpart of NIMBLE's collision fix-up (:meth:`TissuePenetration.push_skin_out`).
        The skin of the result carries no gradient."""
        return push_skin_out(self.penetration(), output, margin=margin, iterations=iterations)

    def separate_bones(self, pose: torch.Tensor, shape: torch.Tensor | None = None, **options: Any) -> torch.Tensor:
        """Axis-angle ``pose (B, 20, 3)`` nudged until no bone enters another (see
        :func:`anatomy.models.hand_penetration.separate_bones` for the options)."""
        return separate_bones(self, pose, shape, **options)

    # -- parameters -------------------------------------------------------------------------
    def bone_rotations(self, pose: torch.Tensor | None, batch: int = 1) -> torch.Tensor:
        """``(B, 20, 3, 3)`` bone rotations from the layer's pose input (see the class docs)."""
        ref = self.template
        if self.pose_mode == "pca":
            if pose is None:
                theta = ref.new_zeros(batch, self.num_pose_pca)
            else:
                check_tensor(pose, "pose")
                if pose.dim() == 3:
                    raise ShapeError(
                        f"pose has shape {tuple(pose.shape)} but this layer is in pca mode: pass (B, k) PCA "
                        f"coefficients with k <= {self.num_pose_pca}, or build it with pose_mode='axis_angle' "
                        f"for (B, 20, 3) axis-angle."
                    )
                theta = pad_coeffs(pose, "pose", self.num_pose_pca, ref)
            full = theta @ self.pca_scaled_basis + self.pca_offset
            aa = torch.cat([full.new_zeros(full.shape[0], 1, 3), full.view(-1, _NUM_BONES - 1, 3)], 1)
            return axis_angle_to_matrix(aa)
        if pose is None:
            return torch.eye(3, dtype=ref.dtype, device=ref.device).expand(batch, _NUM_BONES, 3, 3)
        check_tensor(pose, "pose")
        shape = tuple(pose.shape)
        if shape[1:] not in ((_NUM_BONES, 3), (_NUM_BONES, 3, 3)):
            hint = ""
            if pose.dim() == 2 and shape[1] == 3 * _NUM_BONES:
                hint = f" For flat axis-angle use pose.view(-1, {_NUM_BONES}, 3)."
            elif pose.dim() == 2:
                hint = " For PCA coefficients build the layer with pose_mode='pca'."
            raise ShapeError(
                f"pose must be (B, {_NUM_BONES}, 3) axis-angle (one row per bone, row 0 the root) or "
                f"(B, {_NUM_BONES}, 3, 3) rotation matrices, got {shape}.{hint}"
            )
        check_floating(pose, "pose")
        check_like(pose, "pose", ref, "the model")
        check_finite(pose, "pose")
        return axis_angle_to_matrix(pose) if pose.dim() == 3 else pose

    def joint_rotations(self, bone_rotations: torch.Tensor) -> torch.Tensor:
        """``(B, 20, 3, 3)`` bone rotations -> ``(B, 25, 3, 3)`` local joint rotations
        (the ``*_end`` joints get the identity)."""
        batch = bone_rotations.shape[0]
        eye = torch.eye(3, dtype=bone_rotations.dtype, device=bone_rotations.device)
        # contiguous: torch 2.13's inductor (CPU) miscompiles index_copy on an expanded tensor
        full = eye.expand(batch, self.num_joints, 3, 3).contiguous()
        return full.index_copy(1, self._bone_joints, bone_rotations)

    # -- forward ----------------------------------------------------------------------------
    def forward(  # type: ignore[override]
        self,
        pose: torch.Tensor | None = None,
        shape: torch.Tensor | None = None,
        *,
        global_orient: torch.Tensor | None = None,
        transl: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
    ) -> NimbleOutput:
        """Pose the hand; see the class docs for ``pose`` and ``shape``."""
        # a missing pose gives batch 1, which pose_rotations broadcasts against the other inputs
        rotations = self.joint_rotations(self.bone_rotations(pose))
        out = self.pose_rotations(rotations, global_orient=global_orient, transl=transl, scale=scale,
                                  coeffs={"shape": shape} if shape is not None else {})
        return NimbleOutput(**{f: getattr(out, f) for f in out.__dataclass_fields__},
                            keypoints=out.joints[:, self._keypoint_joints])

    # -- extras -----------------------------------------------------------------------------
    def texture_maps(self, alpha: torch.Tensor) -> dict[str, torch.Tensor]:
        """``alpha (B, k)`` -> ``{"diffuse", "normal", "spec"}`` maps ``(B, R, R, 3)`` in [0, 1]:
        ``basis[:, :k] (alpha * std[:k]) + mean`` reshaped (``R`` follows the texture file)."""
        if not self.tex:
            raise ParameterError("this layer has no texture model; pass tex_dict (NIMBLE_TEX_DICT.pkl) "
                                 "to Nimble.from_official.")
        size = min(self.tex.values())
        alpha = pad_coeffs(alpha, "alpha", size, self.template)
        out = {}
        for name in self.tex:
            basis = getattr(self, f"tex_{name}_basis")
            flat = alpha @ basis[:, :size].t() + getattr(self, f"tex_{name}_mean")
            res = int(round((flat.shape[1] // 3) ** 0.5))
            out[name] = flat.reshape(-1, res, res, 3).clamp(0.0, 1.0)
        return out

    def mano_vertices(self, output: ModelOutput) -> torch.Tensor:
        """The 778 MANO vertices ``(B, 778, 3)``: the barycentric embeddings on the posed skin, averaged."""
        if not self.has_mano:
            raise ParameterError("this layer has no MANO link; pass mano_vreg (NIMBLE_MANO_VREG.pkl) "
                                 "to Nimble.from_official.")
        tri = output.vertices[:, self.mano_ids]  # (B, N, 778, 3 corners, 3)
        return (tri * self.mano_bary[None, ..., None]).sum(-2).mean(1)


class Piano(Nimble):
    """PIANO: the bone-only hand layer (one ``bones`` tissue, unnormalised shape, no
    pose correctives). Pose and outputs as :class:`Nimble` (axis-angle mode only)."""

    @classmethod
    def from_official(  # type: ignore[override]
        cls,
        path: Any,
        *,
        side: str = "right",
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Piano:
        """Build from the official PIANO model file (path, bytes or the loaded dict)."""
        data = _sided(piano_to_model_data(path), side)
        return cls(data, pose_mode="axis_angle", dtype=dtype, device=device)


def _sided(data: ModelData, side: str) -> ModelData:
    if side not in _SIDES:
        raise ParameterError(f"side must be 'right' or 'left', got {side!r}.")
    return data if side == "right" else mirror_hand_model_data(data)
