"""Joint regression: joints as fixed linear combinations of vertices.

Because joints are regressed from the *shaped* vertices, which are themselves
linear in the blend coefficients, the regression is precomputed once against the
template and the bases: ``J = J_template + coeffs @ J_basis``. That replaces a
``(J, V) x (B, V, 3)`` product per forward pass with a ``(B, K) x (K, 3J)`` one.
"""

from __future__ import annotations

import torch

from .checks import check_like, check_shape


def _regress_matmul(regressor: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``regressor (J, V) @ values (V, C)`` for a dense or sparse regressor."""
    if regressor.layout != torch.strided:
        return torch.sparse.mm(regressor, values)
    return regressor @ values


def regress_joints(vertices: torch.Tensor, regressor: torch.Tensor) -> torch.Tensor:
    """``regressor (J, V)`` (dense or sparse) applied to ``vertices (B, V, 3)`` -> ``(B, J, 3)``."""
    sizes = check_shape(vertices, "vertices", ["B", "V", 3])
    check_shape(regressor, "regressor", ["J", "V"], sizes)
    if regressor.layout == torch.strided:
        check_like(regressor, "regressor", vertices, "vertices")
        return torch.einsum("jv,bvc->bjc", regressor, vertices)
    batch, num_v = sizes["B"], sizes["V"]
    flat = vertices.permute(1, 0, 2).reshape(num_v, batch * 3)
    return _regress_matmul(regressor, flat).reshape(-1, batch, 3).permute(1, 0, 2)


def precompute_joint_regression(
    regressor: torch.Tensor, template: torch.Tensor, bases: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Joints of the template ``(J, 3)`` and of each basis vector ``(K, 3J)``.

    ``bases`` is ``(K, V, 3)`` (all linear spaces that move the joints) or ``None``.
    """
    sizes = check_shape(template, "template", ["V", 3])
    check_shape(regressor, "regressor", ["J", "V"], sizes)
    joints = _regress_matmul(regressor, template)
    if bases is None or bases.shape[0] == 0:
        return joints, None
    check_shape(bases, "bases", ["K", "V", 3], sizes)
    k = bases.shape[0]
    flat = bases.permute(1, 0, 2).reshape(sizes["V"], k * 3)
    per_basis = _regress_matmul(regressor, flat).reshape(-1, k, 3)  # (J, K, 3)
    return joints, per_basis.permute(1, 0, 2).reshape(k, -1)
