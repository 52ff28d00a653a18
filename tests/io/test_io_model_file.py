"""Tests of anatomy.io.model_file: bit-exact round trips, the JSON layout, atomic saves, tamper checks."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from anatomy.core.errors import DtypeError, ModelFileError
from anatomy.io import (
    FORMAT_VERSION,
    ModelData,
    load_model,
    make_toy_model_data,
    model_paths,
    save_model,
)


def bits_equal(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Same dtype, shape, layout and identical bytes (so -0.0 != 0.0 and NaN payloads count)."""
    if a is None or b is None:
        return a is None and b is None
    if a.dtype != b.dtype or a.shape != b.shape or a.layout != b.layout:
        return False
    if a.layout == torch.sparse_coo:
        a, b = a.coalesce(), b.coalesce()
        return bits_equal(a.indices(), b.indices()) and bits_equal(a.values(), b.values())
    def raw(t: torch.Tensor) -> torch.Tensor:
        return t.contiguous().reshape(-1).view(torch.uint8)

    return torch.equal(raw(a), raw(b))


def assert_model_equal(a: ModelData, b: ModelData) -> None:
    assert bits_equal(a.template, b.template)
    assert [(t.name, t.start, t.stop, t.part_names) for t in a.tissues] == [
        (t.name, t.start, t.stop, t.part_names) for t in b.tissues
    ]
    for ta, tb in zip(a.tissues, b.tissues, strict=True):
        assert bits_equal(ta.faces, tb.faces)
        assert bits_equal(ta.tets, tb.tets)
        assert bits_equal(ta.part_ids, tb.part_ids)
    assert a.joint_names == b.joint_names and a.parents == b.parents
    assert bits_equal(a.joint_regressor, b.joint_regressor)
    assert bits_equal(a.skinning_weights, b.skinning_weights)
    assert list(a.spaces) == list(b.spaces)
    for k in a.spaces:
        assert bits_equal(a.spaces[k], b.spaces[k])
    assert bits_equal(a.pose_basis, b.pose_basis)
    assert a.pose_feature_joints == b.pose_feature_joints
    assert a.landmark_names == b.landmark_names
    assert bits_equal(a.landmark_vertices, b.landmark_vertices)
    assert bits_equal(a.landmark_weights, b.landmark_weights)
    assert list(a.extras) == list(b.extras)
    for k in a.extras:
        assert bits_equal(a.extras[k], b.extras[k])
    assert a.meta == b.meta


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("half_bases", [False, True])
def test_round_trip_bit_exact(tmp_path, make_small_model_data, sparse, half_bases):
    data = make_small_model_data(sparse=sparse, half_bases=half_bases)
    st_path, json_path = save_model(data, tmp_path / "small")
    assert st_path == tmp_path / "small.safetensors" and json_path == tmp_path / "small.json"
    back = load_model(tmp_path / "small")
    assert_model_equal(data, back)
    assert back.skinning_weights.layout == (torch.sparse_coo if sparse else torch.strided)
    assert back.spaces["shape"].dtype == (torch.float16 if half_bases else torch.float32)
    assert back.extras["pose_mean"].dtype == torch.float64
    assert back.extras["surface_mask"].dtype == torch.bool


def test_round_trip_toy_model_and_optional_fields_absent(tmp_path):
    toy = make_toy_model_data()
    save_model(toy, tmp_path / "toy.safetensors")
    assert_model_equal(toy, load_model(tmp_path / "toy.json"))

    bare = make_toy_model_data(num_shape=0, with_tets=False)
    bare.pose_basis, bare.pose_feature_joints = None, []
    bare.landmark_names, bare.landmark_vertices, bare.landmark_weights = [], None, None
    bare.extras, bare.meta, bare.spaces = {}, {}, {}
    save_model(bare, tmp_path / "bare")
    back = load_model(tmp_path / "bare")
    assert_model_equal(bare, back)
    assert back.pose_basis is None and back.tissues[1].tets is None and back.spaces == {}


def test_paths_accept_either_file_or_stem(tmp_path):
    assert model_paths(tmp_path / "hand") == (tmp_path / "hand.safetensors", tmp_path / "hand.json")
    assert model_paths(str(tmp_path / "hand.json")) == model_paths(tmp_path / "hand.safetensors")
    assert model_paths(tmp_path / "hand.v2")[0] == tmp_path / "hand.v2.safetensors"


def test_sidecar_layout(tmp_path, make_small_model_data):
    data = make_small_model_data(sparse=True, half_bases=True)
    st_path, json_path = save_model(data, tmp_path / "m")
    doc = json.loads(json_path.read_text(encoding="utf-8"))
    assert doc["format"] == "anatomy-model"
    assert doc["format_version"] == FORMAT_VERSION
    assert doc["units"] == "mm" and doc["handedness"] == "left"
    assert doc["num_vertices"] == 9
    assert doc["tissues"] == [
        {"name": "bone", "start": 0, "stop": 4, "num_faces": 4, "has_tets": False, "num_tets": 0,
         "part_names": ["proximal", "distal"], "has_part_ids": True},
        {"name": "skin", "start": 4, "stop": 9, "num_faces": 6, "has_tets": True, "num_tets": 2,
         "part_names": [], "has_part_ids": False},
    ]
    assert doc["joints"] == {"names": ["root", "mid", "tip"], "parents": [-1, 0, 1]}
    assert doc["spaces"] == [{"name": "shape", "size": 2}]
    assert doc["pose_feature_joints"] == [1, 2] and doc["has_pose_basis"] is True
    assert doc["landmarks"]["names"] == ["apex", "corner"]
    assert doc["extras"] == ["pose_mean", "limits", "surface_mask"]
    assert doc["meta"] == data.meta
    sw = doc["tensors"]["skinning_weights"]
    assert sw["layout"] == "sparse_coo" and sw["shape"] == [9, 3] and sw["dtype"] == "float32"
    assert doc["tensors"]["spaces.shape"] == {"dtype": "float16", "shape": [2, 9, 3], "layout": "dense"}
    blob = st_path.read_bytes()
    assert doc["safetensors"] == {"file": "m.safetensors", "sha256": hashlib.sha256(blob).hexdigest(),
                                  "bytes": len(blob)}
    # the safetensors file holds the sparse parts under <key>.indices / <key>.values
    from safetensors import safe_open

    with safe_open(str(st_path), framework="pt") as f:
        keys = set(f.keys())
    assert {"skinning_weights.indices", "skinning_weights.values", "tissues.skin.tets"} <= keys
    assert "skinning_weights" not in keys


def test_refuses_overwrite_unless_asked(tmp_path, small_model_data):
    save_model(small_model_data, tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_model(small_model_data, tmp_path / "m")
    changed = make_toy_model_data()
    save_model(changed, tmp_path / "m.json", overwrite=True)
    assert_model_equal(changed, load_model(tmp_path / "m"))


def _failing_replace(monkeypatch, fail_on_call: int):
    real = os.replace
    calls = {"n": 0}

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == fail_on_call:
            raise OSError("simulated crash during os.replace")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("fail_on_call", [1, 2])
def test_crash_during_fresh_save_leaves_nothing(tmp_path, monkeypatch, small_model_data, fail_on_call):
    _failing_replace(monkeypatch, fail_on_call)
    with pytest.raises(OSError, match="simulated crash"):
        save_model(small_model_data, tmp_path / "m")
    assert sorted(os.listdir(tmp_path)) == []  # no model files, no temporary files


@pytest.mark.parametrize("fail_on_call", [1, 2])
def test_crash_during_overwrite_keeps_old_model(tmp_path, monkeypatch, small_model_data, fail_on_call):
    save_model(small_model_data, tmp_path / "m")
    before = sorted(os.listdir(tmp_path))
    _failing_replace(monkeypatch, fail_on_call)
    with pytest.raises(OSError, match="simulated crash"):
        save_model(make_toy_model_data(), tmp_path / "m", overwrite=True)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == before
    assert_model_equal(small_model_data, load_model(tmp_path / "m"))


def test_half_replaced_pair_is_detected(tmp_path, small_model_data):
    """A crash between the two replaces leaves new tensors next to the old sidecar."""
    save_model(small_model_data, tmp_path / "old")
    save_model(make_toy_model_data(), tmp_path / "new")
    os.replace(tmp_path / "new.safetensors", tmp_path / "old.safetensors")
    with pytest.raises(ModelFileError, match="truncated or belongs to another save|sha256"):
        load_model(tmp_path / "old")


def test_checksum_tamper_detected(tmp_path, small_model_data):
    st_path, _ = save_model(small_model_data, tmp_path / "m")
    blob = bytearray(st_path.read_bytes())
    blob[-3] ^= 0x01  # flip one bit of the tensor data, same length
    st_path.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="sha256") as err:
        load_model(tmp_path / "m")
    assert str(st_path) in str(err.value) and "Fix" in str(err.value)


def test_truncated_safetensors(tmp_path, small_model_data):
    st_path, _ = save_model(small_model_data, tmp_path / "m")
    st_path.write_bytes(st_path.read_bytes()[:-10])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(st_path)


def test_corrupt_safetensors_with_matching_sidecar(tmp_path, small_model_data):
    """Even when the checksum is recomputed, a broken safetensors file raises ModelFileError."""
    st_path, json_path = save_model(small_model_data, tmp_path / "m")
    blob = st_path.read_bytes()[:-8]
    st_path.write_bytes(blob)
    doc = json.loads(json_path.read_text())
    doc["safetensors"].update(sha256=hashlib.sha256(blob).hexdigest(), bytes=len(blob))
    json_path.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="safetensors"):
        load_model(tmp_path / "m")


def test_missing_files(tmp_path, small_model_data):
    with pytest.raises(ModelFileError, match="sidecar"):
        load_model(tmp_path / "nothing")
    st_path, json_path = save_model(small_model_data, tmp_path / "m")
    json_path.unlink()
    with pytest.raises(ModelFileError, match="interrupted"):
        load_model(st_path)
    save_model(small_model_data, tmp_path / "n")
    (tmp_path / "n.safetensors").unlink()
    with pytest.raises(ModelFileError, match="safetensors"):
        load_model(tmp_path / "n")


def _edit_sidecar(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: d.update(format_version=FORMAT_VERSION + 1), "format_version"),
        (lambda d: d.update(format_version=0), "format_version"),
        (lambda d: d.update(format="something-else"), "format"),
        (lambda d: d.update(units="m"), "units"),
        (lambda d: d.pop("tensors"), "tensors"),
        (lambda d: d["tissues"][1].update(start=5), "tissues['skin'].start"),
        (lambda d: d["joints"].update(parents=[-1, 2, 1]), "parents"),
        (lambda d: d["tissues"][1].update(has_tets=False), "tissues.skin.tets"),
        (lambda d: d["tensors"]["template"].update(dtype="float64"), "template"),
    ],
)
def test_sidecar_errors(tmp_path, small_model_data, edit, key):
    _, json_path = save_model(small_model_data, tmp_path / "m")
    _edit_sidecar(json_path, edit)
    with pytest.raises(ModelFileError) as err:
        load_model(tmp_path / "m")
    assert key in str(err.value) and "Fix" in str(err.value)


def test_corrupt_json(tmp_path, small_model_data):
    _, json_path = save_model(small_model_data, tmp_path / "m")
    json_path.write_text(json_path.read_text()[:50])
    with pytest.raises(ModelFileError, match="JSON"):
        load_model(tmp_path / "m")


def test_load_dtype_and_device(tmp_path, make_small_model_data):
    save_model(make_small_model_data(sparse=True, half_bases=True), tmp_path / "m")
    back = load_model(tmp_path / "m", dtype=torch.float64, device="cpu")
    assert back.template.dtype == torch.float64
    assert back.spaces["shape"].dtype == torch.float64
    assert back.skinning_weights.dtype == torch.float64 and back.skinning_weights.is_sparse
    assert back.tissues[0].faces.dtype == torch.int64
    assert back.landmark_vertices is not None and back.landmark_vertices.dtype == torch.int64
    assert back.extras["surface_mask"].dtype == torch.bool
    with pytest.raises(DtypeError):
        load_model(tmp_path / "m", dtype=torch.int32)


def test_save_rejects_invalid_and_writes_nothing(tmp_path, small_model_data):
    small_model_data.parents = [-1, 0, 5]
    with pytest.raises(ModelFileError, match="parents"):
        save_model(small_model_data, tmp_path / "m")
    assert os.listdir(tmp_path) == []


def test_key_collision_with_sparse_parts(tmp_path, small_model_data):
    small_model_data.extras["w"] = torch.eye(3).to_sparse()
    small_model_data.extras["w.indices"] = torch.zeros(2)
    with pytest.raises(ModelFileError, match="w.indices"):
        save_model(small_model_data, tmp_path / "m")
    assert os.listdir(tmp_path) == []


def test_views_and_non_contiguous_tensors_are_saved(tmp_path, small_model_data):
    base = torch.randn(9, 6)
    small_model_data.template = base[:, ::2]  # non-contiguous view
    small_model_data.extras["a"] = base[0]
    small_model_data.extras["b"] = base[1]  # shares storage with "a"
    save_model(small_model_data, tmp_path / "m")
    back = load_model(tmp_path / "m")
    assert bits_equal(back.template, small_model_data.template.contiguous())
    assert torch.equal(back.extras["b"], base[1])


def test_saved_files_get_normal_permissions(tmp_path, small_model_data):
    umask = os.umask(0o022)
    os.umask(umask)
    for p in save_model(small_model_data, tmp_path / "m"):
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask
