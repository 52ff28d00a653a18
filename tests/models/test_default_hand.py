"""The embedded default hand model (anatomy/assets/hand.safetensors) and ``Nimble()`` without arguments."""

from __future__ import annotations

import math

import pytest
import torch

import anatomy
from anatomy.core.errors import ParameterError
from anatomy.io.model_file import load_model
from anatomy.io.official_nimble import BONE_NAMES, BONE_TO_JOINT, NIMBLE_JOINT_NAMES, NIMBLE_PARENTS
from anatomy.models.nimble import DEFAULT_HAND_NAME, default_hand_path


@pytest.fixture(scope="module")
def data() -> anatomy.ModelData:
    return load_model(default_hand_path(), dtype=torch.float32)


@pytest.fixture(scope="module")
def model() -> anatomy.Nimble:
    return anatomy.Nimble()


def test_loads_with_layout(data: anatomy.ModelData, model: anatomy.Nimble) -> None:
    assert data.meta["name"] == DEFAULT_HAND_NAME
    assert data.meta["units"] == "mm" and data.meta["handedness"] == "right"
    assert [t.name for t in data.tissues] == ["bones", "muscles", "skin"]
    bones = data.tissue("bones")
    assert tuple(bones.part_names) == BONE_NAMES
    assert bones.part_ids is not None
    ids = bones.part_ids
    assert torch.all(ids[1:] >= ids[:-1]) and set(ids.tolist()) == set(range(20))
    assert data.joint_names == list(NIMBLE_JOINT_NAMES) and data.parents == list(NIMBLE_PARENTS)
    assert data.pose_basis is None and "shape" in data.spaces and data.spaces["shape"].shape[0] >= 10
    skin = data.tissue("skin")
    mask = data.extras["skin_surface_mask"]
    assert mask.shape == (skin.num_vertices,) and skin.tets is not None
    assert int(skin.faces.max()) < int(mask.sum()) and bool(mask[: int(mask.sum())].all())
    assert model.num_vertices == data.num_vertices


def test_rest_pose_is_template(data: anatomy.ModelData, model: anatomy.Nimble) -> None:
    out = model()
    assert torch.allclose(out.vertices[0], data.template, atol=1e-4)
    assert (out.joints[0] - data.extras["rest_joints"]).norm(dim=1).max() < 1e-3
    assert out.keypoints.shape == (1, 21, 3)


def test_skinning_rows_sum_to_one(data: anatomy.ModelData) -> None:
    sums = torch.sparse.sum(data.skinning_weights, 1).to_dense()
    assert sums.shape == (data.num_vertices,)
    assert (sums - 1).abs().max() < 1e-5


def test_index_mcp_flexion_moves_only_the_index(data: anatomy.ModelData, model: anatomy.Nimble) -> None:
    bone = BONE_NAMES.index("pro2")
    joint = BONE_TO_JOINT[bone]
    axis = data.extras["joint_axes"][joint, 0]
    pose = torch.zeros(1, 20, 3)
    pose[0, bone] = axis * (math.pi / 2)
    rest, bent = model(), model(pose)
    b = data.tissue("bones")
    assert b.part_ids is not None
    moved = (bent.vertices[0, b.start:b.stop] - rest.vertices[0, b.start:b.stop]).norm(dim=1)
    index = torch.isin(b.part_ids, torch.tensor([bone, bone + 1, bone + 2]))
    assert moved[~index].max() < 1e-4
    assert moved[index].min() > 1.0
    tip = NIMBLE_JOINT_NAMES.index("dis2_end")
    j = rest.joints[0]
    length = (j[tip] - j[joint]).norm()
    r = j[tip] - j[joint]
    r_perp = (r - (r @ axis) * axis).norm()
    shift = (bent.joints[0, tip] - j[tip]).norm()
    assert abs(shift - math.sqrt(2) * r_perp) < 0.5  # chord of a 90 degree arc
    assert 0.9 * length < shift < 1.5 * length


def _winding_numbers(points: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Generalised winding number of a closed triangle mesh (van Oosterom-Strackee solid angles)."""
    tri = verts[faces]
    out = []
    for chunk in points.split(128):
        a, b, c = (tri[None, :, k] - chunk[:, None] for k in range(3))
        la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
        det = (a * torch.cross(b, c, dim=-1)).sum(-1)
        den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
        out.append(torch.atan2(det, den).sum(1) / (2 * math.pi))
    return torch.cat(out)


def test_bones_inside_skin(data: anatomy.ModelData) -> None:
    # exact winding numbers on the 300 bone vertices nearest the skin and every 10th other one
    # (all 3,301 take ~10 s); the skin is closed, so w = 1 inside and 0 outside
    b, s = data.tissue("bones"), data.tissue("skin")
    skin_v = data.template[s.start:s.stop][: int(data.extras["skin_surface_mask"].sum())]
    bone_v = data.template[b.start:b.stop]
    gap = torch.cdist(bone_v, skin_v).min(dim=1).values
    assert gap.min() > 1.0
    pick = torch.unique(torch.cat([gap.argsort()[:300], torch.arange(0, len(bone_v), 10)]))
    w = _winding_numbers(bone_v[pick], skin_v, s.faces)
    assert (w > 0.5).all()


def test_shape_component_0_is_hand_length_sd(data: anatomy.ModelData, model: anatomy.Nimble) -> None:
    sd = data.meta["shape_components"][0]["sd_fraction"]
    assert 0.04 < sd < 0.07
    tip = NIMBLE_JOINT_NAMES.index("dis3_end")
    rest = model()
    big = model(shape=torch.tensor([[1.0]]))
    length0 = (rest.joints[0, tip] - rest.joints[0, 0]).norm()
    length1 = (big.joints[0, tip] - big.joints[0, 0]).norm()
    assert abs(length1 / length0 - 1 - sd) < 0.1 * sd
    s = data.tissue("skin")
    y0 = rest.vertices[0, s.start:s.stop, 1]
    y1 = big.vertices[0, s.start:s.stop, 1]
    assert abs((y1.max() - y1.min()) / (y0.max() - y0.min()) - 1 - sd) < 0.1 * sd


def test_pca_mode_without_pca_extras_is_refused_clearly() -> None:
    data = load_model(default_hand_path())
    for key in [k for k in data.extras if k.startswith("pose_pca")]:
        del data.extras[key]
    with pytest.raises(ParameterError, match="pose PCA"):
        anatomy.Nimble(data, pose_mode="pca")
