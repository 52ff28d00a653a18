"""Point-cloud data term of the fits (batched over targets of any sizes) and its rigid start.

Correspondences are found every few optimiser steps with KD-trees (:func:`anatomy.core.nearest.knn`,
no dense ``N x M`` matrix) and held fixed in between, as in ICP:

* target -> model (always): each target point against the tangent plane of its nearest model surface
  vertex (the model's vertex normal) plus a tenth of the point distance; **trimmed**: the pairs farther
  than 3 median distances (at least ``reject_mm``) and the worst ``trim`` share are dropped, so a partial
  scan (a face without the back of the head, the palm side of a hand) or outliers do not pull.
* model -> target (only for ``partial=False`` clouds): each model vertex against its nearest target point
  (against the target's tangent plane when normals are given), trimmed the same way; it keeps the model
  from growing beyond the target where the target is complete.

The term is ``weight * mean(rho(r^2 / sigma^2))`` per direction, per target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.alignment import Similarity
from ..core.nearest import knn
from ..core.surface import vertex_normals
from ..registration.rigid import icp, register_rigid
from .fit_targets import PointCloud
from .priors import robust

#: points of each side the rigid start works on (every n-th point): enough for a start, 25x faster than 6,000
_START_POINTS = 800

__all__ = ["CloudMatches", "cloud_distances", "cloud_start", "cloud_term", "match_cloud"]


@dataclass
class CloudMatches:
    """Fixed pairs of one target cloud: ``t_keep`` target points matched to model vertices ``t_idx``; model
    vertices ``m_keep`` matched to target points ``m_idx`` (empty for partial clouds)."""

    t_keep: torch.Tensor
    t_idx: torch.Tensor
    m_keep: torch.Tensor
    m_idx: torch.Tensor


def _keep(dist: torch.Tensor, trim: float, reject_mm: float) -> torch.Tensor:
    """Indices of the pairs kept: within max(reject_mm, 3 median) and not in the worst ``trim`` share."""
    limit = max(reject_mm, 3.0 * float(dist.median()))
    count = max(1, int(round((1.0 - trim) * dist.numel())))
    order = torch.argsort(dist)[:count]
    return order[dist[order] <= limit]


def match_cloud(verts: torch.Tensor, cloud: PointCloud, b: int, *, trim: float, reject_mm: float) -> CloudMatches:
    """Pairs of target ``b`` of ``cloud`` with the model surface ``verts (n, 3)`` (detached)."""
    pts = cloud.points[b].to(verts)
    d, idx = knn(pts, verts)
    t_keep = _keep(d[:, 0], trim, reject_mm)
    if cloud.partial:
        empty = torch.zeros(0, dtype=torch.long, device=verts.device)
        return CloudMatches(t_keep, idx[t_keep, 0], empty, empty)
    d2, idx2 = knn(verts, pts)
    m_keep = _keep(d2[:, 0], trim, reject_mm)
    return CloudMatches(t_keep, idx[t_keep, 0], m_keep, idx2[m_keep, 0])


def cloud_term(verts: torch.Tensor, faces: torch.Tensor, cloud: PointCloud, b: int, pairs: CloudMatches, *,
               sigma: float, loss: str, scale: float, weight: float) -> torch.Tensor:
    """The energy (scalar) of target ``b`` against the model surface ``verts (n, 3)`` (differentiable)."""
    pts = cloud.points[b].to(verts)
    normals = vertex_normals(verts, faces.to(verts.device))
    a = pts[pairs.t_keep] - verts[pairs.t_idx]
    sq = (a * normals[pairs.t_idx]).sum(-1).square() + 0.1 * a.square().sum(-1)
    energy = robust(sq / sigma**2, loss, scale).mean()
    if pairs.m_keep.numel():
        c = verts[pairs.m_keep] - pts[pairs.m_idx]
        if cloud.normals is not None:
            n = cloud.normals[b].to(verts)[pairs.m_idx]
            sq2 = (c * n).sum(-1).square() + 0.1 * c.square().sum(-1)
        else:
            sq2 = c.square().sum(-1)
        energy = energy + robust(sq2 / sigma**2, loss, scale).mean()
    return weight * energy


def cloud_distances(verts: torch.Tensor, faces: torch.Tensor, cloud: PointCloud, b: int) -> torch.Tensor:
    """``(N_b,)`` distance (mm) of each target point to the model surface: to the tangent plane of its
    nearest model vertex (the vertex spacing would otherwise count)."""
    pts = cloud.points[b].to(verts)
    normals = vertex_normals(verts, faces.to(verts.device))
    d, idx = knn(pts, verts)
    a = pts - verts[idx[:, 0]]
    plane = (a * normals[idx[:, 0]]).sum(-1).abs()
    return torch.minimum(plane, d[:, 0])


def cloud_start(source: torch.Tensor, target: torch.Tensor, *, partial: bool, fit_scale: bool) -> Similarity:
    """A rigid (or similarity) start taking the model surface ``source (n, 3)`` onto the cloud
    ``target (N, 3)``: trimmed ICP from the centroids with the axes as they are, and from principal axes (all
    24 axis choices); the lower trimmed RMS wins."""
    src, dst = source.detach().cpu().double().numpy(), target.detach().cpu().double().numpy()
    src, dst = src[:: max(1, len(src) // _START_POINTS)], dst[:: max(1, len(dst) // _START_POINTS)]
    trim = 0.6 if partial else 0.8
    shift = torch.from_numpy(dst.mean(0) - src.mean(0))
    one = torch.tensor(1.0, dtype=torch.float64)
    plain = Similarity(torch.eye(3, dtype=torch.float64), shift, one)
    runs = [icp(src, dst, init=plain, scale=fit_scale, trim=trim),
            register_rigid(src, dst, scale=fit_scale, trim=trim, all_axes=True)]
    best = min(runs, key=lambda r: r.rms / float(r.transform.scale))
    return best.transform
