"""Orthognathic surgery simulation on the head layer's ``trait`` space.

The trait components of the embedded default head are surgical movements of a bone segment
(``meta["trait_components"]``: name, ``bony_landmark`` and ``bony_landmark_movement_mm``, the
bone movement of that landmark for a coefficient of 1) with the soft tissue following at
published soft-to-hard tissue ratios. A planned movement in millimetres is turned into a
coefficient change, added to the patient's traits, and the face before and after is compared.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..core.checks import check_finite
from ..core.errors import ParameterError, ShapeError
from ..core.surface import vertex_normals
from ..models.sculptor import Sculptor, SculptorOutput

__all__ = ["PLAUSIBLE_MOVEMENT_MM", "SurgeryResult", "simulate_surgery", "trait_movements"]

#: larger planned movements (mm) warn: single-jaw orthognathic movements rarely exceed about
#: 10-12 mm (e.g. mandibular advancement beyond ~10 mm is usually staged or done by distraction)
PLAUSIBLE_MOVEMENT_MM = 15.0


@dataclass(frozen=True)
class SurgeryResult:
    """Pre- and post-operative heads (batch ``B``) and the face change.

    * ``pre``, ``post``: :class:`SculptorOutput`; ``trait_delta (B, n_trait)``: the coefficient change.
    * ``face_change (B, Vf, 3)`` = post - pre face; ``change_mm (B, Vf)`` its length;
      ``change_normal_mm (B, Vf)`` its component along the pre-operative face's outward vertex
      normal (positive: the surface moves outwards).
    """

    pre: SculptorOutput
    post: SculptorOutput
    trait_delta: torch.Tensor
    face_change: torch.Tensor
    change_mm: torch.Tensor
    change_normal_mm: torch.Tensor

    def landmark_change(self, name: str) -> torch.Tensor:
        """Displacement ``(B, 3)`` of landmark ``name`` (post - pre), mm."""
        return self.post.landmark(name) - self.pre.landmark(name)

    def landmark_change_mm(self, name: str) -> torch.Tensor:
        """Distance ``(B,)`` landmark ``name`` moved, mm."""
        return self.landmark_change(name).norm(dim=-1)


def trait_movements(model: Sculptor) -> dict[str, float]:
    """``{trait name: bony landmark movement (mm) per unit coefficient}`` from the model's metadata,
    in the order of the trait space (empty for a model whose traits are not described, e.g. an
    official SCULPTOR file)."""
    comps = model.data_meta.get("trait_components")
    out: dict[str, float] = {}
    if isinstance(comps, list):
        described = [c for c in comps if isinstance(c, dict)]
        if all(isinstance(c.get("index"), int) for c in described):
            described.sort(key=lambda c: int(c["index"]))  # in the order of the trait space
        for c in described:
            if "name" in c:
                # named, but without a bone movement: nan (refused when used)
                out[str(c["name"])] = float(c.get("bony_landmark_movement_mm", math.nan))
    return out


def _delta_from_names(model: Sculptor, movement: Mapping[str, float], ref: torch.Tensor) -> torch.Tensor:
    table = trait_movements(model)
    if not table:
        raise ParameterError(
            "this model's traits carry no names or bone movements (an official SCULPTOR file has unnamed "
            "traits); pass movement as a (B, n_trait) tensor of trait-coefficient changes instead."
        )
    names = list(table)
    delta = ref.new_zeros(1, model.space_sizes["trait"])
    for name, mm in movement.items():
        if name not in table:
            raise ParameterError(f"unknown movement {name!r}; this model's traits are {names}.")
        value = float(mm)
        if not math.isfinite(value):
            raise ParameterError(f"movement {name!r} must be a finite number of millimetres, got {mm!r}.")
        per_unit = table[name]
        if not math.isfinite(per_unit) or per_unit == 0:
            raise ParameterError(f"trait {name!r} has no bony_landmark_movement_mm in the model's metadata; "
                                 f"pass movement as a tensor of coefficient changes.")
        if abs(value) > PLAUSIBLE_MOVEMENT_MM:
            warnings.warn(
                f"planned {name} of {value:g} mm is beyond the clinically plausible range (|movement| <= "
                f"{PLAUSIBLE_MOVEMENT_MM:g} mm); the linear trait model is extrapolating and the soft-tissue "
                f"prediction is unreliable.", UserWarning, stacklevel=3)
        delta[0, names.index(name)] += value / per_unit
    return delta


def simulate_surgery(
    params: Mapping[str, Any], movement: Mapping[str, float] | torch.Tensor, model: Sculptor | None = None
) -> SurgeryResult:
    """Simulate an orthognathic movement on a patient's head.

    Args:
        params: the layer's keyword arguments for the patient (e.g. ``fit.params`` of a
            :class:`~anatomy.fitting.HeadFit`), batch ``B``; ``{}`` is the mean head.
        movement: ``{trait name: mm}``, the movement of each trait's bony landmark (the default
            head's names, e.g. ``{"mandibular_advancement": 5.0}``; negative values move the other
            way; beyond +-15 mm warns), or a ``(B|1, n_trait)`` tensor of trait-coefficient changes
            (any model, also an official SCULPTOR file).
        model: the layer the params belong to (``None``: the embedded default head, in the dtype
            of the params' tensors, float32 if there are none).

    Expression, jaw and rigid parameters are kept as in ``params``.
    """
    if model is None:  # the default head in the params' precision (fits return float64 params)
        floats = [v.dtype for v in params.values() if isinstance(v, torch.Tensor) and v.is_floating_point()]
        model = Sculptor(dtype=floats[0] if floats else None)
    if "trait" not in model.space_sizes:
        raise ParameterError(f"this model has no trait space (spaces {list(model.space_sizes)}).")
    ref = model.template
    kwargs = dict(params)
    n_trait = model.space_sizes["trait"]
    if isinstance(movement, torch.Tensor):
        check_finite(movement, "movement")
        delta = movement.to(ref.dtype).to(ref.device)
        if delta.dim() == 1:
            delta = delta[None]
        if delta.dim() != 2 or delta.shape[1] != n_trait:
            raise ShapeError(f"movement must be (B, {n_trait}) or (1, {n_trait}) trait-coefficient changes, "
                             f"got {tuple(movement.shape)}.")
    elif isinstance(movement, Mapping):
        delta = _delta_from_names(model, movement, ref)
    else:
        raise ParameterError(f"movement must be a dict {{trait name: mm}} or a tensor of trait-coefficient "
                             f"changes, got {type(movement).__name__}.")
    with torch.no_grad():
        pre = model(**kwargs)
        batch = pre.batch_size
        if delta.shape[0] not in (1, batch):
            raise ShapeError(f"movement has batch {delta.shape[0]} but params have batch {batch}; pass 1 or {batch} "
                             f"rows.")
        trait = kwargs.get("trait")
        base = ref.new_zeros(batch, n_trait)
        if trait is not None:
            base = base + torch.nn.functional.pad(trait, (0, n_trait - trait.shape[-1]))
        kwargs["trait"] = base + delta
        post = model(**kwargs)
        change = post.face - pre.face
        normals = vertex_normals(pre.face, pre.faces("face"))
    return SurgeryResult(pre=pre, post=post, trait_delta=delta.expand(batch, -1), face_change=change,
                         change_mm=change.norm(dim=-1), change_normal_mm=(change * normals).sum(-1))
