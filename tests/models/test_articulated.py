"""ArticulatedModel on the built-in toy model: identities, broadcasting, dtype/device, errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import anatomy
from anatomy.core.errors import DtypeError, ParameterError, ShapeError
from anatomy.core.rotations import axis_angle_to_matrix
from anatomy.io import make_toy_model_data, save_model
from anatomy.models import ArticulatedModel
from tests.reference import naive_lbs


@pytest.fixture(scope="module")
def data() -> anatomy.ModelData:
    return make_toy_model_data(dtype=torch.float64)


@pytest.fixture(scope="module")
def model(data: anatomy.ModelData) -> ArticulatedModel:
    return ArticulatedModel(data, dtype=torch.float64)


def test_rest_pose_returns_template_and_tissue_views(model: ArticulatedModel, data: anatomy.ModelData) -> None:
    out = model()
    torch.testing.assert_close(out.vertices[0], data.template, atol=1e-12, rtol=0)
    skin = data.tissue("skin")
    torch.testing.assert_close(out.skin[0], data.template[skin.start:skin.stop])
    torch.testing.assert_close(out.tissue("bone")[0], data.template[: data.tissue("bone").stop])
    assert out.faces("skin").shape == data.tissue("skin").faces.shape
    assert out.tets("skin") is not None and out.tets("bone") is None


def test_matches_naive_reference_with_all_inputs(model: ArticulatedModel, data: anatomy.ModelData) -> None:
    batch, num_j = 2, model.num_joints
    pose = torch.randn(batch, num_j, 3, dtype=torch.float64) * 0.5
    shape = torch.randn(1, 3, dtype=torch.float64)  # broadcasts against batch 2
    go = torch.tensor([[0.0, 0.0, 0.7]], dtype=torch.float64)
    transl = torch.randn(batch, 3, dtype=torch.float64)
    scale = torch.tensor([1.0, 1.2], dtype=torch.float64)
    out = model(pose, shape=shape, global_orient=go, transl=transl, scale=scale)
    rots = axis_angle_to_matrix(pose).clone()
    rots[:, 0] = axis_angle_to_matrix(go) @ rots[:, 0]
    reg = data.joint_regressor.to_dense() if data.joint_regressor.is_sparse else data.joint_regressor
    w = data.skinning_weights.to_dense() if data.skinning_weights.is_sparse else data.skinning_weights
    verts, joints = naive_lbs(data.template, rots, w, reg, data.parents, data.spaces["shape"],
                              shape.expand(batch, -1), data.pose_basis, data.pose_feature_joints,
                              scale=scale, translation=transl)
    torch.testing.assert_close(out.vertices, verts, atol=1e-9, rtol=0)
    torch.testing.assert_close(out.joints, joints, atol=1e-9, rtol=0)
    lm = (verts[:, data.landmark_vertices] * data.landmark_weights[None, :, :, None]).sum(2)
    assert out.landmarks is not None
    torch.testing.assert_close(out.landmarks, lm, atol=1e-9, rtol=0)


def test_matrix_pose_equals_axis_angle_pose(model: ArticulatedModel) -> None:
    pose = torch.randn(3, model.num_joints, 3, dtype=torch.float64)
    a = model(pose).vertices
    b = model(axis_angle_to_matrix(pose)).vertices
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_fewer_coefficients_are_zero_padded(model: ArticulatedModel) -> None:
    beta = torch.randn(2, 2, dtype=torch.float64)
    padded = torch.cat([beta, torch.zeros(2, 1, dtype=torch.float64)], 1)
    torch.testing.assert_close(model(shape=beta).vertices, model(shape=padded).vertices)


def test_parts_select_bone_segments(model: ArticulatedModel, data: anatomy.ModelData) -> None:
    out = model(torch.zeros(1, model.num_joints, 3, dtype=torch.float64))
    bone = data.tissue("bone")
    assert bone.part_ids is not None
    for i, name in enumerate(bone.part_names):
        ids = (bone.part_ids == i).nonzero().flatten()
        torch.testing.assert_close(out.part("bone", name)[0], data.template[bone.start + ids])
        faces = out.part_faces("bone", name)
        assert int(faces.max()) < len(ids)
    with pytest.raises(ParameterError, match="no part"):
        out.part("bone", "femur")


def test_gradients_reach_every_input(model: ArticulatedModel) -> None:
    inputs = {
        "pose": torch.randn(2, model.num_joints, 3, dtype=torch.float64) * 0.3,
        "shape": torch.randn(2, 3, dtype=torch.float64),
        "global_orient": torch.randn(2, 3, dtype=torch.float64) * 0.3,
        "transl": torch.randn(2, 3, dtype=torch.float64),
        "scale": torch.rand(2, dtype=torch.float64) + 0.5,
        "joint_offsets": torch.randn(2, model.num_joints, 3, dtype=torch.float64),
    }
    for v in inputs.values():
        v.requires_grad_()
    out = model(**inputs)
    loss = out.vertices.square().sum() + out.joints.square().sum()
    grads = torch.autograd.grad(loss, list(inputs.values()))
    for name, g in zip(inputs, grads):
        assert torch.isfinite(g).all() and float(g.abs().sum()) > 0, name


def test_gradcheck_small_model() -> None:
    m = ArticulatedModel(make_toy_model_data(ring_size=4, with_tets=False, dtype=torch.float64),
                         dtype=torch.float64)
    pose = torch.zeros(1, m.num_joints, 3, dtype=torch.float64)
    pose[0, 1, 0] = math.pi - 1e-6  # near pi
    pose.requires_grad_()
    shape = torch.randn(1, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, s: m(p, shape=s).vertices, (pose, shape))


def test_float32_model_and_to_double(data: anatomy.ModelData) -> None:
    m32 = ArticulatedModel(data)
    assert m32.template.dtype == torch.float32
    pose = torch.randn(2, m32.num_joints, 3)
    out32 = m32(pose).vertices
    m64 = ArticulatedModel(data).double()
    out64 = m64(pose.double()).vertices
    torch.testing.assert_close(out32.double(), out64, atol=1e-3, rtol=0)
    with pytest.raises(DtypeError, match="float64"):
        m64(pose)


def test_load_from_file(tmp_path: Path, data: anatomy.ModelData, model: ArticulatedModel) -> None:
    save_model(data, tmp_path / "toy.safetensors")
    loaded = ArticulatedModel(tmp_path / "toy.safetensors", dtype=torch.float64)
    pose = torch.randn(2, model.num_joints, 3, dtype=torch.float64)
    torch.testing.assert_close(loaded(pose).vertices, model(pose).vertices, atol=0, rtol=0)


def test_bad_inputs_raise_typed_errors(model: ArticulatedModel) -> None:
    j = model.num_joints
    d = torch.float64
    with pytest.raises(ShapeError, match="pose"):
        model(torch.zeros(2, j + 1, 3, dtype=d))
    with pytest.raises(ShapeError, match="batch"):
        model(torch.zeros(2, j, 3, dtype=d), shape=torch.zeros(3, 3, dtype=d))
    with pytest.raises(ShapeError, match="shape"):
        model(shape=torch.zeros(1, 7, dtype=d))
    with pytest.raises(ParameterError, match="unknown"):
        model(betas=torch.zeros(1, 3, dtype=d))
    with pytest.raises(ParameterError, match="NaN"):
        model(torch.full((1, j, 3), math.nan, dtype=d))
    with pytest.raises(ParameterError, match="empty"):
        model(torch.zeros(0, j, 3, dtype=d))
    with pytest.raises(ParameterError, match="positive"):
        model(scale=torch.zeros(1, dtype=d))
    with pytest.raises(DtypeError):
        model(torch.zeros(1, j, 3, dtype=torch.long))
    with pytest.raises(ShapeError, match="dimensions"):
        model(shape=torch.zeros(3, dtype=d))
    with pytest.raises(AttributeError):
        _ = model().muscle


@pytest.mark.slow
def test_torch_compile_matches_eager(model: ArticulatedModel) -> None:
    compiled = torch.compile(model, fullgraph=False)
    pose = torch.randn(2, model.num_joints, 3, dtype=torch.float64) * 0.4
    shape = torch.randn(2, 3, dtype=torch.float64)
    torch.testing.assert_close(compiled(pose, shape=shape).vertices, model(pose, shape=shape).vertices,
                               atol=1e-10, rtol=0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=5))
def test_property_any_wrong_pose_shape_is_a_typed_error(dims: list[int]) -> None:
    model = _TOY_MODEL
    shape = tuple(dims)
    valid = shape in ((1, model.num_joints, 3), (1, model.num_joints, 3, 3)) or (
        len(shape) in (3, 4) and shape[0] >= 1 and shape[1:] in ((model.num_joints, 3), (model.num_joints, 3, 3))
    )
    if valid:
        return
    with pytest.raises((ShapeError, ParameterError)):
        model(torch.zeros(shape, dtype=torch.float64))


_TOY_MODEL = ArticulatedModel(make_toy_model_data(ring_size=4, with_tets=False, dtype=torch.float64),
                              dtype=torch.float64)


def test_small_sparse_weights_are_densified_with_identical_outputs(monkeypatch: pytest.MonkeyPatch,
                                                                   data: anatomy.ModelData) -> None:
    from dataclasses import replace

    from anatomy.models import articulated

    sparse = replace(data, skinning_weights=data.skinning_weights.to_dense().to_sparse())
    dense_model = ArticulatedModel(sparse, dtype=torch.float64)
    assert not dense_model.weights.is_sparse  # small: stored dense for the fast GEMM
    monkeypatch.setattr(articulated, "DENSE_WEIGHTS_BYTES", 0)
    sparse_model = ArticulatedModel(sparse, dtype=torch.float64)
    assert sparse_model.weights.is_sparse
    pose = torch.randn(3, dense_model.num_joints, 3, dtype=torch.float64) * 0.4
    torch.testing.assert_close(dense_model(pose).vertices, sparse_model(pose).vertices, atol=1e-12, rtol=0)
