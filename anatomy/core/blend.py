"""Blend shapes: linear offsets of a template driven by coefficients.

All linear spaces of a model (shape, trait, expression, pose correctives) are
stacked into one basis ``(K, 3V)`` so one GEMM adds all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .checks import check_like, check_shape


def pose_features(rotations: torch.Tensor, joints: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """``R_j - I`` of the selected joints, row-major flattened: ``(B, J, 3, 3)`` -> ``(B, 9 n)``."""
    check_shape(rotations, "rotations", ["B", "J", 3, 3])
    idx = torch.as_tensor(joints, dtype=torch.long, device=rotations.device)
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    return (rotations[:, idx] - eye).flatten(1)


def stack_bases(bases: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack bases ``(K_i, V, 3)`` into one ``(sum K_i, 3V)`` matrix (vertex-major rows)."""
    return torch.cat([b.reshape(b.shape[0], -1) for b in bases], 0)


def blend_shapes(template: torch.Tensor, basis: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """``template (V, 3) + coeffs (B, K) @ basis (K, 3V)`` -> ``(B, V, 3)`` in one GEMM."""
    sizes = check_shape(template, "template", ["V", 3])
    check_shape(coeffs, "coeffs", ["B", "K"], sizes)
    sizes["3V"] = template.numel()
    check_shape(basis, "basis", ["K", "3V"], sizes)
    check_like(coeffs, "coeffs", template, "template")
    check_like(basis, "basis", template, "template")
    flat = torch.addmm(template.reshape(1, -1), coeffs, basis)
    return flat.reshape(coeffs.shape[0], -1, 3)
