"""Binary glTF 2.0 (``.glb``) writer and reader, numpy + json only (no new dependency).

:func:`write_glb` writes one node and one mesh per part (e.g. per tissue) under a root node
that scales millimetres to glTF's metres; a part has a flat base colour and optionally a UV
layout with a base-colour PNG (embedded). A UV seam splits vertices: every distinct (vertex, UV
vertex) pair of the faces becomes one glTF vertex. Normals are smooth per mesh vertex (area
weighted), shared across seams. UVs are stored with ``t = 1 - v`` (glTF's origin is the image's
top left; ours is OBJ's bottom left). Specification: Khronos glTF 2.0 (2021), sections 3.6-3.9
(buffers, accessors, meshes, materials) and 4.4 (GLB container).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ModelFileError, ParameterError, ShapeError
from ._atomic import write_atomic
from .mesh_export import as_index_array, as_vertex_array

__all__ = ["GltfPart", "build_glb", "glb_accessor", "read_glb", "write_glb"]

_MAGIC, _JSON, _BIN = 0x46546C67, 0x4E4F534A, 0x004E4942
_FLOAT, _UINT32 = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


@dataclass
class GltfPart:
    """One mesh: ``vertices (V, 3)`` (mm), triangles ``faces (F, 3)``, a linear-RGB(A) ``colour``;
    optional ``uv (V_uv, 2)`` + ``uv_faces (F, 3)`` and a base-colour ``texture_png`` (PNG bytes,
    sRGB-encoded, used with the UVs)."""

    name: str
    vertices: Any
    faces: Any
    colour: tuple[float, ...] = (0.8, 0.8, 0.8, 1.0)
    uv: Any = None
    uv_faces: Any = None
    texture_png: bytes | None = None


def _normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    face_n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], face_n)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(length > 0, n / np.maximum(length, 1e-300), np.array([0.0, 0.0, 1.0]))


class _Buffer:
    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list[dict[str, Any]] = []
        self.accessors: list[dict[str, Any]] = []

    def view(self, payload: bytes, target: int | None = None) -> int:
        while len(self.data) % 4:
            self.data.append(0)
        view: dict[str, Any] = {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(payload)}
        if target is not None:
            view["target"] = target
        self.data += payload
        self.views.append(view)
        return len(self.views) - 1

    def accessor(self, array: np.ndarray, kind: str, target: int, bounds: bool = False) -> int:
        comp = _UINT32 if array.dtype == np.uint32 else _FLOAT
        acc: dict[str, Any] = {"bufferView": self.view(array.tobytes(), target), "componentType": comp,
                               "count": int(array.shape[0]), "type": kind}
        if bounds:
            acc["min"] = array.min(0).astype(float).tolist()
            acc["max"] = array.max(0).astype(float).tolist()
        self.accessors.append(acc)
        return len(self.accessors) - 1


def build_glb(parts: list[GltfPart], *, scale: float = 0.001) -> bytes:
    """The bytes of a ``.glb`` holding ``parts`` (see :func:`write_glb`)."""
    if not parts:
        raise ParameterError("build_glb needs at least one part.")
    if not scale > 0:
        raise ParameterError(f"scale must be > 0 (0.001 turns mm into glTF's metres), got {scale}.")
    buf = _Buffer()
    nodes: list[dict[str, Any]] = [{"name": "anatomy", "scale": [scale] * 3, "children": []}]
    meshes, materials, textures, images = [], [], [], []
    for part in parts:
        v = as_vertex_array(part.vertices, f"{part.name}.vertices").astype(np.float64)
        f = as_index_array(part.faces, f"{part.name}.faces", 3, len(v))
        if f.size == 0:
            raise ParameterError(f"part {part.name!r} has no faces; drop it or pass its triangles.")
        normals = _normals(v, f)
        colour = [float(c) for c in part.colour] + [1.0] * (4 - len(part.colour))
        if len(colour) != 4 or not all(0.0 <= c <= 1.0 for c in colour):
            raise ParameterError(f"part {part.name!r}: colour must be 3 or 4 values in [0, 1], got {part.colour}.")
        material: dict[str, Any] = {"name": f"{part.name}_material", "pbrMetallicRoughness": {
            "baseColorFactor": colour, "metallicFactor": 0.0, "roughnessFactor": 0.6}}
        texcoord = None
        if part.uv is not None:
            uv = np.asarray(part.uv, dtype=np.float64)
            if uv.ndim != 2 or uv.shape[1] != 2:
                raise ShapeError(f"part {part.name!r}: uv must have shape (V_uv, 2), got {uv.shape}.")
            uf = as_index_array(part.uv_faces, f"{part.name}.uv_faces", 3, len(uv))
            if uf.shape != f.shape:
                raise ShapeError(f"part {part.name!r}: uv_faces must have the faces' shape {f.shape}, got {uf.shape}.")
            pairs, inverse = np.unique(np.stack([f.ravel(), uf.ravel()], 1), axis=0, return_inverse=True)
            f = inverse.reshape(-1, 3)
            v, normals = v[pairs[:, 0]], normals[pairs[:, 0]]
            texcoord = np.stack([uv[pairs[:, 1], 0], 1.0 - uv[pairs[:, 1], 1]], 1)
            if part.texture_png is not None:
                images.append({"bufferView": buf.view(part.texture_png), "mimeType": "image/png",
                               "name": f"{part.name}_base_colour"})
                textures.append({"source": len(images) - 1, "sampler": 0})
                material["pbrMetallicRoughness"]["baseColorTexture"] = {"index": len(textures) - 1}
                material["pbrMetallicRoughness"]["baseColorFactor"] = [1.0, 1.0, 1.0, colour[3]]
        elif part.texture_png is not None:
            raise ParameterError(f"part {part.name!r} has a texture but no uv; pass uv and uv_faces.")
        attributes = {"POSITION": buf.accessor(v.astype(np.float32), "VEC3", _ARRAY_BUFFER, bounds=True),
                      "NORMAL": buf.accessor(normals.astype(np.float32), "VEC3", _ARRAY_BUFFER)}
        if texcoord is not None:
            attributes["TEXCOORD_0"] = buf.accessor(texcoord.astype(np.float32), "VEC2", _ARRAY_BUFFER)
        indices = buf.accessor(f.astype(np.uint32).ravel(), "SCALAR",
                               _ELEMENT_ARRAY_BUFFER)
        materials.append(material)
        meshes.append({"name": part.name, "primitives": [{"attributes": attributes, "indices": indices,
                                                          "material": len(materials) - 1, "mode": 4}]})
        nodes.append({"name": part.name, "mesh": len(meshes) - 1})
        nodes[0]["children"].append(len(nodes) - 1)
    while len(buf.data) % 4:
        buf.data.append(0)
    doc: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "anatomy"}, "scene": 0, "scenes": [{"nodes": [0]}],
        "nodes": nodes, "meshes": meshes, "materials": materials, "accessors": buf.accessors,
        "bufferViews": buf.views, "buffers": [{"byteLength": len(buf.data)}],
    }
    if images:
        doc.update(images=images, textures=textures,
                   samplers=[{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}])
    text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    body = bytes(buf.data)
    total = 12 + 8 + len(text) + 8 + len(body)
    return (struct.pack("<III", _MAGIC, 2, total) + struct.pack("<II", len(text), _JSON) + text
            + struct.pack("<II", len(body), _BIN) + body)


def write_glb(path: str | os.PathLike[str], parts: list[GltfPart], *, scale: float = 0.001) -> Path:
    """Write ``parts`` as one binary glTF 2.0 file (atomically): a root node ``anatomy`` scaling by
    ``scale`` (mm -> m), then one node + mesh + material per part. Returns the path."""
    return write_atomic(path, build_glb(parts, scale=scale))


def read_glb(path: str | os.PathLike[str]) -> tuple[dict[str, Any], bytes]:
    """Read a ``.glb``: its JSON document and binary chunk (checks the container's structure)."""
    data = Path(os.fspath(path)).read_bytes()
    if len(data) < 20:
        raise ModelFileError(f"{path}: expected a GLB file, found {len(data)} bytes. Fix: pass a .glb file.")
    magic, version, total = struct.unpack_from("<III", data, 0)
    if magic != _MAGIC or version != 2 or total != len(data):
        raise ModelFileError(f"{path}: header: expected glTF magic, version 2 and length {len(data)}, found "
                             f"{magic:#x}, {version}, {total}. Fix: pass a glTF 2.0 binary file.")
    length, kind = struct.unpack_from("<II", data, 12)
    if kind != _JSON:
        raise ModelFileError(f"{path}: the first chunk must be JSON, found type {kind:#x}.")
    doc = json.loads(data[20:20 + length])
    pos = 20 + length
    body = b""
    if pos < len(data):
        blen, bkind = struct.unpack_from("<II", data, pos)
        if bkind != _BIN:
            raise ModelFileError(f"{path}: the second chunk must be BIN, found type {bkind:#x}.")
        body = data[pos + 8:pos + 8 + blen]
    return doc, body


def glb_accessor(doc: dict[str, Any], body: bytes, index: int) -> np.ndarray:
    """The array behind accessor ``index`` of a document read by :func:`read_glb` (tightly packed views)."""
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[acc["type"]]
    dtype = {_FLOAT: np.float32, _UINT32: np.uint32}[acc["componentType"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    arr = np.frombuffer(body, dtype=dtype, count=acc["count"] * width, offset=start)
    return arr.reshape(acc["count"], width) if width > 1 else arr
