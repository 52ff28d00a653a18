"""The SCULPTOR head layer: skull, mandible and face on the shared blend-shape + LBS core.

Two joints, ``root`` (the head) and ``jaw`` (the temporomandibular joint); linear spaces
``shape`` (skull and face together), ``trait`` (surgical change) and, in the embedded default
head, ``expression`` (face only, the skull fixed); jaw pose correctives; the condylar
translation ``jaw_offset`` goes through the core's ``joint_offsets`` (added to the jaw's
position relative to the root, in the root's frame, before the chain is composed). Frame RAS,
millimetres: +x towards the right porion, +y anterior, +z superior. Jaw angle conventions and
limits: :mod:`anatomy.models.head_limits`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..constraints import JointLimits
from ..core.checks import check_finite, check_floating, check_like, check_tensor
from ..core.errors import ModelFileError, ParameterError, RangeWarning, ShapeError
from ..core.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from ..io.model_data import ModelData
from ..io.model_file import load_model
from ..io.official_sculptor import SCULPTOR_JOINT_NAMES, SCULPTOR_PARENTS, sculptor_to_model_data
from .articulated import ArticulatedModel
from .head_limits import jaw_joint_limits, jaw_offset_box
from .head_penetration import HeadPenetration
from .output import ModelOutput

__all__ = ["DEFAULT_HEAD_NAME", "Sculptor", "SculptorOutput", "default_head_path"]

#: name (``meta["name"]``) of the embedded default head model
DEFAULT_HEAD_NAME = "anatomy-default-head"
_SPACES = ("shape", "trait", "expression")
_RANGE_TOL = 1e-3  # rad / mm: slack (0.06 deg, 1 um) before a jaw value counts as out of range


def default_head_path() -> Path:
    """Path of the embedded default head model (``anatomy.assets``: ``head.safetensors`` + ``head.json``).

    In a source checkout the files live in ``templates/assets`` (see ``pyproject.toml``).
    """
    return Path(str(resources.files("anatomy.assets").joinpath("head.safetensors")))


@dataclass(frozen=True)
class SculptorOutput(ModelOutput):
    """:class:`ModelOutput` of the head: ``out.skull``, ``out.mandible`` (when the model has that
    tissue), ``out.face``; ``out.landmark(name)`` ``(B, 3)``; ``skull_landmarks`` /
    ``face_landmarks`` ``(B, L_group, 3)`` in the order of ``landmark_groups``."""

    landmark_groups: dict[str, tuple[str, ...]]

    def landmark(self, name: str) -> torch.Tensor:
        """The posed landmark ``name`` ``(B, 3)``."""
        if self.landmarks is None or name not in self.landmark_names:
            known = list(self.landmark_names) if self.landmarks is not None else "none"
            raise ParameterError(f"no landmark named {name!r}; this model's landmarks are {known}.")
        return self.landmarks[:, self.landmark_names.index(name)]

    def landmark_group(self, group: str) -> torch.Tensor:
        """Landmarks of one group (``"skeletal"`` or ``"soft_tissue"``) ``(B, L_group, 3)``."""
        if group not in self.landmark_groups or self.landmarks is None:
            raise ParameterError(f"no landmark group {group!r}; this model has {list(self.landmark_groups)}.")
        ids = [self.landmark_names.index(n) for n in self.landmark_groups[group]]
        return self.landmarks[:, ids]

    @property
    def mandible(self) -> torch.Tensor:
        """Mandible vertices ``(B, n, 3)``: the ``mandible`` tissue, or for a model whose skull keeps
        the mandible as a part (an official file converted without the split) that part."""
        names = self.tissue_names
        if "mandible" in names:
            return self.tissue("mandible")
        if "skull" in names and "mandible" in self.part_names("skull"):
            return self.part("skull", "mandible")
        raise ParameterError(f"this model has no mandible (tissues {list(names)}).")

    @property
    def skull_landmarks(self) -> torch.Tensor:
        return self.landmark_group("skeletal")

    @property
    def face_landmarks(self) -> torch.Tensor:
        return self.landmark_group("soft_tissue")


class Sculptor(ArticulatedModel):
    """Head layer: tissues ``skull`` (cranium + maxilla), ``mandible``, ``face``; joints ``root``, ``jaw``.

    Args:
        model: ``None`` for the embedded default head (``anatomy/assets/head.safetensors``), a
            model file path, or a :class:`ModelData`. Official files: :meth:`from_official`.
        num_betas: keep only the first ``num_betas`` components of the ``shape`` space.
        dtype, device: of the buffers (default float32, CPU); ``.to()`` moves them later.

    Call ``model(shape, trait, expression, jaw_pose=, jaw_offset=, global_orient=, transl=, scale=)``:
    coefficients ``(B, k)`` (``k`` at most the space's size, missing trailing ones are zero),
    ``jaw_pose (B, 3)`` axis-angle or ``(B, 3, 3)`` in the head frame (opening is a negative
    rotation about +x, see :mod:`~anatomy.models.head_limits`), ``jaw_offset (B, 3)`` mm,
    ``global_orient (B, 3)`` about the root joint, ``transl (B, 3)``, ``scale (B,)``. Inputs of
    batch 1 broadcast. Coefficients of the default head are normalised (N(0, 1)); those of an
    official SCULPTOR model are the official, unnormalised ones.
    """

    _official_inverse: torch.Tensor | None
    _mandible_ids: torch.Tensor

    def __init__(
        self,
        model: ModelData | str | Path | None = None,
        *,
        num_betas: int | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if model is None:
            path = default_head_path()
            if not path.is_file() or not path.with_suffix(".json").is_file():
                raise ModelFileError(
                    f"the embedded default head model is missing: {path} (and its .json sidecar). It is built by "
                    f"the scripts in templates/head (see templates/head/README.md) and shipped in the wheel; "
                    f"reinstall anatomy, or pass a model: Sculptor('my_head.safetensors') or "
                    f"Sculptor.from_official('paradict.npy')."
                )
            model = path
        data = model if isinstance(model, ModelData) else load_model(model)
        if tuple(data.joint_names) != SCULPTOR_JOINT_NAMES or tuple(data.parents) != SCULPTOR_PARENTS:
            raise ParameterError(
                f"{type(self).__name__} needs the joints {list(SCULPTOR_JOINT_NAMES)} with parents "
                f"{list(SCULPTOR_PARENTS)}; this model has {list(data.joint_names)} / {list(data.parents)}. "
                f"Use ArticulatedModel for other models."
            )
        names = [t.name for t in data.tissues]
        if "skull" not in names or "face" not in names:
            raise ParameterError(f"{type(self).__name__} needs the tissues 'skull' and 'face'; this model has {names}.")
        unknown = [s for s in data.spaces if s not in _SPACES]
        if unknown:
            raise ParameterError(f"unknown linear space(s) {unknown} in the head model; expected some of {_SPACES}.")
        if num_betas is not None:
            avail = int(data.spaces["shape"].shape[0]) if "shape" in data.spaces else 0
            if not 0 <= num_betas <= avail:
                raise ParameterError(f"num_betas must be in [0, {avail}] (the model's shape components), "
                                     f"got {num_betas}.")
            spaces = dict(data.spaces)
            spaces["shape"] = spaces["shape"][:num_betas]
            data = replace(data, spaces=spaces)
        super().__init__(data, dtype=torch.float32 if dtype is None else dtype)
        groups = data.meta.get("landmark_groups", {})
        self.landmark_groups: dict[str, tuple[str, ...]] = {
            str(k): tuple(str(n) for n in v) for k, v in groups.items()
        } if isinstance(groups, dict) else {}
        self._limit_extras = {k: v for k, v in data.extras.items() if k.startswith("jaw_")}
        order = data.extras.get("official_vertex_index")
        inverse = None if order is None else torch.argsort(order.long())
        self.register_buffer("_official_inverse", inverse, persistent=False)
        bone = torch.zeros(data.num_vertices, dtype=torch.bool)
        for t in data.tissues:
            if t.name != "face":
                bone[t.start:t.stop] = True
        jaw_weight = self.weights.to_dense()[:, 1] if self.weights.layout != torch.strided else self.weights[:, 1]
        self.register_buffer("_mandible_ids", torch.nonzero(bone & (jaw_weight.cpu() > 0.5)).flatten(),
                             persistent=False)
        self._penetration: HeadPenetration | None = None
        if device is not None:
            self.to(device)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_official(
        cls,
        paradict: Any,
        *,
        num_betas: int | None = None,
        split_mandible: bool = True,
        length_scale: float = 1.0,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Sculptor:
        """Build from the official ``paradict.npy`` (path, bytes or the loaded dict), read by the
        restricted unpickler; see :func:`~anatomy.io.official_sculptor.sculptor_to_model_data`."""
        data = sculptor_to_model_data(paradict, split_mandible=split_mandible, length_scale=length_scale)
        return cls(data, num_betas=num_betas, dtype=dtype, device=device)

    def official_inputs(
        self, beta: torch.Tensor, pose: torch.Tensor | None = None, jaw_offset: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Keyword arguments of :meth:`forward` from the official layer's inputs: ``beta (B, n)``
        (first ``trait`` then ``shape`` coefficients), ``pose (B, 6)`` axis-angle (root, jaw) and
        ``jaw_offset (B, 3)`` or ``(B, 3, 1)``. Use as ``model(**model.official_inputs(beta, pose, off))``."""
        check_tensor(beta, "beta")
        num_t = self.space_sizes.get("trait", 0)
        if beta.dim() != 2 or beta.shape[1] > num_t + self.space_sizes.get("shape", 0):
            raise ShapeError(f"beta must be (B, n) with n <= {num_t + self.space_sizes.get('shape', 0)} "
                             f"(trait then shape), got {tuple(beta.shape)}.")
        out = {"trait": beta[:, :num_t]}
        if beta.shape[1] > num_t:
            out["shape"] = beta[:, num_t:]
        if pose is not None:
            check_tensor(pose, "pose")
            if pose.dim() != 2 or pose.shape[1] != 6:
                raise ShapeError(f"pose must be (B, 6) axis-angle (root then jaw), got {tuple(pose.shape)}.")
            out["global_orient"], out["jaw_pose"] = pose[:, :3], pose[:, 3:]
        if jaw_offset is not None:
            check_tensor(jaw_offset, "jaw_offset")
            out["jaw_offset"] = jaw_offset[..., 0] if jaw_offset.dim() == 3 and jaw_offset.shape[2] == 1 \
                else jaw_offset
        return out

    def to_official_order(self, vertices: torch.Tensor) -> torch.Tensor:
        """``(B, V, 3)`` vertices of this layer -> the official stack order ``[skull | face]``
        (undoes the mandible split of :meth:`from_official`; identity for other models)."""
        if self._official_inverse is None:
            return vertices
        return vertices[:, self._official_inverse]

    @property
    def mandible_vertex_ids(self) -> torch.Tensor:
        """Indices (in the vertex stack) of the bone vertices that follow the jaw (jaw weight > 0.5)."""
        return self._mandible_ids

    # -- inputs --------------------------------------------------------------------------------
    def _jaw_rotation(self, jaw_pose: torch.Tensor) -> torch.Tensor:
        check_tensor(jaw_pose, "jaw_pose")
        shape = tuple(jaw_pose.shape)
        if len(shape) == 2 and shape[1] == 3:
            matrix = False
        elif len(shape) == 3 and shape[1:] == (3, 3):
            matrix = True
        else:
            hint = " Add a batch dimension: jaw_pose[None]." if shape in ((3,), (3, 3)) else ""
            if len(shape) == 3 and shape[1:] == (2, 3):
                hint = (" That looks like a full (root, jaw) pose: pass global_orient=pose[:, 0], "
                        "jaw_pose=pose[:, 1] (or use official_inputs for the official (B, 6) layout).")
            raise ShapeError(f"jaw_pose must be (B, 3) axis-angle or (B, 3, 3) a rotation matrix, got {shape}.{hint}")
        check_floating(jaw_pose, "jaw_pose")
        check_like(jaw_pose, "jaw_pose", self.template, "the model")
        check_finite(jaw_pose, "jaw_pose")
        return jaw_pose if matrix else axis_angle_to_matrix(jaw_pose)

    def _jaw_offset(self, jaw_offset: torch.Tensor) -> torch.Tensor:
        check_tensor(jaw_offset, "jaw_offset")
        if jaw_offset.dim() != 2 or jaw_offset.shape[1] != 3:
            hint = " For the official (B, 3, 1) layout use jaw_offset[..., 0]." \
                if tuple(jaw_offset.shape[1:]) == (3, 1) else ""
            raise ShapeError(f"jaw_offset must be (B, 3) mm, got {tuple(jaw_offset.shape)}.{hint}")
        check_floating(jaw_offset, "jaw_offset")
        check_like(jaw_offset, "jaw_offset", self.template, "the model")
        check_finite(jaw_offset, "jaw_offset")
        return jaw_offset

    # -- forward ---------------------------------------------------------------------------
    def forward(  # type: ignore[override]
        self,
        shape: torch.Tensor | None = None,
        trait: torch.Tensor | None = None,
        expression: torch.Tensor | None = None,
        *,
        jaw_pose: torch.Tensor | None = None,
        jaw_offset: torch.Tensor | None = None,
        global_orient: torch.Tensor | None = None,
        transl: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        jaw_range: str = "warn",
    ) -> SculptorOutput:
        """Pose the head; see the class docs.

        ``jaw_range``: what to do with a jaw pose or offset outside the model's jaw limits
        (:meth:`jaw_limits`, :meth:`jaw_offset_limits`): ``"warn"`` (default) computes it anyway and
        warns with :class:`~anatomy.RangeWarning`; ``"clamp"`` clamps it into the limits first
        (:meth:`clamp_jaw`; the clamp passes gradients only inside the limits); ``"ignore"`` neither
        checks nor warns (fastest: no data-dependent branch, e.g. under ``torch.compile`` or in
        an optimisation loop that has its own :meth:`jaw_penalty`)."""
        if jaw_range not in ("warn", "clamp", "ignore"):
            raise ParameterError(f"jaw_range must be 'warn', 'clamp' or 'ignore', got {jaw_range!r}.")
        if jaw_range != "ignore" and (jaw_pose is not None or jaw_offset is not None) and self._limit_extras:
            jaw_pose, jaw_offset = self._jaw_in_range(jaw_pose, jaw_offset, clamp=jaw_range == "clamp")
        coeffs: dict[str, torch.Tensor | None] = {}
        for name, value in (("shape", shape), ("trait", trait), ("expression", expression)):
            if value is None:
                continue
            if name not in self.space_sizes:
                raise ParameterError(f"this head model has no {name} space (its spaces are "
                                     f"{list(self.space_sizes)}); leave {name}=None.")
            coeffs[name] = value
        rotations = None
        if jaw_pose is not None:
            jaw = self._jaw_rotation(jaw_pose)
            root = torch.eye(3, dtype=jaw.dtype, device=jaw.device).expand(jaw.shape[0], 1, 3, 3)
            rotations = torch.cat([root, jaw[:, None]], 1)
        offsets = None
        if jaw_offset is not None:
            off = self._jaw_offset(jaw_offset)
            offsets = torch.stack([torch.zeros_like(off), off], 1)
        out = self.pose_rotations(rotations, global_orient=global_orient, transl=transl, scale=scale,
                                  joint_offsets=offsets, coeffs=coeffs)
        return SculptorOutput(**{f: getattr(out, f) for f in ModelOutput.__dataclass_fields__},
                              landmark_groups=self.landmark_groups)

    # -- sampling and penetration ---------------------------------------------------------------
    def sample(self, num: int, *, generator: torch.Generator | None = None,
               spaces: tuple[str, ...] | None = None, jaw: bool = True) -> dict[str, torch.Tensor]:
        """Keyword arguments of :meth:`forward` for ``num`` random heads: ``shape`` ~ N(0, 1) (the
        default head's coefficients are normalised), ``trait`` ~ U(-1, 1) (one typical movement
        either way), ``expression`` ~ U(0, 1) (each muscle's activation: 0 relaxed, 1 a strong
        contraction; larger values exaggerate and fold the skin), and with ``jaw`` every jaw
        angle and offset uniform inside its limits. ``spaces`` (default: all of the model's)."""
        if num < 1:
            raise ParameterError(f"num must be at least 1, got {num}.")
        chosen = tuple(self.space_sizes) if spaces is None else spaces
        unknown = [n for n in chosen if n not in self.space_sizes]
        if unknown:
            raise ParameterError(f"unknown space(s) {unknown}; this model has {list(self.space_sizes)}.")
        f64 = torch.float64
        draw = {"shape": lambda k: torch.randn(num, k, generator=generator, dtype=f64),
                "trait": lambda k: 2.0 * torch.rand(num, k, generator=generator, dtype=f64) - 1.0,
                "expression": lambda k: torch.rand(num, k, generator=generator, dtype=f64)}
        out = {n: draw[n](self.space_sizes[n]) for n in chosen}
        if jaw:
            limits = self.jaw_limits().to(dtype=f64)
            lo, hi = limits.lower.cpu(), limits.upper.cpu()
            angles = lo + torch.rand(num, 1, 3, generator=generator, dtype=f64) * (hi - lo)
            out["jaw_pose"] = matrix_to_axis_angle(limits.to("cpu").rotations(angles)[:, 0])
            low, up = (x.cpu().double() for x in self.jaw_offset_limits())
            out["jaw_offset"] = low + torch.rand(num, 3, generator=generator, dtype=f64) * (up - low)
        ref = self.template
        return {k: v.to(ref.device, ref.dtype) for k, v in out.items()}

    def penetration(self) -> HeadPenetration:
        """Bone through skin: ``pen.report(out)``, ``pen.penalty(out, margin=)`` (differentiable),
        ``pen.heights(out)``; built from the rest tissues on first use and cached."""
        if self._penetration is None:
            self._penetration = HeadPenetration(self.layout, self.template, self.weights)
        return self._penetration

    # -- jaw limits ------------------------------------------------------------------------
    def _offset_violation(self, jaw_offset: torch.Tensor) -> torch.Tensor:
        """``(B, 3)`` mm outside the offset box per axis (0 inside)."""
        lower, upper = self.jaw_offset_limits()
        off = self._jaw_offset(jaw_offset)
        return torch.relu(off - upper) + torch.relu(lower - off)

    def _clamp_offset(self, jaw_offset: torch.Tensor) -> torch.Tensor:
        lower, upper = self.jaw_offset_limits()
        return torch.maximum(torch.minimum(self._jaw_offset(jaw_offset), upper), lower)

    def _jaw_in_range(self, jaw_pose: torch.Tensor | None, jaw_offset: torch.Tensor | None, *,
                      clamp: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if clamp:
            pose = None if jaw_pose is None else self.clamp_jaw(jaw_pose)[0]
            return pose, None if jaw_offset is None else self._clamp_offset(jaw_offset)
        parts = []
        with torch.no_grad():
            if jaw_pose is not None:
                lim = self.jaw_limits()
                rot = self._jaw_rotation(jaw_pose.detach())[:, None]
                bad = (lim.violation(rot)[:, 0] > _RANGE_TOL).any(1)
                if bool(bad.any()):
                    worst = torch.rad2deg(lim.angles(rot)[:, 0][bad][0])
                    parts.append(f"jaw angles (opening, roll, yaw) {[round(float(a), 1) for a in worst]} deg outside "
                                 f"{[round(float(a), 1) for a in torch.rad2deg(lim.lower[0])]} .. "
                                 f"{[round(float(a), 1) for a in torch.rad2deg(lim.upper[0])]}")
            if jaw_offset is not None:
                bad = (self._offset_violation(jaw_offset.detach()) > _RANGE_TOL).any(1)
                if bool(bad.any()):
                    lower, upper = self.jaw_offset_limits()
                    parts.append(f"jaw_offset {[round(float(a), 2) for a in jaw_offset[bad][0]]} mm outside "
                                 f"{[round(float(a), 2) for a in lower]} .. {[round(float(a), 2) for a in upper]}")
        if parts:
            warnings.warn(f"{'; '.join(parts)} (first such sample shown): beyond the anatomical range of the jaw. "
                          f"Pass jaw_range='clamp' to clamp into the limits, or jaw_range='ignore' to silence.",
                          RangeWarning, stacklevel=5)  # _jaw_in_range, forward, Module call x2, caller
        return jaw_pose, jaw_offset

    def jaw_limits(self) -> JointLimits:
        """The jaw's rotation limits (one row), on the layer's device and dtype; angles
        ``(opening, roll, yaw)`` as in :mod:`~anatomy.models.head_limits`."""
        return jaw_joint_limits(self._limit_extras).to(self.template.device, self.template.dtype)

    def jaw_offset_limits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lower, upper)`` ``(3,)`` condylar offset ranges, mm (head frame)."""
        lower, upper = jaw_offset_box(self._limit_extras)
        ref = self.template
        return lower.to(ref.device, ref.dtype), upper.to(ref.device, ref.dtype)

    def jaw_angles(self, jaw_pose: torch.Tensor) -> torch.Tensor:
        """``(B, 3)`` anatomical jaw angles ``(opening, roll, yaw)`` of ``jaw_pose`` (radians)."""
        return self.jaw_limits().angles(self._jaw_rotation(jaw_pose)[:, None])[:, 0]

    def clamp_jaw(
        self, jaw_pose: torch.Tensor, jaw_offset: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Jaw pose (axis-angle ``(B, 3)``, or matrices if given as matrices) with every angle
        clamped into its range, and the offset clamped into its box (``None`` stays ``None``)."""
        rot = self._jaw_rotation(jaw_pose)
        clamped = self.jaw_limits().clamp(rot[:, None])[:, 0]
        pose_out = clamped if jaw_pose.dim() == 3 else matrix_to_axis_angle(clamped)
        return pose_out, None if jaw_offset is None else self._clamp_offset(jaw_offset)

    def jaw_penalty(
        self, jaw_pose: torch.Tensor, jaw_offset: torch.Tensor | None = None, *, offset_weight: float = 1.0
    ) -> torch.Tensor:
        """Differentiable ``(B,)`` penalty: squared angle violations (rad^2, :meth:`JointLimits.penalty`)
        plus ``offset_weight`` times the squared offset violations (mm^2); zero inside the limits."""
        penalty = self.jaw_limits().penalty(self._jaw_rotation(jaw_pose)[:, None])
        if jaw_offset is not None:
            penalty = penalty + offset_weight * self._offset_violation(jaw_offset).square().sum(-1)
        return penalty
