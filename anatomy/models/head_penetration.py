"""Bone through skin for the head layer: skull and mandible under the face sheet.

The geometry lives in :class:`anatomy.constraints.cover.SheetCover`; this module only knows
which tissues of the head are bone and which is the face, and turns heights into a report.
"""

from __future__ import annotations

import torch

from ..constraints.cover import SheetCover
from ..core.errors import ParameterError
from .output import ModelOutput, TissueLayout

__all__ = ["HeadPenetration"]


class HeadPenetration:
    """Skull / mandible (every tissue but ``face``) against the ``face`` sheet of a head layer.

    Built from the rest vertex stack; use it on outputs of the same layer:
    ``heights(out)`` ``(B, N)`` mm (> 0 = bone in front of its skin), ``penalty(out, margin=)``
    (differentiable ``(B,)``), ``report(out, threshold=)`` (plain numbers). ``point_ids`` are the
    stack indices of the N bone vertices under the face.
    """

    def __init__(self, layout: tuple[TissueLayout, ...], template: torch.Tensor, weights: torch.Tensor, *,
                 reach: float = 30.0) -> None:
        lay = {t.name: t for t in layout}
        if "face" not in lay or len(lay) < 2:
            raise ParameterError(f"head penetration needs a 'face' tissue and at least one bone tissue; "
                                 f"the model has {list(lay)}.")
        face = lay["face"]
        self.bones = tuple(t for t in layout if t.name != "face")
        ids = torch.cat([torch.arange(t.start, t.stop) for t in self.bones])
        self._bone_ids = ids  # stack indices of every bone vertex (the cover's candidates)
        self.face_slice = slice(face.start, face.stop)
        rest = template.detach()
        self.cover = SheetCover(rest[ids], rest[self.face_slice], face.faces, reach=reach)
        self.point_ids = ids[self.cover.ids]  # stack indices of the covered bone vertices
        owner = torch.cat([torch.full((t.stop - t.start,), i) for i, t in enumerate(self.bones)])
        self._owner = owner[self.cover.ids]
        dense = (weights.to_dense() if weights.layout != torch.strided else weights).detach().cpu()
        corner_w = dense[face.start:face.stop][self.cover.corners]  # (N, 3, J)
        self._pair_weights = (corner_w * self.cover.bary[..., None].to(corner_w.dtype)).sum(1)  # (N, J)

    def heights(self, out: ModelOutput) -> torch.Tensor:
        """Heights (mm) of the covered bone vertices above the posed face; ``> 0`` pokes through."""
        v = out.vertices
        return self.cover.heights(v[:, self._bone_ids.to(v.device)], v[:, self.face_slice])

    def folded(self, out: ModelOutput) -> torch.Tensor:
        """``(B, N)`` bool: the skin over a pair has folded over in ``out`` (its normal turned by more
        than 90 degrees from where skinning carries it; :meth:`SheetCover.turned`)."""
        w = self._pair_weights.to(out.transforms.device, out.transforms.dtype)
        rotations = torch.einsum("nj,bjik->bnik", w, out.transforms[..., :3])
        return self.cover.turned(out.vertices[:, self.face_slice], rotations)

    def penalty(self, out: ModelOutput, *, margin: float = 0.0) -> torch.Tensor:
        """Differentiable ``(B,)``: ``sum relu(height + margin)^2`` over covered bone vertices (mm^2)
        whose skin has not folded over (there the height has no meaning, see :meth:`folded`)."""
        over = (self.heights(out) + margin).clamp_min(0.0)
        return torch.where(self.folded(out), torch.zeros_like(over), over).square().sum(1)

    def report(self, out: ModelOutput, *, threshold: float = 0.5) -> dict[str, object]:
        """How far bone comes through the skin in ``out`` (mm): the worst depth over the batch, the
        number of samples with any depth ``> threshold``, the worst per bone tissue; and, apart
        from those, the samples where the skin over some bone has folded over (:meth:`folded`) and
        how many of them the bare height would have counted as ``> threshold``."""
        with torch.no_grad():
            folded = self.folded(out)
            raw = self.heights(out).clamp_min(0.0)
            depth = torch.where(folded, torch.zeros_like(raw), raw)
            fold_depth = torch.where(folded, raw, torch.zeros_like(raw)).max(1).values
            worst = depth.max(1).values
            per = {t.name: round(float(depth[:, self._owner.to(depth.device) == i].max()), 3)
                   if bool((self._owner == i).any()) else None for i, t in enumerate(self.bones)}
        return {
            "samples": int(depth.shape[0]), "covered_bone_vertices": int(depth.shape[1]),
            "max_depth_mm": round(float(worst.max()), 3),
            f"samples_over_{threshold}_mm": int((worst > threshold).sum()),
            "max_depth_mm_per_tissue": per,
            "samples_with_folded_skin_over_bone": int(folded.any(1).sum()),
            f"samples_over_{threshold}_mm_under_folded_skin": int((fold_depth > threshold).sum()),
        }
