"""Outputs of the layers: frozen dataclasses with named per-tissue access."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..core.errors import ParameterError, missing_dependency


@dataclass(frozen=True)
class TissueLayout:
    """Where one tissue sits in the vertex stack, with its faces/tets (local indices)."""

    name: str
    start: int
    stop: int
    faces: torch.Tensor
    tets: torch.Tensor | None
    part_names: tuple[str, ...]
    part_ids: torch.Tensor | None


@dataclass(frozen=True)
class ModelOutput:
    """Result of a forward pass; every tensor keeps its autograd graph.

    * ``vertices (B, V, 3)``: all tissues stacked; per tissue: ``out.tissue(name)``
      or simply ``out.<name>`` (e.g. ``out.skin``).
    * ``joints (B, J, 3)`` posed joint centres; ``rest_joints (B, J, 3)`` before posing.
    * ``rotations (B, J, 3, 3)`` global joint rotations; ``transforms (B, J, 3, 4)``
      rest -> posed affine transforms (what skinning used).
    * ``landmarks (B, L, 3)`` named surface landmarks (``landmark_names``), or ``None``.
    """

    vertices: torch.Tensor
    joints: torch.Tensor
    rest_joints: torch.Tensor
    rotations: torch.Tensor
    transforms: torch.Tensor
    landmarks: torch.Tensor | None
    layout: tuple[TissueLayout, ...]
    joint_names: tuple[str, ...]
    landmark_names: tuple[str, ...]

    @property
    def batch_size(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def tissue_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.layout)

    def _layout(self, name: str) -> TissueLayout:
        for t in self.layout:
            if t.name == name:
                return t
        raise ParameterError(f"no tissue named {name!r}; this model has {list(self.tissue_names)}.")

    def tissue(self, name: str) -> torch.Tensor:
        """Vertices ``(B, n, 3)`` of one tissue."""
        t = self._layout(name)
        return self.vertices[:, t.start:t.stop]

    def faces(self, name: str) -> torch.Tensor:
        """Triangles ``(F, 3)`` of one tissue, indices local to :meth:`tissue`."""
        return self._layout(name).faces

    def tets(self, name: str) -> torch.Tensor | None:
        """Tetrahedra ``(T, 4)`` of one tissue (local indices), or ``None`` for a surface."""
        return self._layout(name).tets

    def part_names(self, name: str) -> tuple[str, ...]:
        return self._layout(name).part_names

    def part(self, name: str, part: str | int) -> torch.Tensor:
        """Vertices ``(B, n_part, 3)`` of one part (e.g. one bone) of a tissue."""
        t = self._layout(name)
        if t.part_ids is None:
            raise ParameterError(f"tissue {name!r} has no parts.")
        index = part if isinstance(part, int) else (t.part_names.index(part) if part in t.part_names else -1)
        if not 0 <= index < len(t.part_names):
            raise ParameterError(f"tissue {name!r} has no part {part!r}; parts are {list(t.part_names)}.")
        ids = torch.nonzero(t.part_ids == index).flatten()
        return self.tissue(name)[:, ids]

    def part_faces(self, name: str, part: str | int) -> torch.Tensor:
        """Faces of one part, re-indexed to the vertices :meth:`part` returns."""
        t = self._layout(name)
        if t.part_ids is None:
            raise ParameterError(f"tissue {name!r} has no parts.")
        index = part if isinstance(part, int) else t.part_names.index(part)
        keep = t.part_ids == index
        remap = torch.cumsum(keep.long(), 0) - 1
        faces = t.faces[keep[t.faces].all(1)]
        return remap[faces]

    def __getattr__(self, name: str) -> torch.Tensor:
        # only called when normal lookup fails: expose tissues as attributes
        layout = self.__dict__.get("layout", ())
        for t in layout:
            if t.name == name:
                return self.vertices[:, t.start:t.stop]
        raise AttributeError(f"{type(self).__name__} has no attribute or tissue {name!r}")

    def to_trimesh(self, name: str, index: int = 0) -> Any:
        """One tissue of sample ``index`` as a ``trimesh.Trimesh`` (needs the ``mesh`` extra)."""
        try:
            import trimesh
        except ImportError as exc:
            raise missing_dependency("trimesh", "mesh", "to_trimesh()") from exc
        verts = self.tissue(name)[index].detach().cpu().double().numpy()
        return trimesh.Trimesh(verts, self.faces(name).cpu().numpy(), process=False)

    def to_pyvista(self, name: str, index: int = 0) -> Any:
        """One tissue as a ``pyvista`` mesh: an UnstructuredGrid for tets, else PolyData."""
        try:
            import numpy as np
            import pyvista as pv
        except ImportError as exc:
            raise missing_dependency("pyvista", "vis", "to_pyvista()") from exc
        verts = self.tissue(name)[index].detach().cpu().double().numpy()
        tets = self.tets(name)
        if tets is not None:
            cells = np.hstack([np.full((len(tets), 1), 4), tets.cpu().numpy()]).ravel()
            return pv.UnstructuredGrid(cells, np.full(len(tets), 10, dtype=np.uint8), verts)
        faces = self.faces(name).cpu().numpy()
        return pv.PolyData(verts, np.hstack([np.full((len(faces), 1), 3), faces]).ravel())
