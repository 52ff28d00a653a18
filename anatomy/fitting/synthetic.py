"""Synthetic targets for checking a fit: random rigid frames and the trait directions a skull hides.

Used by the examples and the tests, and useful to anyone validating a fitting set-up: pose known
heads (``Sculptor.sample``), move them into a random "scanner" frame with :func:`random_rigid` /
:func:`move_points`, fit, and compare.
"""

from __future__ import annotations

import torch

from ..core.errors import ParameterError
from ..core.rotations import axis_angle_to_matrix
from ..models import Sculptor
from .head import bone_tissues
from .targets import tissue_vertex_ids

__all__ = ["hidden_traits", "move_points", "random_rigid"]


def random_rigid(count: int, *, generator: torch.Generator | None = None, max_angle: float = 3.1,
                 spread: float = 300.0, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random rigid frames: rotations ``(B, 3, 3)`` about uniformly random axes by
    angles uniform in ``[0, max_angle]`` rad, translations ``(B, 3)`` ~ N(0, spread^2) mm."""
    if count < 1:
        raise ParameterError(f"count must be at least 1, got {count}.")
    axis = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator, dtype=dtype), dim=-1)
    angle = torch.rand(count, 1, generator=generator, dtype=dtype) * max_angle
    return axis_angle_to_matrix(axis * angle), torch.randn(count, 3, generator=generator, dtype=dtype) * spread


def move_points(points: torch.Tensor, rot: torch.Tensor, transl: torch.Tensor) -> torch.Tensor:
    """``(B, N, 3)`` points moved by ``x -> R x + t`` per batch element."""
    return points @ rot.transpose(-1, -2) + transl[:, None]


def hidden_traits(model: Sculptor, tolerance: float = 1e-6) -> torch.Tensor:
    """Orthonormal trait-coefficient directions ``(n_trait, n_hidden)`` that move no bone vertex at
    rest: a skull cannot show them (in the default head: mandibular advancement against setback,
    which move the same bone in opposite directions with different soft-tissue ratios)."""
    num = model.space_sizes.get("trait", 0)
    if num == 0:
        return model.template.new_zeros(0, 0)
    ids = tissue_vertex_ids(model, bone_tissues(model))
    with torch.no_grad():
        eye = torch.eye(num, dtype=model.template.dtype, device=model.template.device)
        moved = model(trait=eye, jaw_range="ignore").vertices[:, ids] - model().vertices[:, ids]
    u, s, _ = torch.linalg.svd(moved.reshape(num, -1).double(), full_matrices=False)
    return u[:, s <= tolerance * s[0]].to(model.template.dtype)
