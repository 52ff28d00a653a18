"""Linear blend skinning with weights shared across the batch.

Points are handled **batch-last**, ``(V, 3, B)``: the per-vertex blended
transforms of a block of vertices then come out of one GEMM with the weights as
the tall left factor, ``W[block] (v, J) @ A (J, 12 B)``, which is the shape BLAS
libraries run fastest, and the rest is contiguous multiply-adds over the batch.
Vertices are processed in blocks whose temporaries stay near ``block_bytes`` (so they stay
in cache), and the backward pass is written by hand. The blended transforms are never kept
for it: they are recomputed per block, one small GEMM, which is cheaper than writing and
re-reading them from memory (storing them made the batch-64 forward of a 37,761-vertex
two-joint head 2.6x slower, all of it first-touch page faults of the stored array), and
memory stays at the size of the inputs and outputs.
See ``../shared/DESIGN.md`` §7 for the measurements behind this design.
"""

from __future__ import annotations

from typing import Any

import torch

from .checks import check_floating, check_like, check_shape
from .errors import ParameterError, ShapeError

# 4 MB blocks: 1.4-1.9x faster than 16 MB and 1.7x faster than 1 MB (per-block overheads) at
# batch 64 for 25k-38k vertices (2-core CPU, 2026-11).
DEFAULT_BLOCK_BYTES = 4 * 1024 * 1024
# Batches up to this size take the plain autograd path (_skin_small_batch): at batch 1 (25k-38k
# vertices, 2-25 joints) its forward is 2.2-2.5x and its forward+backward 1.1-1.3x faster than
# the blocked one; from batch 8 on the blocked path wins (2-core CPU, 2026-11).
SMALL_BATCH = 4


def _blocks(num_v: int, batch: int, itemsize: int, block_bytes: int, dense: bool) -> list[tuple[int, int]]:
    """Vertex ranges; sparse weights cannot be sliced by rows cheaply, so they use one block."""
    if not dense:
        return [(0, num_v)]
    step = max(64, block_bytes // max(12 * batch * itemsize, 1))
    return [(s, min(s + step, num_v)) for s in range(0, num_v, step)]


def _blend(weights: torch.Tensor, rows: torch.Tensor, s: int, e: int, buffer: torch.Tensor) -> torch.Tensor:
    """``weights[s:e] (v, J) @ rows (J, 12 B)`` into ``buffer[:v]`` (dense) or a new tensor (sparse).

    Reusing one buffer for every block matters: a fresh multi-megabyte result per block
    costs more in page faults than the GEMM itself (measured 3.5x on a 16 MB block).
    """
    if weights.layout == torch.strided:
        return torch.mm(weights[s:e], rows, out=buffer[: e - s])
    return torch.sparse.mm(weights, rows)


def _apply(blended: torch.Tensor, points: torch.Tensor, out: torch.Tensor) -> None:
    """Write ``blended (v, 3, 4, B)`` applied to ``points (v, 3, B|1)`` into ``out (v, 3, B)``."""
    out.copy_(blended[:, :, 3])
    for k in range(3):
        out.addcmul_(blended[:, :, k], points[:, None, k])


class _BatchLastSkinning(torch.autograd.Function):
    """Batch-last points in, **batch-first** ``(B, V, 3)`` out.

    Each vertex block is computed batch-last and transposed into the output while it
    is still in cache (a whole-array transpose afterwards costs as much as the
    skinning itself at large batches); the backward pass reads the incoming
    batch-first gradient block by block the same way.
    """

    @staticmethod
    def forward(
        ctx: Any, points: torch.Tensor, transforms: torch.Tensor, weights: torch.Tensor, block_bytes: int
    ) -> torch.Tensor:
        batch, joints = transforms.shape[:2]
        num_v = points.shape[0]
        rows = transforms.permute(1, 2, 3, 0).reshape(joints, 12 * batch)
        blocks = _blocks(num_v, batch, points.element_size(), block_bytes, weights.layout == torch.strided)
        out = points.new_empty(batch, num_v * 3)
        longest = max(e - s for s, e in blocks)
        blend_buf = points.new_empty(longest, 12 * batch)
        o_buf = points.new_empty(longest, 3, batch)
        for s, e in blocks:
            o = o_buf[: e - s]
            _apply(_blend(weights, rows, s, e, blend_buf).view(e - s, 3, 4, batch), points[s:e], o)
            out[:, 3 * s:3 * e].copy_(o.view(-1, batch).t())
        ctx.save_for_backward(points, rows, weights)
        ctx.blocks = blocks
        return out.view(batch, num_v, 3)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        points, rows, weights = ctx.saved_tensors
        joints, cols = rows.shape
        batch = cols // 12
        need_p, need_a, need_w = ctx.needs_input_grad[:3]
        grad_flat = grad_out.reshape(batch, -1)
        grad_p = torch.empty_like(points) if need_p else None
        grad_rows = torch.zeros_like(rows) if need_a else None
        grad_w = torch.empty_like(weights) if need_w else None
        broadcast = points.shape[2] == 1 and batch > 1
        longest = max(e - s for s, e in ctx.blocks)
        g_buf = points.new_empty(longest, 3, batch)
        blend_buf = points.new_empty(longest, cols) if need_p else points.new_empty(0)
        g_blend_buf = points.new_empty(longest, 3, 4, batch) if (need_a or need_w) else points.new_empty(0)
        gp_buf = points.new_empty(longest, 3, batch) if broadcast else points.new_empty(0)
        for s, e in ctx.blocks:
            g = g_buf[: e - s]
            g.view(-1, batch).copy_(grad_flat[:, 3 * s:3 * e].t())
            pts = points[s:e]
            if need_p:
                blended = _blend(weights, rows, s, e, blend_buf).view(e - s, 3, 4, batch)
                # d out_i / d p_k = blended[i, k]: gp_k = sum_i g_i * blended[i, k]
                gp = gp_buf[: e - s] if broadcast else grad_p[s:e]  # type: ignore[index]
                torch.mul(blended[:, 0, :3], g[:, 0, None], out=gp)
                for i in (1, 2):
                    gp.addcmul_(blended[:, i, :3], g[:, i, None])
                if broadcast:
                    grad_p[s:e] = gp.sum(2, keepdim=True)  # type: ignore[index]
            if need_a or need_w:
                g_blended = g_blend_buf[: e - s]
                torch.mul(g[:, :, None], pts[:, None], out=g_blended[:, :, :3])
                g_blended[:, :, 3] = g
                g_flat = g_blended.view(e - s, cols)
                if need_a and weights.layout == torch.strided:
                    grad_rows.addmm_(weights[s:e].t(), g_flat)  # type: ignore[union-attr]
                elif need_a:
                    grad_rows += torch.sparse.mm(weights.t(), g_flat)
                if need_w:
                    torch.mm(g_flat, rows.t(), out=grad_w[s:e])  # type: ignore[index]
        grad_a = grad_rows.view(joints, 3, 4, batch).permute(3, 0, 1, 2) if grad_rows is not None else None
        return grad_p, grad_a, grad_w, None


def skin_batch_last(
    points: torch.Tensor,
    transforms: torch.Tensor,
    weights: torch.Tensor,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> torch.Tensor:
    """Skin batch-last points.

    Args:
        points: ``(V, 3, B)`` or ``(V, 3, 1)`` rest-posed points (the latter broadcast).
        transforms: ``(B, J, 3, 4)`` rest -> posed affine transforms per joint.
        weights: ``(V, J)`` skinning weights, dense (blocked; differentiable too) or
            sparse COO (one block; no gradient for the weights).
        block_bytes: target size of the per-block temporaries.

    Returns:
        ``(B, V, 3)`` skinned points, batch-first.
    """
    sizes = check_shape(transforms, "transforms", ["B", "J", 3, 4])
    check_shape(weights, "weights", ["V", "J"], sizes)
    check_shape(points, "points", ["V", 3, None], sizes)
    check_floating(points, "points")
    check_like(transforms, "transforms", points, "points")
    if weights.layout == torch.strided:
        check_like(weights, "weights", points, "points")
    elif weights.requires_grad:
        raise ParameterError("sparse skinning weights cannot receive gradients; pass dense weights to learn them.")
    if points.shape[2] not in (1, sizes["B"]):
        raise ShapeError(
            f"points has batch {points.shape[2]} (last dimension) but transforms has batch {sizes['B']}; "
            f"pass one set of points per sample or a single set (batch 1) to broadcast."
        )
    if block_bytes <= 0:
        raise ParameterError(f"block_bytes must be positive, got {block_bytes}.")
    if sizes["B"] <= SMALL_BATCH:
        return _skin_small_batch(points, transforms, weights)
    out: torch.Tensor = _BatchLastSkinning.apply(points, transforms.contiguous(), weights, block_bytes)
    return out


def _skin_small_batch(points: torch.Tensor, transforms: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Plain autograd LBS for a few samples: ``(V, B, 3, 4)`` blended transforms from one GEMM,
    applied with one batched 3x3 product (the blocked multiply-adds over a batch of 1-4 run on
    strided rows of a few elements and are slower).
    Differentiable in all three inputs (sparse weights: not in the weights)."""
    batch, joints = transforms.shape[:2]
    rows = transforms.permute(1, 0, 2, 3).reshape(joints, batch * 12)
    blended = weights @ rows if weights.layout == torch.strided else torch.sparse.mm(weights, rows)
    blended = blended.view(-1, batch, 3, 4)
    pts = points.permute(0, 2, 1).expand(-1, batch, -1)  # (V, B, 3)
    moved = (blended[..., :3] @ pts[..., None])[..., 0] + blended[..., 3]
    return moved.permute(1, 0, 2)


def skin_vertices(
    vertices: torch.Tensor,
    transforms: torch.Tensor,
    weights: torch.Tensor,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> torch.Tensor:
    """Linear blend skinning of ``vertices (B|1, V, 3)`` with ``weights (V, J)`` -> ``(B, V, 3)``.

    Convenience wrapper over :func:`skin_batch_last` for batch-first points.
    """
    check_shape(vertices, "vertices", [None, "V", 3])
    return skin_batch_last(vertices.permute(1, 2, 0), transforms, weights, block_bytes=block_bytes)
