"""Normalising layer inputs: batch broadcasting, rotation formats, typed checks."""

from __future__ import annotations

import torch

from ..core.checks import check_finite, check_floating, check_like, check_tensor
from ..core.errors import ParameterError, ShapeError
from ..core.rotations import axis_angle_to_matrix


def batch_size_of(named: dict[str, torch.Tensor | None], batch_dims: dict[str, int]) -> int:
    """Common batch size of the given inputs; each must have batch 1 or that size.

    ``batch_dims[name]`` is the number of non-batch dimensions of input ``name``.
    """
    sizes = {}
    for name, value in named.items():
        if value is None:
            continue
        check_tensor(value, name)
        if value.dim() != batch_dims[name] + 1:
            raise ShapeError(
                f"{name} must have {batch_dims[name] + 1} dimensions (batch first), got shape "
                f"{tuple(value.shape)}; add a batch dimension with {name}[None] for one sample."
            )
        if value.shape[0] == 0:
            raise ParameterError(f"{name} has an empty batch (shape {tuple(value.shape)}); pass at least one sample.")
        sizes[name] = int(value.shape[0])
    batch = max(sizes.values(), default=1)
    bad = {k: v for k, v in sizes.items() if v not in (1, batch)}
    if bad:
        raise ShapeError(
            f"batch sizes do not match: {sizes}; every input needs batch {batch} or 1 (1 broadcasts)."
        )
    return batch


def expand_batch(x: torch.Tensor, batch: int) -> torch.Tensor:
    return x if x.shape[0] == batch else x.expand((batch,) + tuple(x.shape[1:]))


def as_rotations(x: torch.Tensor, name: str, num: int, ref: torch.Tensor) -> torch.Tensor:
    """``(B, num, 3)`` axis-angle or ``(B, num, 3, 3)`` matrices -> ``(B, num, 3, 3)``."""
    check_floating(x, name)
    check_like(x, name, ref, "the model")
    check_finite(x, name)
    if x.dim() == 3 and x.shape[1:] == (num, 3):
        return axis_angle_to_matrix(x)
    if x.dim() == 4 and x.shape[1:] == (num, 3, 3):
        return x
    raise ShapeError(
        f"{name} must be axis-angle (B, {num}, 3) or rotation matrices (B, {num}, 3, 3), "
        f"got {tuple(x.shape)}."
    )


def pad_coeffs(x: torch.Tensor, name: str, size: int, ref: torch.Tensor) -> torch.Tensor:
    """Check ``(B, k)`` coefficients with ``k <= size``; pad missing trailing ones with zeros."""
    check_floating(x, name)
    check_like(x, name, ref, "the model")
    check_finite(x, name)
    if x.dim() != 2 or x.shape[1] > size:
        raise ShapeError(
            f"{name} must have shape (B, k) with k <= {size} coefficients, got {tuple(x.shape)}."
        )
    if x.shape[1] < size:
        x = torch.nn.functional.pad(x, (0, size - x.shape[1]))
    return x
