"""Linear blend skinning with weights shared across the batch.

Vertices are handled in a **planar** layout ``(B, 3, V)`` (x, y and z planes), so
the per-vertex blended transforms come out of one GEMM per batch block,
``(b*12, J) @ (J, V)``, and the remaining work is contiguous multiply-adds over V.
The batch is processed in blocks whose temporaries stay near ``block_bytes``
(cache-sized), and the backward pass is written by hand: it recomputes the blended
transforms per block instead of storing them, so memory stays at the size of the
inputs and outputs. See ``../shared/DESIGN.md`` §7 for the measurements behind this.
"""

from __future__ import annotations

from typing import Any

import torch

from .checks import check_floating, check_like, check_shape
from .errors import ParameterError, ShapeError

DEFAULT_BLOCK_BYTES = 4 * 1024 * 1024


def _weights_matmul(a: torch.Tensor, weights_t: torch.Tensor) -> torch.Tensor:
    """``a (n, J) @ weights_t (J, V)`` for dense or sparse COO/CSR ``weights_t``."""
    if weights_t.is_sparse or weights_t.layout != torch.strided:
        return torch.sparse.mm(weights_t.t(), a.t()).t()
    return a @ weights_t


def _block_size(batch: int, num_vertices: int, itemsize: int, block_bytes: int) -> int:
    per_sample = 12 * num_vertices * itemsize
    return max(1, min(batch, block_bytes // max(per_sample, 1)))


def _skin_block(points: torch.Tensor, blended: torch.Tensor) -> torch.Tensor:
    """``blended (b, 3, 4, V)`` applied to ``points (b or 1, 3, V)`` -> ``(b, 3, V)``."""
    out = blended[:, :, 3].clone()
    for k in range(3):
        out.addcmul_(blended[:, :, k], points[:, None, k])
    return out


class _PlanarSkinning(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, points: torch.Tensor, transforms: torch.Tensor, weights_t: torch.Tensor, block: int
    ) -> torch.Tensor:
        batch, joints = transforms.shape[:2]
        num_v = weights_t.shape[1]
        rows = transforms.permute(0, 2, 3, 1).reshape(batch * 12, joints)
        out = points.new_empty(batch, 3, num_v)
        for s in range(0, batch, block):
            e = min(s + block, batch)
            blended = _weights_matmul(rows[s * 12:e * 12], weights_t).view(e - s, 3, 4, num_v)
            pts = points if points.shape[0] == 1 else points[s:e]
            out[s:e] = _skin_block(pts, blended)
        ctx.save_for_backward(points, rows, weights_t)
        ctx.block = block
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        points, rows, weights_t = ctx.saved_tensors
        block = ctx.block
        batch = rows.shape[0] // 12
        joints, num_v = weights_t.shape
        need_p, need_a, need_w = ctx.needs_input_grad[:3]
        grad_out = grad_out.contiguous()
        grad_p = torch.zeros_like(points) if need_p else points.new_empty(0)
        grad_rows = rows.new_empty(rows.shape) if need_a else rows.new_empty(0)
        grad_w = torch.zeros_like(weights_t) if need_w else weights_t.new_empty(0)
        for s in range(0, batch, block):
            e = min(s + block, batch)
            b = e - s
            g = grad_out[s:e]  # (b, 3, V)
            pts = points if points.shape[0] == 1 else points[s:e]
            if need_p:
                blended = _weights_matmul(rows[s * 12:e * 12], weights_t).view(b, 3, 4, num_v)
                gp = (blended[:, :, :3] * g[:, :, None]).sum(1)  # (b, 3, V)
                if points.shape[0] == 1:
                    grad_p += gp.sum(0, keepdim=True)
                else:
                    grad_p[s:e] = gp
            if need_a or need_w:
                g_blended = g.new_empty(b, 3, 4, num_v)
                g_blended[:, :, :3] = g[:, :, None] * pts[:, None]
                g_blended[:, :, 3] = g
                g_flat = g_blended.view(b * 12, num_v)
                if need_a:
                    grad_rows[s * 12:e * 12] = g_flat @ weights_t.t()
                if need_w:
                    grad_w += rows[s * 12:e * 12].t() @ g_flat
        grad_a = grad_rows.view(batch, 3, 4, joints).permute(0, 3, 1, 2) if need_a else None
        return grad_p if need_p else None, grad_a, grad_w if need_w else None, None


def skin_planar(
    points: torch.Tensor,
    transforms: torch.Tensor,
    weights_t: torch.Tensor,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> torch.Tensor:
    """Skin planar points.

    Args:
        points: ``(B, 3, V)`` or ``(1, 3, V)`` rest-posed points, planar layout.
        transforms: ``(B, J, 3, 4)`` rest -> posed affine transforms per joint.
        weights_t: ``(J, V)`` skinning weights, **transposed**, dense (fast path, also
            differentiable) or sparse (no gradient for the weights).
        block_bytes: target size of the per-block temporaries.

    Returns:
        ``(B, 3, V)`` skinned points.
    """
    sizes = check_shape(transforms, "transforms", ["B", "J", 3, 4])
    check_shape(weights_t, "weights_t", ["J", "V"], sizes)
    check_shape(points, "points", [None, 3, "V"], sizes)
    check_floating(points, "points")
    check_like(transforms, "transforms", points, "points")
    if weights_t.layout == torch.strided:
        check_like(weights_t, "weights_t", points, "points")
    if points.shape[0] not in (1, sizes["B"]):
        raise ShapeError(
            f"points has batch {points.shape[0]} but transforms has batch {sizes['B']}; "
            f"pass one set of points per sample or a single set (batch 1) to broadcast."
        )
    if block_bytes <= 0:
        raise ParameterError(f"block_bytes must be positive, got {block_bytes}.")
    block = _block_size(sizes["B"], sizes["V"], points.element_size(), block_bytes)
    out: torch.Tensor = _PlanarSkinning.apply(points, transforms.contiguous(), weights_t, block)
    return out


def skin_vertices(
    vertices: torch.Tensor,
    transforms: torch.Tensor,
    weights: torch.Tensor,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> torch.Tensor:
    """Linear blend skinning of ``vertices (B|1, V, 3)`` with ``weights (V, J)`` -> ``(B, V, 3)``.

    Convenience wrapper over :func:`skin_planar` for row-major points.
    """
    check_shape(vertices, "vertices", [None, "V", 3])
    check_shape(weights, "weights", ["V", None])
    weights_t = weights.t() if weights.layout != torch.strided else weights.t().contiguous()
    out = skin_planar(vertices.transpose(1, 2), transforms, weights_t, block_bytes=block_bytes)
    return out.transpose(1, 2)
