"""Rasterising a UV layout: which triangle and barycentric weights each texel centre takes.

:class:`UVRaster` is built once per layout and resolution (numpy); baking a per-vertex field into a
texture is then a gather and a weighted sum in torch, so textures stay differentiable in the field.
Texels outside every chart take the values of the nearest covered texel (a dilation that keeps
bilinear filtering and mip-maps from pulling in background at seams).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from ..core.errors import ParameterError, ShapeError
from .uv import UVLayout

__all__ = ["UVRaster", "rasterize"]


@dataclass(frozen=True)
class UVRaster:
    """``resolution``; per texel (row-major, row 0 at ``v = 1``): ``face (R*R,)`` (-1 outside every
    chart before dilation), ``corners (R*R, 3)`` mesh vertex ids and ``bary (R*R, 3)`` weights after
    dilation; ``covered (R, R)`` bool; ``coverage (R, R)`` how many triangles contain the texel centre."""

    resolution: int
    face: np.ndarray
    corners: np.ndarray
    bary: np.ndarray
    covered: np.ndarray
    coverage: np.ndarray

    def bake(self, values: torch.Tensor) -> torch.Tensor:
        """Per-vertex values ``(B, V, C)`` (tissue-local vertices) -> texture ``(B, R, R, C)``."""
        if values.dim() != 3:
            raise ShapeError(f"values must have shape (B, V, C), got {tuple(values.shape)}.")
        if values.shape[1] <= int(self.corners.max()):
            raise ShapeError(f"values has {values.shape[1]} vertices but the layout uses vertex "
                             f"{int(self.corners.max())}; pass the tissue's vertices.")
        ids = torch.as_tensor(self.corners, device=values.device)
        w = torch.as_tensor(self.bary, dtype=values.dtype, device=values.device)
        texels = (values[:, ids] * w[None, :, :, None]).sum(2)
        r = self.resolution
        return texels.reshape(values.shape[0], r, r, values.shape[2])


def rasterize(layout: UVLayout, resolution: int) -> UVRaster:
    """Texel-centre coverage of ``layout`` at ``resolution x resolution`` texels (see :class:`UVRaster`)."""
    if not isinstance(resolution, int) or not 4 <= resolution <= 8192:
        raise ParameterError(f"resolution must be an int in [4, 8192], got {resolution!r}.")
    r = resolution
    # texel (row, col) centre: u = (col + 0.5) / r, v = 1 - (row + 0.5) / r; work in texel units x = u r - 0.5
    pts = layout.uv[layout.uv_faces] * r - 0.5  # (F, 3, 2) in (x = col, y = r - 1 - row)
    lo = np.clip(np.ceil(pts.min(1)), 0, r - 1).astype(np.int64)
    hi = np.clip(np.floor(pts.max(1)), 0, r - 1).astype(np.int64)
    nx, ny = np.maximum(hi[:, 0] - lo[:, 0] + 1, 0), np.maximum(hi[:, 1] - lo[:, 1] + 1, 0)
    count = nx * ny
    fid = np.repeat(np.arange(len(pts)), count)
    k = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    x = lo[fid, 0] + k % nx[fid]
    y = lo[fid, 1] + k // nx[fid]
    a, b, c = pts[fid, 0], pts[fid, 1], pts[fid, 2]
    den = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    den = np.where(np.abs(den) > 1e-300, den, 1e-300)
    w1 = ((x - a[:, 0]) * (c[:, 1] - a[:, 1]) - (y - a[:, 1]) * (c[:, 0] - a[:, 0])) / den
    w2 = ((b[:, 0] - a[:, 0]) * (y - a[:, 1]) - (b[:, 1] - a[:, 1]) * (x - a[:, 0])) / den
    w0 = 1 - w1 - w2
    inside = (w0 > 0) & (w1 > 0) & (w2 > 0)
    texel = (r - 1 - y[inside]) * r + x[inside]
    coverage = np.bincount(texel, minlength=r * r)
    face = np.full(r * r, -1, dtype=np.int64)
    bary = np.zeros((r * r, 3))
    face[texel] = fid[inside]
    bary[texel] = np.stack([w0[inside], w1[inside], w2[inside]], 1)
    covered = face >= 0
    if not covered.any():
        raise ParameterError(f"no texel centre falls inside the layout at resolution {r}; raise the resolution.")
    # dilation: every texel outside the charts copies its nearest covered texel
    nearest = distance_transform_edt(~covered.reshape(r, r), return_distances=False, return_indices=True)
    src = (nearest[0] * r + nearest[1]).ravel()
    face_all, bary_all = face[src], bary[src]
    corners = layout.vertex_of_uv[layout.uv_faces[face_all]]
    return UVRaster(resolution=r, face=face, corners=corners, bary=bary_all, covered=covered.reshape(r, r),
                    coverage=coverage.reshape(r, r))
