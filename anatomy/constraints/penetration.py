"""Penetration between the tissues of a layered model (bones, muscles, skin).

:class:`TissuePenetration` is built once from the rest meshes and then measures, penalises
and fixes penetrations of posed outputs, batched, on CPU or CUDA:

* **bone vs bone, muscle vs bone, skin vs bone**: each bone (a rigid part) gets a signed
  distance grid at rest; at run time the part's rest -> posed affine map is fitted to its
  posed vertices by least squares (a precomputed pseudo-inverse, so shape changes that
  stretch a bone are followed too) and the query points are read in the part's rest frame.
* **skin vs muscle**: muscles deform, so each skin surface vertex keeps the muscle faces
  nearest to it at rest and is signed against them with angle-weighted vertex normals.

Penalties are differentiable in every vertex (use them in fitting and training); the fix-up
:meth:`TissuePenetration.push_skin_out` is a vectorised, gradient-free projection of skin
surface vertices out of muscles and bones (NIMBLE ships a per-sample CPU loop for this).
Depths are in the units of the model (mm), positive = inside.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch

from ..core.errors import ParameterError
from ..core.nearest import closest_points_on_mesh
from ..core.signed_distance import (
    sample_sdf_grids,
    sdf_grid,
    signed_distance_to_faces,
)

__all__ = ["PAIRS", "PenetrationDepths", "TissuePenetration"]

#: posed -> rest maps of the bones: inverse matrices, translations, scales
Frames = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

#: the tissue pairs measured, in this order
PAIRS = ("bone_bone", "skin_bone", "muscle_bone", "skin_muscle")


@dataclass(frozen=True)
class PenetrationDepths:
    """Per-vertex penetration depths ``(B, n)`` (0 = outside), one field per tissue pair.

    ``bone_bone`` over all bone vertices; ``muscle_bone`` over the muscle surface vertices
    (:attr:`TissuePenetration.muscle_surface`); ``skin_bone`` and ``skin_muscle`` over the skin
    surface vertices (:attr:`TissuePenetration.skin_surface`); ``None`` where that tissue was
    not given.
    """

    bone_bone: torch.Tensor
    skin_bone: torch.Tensor | None
    muscle_bone: torch.Tensor | None
    skin_muscle: torch.Tensor | None


@dataclass(frozen=True)
class _PartQueries:
    """Query vertices grouped by the part they are tested against, padded to ``(P, L)``."""

    index: torch.Tensor  # (P, L) query ids, padding = n (a dummy slot)
    num_queries: int


def _surface_ids(faces: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    ids = torch.unique(faces.reshape(-1))
    if mask is not None:
        ids = ids[mask[ids]]
    return ids


class TissuePenetration:
    """Penetration measures, penalties and fix-up for one model's tissues.

    Args:
        bone_vertices: ``(n_b, 3)`` rest bone vertices; ``bone_faces (F_b, 3)`` local indices;
            ``bone_parts (n_b,)`` part id of each vertex (one closed mesh per part, rigid).
        skin_vertices, skin_faces: the skin tissue at rest and its (closed) surface triangles;
            ``skin_surface`` optional ``(n_s,)`` bool mask of the outer surface vertices.
        muscle_vertices, muscle_faces: optional muscle tissue and its closed surfaces.
        grid_resolution, grid_margin: SDF grid samples per axis and padding (mm) per bone.
        bone_neighbours: bones tested per skin / muscle vertex (its nearest at rest).
        muscle_candidates, muscle_radius: muscle faces tested exactly per skin vertex (the
            nearest in the posed state), and the rest distance (mm) beyond which a skin vertex
            is not tested against muscles.
    """

    def __init__(
        self,
        bone_vertices: torch.Tensor,
        bone_faces: torch.Tensor,
        bone_parts: torch.Tensor,
        skin_vertices: torch.Tensor | None = None,
        skin_faces: torch.Tensor | None = None,
        skin_surface: torch.Tensor | None = None,
        muscle_vertices: torch.Tensor | None = None,
        muscle_faces: torch.Tensor | None = None,
        *,
        grid_resolution: int = 32,
        grid_margin: float = 4.0,
        bone_neighbours: int = 4,
        muscle_candidates: int = 16,
        muscle_radius: float = 20.0,
    ) -> None:
        if (muscle_vertices is None) != (muscle_faces is None) or (skin_vertices is None) != (skin_faces is None):
            raise ParameterError("pass both vertices and faces of the skin (and of the muscles), or neither.")
        if muscle_vertices is not None and skin_vertices is None:
            raise ParameterError("muscles are only tested against the skin and bones: pass the skin too.")
        dev, dtype = bone_vertices.device, bone_vertices.dtype
        rest = bone_vertices.detach().double()
        parts = bone_parts.long()
        num_parts = int(parts.max()) + 1
        if parts.shape != (rest.shape[0],) or int(parts.min()) < 0:
            raise ParameterError(
                f"bone_parts must be ({rest.shape[0]},) non-negative part ids, got {tuple(parts.shape)}."
            )
        grids, lows, highs = [], [], []
        pinv = torch.zeros(num_parts, 4, rest.shape[0], dtype=torch.float64, device=dev)
        for p in range(num_parts):
            ids = torch.nonzero(parts == p).flatten()
            if ids.numel() < 4:
                raise ParameterError(f"bone part {p} has {ids.numel()} vertices; each part needs a closed mesh.")
            keep = (parts[bone_faces] == p).all(1)
            remap = torch.full((rest.shape[0],), -1, dtype=torch.long, device=dev)
            remap[ids] = torch.arange(ids.numel(), device=dev)
            values, low, high = sdf_grid(rest[ids], remap[bone_faces[keep]], grid_resolution, grid_margin)
            grids.append(values)
            lows.append(low)
            highs.append(high)
            homo = torch.cat([rest[ids], torch.ones_like(rest[ids, :1])], 1)  # (n_p, 4)
            pinv[p][:, ids] = torch.linalg.pinv(homo)
        self.num_parts = num_parts
        self.grids = torch.stack(grids).to(dtype)
        self.lower = torch.stack(lows).to(dtype)
        self.upper = torch.stack(highs).to(dtype)
        self.pinv = pinv.to(dtype)
        self.bone_parts = parts

        # bone vertices against every other bone
        others = [torch.nonzero(parts != p).flatten() for p in range(num_parts)]
        self._bone_queries = self._pad(others, rest.shape[0])

        self.skin_surface: torch.Tensor | None = None
        self.muscle_surface: torch.Tensor | None = None
        self.muscle_faces: torch.Tensor | None = None
        if skin_vertices is not None and skin_faces is not None:
            self._init_skin(skin_vertices.detach(), skin_faces.long(), skin_surface, bone_neighbours)
        if muscle_vertices is not None and muscle_faces is not None and skin_vertices is not None:
            self._init_muscles(muscle_vertices.detach(), muscle_faces.long(), skin_vertices.detach(),
                               bone_neighbours, muscle_candidates, muscle_radius)

    # ---------------------------------------------------------------- construction helpers

    def _init_skin(self, vertices: torch.Tensor, faces: torch.Tensor, surface: torch.Tensor | None,
                   bone_neighbours: int) -> None:
        """Skin surface vertices vs their nearest bones; surface neighbourhood for the fix-up."""
        self.skin_surface = _surface_ids(faces, surface)
        self._skin_queries = self._nearest_parts(vertices[self.skin_surface], bone_neighbours)
        n = vertices.shape[0]
        rows = torch.cat([faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 1], faces[:, 2], faces[:, 0]])
        cols = torch.cat([faces[:, 1], faces[:, 2], faces[:, 0], faces[:, 0], faces[:, 1], faces[:, 2]])
        ind = torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.ones_like(rows), (n, n),
                                      check_invariants=False).coalesce().indices()
        deg = torch.bincount(ind[0], minlength=n).clamp(min=1)
        # row-normalised adjacency: one ring of averaging per product
        self.skin_smoothing = torch.sparse_coo_tensor(ind, (1.0 / deg[ind[0]]).to(self.grids.dtype), (n, n),
                                                      is_coalesced=True, check_invariants=False)

    def _init_muscles(self, vertices: torch.Tensor, faces: torch.Tensor, skin: torch.Tensor,
                      bone_neighbours: int, candidates: int, radius: float) -> None:
        """Muscle surface vertices vs their nearest bones; skin surface vertices near muscles."""
        assert self.skin_surface is not None
        self.muscle_faces = faces
        self.muscle_surface = _surface_ids(faces, None)
        self._muscle_queries = self._nearest_parts(vertices[self.muscle_surface], bone_neighbours)
        rest = closest_points_on_mesh(skin[self.skin_surface], vertices, faces).distance
        self.skin_near_muscle = torch.nonzero(rest <= radius).flatten()  # positions in skin_surface
        self.muscle_candidates = candidates

    def _pad(self, groups: list[torch.Tensor], n: int) -> _PartQueries:
        width = max(1, max(int(g.numel()) for g in groups))
        index = torch.full((len(groups), width), n, dtype=torch.long, device=self.grids.device)
        for p, g in enumerate(groups):
            index[p, : g.numel()] = g
        return _PartQueries(index, n)

    def _nearest_parts(self, points: torch.Tensor, k: int) -> _PartQueries:
        """Each point is tested against the ``k`` bones it is nearest to at rest."""
        k = min(k, self.num_parts)
        pts = points.to(self.grids.dtype)[None].expand(self.num_parts, -1, -1)
        sd = sample_sdf_grids(self.grids, self.lower, self.upper, pts).t()  # (n, P)
        near = sd.topk(k, dim=1, largest=False).indices  # (n, k)
        groups = [torch.nonzero((near == p).any(1)).flatten() for p in range(self.num_parts)]
        return self._pad(groups, points.shape[0])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TissuePenetration:
        """Move the grids and tables (in place) and return ``self``."""
        for name, value in list(vars(self).items()):
            if isinstance(value, torch.Tensor):
                floating = value.is_floating_point() or (value.is_sparse and value.dtype.is_floating_point)
                setattr(self, name, value.to(device=device, dtype=dtype if floating else None))
            elif isinstance(value, _PartQueries):
                setattr(self, name, _PartQueries(value.index.to(device), value.num_queries))
        return self

    # ---------------------------------------------------------------- signed distances

    def bone_frames(self, bones: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-bone affine rest -> posed maps fitted to the posed bones ``(B, n_b, 3)``.

        Returns ``A (B, P, 3, 3)``, ``t (B, P, 3)`` with ``posed = A @ rest + t`` and the
        scale ``|det A|^(1/3) (B, P)`` that converts rest-frame distances back to posed ones.
        """
        fit = torch.einsum("pkv,bvc->bpkc", self.pinv, bones)  # (B, P, 4, 3): [A^T; t]
        mat = fit[:, :, :3].transpose(-1, -2)
        return mat, fit[:, :, 3], torch.linalg.det(mat).abs().clamp(min=1e-12) ** (1 / 3)

    def _rest_frames(self, bones: torch.Tensor) -> Frames:
        """Posed -> rest maps of the bones, ``(A^-1 (B, P, 3, 3), t (B, P, 3), scale (B, P))``:
        inverted once per call of a public method, then shared by every query set."""
        mat, shift, scale = self.bone_frames(bones)
        return torch.linalg.inv(mat), shift, scale

    def _sample_parts(self, points: torch.Tensor, frames: Frames, queries: _PartQueries) -> torch.Tensor:
        """Signed distance ``(B, P, L)`` of the padded query points of each bone to that bone."""
        inverse, shift, scale = frames
        padded = torch.cat([points, points.new_zeros(points.shape[0], 1, 3)], 1)
        pts = padded[:, queries.index]  # (B, P, L, 3)
        local = torch.einsum("bpij,bplj->bpli", inverse, pts - shift[:, :, None])
        sd = sample_sdf_grids(self.grids, self.lower, self.upper, local.transpose(0, 1)).transpose(0, 1)
        return sd * scale[..., None]

    def _to_bones(self, points: torch.Tensor, frames: Frames, queries: _PartQueries) -> torch.Tensor:
        """Signed distance ``(B, n)`` of each query point to the nearest of its tested bones."""
        sd = self._sample_parts(points, frames, queries)
        batch = points.shape[0]
        out = points.new_full((batch, queries.num_queries + 1), float("inf"))
        idx = queries.index.reshape(1, -1).expand(batch, -1)
        out = out.scatter_reduce(1, idx, sd.reshape(batch, -1), reduce="amin", include_self=True)
        return out[:, :-1]

    def bone_pair_distances(self, bones: torch.Tensor) -> torch.Tensor:
        """Signed distance ``(B, n_b, P)`` of every bone vertex to every other bone (``+inf``
        for its own), e.g. to tell articulating neighbours from other contacts."""
        sd = self._sample_parts(bones, self._rest_frames(bones), self._bone_queries)  # (B, P, L)
        batch, parts = bones.shape[0], self.num_parts
        out = bones.new_full((batch, bones.shape[1] + 1, parts), float("inf"))
        col = torch.arange(parts, device=bones.device)[:, None].expand_as(self._bone_queries.index)
        out[:, self._bone_queries.index.reshape(-1), col.reshape(-1)] = sd.reshape(batch, -1)
        return out[:, :-1]

    def distances(
        self,
        bones: torch.Tensor,
        skin: torch.Tensor | None = None,
        muscles: torch.Tensor | None = None,
        *,
        pairs: Collection[str] = PAIRS,
    ) -> dict[str, torch.Tensor]:
        """Signed distances (mm, negative inside) of every tested vertex, by tissue pair.

        ``bone_bone (B, n_b)``: each bone vertex to the other bones. With ``skin``:
        ``skin_bone (B, n_skin_surface)`` (:attr:`skin_surface` vertices to their nearest bones).
        With ``muscles`` too: ``muscle_bone (B, n_muscle_surface)`` and ``skin_muscle
        (B, n_skin_surface)`` (``+inf`` for skin vertices far from every muscle at rest).
        Tissue tensors are ``(B, n, 3)`` as in the model's outputs (``out.bones`` ...); only
        the ``pairs`` named (and possible with the tissues given) are computed.
        """
        unknown = set(pairs) - set(PAIRS)
        if unknown:
            raise ParameterError(f"unknown tissue pair(s) {sorted(unknown)}; use {list(PAIRS)}.")
        if skin is not None and self.skin_surface is None:
            raise ParameterError("this TissuePenetration was built without the skin.")
        if muscles is not None and (self.muscle_surface is None or self.muscle_faces is None or skin is None):
            raise ParameterError("muscles need the skin too, and a TissuePenetration built with both.")
        frames = self._rest_frames(bones)
        out = {}
        if "bone_bone" in pairs:
            out["bone_bone"] = self._to_bones(bones, frames, self._bone_queries)
        if skin is not None and self.skin_surface is not None and "skin_bone" in pairs:
            out["skin_bone"] = self._to_bones(skin[:, self.skin_surface], frames, self._skin_queries)
        if muscles is not None and self.muscle_surface is not None and "muscle_bone" in pairs:
            out["muscle_bone"] = self._to_bones(muscles[:, self.muscle_surface], frames, self._muscle_queries)
        if (muscles is not None and skin is not None and self.skin_surface is not None
                and self.muscle_faces is not None and "skin_muscle" in pairs):
            sd = skin.new_full((skin.shape[0], self.skin_surface.numel()), float("inf"))
            res = signed_distance_to_faces(skin[:, self.skin_surface[self.skin_near_muscle]], muscles,
                                           self.muscle_faces, self.muscle_candidates)
            out["skin_muscle"] = sd.index_copy(1, self.skin_near_muscle, res.distance)
        return out

    # ---------------------------------------------------------------- measures and penalties

    def depths(
        self, bones: torch.Tensor, skin: torch.Tensor | None = None, muscles: torch.Tensor | None = None
    ) -> PenetrationDepths:
        """Penetration depths (mm, >= 0) of every tested vertex, see :class:`PenetrationDepths`."""
        d = {k: (-v).clamp(min=0) for k, v in self.distances(bones, skin, muscles).items()}
        return PenetrationDepths(bone_bone=d["bone_bone"], skin_bone=d.get("skin_bone"),
                                 muscle_bone=d.get("muscle_bone"), skin_muscle=d.get("skin_muscle"))

    def penalty(
        self,
        bones: torch.Tensor,
        skin: torch.Tensor | None = None,
        muscles: torch.Tensor | None = None,
        *,
        margin: float = 0.0,
        weights: dict[str, float] | None = None,
    ) -> torch.Tensor:
        """Differentiable penalty ``(B,)``: weighted sum over tissue pairs of the mean of
        ``relu(margin - signed distance)^2`` (mm^2) over the tested vertices.

        ``weights`` by pair name (``bone_bone``, ``skin_bone``, ``muscle_bone``,
        ``skin_muscle``; default 1 each, 0 skips a pair). ``margin`` > 0 also pushes vertices
        that are outside but closer than ``margin``.
        """
        w = dict.fromkeys(PAIRS, 1.0)
        unknown = set(weights or {}) - set(w)
        if unknown:
            raise ParameterError(f"unknown penalty weight(s) {sorted(unknown)}; use {list(PAIRS)}.")
        w.update(weights or {})
        total = bones.new_zeros(bones.shape[0])
        for name, sd in self.distances(bones, skin, muscles, pairs=[k for k, v in w.items() if v]).items():
            total = total + w[name] * (margin - sd).clamp(min=0).square().mean(1)
        return total

    # ---------------------------------------------------------------- fix-up

    def push_skin_out(
        self,
        bones: torch.Tensor,
        skin: torch.Tensor,
        muscles: torch.Tensor | None = None,
        *,
        margin: float = 0.5,
        iterations: int = 12,
        smoothing: int = 2,
    ) -> torch.Tensor:
        """Skin ``(B, n_s, 3)`` with its surface vertices moved out of muscles and bones.

        A surface vertex closer than ``margin`` to (or inside) a muscle moves to the closest
        muscle point plus ``margin`` along the normal there (or, where that would drive it into
        a bone, along the bone's normal); one too close to a bone moves along the bone's
        distance gradient by its missing clearance (the sum of both moves where it is too close
        to both). The moves are spread to untouched neighbours (``smoothing`` rings of
        averaging) so no spikes form; repeated up to ``iterations`` times. Vectorised over the
        batch; no gradient. NIMBLE instead moves skin vertices along their own normal, which
        goes the wrong way where skinning has folded the skin.
        """
        if iterations < 1 or smoothing < 0:
            raise ParameterError(f"iterations must be >= 1 and smoothing >= 0, got {iterations}, {smoothing}.")
        if self.skin_surface is None:
            raise ParameterError("this TissuePenetration was built without the skin.")
        skin = skin.detach().clone()
        bones = bones.detach()
        frames = self._rest_frames(bones)
        surf = self.skin_surface
        for _ in range(iterations):
            with torch.enable_grad():
                pts = skin[:, surf].requires_grad_()
                sd_bone = self._to_bones(pts, frames, self._skin_queries)
                (grad,) = torch.autograd.grad(sd_bone.clamp(max=1e6).sum(), pts)
            bone_n = grad / grad.norm(dim=-1, keepdim=True).clamp(min=1e-12)
            offset = torch.zeros_like(skin)
            offset[:, surf] = bone_n * (margin - sd_bone.detach()).clamp(min=0).nan_to_num(posinf=0.0)[..., None]
            if muscles is not None and self.muscle_faces is not None:
                sub = surf[self.skin_near_muscle]
                res = signed_distance_to_faces(skin[:, sub], muscles.detach(), self.muscle_faces,
                                               self.muscle_candidates)
                # to the closest muscle point, then margin along the normal there; where that
                # would drive the vertex into a bone (a muscle lying in the bone), leave the
                # muscle the other way, along the bone's normal
                step = res.closest - skin[:, sub] + margin * res.normal
                near_n = bone_n[:, self.skin_near_muscle]
                near_sd = sd_bone.detach()[:, self.skin_near_muscle]
                conflict = ((step * near_n).sum(-1) < 0) & (near_sd < step.norm(dim=-1) + margin)
                step = torch.where(conflict[..., None], near_n * (margin - res.distance)[..., None], step)
                offset[:, sub] += torch.where((res.distance < margin)[..., None], step, torch.zeros_like(step))
            moved = offset.norm(dim=-1, keepdim=True) > 0
            if not bool(moved.any()):
                break
            soft = offset
            for _ in range(smoothing):
                flat = torch.sparse.mm(self.skin_smoothing, soft.permute(1, 0, 2).reshape(skin.shape[1], -1))
                soft = flat.reshape(skin.shape[1], skin.shape[0], 3).permute(1, 0, 2)
            skin = skin + torch.where(moved, offset, soft)
        return skin
