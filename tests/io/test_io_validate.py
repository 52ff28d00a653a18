"""Tests of anatomy.io.validate: every corruption raises ModelFileError naming source, key and fix."""

from __future__ import annotations

import json

import pytest
import torch

from anatomy.core.errors import ModelFileError
from anatomy.io import ModelData, load_model, make_toy_model_data, save_model, validate_model_data


def _set(attr, value):
    return lambda d: setattr(d, attr, value)


def _tissue(i, attr, value):
    return lambda d: setattr(d.tissues[i], attr, value)


def _unnormalised_weights(d: ModelData) -> None:
    d.skinning_weights = d.skinning_weights * 1.01


def _negative_weights(d: ModelData) -> None:
    w = d.skinning_weights.clone()
    w[0] = torch.tensor([1.5, -0.5, 0.0])
    d.skinning_weights = w


def _sparse_unnormalised(d: ModelData) -> None:
    w = d.skinning_weights.clone()
    w[3, 0] += 0.01
    d.skinning_weights = w.to_sparse()


def _regressor_row(d: ModelData) -> None:
    r = d.joint_regressor.clone()
    r[1, 1] = 0.9
    d.joint_regressor = r


def _nan(attr):
    def f(d: ModelData) -> None:
        t = getattr(d, attr).clone()
        t.view(-1)[0] = float("nan")
        setattr(d, attr, t)
    return f


def _face_out_of_range(d: ModelData) -> None:
    f = d.tissues[1].faces.clone()
    f[0, 0] = 5  # skin has 5 vertices: local indices 0..4
    d.tissues[1].faces = f


def _tet_out_of_range(d: ModelData) -> None:
    assert d.tissues[1].tets is not None
    t = d.tissues[1].tets.clone()
    t[1, 3] = -1
    d.tissues[1].tets = t


def _landmark_out_of_range(d: ModelData) -> None:
    assert d.landmark_vertices is not None
    v = d.landmark_vertices.clone()
    v[0, 0] = 9
    d.landmark_vertices = v


def _extra_inf(d: ModelData) -> None:
    d.extras["pose_mean"] = d.extras["pose_mean"].clone()
    d.extras["pose_mean"][2] = float("inf")


CORRUPTIONS = {
    "template missing": (_set("template", None), "template"),
    "template int": (lambda d: setattr(d, "template", d.template.long()), "template"),
    "template shape": (lambda d: setattr(d, "template", d.template[:, :2]), "template"),
    "template nan": (_nan("template"), "template"),
    "tissue gap": (_tissue(1, "start", 5), "tissues['skin'].start"),
    "tissue overlap": (_tissue(0, "stop", 5), "tissues['skin'].start"),
    "tissues do not cover V": (_tissue(1, "stop", 8), "tissues['skin'].stop"),
    "no tissues": (_set("tissues", []), "tissues"),
    "duplicate tissue": (lambda d: setattr(d.tissues[1], "name", "bone"), "tissues[1].name"),
    "faces out of range": (_face_out_of_range, "tissues['skin'].faces"),
    "faces int32": (lambda d: setattr(d.tissues[0], "faces", d.tissues[0].faces.int()),
                    "tissues['bone'].faces"),
    "faces shape": (lambda d: setattr(d.tissues[0], "faces", d.tissues[0].faces[:, :2]),
                    "tissues['bone'].faces"),
    "tets out of range": (_tet_out_of_range, "tissues['skin'].tets"),
    "tets shape": (_tissue(1, "tets", torch.zeros(2, 3, dtype=torch.int64)), "tissues['skin'].tets"),
    "part ids out of range": (_tissue(0, "part_ids", torch.tensor([0, 1, 2, 0])), "tissues['bone'].part_ids"),
    "part ids missing": (_tissue(0, "part_ids", None), "tissues['bone'].part_ids"),
    "root parent": (_set("parents", [0, 0, 1]), "parents"),
    "parents not topological": (_set("parents", [-1, 2, 0]), "parents"),
    "parents length": (_set("parents", [-1, 0]), "parents"),
    "duplicate joint names": (_set("joint_names", ["root", "root", "tip"]), "joint_names"),
    "weights sum": (_unnormalised_weights, "skinning_weights"),
    "weights negative": (_negative_weights, "skinning_weights"),
    "weights sparse sum": (_sparse_unnormalised, "skinning_weights"),
    "weights shape": (lambda d: setattr(d, "skinning_weights", d.skinning_weights[:, :2]),
                      "skinning_weights"),
    "weights missing": (_set("skinning_weights", None), "skinning_weights"),
    "regressor sum": (_regressor_row, "joint_regressor"),
    "regressor shape": (lambda d: setattr(d, "joint_regressor", d.joint_regressor[:2]), "joint_regressor"),
    "regressor int": (lambda d: setattr(d, "joint_regressor", d.joint_regressor.long()), "joint_regressor"),
    "space V": (lambda d: d.spaces.update(shape=d.spaces["shape"][:, :8]), "spaces['shape']"),
    "space int": (lambda d: d.spaces.update(shape=d.spaces["shape"].long()), "spaces['shape']"),
    "pose basis P": (_set("pose_feature_joints", [1]), "pose_basis"),
    "pose basis nan": (_nan("pose_basis"), "pose_basis"),
    "pose basis missing": (_set("pose_basis", None), "pose_basis"),
    "pose feature joint range": (_set("pose_feature_joints", [1, 3]), "pose_feature_joints"),
    "landmark ids": (_landmark_out_of_range, "landmark_vertices"),
    "landmark weights sum": (lambda d: setattr(d, "landmark_weights", d.landmark_weights * 2),
                             "landmark_weights"),
    "landmark names count": (_set("landmark_names", ["apex"]), "landmark_vertices"),
    "landmark ids dtype": (lambda d: setattr(d, "landmark_vertices", d.landmark_vertices.int()),
                           "landmark_vertices"),
    "extras inf": (_extra_inf, "extras['pose_mean']"),
    "extras not tensor": (lambda d: d.extras.update(x=[1, 2]), "extras['x']"),
    "meta not json": (lambda d: d.meta.update(t=torch.zeros(2)), "meta"),
    "meta units": (lambda d: d.meta.update(units="m"), "meta['units']"),
    "meta handedness": (lambda d: d.meta.update(handedness="both"), "meta['handedness']"),
}


def test_valid_models_pass(make_small_model_data):
    for sparse in (False, True):
        validate_model_data(make_small_model_data(sparse=sparse, half_bases=sparse))
    validate_model_data(make_toy_model_data())
    validate_model_data(make_toy_model_data(num_shape=0, with_tets=False, dtype=torch.float64))


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruption_raises_model_file_error(small_model_data, name):
    corrupt, key = CORRUPTIONS[name]
    corrupt(small_model_data)
    with pytest.raises(ModelFileError) as err:
        validate_model_data(small_model_data, source="hand.safetensors")
    msg = str(err.value)
    assert msg.startswith("hand.safetensors: "), msg
    assert key in msg, msg
    assert "expected" in msg and "found" in msg and "Fix:" in msg, msg
    assert isinstance(err.value, ValueError)


def test_not_model_data():
    with pytest.raises(ModelFileError, match="ModelData"):
        validate_model_data({"template": torch.zeros(3, 3)})  # type: ignore[arg-type]


def test_sum_tolerance_is_1e_3(small_model_data):
    w = small_model_data.skinning_weights.double()
    small_model_data.skinning_weights = (w * (1 + 5e-4)).float()
    validate_model_data(small_model_data)  # within tolerance
    small_model_data.skinning_weights = (w * (1 + 2e-3)).float()
    with pytest.raises(ModelFileError, match="skinning_weights"):
        validate_model_data(small_model_data)


def test_load_runs_validation(tmp_path, small_model_data):
    """A sidecar edited into an inconsistent model is caught by the validation at load."""
    _, json_path = save_model(small_model_data, tmp_path / "m")
    doc = json.loads(json_path.read_text())
    doc["pose_feature_joints"] = [2]
    json_path.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError) as err:
        load_model(tmp_path / "m")
    assert "pose_basis" in str(err.value) and str(tmp_path / "m.safetensors") in str(err.value)
