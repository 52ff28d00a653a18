"""Mesh export (OBJ, PLY, VTU) and a small mesh reader (OBJ, PLY, STL).

Inputs are numpy arrays or torch tensors (detached and moved to the CPU here). Every
writer is atomic: the file is written to a temporary file in the destination folder,
flushed to disk and moved into place with :func:`os.replace`, so a reader never sees a
half-written file and a reader of the previous version keeps a complete file. A writer
refuses to replace a file that one of its inputs is memory-mapped from.

Floats are written with enough digits to read back exactly (9 significant digits for
float32, 17 for float64); PLY binary stores them as they are.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple
from xml.sax.saxutils import quoteattr

import numpy as np

from ..core.errors import DtypeError, ModelFileError, ParameterError, ShapeError, missing_dependency
from ._atomic import write_atomic

__all__ = ["Mesh", "as_index_array", "as_numpy", "as_vertex_array", "float_format", "read_mesh", "write_obj",
           "write_ply", "write_vtu"]

PathLike = str | os.PathLike[str]
_VTK_TETRA = 10


class Mesh(NamedTuple):
    """A mesh read by :func:`read_mesh`: ``vertices (V, 3)`` float64, ``faces (F, k)`` int64.

    ``vertex_colors (V, 3|4)`` uint8 when the file has them (PLY), else ``None``.
    """

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray | None = None


# --------------------------------------------------------------------------------------
# input checks and atomic writing
# --------------------------------------------------------------------------------------


def as_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise DtypeError(f"{name} must be an array or tensor, got {type(x).__name__}.") from exc
    return x


def as_vertex_array(x: Any, name: str = "vertices") -> np.ndarray:
    v = as_numpy(x, name)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ShapeError(f"{name} must have shape (V, 3), got {v.shape}; reshape it to one row per vertex.")
    if v.dtype.kind not in "fiu":
        raise DtypeError(
            f"{name} must hold real numbers, got dtype {v.dtype}; convert it with .astype(float)."
        )
    if v.dtype not in (np.float32, np.float64):
        v = v.astype(np.float32 if v.dtype == np.float16 else np.float64)
    if not np.isfinite(v).all():
        raise ParameterError(f"{name} contains NaN or Inf; pass finite coordinates.")
    return v


def as_index_array(x: Any, name: str, width: int | None, num_vertices: int) -> np.ndarray:
    idx = as_numpy(x, name)
    if idx.ndim != 2 or (width is not None and idx.shape[1] != width) or idx.shape[1] < 3:
        want = f"(N, {width})" if width is not None else "(F, k) with k >= 3"
        raise ShapeError(f"{name} must have shape {want}, got {idx.shape}; pass one row per element.")
    if idx.dtype.kind not in "iu":
        raise DtypeError(
            f"{name} must hold integer vertex indices, got dtype {idx.dtype}; use .astype(np.int64)."
        )
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= num_vertices):
        raise ParameterError(
            f"{name} has indices in [{idx.min()}, {idx.max()}] but there are {num_vertices} vertices; "
            f"indices must lie in [0, {num_vertices - 1}] (0-based)."
        )
    return idx


def float_format(v: np.ndarray) -> str:
    return "%.9g" if v.dtype == np.float32 else "%.17g"


# --------------------------------------------------------------------------------------
# writers
# --------------------------------------------------------------------------------------


def write_obj(path: PathLike, vertices: Any, faces: Any) -> Path:
    """Write a Wavefront OBJ (``v`` and 1-based ``f`` lines); ``faces (F, k)``, k >= 3. Returns the path."""
    v = as_vertex_array(vertices)
    f = as_index_array(faces, "faces", None, len(v))
    fmt = float_format(v)
    parts = ["# written by anatomy\n"]
    if len(v):
        parts.append((f"v {fmt} {fmt} {fmt}\n" * len(v)) % tuple(v.astype(np.float64).ravel().tolist()))
    if len(f):
        k = f.shape[1]
        parts.append((("f" + " %d" * k + "\n") * len(f)) % tuple((f + 1).ravel().tolist()))
    return write_atomic(path, "".join(parts).encode("ascii"), [vertices, faces])


def _colors(colors: Any, num_vertices: int) -> np.ndarray:
    c = as_numpy(colors, "vertex_colors")
    if c.ndim != 2 or c.shape[0] != num_vertices or c.shape[1] not in (3, 4):
        raise ShapeError(
            f"vertex_colors must have shape (V, 3) or (V, 4) with V={num_vertices}, got {c.shape}."
        )
    if c.dtype == np.uint8:
        return c
    if c.dtype.kind == "f":
        if c.size and (not np.isfinite(c).all() or c.min() < 0 or c.max() > 1):
            raise ParameterError("float vertex_colors must lie in [0, 1]; scale them or pass uint8 values.")
        return np.round(c * 255.0).astype(np.uint8)
    if c.dtype.kind in "iu":
        if c.size and (c.min() < 0 or c.max() > 255):
            raise ParameterError("integer vertex_colors must lie in [0, 255].")
        return c.astype(np.uint8)
    raise DtypeError(f"vertex_colors must be uint8 or float in [0, 1], got dtype {c.dtype}.")


def write_ply(
    path: PathLike, vertices: Any, faces: Any, *, binary: bool = True, vertex_colors: Any = None
) -> Path:
    """Write a PLY mesh (binary little-endian by default, else ASCII). Returns the path.

    ``faces (F, k)`` with 3 <= k <= 255; vertex coordinates are stored as float (float32
    input) or double; ``vertex_colors (V, 3|4)`` as uchar red, green, blue[, alpha].
    """
    v = as_vertex_array(vertices)
    f = as_index_array(faces, "faces", None, len(v))
    k = f.shape[1]
    if k > 255:
        raise ShapeError(f"PLY faces have at most 255 vertices, got {k}.")
    if len(v) >= 2**31:
        raise ParameterError("PLY export supports fewer than 2**31 vertices.")
    colors = None if vertex_colors is None else _colors(vertex_colors, len(v))
    ftype = "float" if v.dtype == np.float32 else "double"
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
              "comment written by anatomy", f"element vertex {len(v)}"]
    header += [f"property {ftype} {axis}" for axis in "xyz"]
    channels = ("red", "green", "blue", "alpha")
    if colors is not None:
        header += [f"property uchar {name}" for name in channels[: colors.shape[1]]]
    header += [f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    head = ("\n".join(header) + "\n").encode("ascii")
    if binary:
        vfields = [(axis, "<f4" if ftype == "float" else "<f8") for axis in "xyz"]
        if colors is not None:
            vfields += [(name, "u1") for name in channels[: colors.shape[1]]]
        vrec = np.empty(len(v), dtype=vfields)
        for i, axis in enumerate("xyz"):
            vrec[axis] = v[:, i]
        if colors is not None:
            for i in range(colors.shape[1]):
                vrec[channels[i]] = colors[:, i]
        frec = np.empty(len(f), dtype=[("n", "u1"), ("idx", "<i4", (k,))])
        frec["n"] = k
        frec["idx"] = f
        body = vrec.tobytes() + frec.tobytes()
    else:
        fmt = float_format(v)
        vcols: list[np.ndarray] = [v.astype(np.float64)]
        row = f"{fmt} {fmt} {fmt}"
        if colors is not None:
            vcols.append(colors.astype(np.float64))
            row += " %d" * colors.shape[1]
        table = np.concatenate(vcols, 1)
        text = (row + "\n") * len(v) % tuple(table.ravel().tolist()) if len(v) else ""
        ftext = (("%d" + " %d" * k + "\n") * len(f)) % tuple(
            np.concatenate([np.full((len(f), 1), k), f], 1).ravel().tolist()
        ) if len(f) else ""
        body = (text + ftext).encode("ascii")
    return write_atomic(path, head + body, [vertices, faces, vertex_colors])


_VTK_TYPES = {
    np.dtype(np.float32): "Float32", np.dtype(np.float64): "Float64",
    np.dtype(np.int8): "Int8", np.dtype(np.int16): "Int16",
    np.dtype(np.int32): "Int32", np.dtype(np.int64): "Int64",
    np.dtype(np.uint8): "UInt8", np.dtype(np.uint16): "UInt16", np.dtype(np.uint32): "UInt32",
    np.dtype(np.uint64): "UInt64",
}


def _vtk_array(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    elif a.dtype == np.float16:
        a = a.astype(np.float32)
    if np.dtype(a.dtype.newbyteorder("=")) not in _VTK_TYPES:
        raise DtypeError(
            f"{name} has dtype {a.dtype}, which VTK cannot store; convert it to a numeric dtype."
        )
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))


class _VtuBuilder:
    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self.appended: list[str] = []
        self.offset = 0

    def data_array(self, a: np.ndarray, name: str | None, components: int | None, indent: str) -> str:
        a = _vtk_array(a, name or "array")
        vtk_type = _VTK_TYPES[a.dtype.newbyteorder("=")]
        attrs = f'type="{vtk_type}"'
        if name is not None:
            attrs += f" Name={quoteattr(name)}"
        if components is not None:
            attrs += f' NumberOfComponents="{components}"'
        if self.encoding == "ascii":
            fmt = "%d" if a.dtype.kind != "f" else ("%.9g" if a.itemsize == 4 else "%.17g")
            flat = a.ravel().tolist()
            body = (" ".join([fmt] * len(flat)) % tuple(flat)) if flat else ""
            return f'{indent}<DataArray {attrs} format="ascii">{body}</DataArray>\n'
        raw = a.tobytes()
        block = base64.b64encode(np.uint64(len(raw)).astype("<u8").tobytes() + raw).decode("ascii")
        line = f'{indent}<DataArray {attrs} format="appended" offset="{self.offset}"/>\n'
        self.appended.append(block)
        self.offset += len(block)
        return line


def _field_arrays(data: Mapping[str, Any] | None, count: int, what: str) -> list[tuple[str, np.ndarray]]:
    out = []
    for name, value in (data or {}).items():
        a = as_numpy(value, f"{what}[{name!r}]")
        if a.ndim not in (1, 2) or a.shape[0] != count:
            raise ShapeError(f"{what}[{name!r}] must have shape ({count},) or ({count}, k), got {a.shape}.")
        out.append((str(name), a))
    return out


def write_vtu(
    path: PathLike,
    vertices: Any,
    tets: Any,
    *,
    encoding: str = "base64",
    point_data: Mapping[str, Any] | None = None,
    cell_data: Mapping[str, Any] | None = None,
) -> Path:
    """Write a tetrahedral mesh as a VTK XML UnstructuredGrid (``.vtu``). Returns the path.

    ``tets (T, 4)`` are vertex indices (VTK_TETRA cells). ``encoding`` is ``"base64"``
    (raw little-endian data in a base64 ``AppendedData`` section, UInt64 headers) or
    ``"ascii"``. ``point_data`` / ``cell_data`` map names to ``(V,)``/``(V, k)`` and
    ``(T,)``/``(T, k)`` arrays. Readable by ParaView, pyvista and meshio.
    """
    if encoding not in ("base64", "ascii"):
        raise ParameterError(f"encoding must be 'base64' or 'ascii', got {encoding!r}.")
    v = as_vertex_array(vertices)
    t = as_index_array(tets, "tets", 4, len(v))
    pdata = _field_arrays(point_data, len(v), "point_data")
    cdata = _field_arrays(cell_data, len(t), "cell_data")
    b = _VtuBuilder(encoding)
    lines = [
        '<?xml version="1.0"?>\n',
        '<VTKFile type="UnstructuredGrid" version="1.0" byte_order="LittleEndian" header_type="UInt64">\n',
        "  <UnstructuredGrid>\n",
        f'    <Piece NumberOfPoints="{len(v)}" NumberOfCells="{len(t)}">\n',
    ]
    for tag, fields in (("PointData", pdata), ("CellData", cdata)):
        if fields:
            lines.append(f"      <{tag}>\n")
            for name, a in fields:
                lines.append(b.data_array(a, name, None if a.ndim == 1 else a.shape[1], "        "))
            lines.append(f"      </{tag}>\n")
    lines.append("      <Points>\n")
    lines.append(b.data_array(v, "Points", 3, "        "))
    lines.append("      </Points>\n      <Cells>\n")
    lines.append(b.data_array(t, "connectivity", None, "        "))
    lines.append(b.data_array(np.arange(1, len(t) + 1, dtype=np.int64) * 4, "offsets", None, "        "))
    lines.append(b.data_array(np.full(len(t), _VTK_TETRA, dtype=np.uint8), "types", None, "        "))
    lines.append("      </Cells>\n    </Piece>\n  </UnstructuredGrid>\n")
    if b.appended:
        appended = "".join(b.appended)
        lines.append(f'  <AppendedData encoding="base64">\n   _{appended}\n  </AppendedData>\n')
    lines.append("</VTKFile>\n")
    return write_atomic(path, "".join(lines).encode("utf-8"), [vertices, tets])


# --------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------


def _faces_array(polys: list[list[int]], source: str) -> np.ndarray:
    if not polys:
        return np.zeros((0, 3), dtype=np.int64)
    sizes = {len(p) for p in polys}
    if min(sizes) < 3:
        raise ModelFileError(f"{source}: faces: expected faces with at least 3 vertices, found one with "
                             f"{min(sizes)}. Fix: repair the mesh.")
    if len(sizes) == 1:
        return np.asarray(polys, dtype=np.int64)
    tris = [(p[0], p[i], p[i + 1]) for p in polys for i in range(1, len(p) - 1)]  # mixed sizes: fan
    return np.asarray(tris, dtype=np.int64)


def _check_range(faces: np.ndarray, num_vertices: int, source: str) -> None:
    if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
        raise ModelFileError(f"{source}: faces: expected vertex indices in [0, {num_vertices - 1}], found "
                             f"[{faces.min()}, {faces.max()}]. Fix: repair the mesh.")


def _read_obj(data: bytes, source: str) -> Mesh:
    verts: list[list[float]] = []
    polys: list[list[int]] = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            verts.append([float(x) for x in parts[1:4]])
        elif parts[0] == "f":
            poly = []
            for token in parts[1:]:
                i = int(token.split("/")[0])
                poly.append(i - 1 if i > 0 else len(verts) + i)  # negative = relative to the end
            polys.append(poly)
    v = np.asarray(verts, dtype=np.float64).reshape(-1, 3)
    f = _faces_array(polys, source)
    _check_range(f, len(v), source)
    return Mesh(v, f)


_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def _uniform_list(body: bytes, pos: int, count: int, prop: tuple[str, str, str | None], order: str) -> Any:
    """Fast path for a list property whose rows all have the same length (e.g. all triangles)."""
    _, ptype, ltype = prop
    if ltype is None or count == 0:
        return None
    lt, it = np.dtype(order + ltype), np.dtype(order + ptype)
    if pos + lt.itemsize > len(body):
        return None
    n = int(np.frombuffer(body, lt, 1, pos)[0])
    rec = np.dtype([("n", lt), ("idx", it, (n,))])
    if pos + rec.itemsize * count > len(body):
        return None
    arr = np.frombuffer(body, rec, count, pos)
    if not (arr["n"] == n).all():
        return None
    return arr["idx"].reshape(count, n)


def _read_ply(data: bytes, source: str) -> Mesh:
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ModelFileError(f"{source}: header: expected a PLY header ending in 'end_header', found none. "
                             f"Fix: pass a PLY file.")
    nl = data.find(b"\n", end)
    body = data[nl + 1:] if nl >= 0 else b""
    fmt = "ascii"
    # (element name, count, [(property name, value type, list-count type or None)])
    elements: list[tuple[str, int, list[tuple[str, str, str | None]]]] = []
    for line in data[:end].decode("ascii", errors="replace").splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] == "element":
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property" and elements:
            if parts[1] == "list":
                elements[-1][2].append((parts[4], _PLY_TYPES[parts[3]], _PLY_TYPES[parts[2]]))
            else:
                elements[-1][2].append((parts[2], _PLY_TYPES[parts[1]], None))
    values: dict[str, dict[str, Any]] = {}
    if fmt == "ascii":
        tokens = body.split()
        pos = 0
        for name, count, props in elements:
            cols: dict[str, Any] = {p[0]: [] for p in props}
            for _ in range(count):
                for pname, _ptype, ltype in props:
                    if ltype is None:
                        cols[pname].append(float(tokens[pos]))
                        pos += 1
                    else:
                        n = int(tokens[pos])
                        cols[pname].append([int(x) for x in tokens[pos + 1:pos + 1 + n]])
                        pos += 1 + n
            values[name] = cols
    elif fmt in ("binary_little_endian", "binary_big_endian"):
        order = "<" if fmt == "binary_little_endian" else ">"
        pos = 0
        for name, count, props in elements:
            cols = {}
            if all(p[2] is None for p in props):
                rec = np.dtype([(p[0], order + p[1]) for p in props])
                arr = np.frombuffer(body, dtype=rec, count=count, offset=pos)
                pos += rec.itemsize * count
                cols = {p[0]: arr[p[0]] for p in props}
            elif len(props) == 1 and (fast := _uniform_list(body, pos, count, props[0], order)) is not None:
                cols = {props[0][0]: fast}
                pos += fast.size * np.dtype(props[0][1]).itemsize + count * np.dtype(props[0][2]).itemsize
            else:
                cols = {p[0]: [] for p in props}
                for _ in range(count):
                    for pname, ptype, ltype in props:
                        if ltype is None:
                            dt = np.dtype(order + ptype)
                            cols[pname].append(np.frombuffer(body, dt, 1, pos)[0])
                            pos += dt.itemsize
                        else:
                            lt, it = np.dtype(order + ltype), np.dtype(order + ptype)
                            n = int(np.frombuffer(body, lt, 1, pos)[0])
                            pos += lt.itemsize
                            cols[pname].append(np.frombuffer(body, it, n, pos).tolist())
                            pos += it.itemsize * n
            values[name] = cols
    else:
        raise ModelFileError(
            f"{source}: format: expected ascii or binary PLY, found {fmt!r}. Fix: convert it."
        )
    vert = values.get("vertex", {})
    if not all(axis in vert for axis in "xyz"):
        raise ModelFileError(f"{source}: vertex: expected x, y, z properties, found {sorted(vert)}. Fix: "
                             f"pass a mesh file.")
    v = np.stack([np.asarray(vert[axis], dtype=np.float64) for axis in "xyz"], -1).reshape(-1, 3)
    colors = None
    if all(c in vert for c in ("red", "green", "blue")):
        names = ["red", "green", "blue"] + (["alpha"] if "alpha" in vert else [])
        colors = np.stack([np.asarray(vert[c]).astype(np.uint8) for c in names], -1)
    face = values.get("face", {})
    polys = face.get("vertex_indices", face.get("vertex_index", []))
    if isinstance(polys, np.ndarray):
        f = polys.astype(np.int64) if polys.shape[1] >= 3 else _faces_array(polys.tolist(), source)
    else:
        f = _faces_array([list(map(int, p)) for p in polys], source)
    _check_range(f, len(v), source)
    return Mesh(v, f, colors)


def _read_stl(data: bytes, source: str) -> Mesh:
    if len(data) >= 84 and len(data) == 84 + 50 * int(np.frombuffer(data, "<u4", 1, 80)[0]):
        n = int(np.frombuffer(data, "<u4", 1, 80)[0])
        rec = np.dtype([("normal", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")])
        corners = np.frombuffer(data, rec, n, 84)["v"].reshape(-1, 3).astype(np.float64)
    else:
        words = data.decode("ascii", errors="replace").split()
        if not words or words[0] != "solid":
            raise ModelFileError(f"{source}: contents: expected a binary or ASCII STL, found neither. Fix: "
                                 f"pass an STL file.")
        corners = np.asarray(
            [[float(words[i + 1]), float(words[i + 2]), float(words[i + 3])]
             for i, w in enumerate(words) if w == "vertex"], dtype=np.float64).reshape(-1, 3)
        if len(corners) % 3:
            raise ModelFileError(f"{source}: facets: expected 3 vertices per facet, found {len(corners)} "
                                 f"in all. Fix: repair the file.")
    # merge exactly coincident corners, keeping vertices in order of first appearance
    uniq, first, inverse = np.unique(corners, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return Mesh(uniq[order], rank[inverse.reshape(-1)].reshape(-1, 3).astype(np.int64))


def read_mesh(path: PathLike) -> Mesh:
    """Read a surface mesh; returns :class:`Mesh` (vertices float64 in file order, faces int64).

    OBJ, PLY (ASCII and binary) and STL (ASCII and binary; exactly coincident corners
    are merged) are read by small built-in readers that keep the vertex order of the
    file. Faces keep their size ``k`` when all faces have the same size and are
    fan-triangulated otherwise. Other formats are read through ``trimesh`` (optional,
    ``pip install 'anatomy[mesh]'``).
    """
    p = Path(os.fspath(path))
    source = str(p)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ModelFileError(
            f"{source}: file: expected a readable mesh file, found: {exc}. Fix: check the path."
        ) from exc
    suffix = p.suffix.lower()
    readers = {".obj": _read_obj, ".ply": _read_ply, ".stl": _read_stl}
    if suffix in readers:
        try:
            return readers[suffix](data, source)
        except ModelFileError:
            raise
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            raise ModelFileError(f"{source}: contents: expected a valid {suffix[1:].upper()} file, found a "
                                 f"truncated or corrupt one ({exc}). Fix: re-export the mesh.") from exc
    try:
        import trimesh
    except ImportError as exc:
        raise missing_dependency("trimesh", "mesh", f"reading {suffix or 'this'} mesh files") from exc
    mesh: Any = trimesh.load(source, force="mesh", process=False)
    return Mesh(np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64))
