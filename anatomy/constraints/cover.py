"""Bone under an open skin sheet: how far bone points come through the skin.

A closed skin (the hand) has an inside, so penetration is a signed distance to a closed surface
(:mod:`anatomy.constraints.penetration`). A face cropped to the front of the head is an open
sheet with an outline and a mouth slit: "inside" only means *behind the sheet*, and only where
the sheet is over the bone. :class:`SheetCover` pairs each bone point, once at rest, with the
material point of the sheet that covers it (its exact closest point, kept as a triangle and
barycentric weights), and measures the point's height above that skin point along the posed
skin normal there (the area-weighted normal of the skin patch within ``patch`` mm of it at rest:
a single triangle's normal, or angle-weighted vertex normals, turn over with the slivers that
every decimated surface has, and then the sign of a deep point flips):

    height = (bone - skin) . n_skin       (> 0: the bone is in front of its skin: through it)

Pairs are kept only where the closest rest point lies on an interior triangle (away from the
outline and the mouth slit) within ``reach`` mm; the back of the skull, under no skin, drops out.

Why a fixed pairing and not the closest point of the posed sheet: on a deforming open sheet the
closest posed triangle jumps between folds (nostrils, lip, eyelid and cheek creases) and its side
then says nothing about the point; measured on the default head, a per-pose closest-point test
reports 10-40 mm "depths" for bone 13-29 mm under the skin at 2 SD of expression. A fixed
material pairing never flips sign unless the skin itself folds over at that point, and it is
cheap (no search per pose) and smooth, so it also serves as a training penalty. It does not
follow skin that slides far along the bone (it is a first-order test in the sliding).
"""

from __future__ import annotations

import torch
from scipy.spatial import cKDTree

from ..core.checks import check_finite, check_tensor
from ..core.errors import ParameterError, ShapeError
from ..core.nearest import closest_points_on_mesh

__all__ = ["SheetCover", "boundary_vertices"]


def boundary_vertices(faces: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """``(V,)`` bool: vertices on an edge used by exactly one triangle."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(dim=1).values
    unique, counts = torch.unique(edges, dim=0, return_counts=True)
    mask = torch.zeros(num_vertices, dtype=torch.bool, device=faces.device)
    mask[unique[counts == 1].flatten()] = True
    return mask


class SheetCover:
    """Bone points vs an open skin sheet (see the module docs).

    Args:
        points: ``(N0, 3)`` rest bone points (candidates).  sheet: ``(Vs, 3)`` rest skin vertices.
        faces: ``(F, 3)`` skin triangles; their winding is flipped if needed so that most kept
            points lie behind the sheet at rest.
        reach: mm; candidates farther than this from the sheet at rest are not under it.
        rings: triangles within this many edge rings of the boundary count as boundary.
        patch: mm; the skin normal of a pair is that of the triangles whose rest centres lie
            within this distance of its rest skin point (and its own triangle).

    ``ids`` are the kept candidates (indices into ``points``), ``rest_height`` their heights at
    rest (negative: the cover); the methods take all ``(B, N0, 3)`` candidates and ``(B, Vs, 3)``
    sheets.
    """

    def __init__(self, points: torch.Tensor, sheet: torch.Tensor, faces: torch.Tensor, *, reach: float = 30.0,
                 rings: int = 1, patch: float = 4.0) -> None:
        for name, x in (("points", points), ("sheet", sheet)):
            check_tensor(x, name)
            if x.dim() != 2 or x.shape[1] != 3:
                raise ShapeError(f"{name} must be (n, 3) rest positions, got {tuple(x.shape)}.")
            check_finite(x, name)
        if faces.dim() != 2 or faces.shape[1] != 3 or faces.numel() == 0:
            raise ShapeError(f"faces must be (F, 3) triangles, got {tuple(faces.shape)}.")
        if not reach > 0 or rings < 0:
            raise ParameterError(f"reach must be > 0 and rings >= 0, got {reach} and {rings}.")
        faces = faces.long().cpu()
        edge = boundary_vertices(faces, sheet.shape[0])
        for _ in range(rings):  # grow the boundary band by one edge ring
            edge = edge.clone().index_fill_(0, faces[edge[faces].any(1)].flatten(), True)
        rest_p, rest_s = points.detach().double().cpu(), sheet.detach().double().cpu()
        near = closest_points_on_mesh(rest_p, rest_s, faces, exact=True)
        keep = (near.distance < reach) & ~edge[faces].any(1)[near.face_index]
        if not bool(keep.any()):
            raise ParameterError("no bone point lies under the skin sheet at rest (within reach and away from "
                                 "its boundary); check that points and sheet are in the same frame.")
        self.num_candidates = points.shape[0]
        self.ids = torch.nonzero(keep).flatten()
        self.corners = faces[near.face_index[self.ids]]  # (N, 3) sheet vertex ids of each pair
        self.bary = near.barycentric[self.ids]  # (N, 3)
        found = cKDTree(rest_s[faces].mean(1).numpy()).query_ball_point(near.closest[self.ids].numpy(), patch)
        rows: list[int] = []
        cols: list[int] = []
        for i, (ball, own) in enumerate(zip(found, near.face_index[self.ids].tolist())):
            cols += sorted(set(ball) | {own})
            rows += [i] * (len(cols) - len(rows))
        used, local = torch.unique(torch.tensor(cols), return_inverse=True)  # only these normals are needed
        index = torch.stack([torch.tensor(rows), local])
        self.patches = torch.sparse_coo_tensor(index, torch.ones(len(rows)), (len(self.ids), len(used)),
                                               check_invariants=True).coalesce()
        self.patch_faces = faces[used]
        height = self._heights(rest_p[None, self.ids], rest_s[None])[0]
        if int((height > 0).sum()) * 2 > len(height):  # the winding points inwards
            self.patch_faces = self.patch_faces[:, [0, 2, 1]]
            height = -height
        self.rest_height = height
        self.rest_normal = self._normals(rest_s[None])[0]  # (N, 3) outward patch normals at rest

    def _heights(self, points: torch.Tensor, sheet: torch.Tensor) -> torch.Tensor:
        corners, bary = self.corners.to(sheet.device), self.bary.to(sheet.device, sheet.dtype)
        skin = (sheet[:, corners] * bary[..., None]).sum(-2)  # (B, N, 3)
        return ((points - skin) * self._normals(sheet)).sum(-1)

    def _normals(self, sheet: torch.Tensor) -> torch.Tensor:
        tri = sheet[:, self.patch_faces.to(sheet.device)]  # (B, F_patch, 3, 3)
        area_normals = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
        batch, num_f = area_normals.shape[:2]
        patches = self.patches.to(sheet.device, sheet.dtype)
        n = torch.sparse.mm(patches, area_normals.permute(1, 0, 2).reshape(num_f, batch * 3))
        n = n.reshape(-1, batch, 3).permute(1, 0, 2)
        return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def heights(self, points: torch.Tensor, sheet: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` heights (mm) of the kept points of ``points (B, N0, 3)`` above their skin
        points on ``sheet (B, Vs, 3)``; ``> 0`` pokes through. Differentiable in both."""
        if points.dim() != 3 or points.shape[1:] != (self.num_candidates, 3):
            raise ShapeError(f"points must be (B, {self.num_candidates}, 3), got {tuple(points.shape)}.")
        if sheet.dim() != 3 or sheet.shape[0] != points.shape[0] or sheet.shape[2] != 3:
            raise ShapeError(f"sheet must be (B, Vs, 3) with the points' batch {points.shape[0]}, "
                             f"got {tuple(sheet.shape)}.")
        return self._heights(points[:, self.ids.to(points.device)], sheet)

    def turned(self, sheet: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` bool: the skin patch of a pair has folded over — its posed normal points
        against its rest normal carried by ``rotations (B, N, 3, 3)`` (what the skin there was
        rotated by, e.g. the blended skinning transform). There the patch's side says nothing
        about the bone point: such pairs are a skin fold, not bone through the skin."""
        expected = (rotations @ self.rest_normal.to(sheet.device, sheet.dtype)[..., None])[..., 0]
        return (self._normals(sheet) * expected).sum(-1) < 0

    def penalty(self, points: torch.Tensor, sheet: torch.Tensor, *, margin: float = 0.0) -> torch.Tensor:
        """Differentiable ``(B,)``: sum over the kept points of ``relu(height + margin)^2`` (mm^2)."""
        return (self.heights(points, sheet) + margin).clamp_min(0.0).square().sum(1)
