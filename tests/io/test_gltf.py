"""glTF 2.0 binary writer, textured OBJ + MTL, and the PNG codec: files re-read and compared."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from anatomy.core.errors import ModelFileError, ParameterError, ShapeError
from anatomy.io import GltfPart, read_glb, read_png, write_glb, write_mtl, write_png, write_textured_obj
from anatomy.io.gltf import glb_accessor
from anatomy.io.png import encode_png


def _square() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two triangles with a UV seam: vertex 0 has two UV coordinates."""
    v = np.array([[0.0, 0, 0], [10, 0, 0], [10, 10, 0], [0, 10, 0]])
    f = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[0.1, 0.1], [0.4, 0.1], [0.4, 0.4], [0.1, 0.4], [0.6, 0.6]])
    uf = np.array([[0, 1, 2], [4, 2, 3]])
    return v, f, uv, uf


def test_glb_round_trip(tmp_path) -> None:
    v, f, uv, uf = _square()
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    box = np.array([[0.0, 0, 5], [1, 0, 5], [0, 1, 5], [0, 0, 6]])
    parts = [GltfPart("skin", v, f, uv=uv, uv_faces=uf, texture_png=encode_png(image)),
             GltfPart("bone", box, np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]), colour=(0.8, 0.7, 0.6))]
    path = write_glb(tmp_path / "m.glb", parts)
    raw = path.read_bytes()
    assert struct.unpack_from("<III", raw) == (0x46546C67, 2, len(raw))
    json_len = struct.unpack_from("<I", raw, 12)[0]
    assert json_len % 4 == 0 and len(raw) % 4 == 0
    doc, body = read_glb(path)
    assert doc["asset"]["version"] == "2.0" and doc["nodes"][0]["scale"] == [0.001] * 3
    assert [doc["nodes"][i]["name"] for i in doc["nodes"][0]["children"]] == ["skin", "bone"]
    for view in doc["bufferViews"]:
        assert view["byteOffset"] % 4 == 0
    prim = doc["meshes"][0]["primitives"][0]
    pos = glb_accessor(doc, body, prim["attributes"]["POSITION"])
    tex = glb_accessor(doc, body, prim["attributes"]["TEXCOORD_0"])
    idx = glb_accessor(doc, body, prim["indices"]).reshape(-1, 3)
    assert len(pos) == 5  # the seam split vertex 0 in two
    np.testing.assert_allclose(pos[idx], v[f], atol=1e-6)  # every corner at its mesh position
    np.testing.assert_allclose(tex[idx], np.stack([uv[uf][..., 0], 1 - uv[uf][..., 1]], -1), atol=1e-7)
    acc = doc["accessors"][prim["attributes"]["POSITION"]]
    np.testing.assert_allclose(acc["min"], v.min(0)) and np.testing.assert_allclose(acc["max"], v.max(0))
    normals = glb_accessor(doc, body, prim["attributes"]["NORMAL"])
    np.testing.assert_allclose(normals, [[0, 0, 1]] * 5, atol=1e-6)
    img = doc["images"][doc["textures"][0]["source"]]
    view = doc["bufferViews"][img["bufferView"]]
    png = body[view["byteOffset"]:view["byteOffset"] + view["byteLength"]]
    np.testing.assert_array_equal(read_png(png), image)
    assert doc["materials"][1]["pbrMetallicRoughness"]["baseColorFactor"] == [0.8, 0.7, 0.6, 1.0]
    trimesh = pytest.importorskip("trimesh")
    scene = trimesh.load(str(path))
    assert sorted(scene.geometry) == ["bone", "skin"]
    np.testing.assert_allclose(np.sort(scene.geometry["skin"].vertices, axis=0), np.sort(pos, axis=0), atol=1e-6)


def test_glb_bad_input(tmp_path) -> None:
    v, f, uv, uf = _square()
    with pytest.raises(ParameterError, match="at least one part"):
        write_glb(tmp_path / "a.glb", [])
    with pytest.raises(ParameterError, match="no uv"):
        write_glb(tmp_path / "a.glb", [GltfPart("s", v, f, texture_png=b"x")])
    with pytest.raises(ShapeError, match="uv_faces"):
        write_glb(tmp_path / "a.glb", [GltfPart("s", v, f, uv=uv, uv_faces=uf[:1])])
    with pytest.raises(ParameterError, match="colour"):
        write_glb(tmp_path / "a.glb", [GltfPart("s", v, f, colour=(2.0, 0, 0))])
    (tmp_path / "bad.glb").write_bytes(b"glTF" + b"\0" * 30)
    with pytest.raises(ModelFileError, match="header"):
        read_glb(tmp_path / "bad.glb")
    assert not list(tmp_path.glob("a.glb"))


def test_textured_obj_and_mtl(tmp_path) -> None:
    v, f, uv, uf = _square()
    write_mtl(tmp_path / "m.mtl", {"skin": ((1.0, 1.0, 1.0), "skin.png"), "bone": ((0.8, 0.7, 0.6), None)})
    write_png(tmp_path / "skin.png", np.zeros((4, 4, 3)))
    write_textured_obj(tmp_path / "s.obj", v, f, uv=uv, uv_faces=uf, material="skin", mtllib="m.mtl")
    text = (tmp_path / "s.obj").read_text().splitlines()
    assert "mtllib m.mtl" in text and "usemtl skin" in text
    assert "f 1/5 3/3 4/4" in text and sum(line.startswith("vt ") for line in text) == 5
    mtl = (tmp_path / "m.mtl").read_text()
    assert "map_Kd skin.png" in mtl and "Kd 0.8 0.7 0.6" in mtl
    trimesh = pytest.importorskip("trimesh")
    mesh = trimesh.load(str(tmp_path / "s.obj"), process=False)
    assert mesh.visual.uv.shape[1] == 2 and len(mesh.faces) == 2
    with pytest.raises(ParameterError, match="without spaces"):
        write_textured_obj(tmp_path / "x.obj", v, f, material="my skin")
    with pytest.raises(ShapeError, match="uv must be finite"):
        write_textured_obj(tmp_path / "x.obj", v, f, uv=np.zeros((5, 3)), uv_faces=uf)


def test_png_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(1)
    for shape in ((5, 7), (5, 7, 3), (6, 3, 4)):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        path = write_png(tmp_path / "i.png", img)
        back = read_png(path)
        np.testing.assert_array_equal(back.reshape(img.shape), img)
        pil = pytest.importorskip("PIL.Image")
        np.testing.assert_array_equal(np.asarray(pil.open(path)).reshape(img.shape), img)
    floats = np.linspace(0, 1, 12).reshape(2, 2, 3)
    np.testing.assert_array_equal(read_png(encode_png(floats)), np.rint(floats * 255).astype(np.uint8))
    with pytest.raises(ShapeError):
        encode_png(np.zeros((2, 2, 2)))
    with pytest.raises(ModelFileError, match="signature"):
        read_png(b"not a png")
