"""Wavefront OBJ with texture coordinates and a material library (MTL).

:func:`write_textured_obj` writes ``v``, ``vt`` and ``f v/vt`` lines (1-based) with ``mtllib`` /
``usemtl``; :func:`write_mtl` writes the materials (``Kd`` colour, ``map_Kd`` texture). UVs follow
OBJ: origin at the image's bottom left. Both writers are atomic.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ParameterError, ShapeError
from ._atomic import write_atomic
from .mesh_export import as_index_array, as_vertex_array, float_format

__all__ = ["write_mtl", "write_textured_obj"]


def _name(text: str, what: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ParameterError(f"{what} must be a non-empty name without spaces, got {text!r}.")
    return text


def write_textured_obj(path: str | os.PathLike[str], vertices: Any, faces: Any, *, uv: Any = None,
                       uv_faces: Any = None, material: str | None = None, mtllib: str | None = None) -> Path:
    """Write an OBJ with optional ``uv (V_uv, 2)`` / ``uv_faces (F, 3)`` and a material reference."""
    v = as_vertex_array(vertices)
    f = as_index_array(faces, "faces", 3, len(v))
    fmt = float_format(v)
    parts = ["# written by anatomy\n"]
    if mtllib is not None:
        parts.append(f"mtllib {_name(mtllib, 'mtllib')}\n")
    if len(v):
        parts.append((f"v {fmt} {fmt} {fmt}\n" * len(v)) % tuple(v.astype(np.float64).ravel().tolist()))
    if material is not None:
        parts.append(f"usemtl {_name(material, 'material')}\n")
    if uv is not None:
        t = np.asarray(uv, dtype=np.float64)
        if t.ndim != 2 or t.shape[1] != 2 or not np.isfinite(t).all():
            raise ShapeError(f"uv must be finite with shape (V_uv, 2), got {t.shape}.")
        tf = as_index_array(uv_faces, "uv_faces", 3, len(t))
        if tf.shape != f.shape:
            raise ShapeError(f"uv_faces must have the faces' shape {f.shape}, got {tf.shape}.")
        parts.append(("vt %.9g %.9g\n" * len(t)) % tuple(t.ravel().tolist()))
        both = np.stack([f + 1, tf + 1], 2).reshape(len(f), 6)
        parts.append(("f %d/%d %d/%d %d/%d\n" * len(f)) % tuple(both.ravel().tolist()))
    elif len(f):
        parts.append(("f %d %d %d\n" * len(f)) % tuple((f + 1).ravel().tolist()))
    return write_atomic(path, "".join(parts).encode("ascii"), [vertices, faces])


def write_mtl(path: str | os.PathLike[str], materials: dict[str, tuple[tuple[float, float, float], str | None]]
              ) -> Path:
    """Write an MTL file: ``{name: (diffuse colour (r, g, b) in [0, 1], texture file name or None)}``."""
    lines = ["# written by anatomy\n"]
    for name, (colour, texture) in materials.items():
        if len(colour) != 3 or not all(0.0 <= float(c) <= 1.0 for c in colour):
            raise ParameterError(f"material {name!r}: colour must be 3 values in [0, 1], got {colour}.")
        lines += [f"newmtl {_name(name, 'material')}\n", "Ka 0 0 0\n",
                  "Kd {:.6g} {:.6g} {:.6g}\n".format(*map(float, colour)), "Ks 0.04 0.04 0.04\n", "Ns 20\n",
                  "d 1\n", "illum 2\n"]
        if texture is not None:
            lines.append(f"map_Kd {_name(texture, 'texture')}\n")
        lines.append("\n")
    return write_atomic(path, "".join(lines).encode("ascii"))
