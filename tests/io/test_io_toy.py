"""Tests of anatomy.io.toy: the built-in finger model is valid, deterministic and geometrically sensible."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anatomy.core.errors import ParameterError
from anatomy.io import make_toy_model_data, validate_model_data

trimesh = pytest.importorskip("trimesh")


def test_valid_and_deterministic():
    a, b = make_toy_model_data(), make_toy_model_data()
    validate_model_data(a)
    pairs = [(a.template, b.template), (a.spaces["shape"], b.spaces["shape"]), (a.pose_basis, b.pose_basis),
             (a.skinning_weights, b.skinning_weights), (a.tissues[1].tets, b.tissues[1].tets)]
    for x, y in pairs:
        assert torch.equal(x, y)
    c = make_toy_model_data(seed=1)
    assert torch.equal(a.template, c.template)  # the geometry does not depend on the seed
    assert not torch.equal(a.pose_basis, c.pose_basis)
    assert not torch.equal(a.spaces["shape"][2], c.spaces["shape"][2])


def test_layout():
    d = make_toy_model_data()
    assert [t.name for t in d.tissues] == ["bone", "skin"]
    assert d.joint_names == ["mcp", "pip", "dip", "tip"] and d.parents == [-1, 0, 1, 2]
    assert d.spaces["shape"].shape == (3, d.num_vertices, 3)
    assert d.pose_basis is not None and d.pose_basis.shape == (18, d.num_vertices, 3)
    assert d.tissues[0].part_names == ["proximal", "middle", "distal"]
    assert d.tissues[1].tets is not None and d.tissues[0].tets is None
    assert d.meta["units"] == "mm"
    assert d.template.dtype == torch.float32
    assert 300 < d.num_vertices < 1000


def test_geometry_is_sensible():
    d = make_toy_model_data(dtype=torch.float64)
    v = d.template.numpy()
    bone, skin = d.tissues
    # closed, outward-oriented surfaces: three bones inside a skin
    skin_mesh = trimesh.Trimesh(v[skin.start:skin.stop], skin.faces.numpy(), process=False)
    assert skin_mesh.is_watertight and skin_mesh.is_winding_consistent and skin_mesh.volume > 0
    bone_v = v[bone.start:bone.stop]
    for p in range(3):
        mask = (bone.part_ids == p).numpy()
        faces = bone.faces.numpy()
        part = trimesh.Trimesh(bone_v, faces[mask[faces].all(1)], process=False)
        part.remove_unreferenced_vertices()
        assert part.is_watertight and part.volume > 0
    assert skin_mesh.contains(bone_v).all()
    # a finger-sized object in mm: ~94 mm long, 18 mm wide
    extent = skin_mesh.bounds[1] - skin_mesh.bounds[0]
    np.testing.assert_allclose(extent, [18, 97, 18], atol=0.5)
    # tetrahedra have positive volume and fill the soft-tissue shell
    assert skin.tets is not None
    p = v[skin.start:skin.stop][skin.tets.numpy()]
    vol = np.einsum("ij,ij->i", np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), p[:, 3] - p[:, 0]) / 6
    assert (vol > 0).all()
    assert 0.3 < vol.sum() / skin_mesh.volume < 0.6
    # joints on the axis at the segment boundaries
    joints = (d.joint_regressor @ d.template).numpy()
    np.testing.assert_allclose(joints[:3], [[0, 0, 0], [0, 40, 0], [0, 65, 0]], atol=1e-9)
    assert 80 < joints[3, 1] < 90
    # landmarks lie on the skin surface
    assert d.landmark_vertices is not None and d.landmark_weights is not None
    lm = (d.landmark_weights[..., None] * d.template[d.landmark_vertices]).sum(1).numpy()
    assert np.abs(skin_mesh.nearest.signed_distance(lm)).max() < 1.0


def test_skinning_and_correctives():
    d = make_toy_model_data()
    bone = d.tissues[0]
    w = d.skinning_weights
    assert bone.part_ids is not None
    # bones are rigid to their segment's joint, the skin blends smoothly
    assert torch.equal(w[: bone.stop].argmax(1), bone.part_ids) and (w[: bone.stop].max(1).values == 1).all()
    skin_w = w[bone.stop:]
    assert ((skin_w > 0.05) & (skin_w < 0.95)).any()
    assert (w[:, 3] == 0).all()  # the fingertip joint never drives vertices
    assert d.pose_basis is not None
    assert 0.1 < float(d.pose_basis.abs().max()) < 5.0
    assert (d.pose_basis[:, : bone.stop] == 0).all()  # correctives move the skin only


def test_options():
    d = make_toy_model_data(num_shape=1, with_tets=False, ring_size=6, dtype=torch.float64)
    validate_model_data(d)
    assert d.spaces["shape"].shape[0] == 1 and d.tissues[1].tets is None
    assert d.template.dtype == torch.float64 and d.tissues[0].faces.dtype == torch.int64
    assert bool(d.extras["skin_surface_mask"].all())
    with pytest.raises(ParameterError):
        make_toy_model_data(num_shape=4)
    with pytest.raises(ParameterError):
        make_toy_model_data(ring_size=2)
