"""Tests of anatomy.io.mesh_export: exact OBJ/PLY round trips, VTU parsed back, atomic writes."""

from __future__ import annotations

import ast
import base64
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

from anatomy.core.errors import DtypeError, ModelFileError, ParameterError, ShapeError
from anatomy.io import make_toy_model_data, read_mesh, write_obj, write_ply, write_vtu

trimesh = pytest.importorskip("trimesh")


@pytest.fixture
def bone():
    d = make_toy_model_data()
    t = d.tissue("bone")
    return d.template[t.start:t.stop].numpy(), t.faces.numpy()


@pytest.fixture
def skin_volume():
    d = make_toy_model_data(dtype=torch.float64)
    t = d.tissue("skin")
    assert t.tets is not None
    return d.template[t.start:t.stop].numpy(), t.tets.numpy()


def _random_mesh(dtype, k=3, seed=0):
    rng = np.random.default_rng(seed)
    v = (rng.normal(size=(50, 3)) * 37.123456789).astype(dtype)
    f = np.stack([rng.permutation(50)[:k] for _ in range(40)])
    return v, f


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [3, 4])
def test_obj_round_trip_exact(tmp_path, dtype, k):
    v, f = _random_mesh(dtype, k)
    path = write_obj(tmp_path / "m.obj", v, f)
    m = read_mesh(path)
    assert m.vertices.dtype == np.float64 and m.faces.dtype == np.int64
    np.testing.assert_array_equal(m.vertices.astype(dtype), v)  # bit-exact in the written dtype
    np.testing.assert_array_equal(m.faces, f)
    if k == 3:  # oracle: trimesh reads the same triangles (it drops unreferenced vertices)
        tm = trimesh.load(path, process=False, force="mesh")
        np.testing.assert_array_equal(np.asarray(tm.vertices)[tm.faces].astype(dtype), v[f])


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ply_round_trip_exact(tmp_path, binary, dtype):
    v, f = _random_mesh(dtype)
    colors = np.random.default_rng(1).integers(0, 256, size=(50, 4)).astype(np.uint8)
    path = write_ply(tmp_path / "m.ply", v, f, binary=binary, vertex_colors=colors)
    m = read_mesh(path)
    np.testing.assert_array_equal(m.vertices.astype(dtype), v)
    if binary:
        np.testing.assert_array_equal(m.vertices, v.astype(np.float64))
    np.testing.assert_array_equal(m.faces, f)
    assert m.vertex_colors is not None
    np.testing.assert_array_equal(m.vertex_colors, colors)
    tm = trimesh.load(path, process=False, force="mesh")  # oracle
    np.testing.assert_array_equal(np.asarray(tm.vertices).astype(dtype), v)
    np.testing.assert_array_equal(tm.faces, f)


def test_ply_quads_and_float_colors(tmp_path):
    v, f = _random_mesh(np.float32, k=4)
    m = read_mesh(write_ply(tmp_path / "q.ply", v, f, vertex_colors=np.full((50, 3), 0.5)))
    np.testing.assert_array_equal(m.faces, f)
    assert m.vertex_colors is not None and (m.vertex_colors == 128).all()


def test_torch_inputs_and_toy_bone(tmp_path, bone):
    v, f = bone
    path = write_obj(tmp_path / "bone.obj", torch.from_numpy(v), torch.from_numpy(f))
    m = read_mesh(path)
    np.testing.assert_array_equal(m.vertices.astype(np.float32), v)
    np.testing.assert_array_equal(m.faces, f)


@pytest.mark.parametrize("ascii_stl", [False, True])
def test_stl_read_merges_corners(tmp_path, bone, ascii_stl):
    v, f = bone
    path = tmp_path / "bone.stl"
    trimesh.Trimesh(v, f, process=False).export(path, file_type="stl_ascii" if ascii_stl else "stl")
    m = read_mesh(path)
    assert m.vertices.shape == v.shape and m.faces.shape == f.shape
    # same triangles, corner by corner (STL stores float32 corners)
    np.testing.assert_allclose(m.vertices[m.faces], v[f].astype(np.float64), rtol=0, atol=1e-5)


def test_read_other_formats_through_trimesh(tmp_path, bone):
    v, f = bone
    path = tmp_path / "bone.off"
    trimesh.Trimesh(v, f, process=False).export(path)
    m = read_mesh(path)
    assert m.faces.shape == f.shape


def _parse_vtu(path):
    """Independent reader: returns {name: array} for every DataArray (ascii or appended base64)."""
    root = ET.parse(path).getroot()
    assert root.get("type") == "UnstructuredGrid" and root.get("byte_order") == "LittleEndian"
    header = np.dtype("<u8") if root.get("header_type") == "UInt64" else np.dtype("<u4")
    appended = root.find("AppendedData")
    stream = ""
    if appended is not None:
        assert appended.get("encoding") == "base64"
        stream = (appended.text or "").strip()
        assert stream.startswith("_")
        stream = stream[1:]
    types = {"Float32": "<f4", "Float64": "<f8", "Int64": "<i8", "Int32": "<i4", "UInt8": "u1"}
    piece = root.find("UnstructuredGrid/Piece")
    assert piece is not None
    out = {key: int(piece.get(key)) for key in ("NumberOfPoints", "NumberOfCells")}
    for da in root.iter("DataArray"):
        dt = np.dtype(types[da.get("type")])
        if da.get("format") == "ascii":
            arr = np.array((da.text or "").split(), dtype=np.float64).astype(dt)
        else:
            assert da.get("format") == "appended"
            chunk = stream[int(da.get("offset")):]
            head = base64.b64decode(chunk[:16])[: header.itemsize]  # 8 header bytes -> 12 chars (+pad)
            nbytes = int(np.frombuffer(head, header)[0])
            nchars = 4 * ((header.itemsize + nbytes + 2) // 3)
            raw = base64.b64decode(chunk[:nchars])[header.itemsize:]
            assert len(raw) == nbytes
            arr = np.frombuffer(raw, dt)
        ncomp = int(da.get("NumberOfComponents", "1"))
        out[da.get("Name")] = arr.reshape(-1, ncomp) if ncomp > 1 else arr
    return out


@pytest.mark.parametrize("encoding", ["base64", "ascii"])
def test_vtu_parsed_back(tmp_path, skin_volume, encoding):
    v, t = skin_volume
    labels = np.arange(len(v)) % 3
    vol = np.linspace(0, 1, len(t)).astype(np.float32)
    path = write_vtu(tmp_path / "skin.vtu", v, t, encoding=encoding,
                     point_data={"label": labels, "disp": v * 0.5}, cell_data={"q": vol})
    got = _parse_vtu(path)
    assert got["NumberOfPoints"] == len(v) and got["NumberOfCells"] == len(t)
    np.testing.assert_array_equal(got["Points"], v)
    np.testing.assert_array_equal(got["connectivity"], t.reshape(-1))
    np.testing.assert_array_equal(got["offsets"], 4 * np.arange(1, len(t) + 1))
    assert (got["types"] == 10).all()
    np.testing.assert_array_equal(got["label"], labels)
    np.testing.assert_array_equal(got["disp"], v * 0.5)
    np.testing.assert_array_equal(got["q"], vol)


def test_vtu_readable_by_meshio_if_installed(tmp_path, skin_volume):
    meshio = pytest.importorskip("meshio")
    v, t = skin_volume
    m = meshio.read(write_vtu(tmp_path / "skin.vtu", v, t))
    np.testing.assert_array_equal(m.points, v)
    np.testing.assert_array_equal(m.cells_dict["tetra"], t)


def test_writes_are_atomic(tmp_path, monkeypatch):
    v, f = _random_mesh(np.float32)
    old = write_obj(tmp_path / "m.obj", v, f).read_bytes()

    def crash(src, dst):
        raise OSError("simulated crash during os.replace")

    monkeypatch.setattr(os, "replace", crash)
    for writer, name in ((write_obj, "m.obj"), (write_ply, "new.ply")):
        with pytest.raises(OSError, match="simulated crash"):
            writer(tmp_path / name, v * 2, f)
    with pytest.raises(OSError, match="simulated crash"):
        write_vtu(tmp_path / "new.vtu", v, np.tile([0, 1, 2, 3], (5, 1)))
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["m.obj"]  # no temporary files, no new files
    assert (tmp_path / "m.obj").read_bytes() == old  # the existing file is untouched


def test_refuses_to_overwrite_memory_mapped_input(tmp_path):
    v, f = _random_mesh(np.float32)
    path = tmp_path / "m.obj"
    path.write_bytes(v.tobytes())
    mapped = np.memmap(path, dtype=np.float32, mode="r", shape=v.shape)
    with pytest.raises(ParameterError, match="memory-mapped"):
        write_obj(path, mapped, f)
    with pytest.raises(ParameterError, match="memory-mapped"):
        write_ply(path, np.asarray(mapped)[:, :], f)
    assert path.read_bytes() == v.tobytes()
    write_obj(tmp_path / "other.obj", mapped, f)  # another destination is fine


def test_input_errors(tmp_path):
    v, f = _random_mesh(np.float32)
    with pytest.raises(ShapeError, match="vertices"):
        write_obj(tmp_path / "x.obj", v[:, :2], f)
    with pytest.raises(ParameterError, match="faces"):
        write_obj(tmp_path / "x.obj", v, f + 50)
    with pytest.raises(DtypeError, match="faces"):
        write_ply(tmp_path / "x.ply", v, f.astype(np.float32))
    with pytest.raises(ShapeError, match="tets"):
        write_vtu(tmp_path / "x.vtu", v, f)
    with pytest.raises(ParameterError, match="vertex_colors"):
        write_ply(tmp_path / "x.ply", v, f, vertex_colors=np.full((50, 3), 2.0))
    with pytest.raises(ParameterError, match="NaN"):
        write_obj(tmp_path / "x.obj", np.full((3, 3), np.nan), [[0, 1, 2]])
    assert not any(p.name.startswith("x.") for p in tmp_path.iterdir())


def test_read_errors(tmp_path):
    with pytest.raises(ModelFileError, match="check the path"):
        read_mesh(tmp_path / "missing.obj")
    v, f = _random_mesh(np.float32)
    path = write_ply(tmp_path / "m.ply", v, f)
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        read_mesh(path)
    (tmp_path / "bad.obj").write_text("v 0 0 0\nf 1 2 3\n")
    with pytest.raises(ModelFileError, match="faces"):
        read_mesh(tmp_path / "bad.obj")


def test_io_does_not_import_models():
    """Data flows core -> io -> models: no module of anatomy.io imports anatomy.models."""
    root = Path(__file__).resolve().parents[2] / "anatomy" / "io"
    offenders = []
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names
                          if n.startswith(("anatomy.models", "..models")) or n == "anatomy"]
    assert offenders == []
