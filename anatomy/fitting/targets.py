"""Target meshes for the head fits: read, check against the model's topology, batch.

A target is given as vertices ``(V, 3)`` / ``(B, V, 3)`` (tensor or array), a mesh file path,
an object with ``.vertices`` and ``.faces`` (e.g. :class:`anatomy.io.Mesh`, a ``trimesh``
mesh), or a list of those, one per tissue, concatenated in the model's stack order. The
vertices must be those of the model's tissues in the model's vertex order (a registered
mesh): correspondence is by index.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..core.errors import DtypeError, ParameterError, TopologyError
from ..io.mesh_export import read_mesh
from ..models.sculptor import Sculptor

__all__ = ["tissue_faces", "tissue_vertex_ids", "read_target"]


def tissue_vertex_ids(model: Sculptor, tissues: Sequence[str]) -> torch.Tensor:
    """Indices (in the model's vertex stack) of the vertices of ``tissues``, in stack order."""
    spans = [torch.arange(t.start, t.stop) for t in model.layout if t.name in tissues]
    return torch.cat(spans).to(model.template.device)


def tissue_faces(model: Sculptor, tissues: Sequence[str]) -> torch.Tensor:
    """Faces of ``tissues`` indexed into their concatenated vertices (the layout of a target)."""
    parts, offset = [], 0
    for t in model.layout:
        if t.name in tissues:
            parts.append(t.faces.cpu() + offset)
            offset += t.stop - t.start
    return torch.cat(parts)


def _is_mesh_like(x: object) -> bool:
    return isinstance(x, (str, os.PathLike)) or (hasattr(x, "vertices") and hasattr(x, "faces"))


def _load_one(x: Any, what: str) -> tuple[torch.Tensor, np.ndarray | None]:
    if isinstance(x, (str, os.PathLike)):
        mesh = read_mesh(x)  # ModelFileError naming the path when it cannot be read
        return torch.from_numpy(np.asarray(mesh.vertices, dtype=np.float64)), np.asarray(mesh.faces)
    if hasattr(x, "vertices") and hasattr(x, "faces"):
        verts, faces = x.vertices, x.faces
        if isinstance(verts, torch.Tensor):
            verts = verts.detach().cpu()
        if isinstance(faces, torch.Tensor):
            faces = faces.detach().cpu().numpy()
        return torch.as_tensor(np.asarray(verts, dtype=np.float64)), None if faces is None else np.asarray(faces)
    if isinstance(x, torch.Tensor):
        return x.detach(), None
    try:
        return torch.as_tensor(np.asarray(x, dtype=np.float64)), None
    except (TypeError, ValueError) as exc:
        raise DtypeError(f"{what} must be vertices (V, 3) or (B, V, 3), a mesh file path or a mesh object with "
                         f".vertices and .faces; got {type(x).__name__}.") from exc


def _layout_hint(model: Sculptor, tissues: Sequence[str]) -> str:
    counts = " + ".join(f"{t.name} {t.stop - t.start}" for t in model.layout if t.name in tissues)
    return (f"the model's {'/'.join(tissues)} topology ({counts} vertices, in this order). Register the mesh onto "
            f"the model first (correspondence is by vertex index); `anatomy export head --out DIR` writes the "
            f"layout (one mesh per tissue)")


def read_target(
    target: Any, model: Sculptor, tissues: Sequence[str], what: str, *, faces: Any = None
) -> torch.Tensor:
    """The target's vertices ``(B, V, 3)`` float64, checked against the model's ``tissues``.

    Raises:
        TopologyError: wrong vertex count or faces other than the model's.
        ParameterError: NaN/Inf coordinates.
        ModelFileError: a path that cannot be read as a mesh.
    """
    items = list(target) if isinstance(target, (list, tuple)) and target and all(
        _is_mesh_like(x) for x in target) else [target]
    loaded = [_load_one(x, what) for x in items]
    if len(loaded) > 1 and any(v.dim() != 2 for v, _ in loaded):
        raise TopologyError(f"{what}: a list of meshes must hold one (V, 3) mesh per tissue.")
    verts = torch.cat([v for v, _ in loaded], -2) if len(loaded) > 1 else loaded[0][0]
    file_faces: np.ndarray | None = None
    if all(f is not None for _, f in loaded):
        offsets = np.cumsum([0] + [int(v.shape[0]) for v, _ in loaded])
        file_faces = np.concatenate([np.asarray(f) + off for (_, f), off in zip(loaded, offsets)])
    if faces is not None:
        file_faces = np.asarray(faces.detach().cpu().numpy() if isinstance(faces, torch.Tensor) else faces)
    if not verts.is_floating_point():
        verts = verts.double()
    given = tuple(verts.shape)
    if verts.dim() == 2:
        verts = verts[None]
    expected = int(tissue_vertex_ids(model, tissues).numel())
    if verts.dim() != 3 or verts.shape[-1] != 3 or verts.shape[1] != expected:
        count = f"{verts.shape[1]} vertices" if verts.dim() == 3 and verts.shape[-1] == 3 else f"shape {given}"
        raise TopologyError(f"{what} has {count} but must be (V, 3) or (B, V, 3) with V = {expected}, in "
                            f"{_layout_hint(model, tissues)}.")
    if verts.shape[0] == 0:
        raise ParameterError(f"{what} has an empty batch; pass at least one mesh.")
    if file_faces is not None:
        want = tissue_faces(model, tissues).numpy()
        if file_faces.shape != want.shape or not np.array_equal(file_faces, want):
            raise TopologyError(f"{what} has {len(file_faces)} faces that differ from the model's {len(want)} "
                                f"faces: the vertex count matches but the mesh must be in "
                                f"{_layout_hint(model, tissues)}.")
    if not bool(torch.isfinite(verts).all()):
        bad = int((~torch.isfinite(verts)).any(-1).sum())
        raise ParameterError(f"{what} has {bad} vertices with NaN or Inf coordinates; pass finite coordinates "
                             f"(fill holes of the registration before fitting).")
    return verts.to(torch.float64)
