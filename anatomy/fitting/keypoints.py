"""Keypoint data terms (3D, and 2D through a pinhole camera) and the closed-form start of a keypoint fit.

* 3D: ``rho(|k_model - k_target|^2 / sigma^2)`` per keypoint, weighted by its confidence.
* 2D: the same on the reprojection error in pixels.
* Start: a batched weighted Procrustes of the model's rest keypoints onto the target's (for 2D: onto the
  keypoints triangulated from two or more views, or, from one view, onto the palm keypoints lifted to the
  depth at which the model's palm has the size seen in the image). For the hand only the palm keypoints
  (wrist, CMC and MCP joints: one rigid piece) are used, as in the ``global`` stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.alignment import Similarity, procrustes
from ..core.errors import ShapeError
from ..core.rotations import matrix_to_axis_angle
from .camera import triangulate
from .fit_targets import Keypoints2D, Keypoints3D
from .priors import robust

__all__ = ["PALM_KEYPOINTS", "keypoint_index", "keypoint_start", "keypoint_term", "palm_mask", "similarity_kwargs"]

PALM_KEYPOINTS = ("wrist", "thumb_cmc", "index_mcp", "middle_mcp", "ring_mcp", "little_mcp")


def keypoint_index(target: Keypoints3D | Keypoints2D, model_names: Sequence[str], kind: str) -> torch.Tensor:
    """Indices into the model's keypoints (hand) or landmarks (head) of the target's keypoints."""
    count = target.points.shape[1]
    if target.names is None:
        if kind == "head":
            raise ShapeError("head keypoints need names (landmark names of the model, e.g. 'nasion'); pass names=.")
        if count != len(model_names):
            raise ShapeError(f"hand keypoints must be the {len(model_names)} keypoints in the order "
                             f"{list(model_names)} (got {count}); or pass names= for a subset.")
        return torch.arange(count)
    bad = [n for n in target.names if n not in model_names]
    if bad:
        raise ShapeError(f"keypoint names {bad} are not this model's; its names are {list(model_names)}.")
    return torch.tensor([list(model_names).index(n) for n in target.names])


def palm_mask(names: Sequence[str], index: torch.Tensor, kind: str) -> torch.Tensor:
    """``(K,)`` bool: the target keypoints the ``global`` stage uses (hand: the palm; head: all)."""
    if kind != "hand":
        return torch.ones(len(index), dtype=torch.bool)
    return torch.tensor([names[int(i)] in PALM_KEYPOINTS for i in index], dtype=torch.bool)


def keypoint_term(pred: torch.Tensor, target: Keypoints3D | Keypoints2D, index: torch.Tensor, mask: torch.Tensor,
                  *, sigma: float, loss: str, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(energy (B,), distances (B, K))``: the robust data term of the model keypoints ``pred (B, L, 3)``
    against ``target``, and the plain distances (mm or pixels) per keypoint."""
    p = pred[:, index.to(pred.device)]
    if isinstance(target, Keypoints2D):
        p = target.camera.project(p)
    diff = p - target.points.to(p)
    dist2 = diff.square().sum(-1)
    w = target.weight.to(p) * mask.to(p.device, p.dtype)
    energy = (w * robust(dist2 / sigma**2, loss, scale)).sum(-1)
    return energy, dist2.detach().clamp_min(0).sqrt()


def similarity_kwargs(sim: Similarity, root: torch.Tensor) -> dict[str, torch.Tensor]:
    """``s R v + t`` as the layer's ``global_orient``/``transl``/``scale`` (rotation about the root joint
    ``root (B, 3)``: ``world = s (R (v - j0) + j0) + transl``)."""
    rot, s = sim.rotation, sim.scale
    transl = sim.translation - s[:, None] * (root - (rot @ root[..., None])[..., 0])
    return {"global_orient": matrix_to_axis_angle(rot), "transl": transl, "scale": s}


def keypoint_start(rest: torch.Tensor, root: torch.Tensor, targets: Sequence[tuple[Keypoints3D | Keypoints2D,
                   torch.Tensor, torch.Tensor]], *, fit_scale: bool) -> dict[str, torch.Tensor] | None:
    """Start of the global parameters from keypoint targets, or ``None`` when they do not fix one.

    ``rest (B, L, 3)``: the model's keypoints at the start; ``root (B, 3)`` its root joint; ``targets``:
    ``(target, index, global mask)`` triples (see the module text)."""
    batch = rest.shape[0]
    three = [(t, i, m) for t, i, m in targets if isinstance(t, Keypoints3D)]
    two = [(t, i, m) for t, i, m in targets if isinstance(t, Keypoints2D)]
    src = dst = w = None
    if three:
        t, i, m = max(three, key=lambda x: int(x[2].sum()))
        src, dst, w = rest[:, i[m]], t.points[:, m].to(rest), t.weight[:, m].to(rest)
    elif len(two) >= 2:
        # triangulate the model keypoints seen (by name) in every view
        common = set(two[0][1][two[0][2]].tolist())
        for _, i, m in two[1:]:
            common &= set(i[m].tolist())
        ids = sorted(common)
        if len(ids) >= 3:
            views = [t for t, _, _ in two if isinstance(t, Keypoints2D)]
            pix = [t.points[:, [i.tolist().index(k) for k in ids]] for t, i, _ in two]
            cw = [t.weight[:, [i.tolist().index(k) for k in ids]] for t, i, _ in two]
            pts = triangulate(pix, [t.camera for t in views], cw).to(rest)
            src, dst, w = rest[:, ids], pts, torch.stack(cw).prod(0).to(rest)
    if src is None and two:
        view, i, m = max(two, key=lambda x: int(x[2].sum()))
        assert isinstance(view, Keypoints2D)
        src = rest[:, i[m]]
        px = view.points[:, m].to(rest)
        w = view.weight[:, m].to(rest)
        cam = view.camera
        size3 = (src - src.mean(1, keepdim=True)).norm(dim=-1).mean(1)
        size2 = (px - px.mean(1, keepdim=True)).norm(dim=-1).mean(1).clamp_min(1e-6)
        depth = 0.5 * (cam.fx + cam.fy) * size3 / size2  # (B,)
        ray = torch.stack([(px[..., 0] - cam.cx) / cam.fx, (px[..., 1] - cam.cy) / cam.fy,
                           torch.ones_like(px[..., 0])], -1)
        in_cam = ray * depth[:, None, None]
        rot, tr = cam.rotation.to(rest), cam.translation.to(rest)
        dst = (in_cam - tr) @ rot  # camera -> world: R^T (q - t)
    if src is None or dst is None or w is None or src.shape[1] < 3:
        return None
    w = w + 1e-9
    sim = procrustes(src, dst, w, scale=fit_scale)
    if not fit_scale:
        sim = Similarity(sim.rotation, sim.translation, torch.ones(batch, dtype=rest.dtype, device=rest.device))
    return similarity_kwargs(sim, root)
