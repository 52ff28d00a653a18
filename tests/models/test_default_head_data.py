"""The embedded default head model file (anatomy/assets/head.*): the contract the Sculptor layer reads.

Built by ``templates/head/build_model.py``; checked here numerically through ``anatomy.io.load_model``
and the generic ``ArticulatedModel``, against independent float64 computations.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import pytest
import torch

from anatomy.io import load_model
from anatomy.io.model_data import ModelData
from anatomy.models import ArticulatedModel
from anatomy.models.head_limits import jaw_joint_limits

F64 = torch.float64


def head_path() -> Path:
    return Path(str(resources.files("anatomy.assets").joinpath("head.safetensors")))


@pytest.fixture(scope="module")
def data() -> ModelData:
    return load_model(head_path())


@pytest.fixture(scope="module")
def model(data: ModelData) -> ArticulatedModel:
    return ArticulatedModel(data, dtype=F64)


def dense(x: torch.Tensor) -> torch.Tensor:
    return (x.to_dense() if x.layout == torch.sparse_coo else x).to(F64)


def landmark(data: ModelData, verts: torch.Tensor, name: str) -> torch.Tensor:
    i = data.landmark_names.index(name)
    assert data.landmark_vertices is not None and data.landmark_weights is not None
    return (data.landmark_weights[i].to(F64)[:, None] * verts[data.landmark_vertices[i]]).sum(0)


def rot_x(a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=F64)


def lower_incisor(data: ModelData) -> int:
    """Global id of the highest mandible vertex within 4 mm of the pogonion's sagittal plane,
    in front of the second molars (the lower incisal edge)."""
    m = data.tissue("mandible")
    v = data.template.to(F64)
    x0 = landmark(data, v, "pogonion")[0]
    y_min = landmark(data, v, "sub_M2_R")[1]
    mv = v[m.start:m.stop]
    ok = ((mv[:, 0] - x0).abs() < 4.0) & (mv[:, 1] > y_min)
    z = torch.where(ok, mv[:, 2], torch.full_like(mv[:, 2], -1e9))
    return m.start + int(z.argmax())


# -- layout -------------------------------------------------------------------------------------------


def test_contract_layout(data: ModelData) -> None:
    assert data.meta["name"] == "anatomy-default-head" and data.meta["units"] == "mm"
    assert [t.name for t in data.tissues] == ["skull", "mandible", "face"]
    assert all(t.tets is None and t.faces.shape[1] == 3 for t in data.tissues)
    assert data.joint_names == ["root", "jaw"] and data.parents == [-1, 0]
    assert list(data.spaces) == ["shape", "trait", "expression"]
    assert data.spaces["shape"].shape[0] >= 10 and data.spaces["expression"].shape[0] >= 10
    assert data.meta["trait_names"] == ["mandibular_advancement", "mandibular_setback", "maxillary_advancement",
                                        "maxillary_impaction", "genioplasty_advancement"]
    assert len(data.meta["trait_names"]) == data.spaces["trait"].shape[0]
    names = data.meta["expression_names"]
    assert len(names) == data.spaces["expression"].shape[0] and len(set(names)) == len(names)
    for n in ("smile", "lip_pucker", "brow_raise", "frown", "eye_closure", "nose_wrinkle", "lip_corner_depress",
              "lower_lip_depress", "upper_lip_raise", "cheek_puff"):
        assert n in names
    assert data.pose_feature_joints == [1]
    assert data.pose_basis is not None and data.pose_basis.shape == (9, data.num_vertices, 3)
    groups = data.meta["landmark_groups"]
    assert sorted(groups["skeletal"] + groups["soft_tissue"]) == sorted(data.landmark_names)
    assert len(groups["skeletal"]) >= 20 and len(groups["soft_tissue"]) >= 12
    for key in ("jaw_rotation_lower", "jaw_rotation_upper", "jaw_offset_lower", "jaw_offset_upper"):
        assert data.extras[key].shape == (3,) and data.extras[key].dtype == torch.float32
    assert bool((data.extras["jaw_rotation_lower"] <= data.extras["jaw_rotation_upper"]).all())
    assert bool((data.extras["jaw_offset_lower"] <= data.extras["jaw_offset_upper"]).all())
    assert "Apache-2.0" in data.meta["licence"] and "MIT" in data.meta["licence"]
    size = head_path().stat().st_size + head_path().with_suffix(".json").stat().st_size
    assert size < 4_000_000


def test_landmarks_on_their_tissue(data: ModelData) -> None:
    assert data.landmark_vertices is not None
    face = data.tissue("face")
    soft = set(data.meta["landmark_groups"]["soft_tissue"])
    for i, n in enumerate(data.landmark_names):
        ids = data.landmark_vertices[i]
        on_face = bool(((ids >= face.start) & (ids < face.stop)).all())
        assert on_face == (n in soft), n


# -- joints and skinning ---------------------------------------------------------------------------------


def test_joint_regressor_reproduces_the_joints(data: ModelData, model: ArticulatedModel) -> None:
    v = data.template.to(F64)
    root = 0.5 * (landmark(data, v, "porion_R") + landmark(data, v, "porion_L"))
    m = data.tissue("mandible")
    mv = v[m.start:m.stop]
    centres = []
    for side in ("R", "L"):  # condylar head: within 12 mm of condylion, less than 8 mm below it
        c = landmark(data, v, f"condylion_{side}")
        sel = ((mv - c).norm(dim=1) < 12.0) & (mv[:, 2] > c[2] - 8.0)
        centres.append(mv[sel].mean(0))
    jaw = 0.5 * (centres[0] + centres[1])
    jr = dense(data.joint_regressor)
    joints = jr @ v
    assert torch.allclose(joints[0], root, atol=1e-4) and torch.allclose(joints[1], jaw, atol=1e-4)
    assert root.norm() < 1e-3  # the frame's origin is mid-porion
    s, f = data.tissue("skull"), data.tissue("face")
    assert jr[0, s.stop:].abs().max() == 0 and jr[1, :m.start].abs().max() == 0 and jr[1, f.start:].abs().max() == 0
    out = model()
    assert torch.allclose(out.joints[0], joints, atol=1e-4)
    assert torch.allclose(data.extras["rest_joints"].to(F64), joints, atol=1e-3)


def test_skinning_weights(data: ModelData) -> None:
    w = dense(data.skinning_weights)
    s, m, f = (data.tissue(n) for n in ("skull", "mandible", "face"))
    assert torch.equal(w[s.start:s.stop], torch.tensor([[1.0, 0.0]], dtype=F64).expand(s.num_vertices, 2))
    assert torch.equal(w[m.start:m.stop], torch.tensor([[0.0, 1.0]], dtype=F64).expand(m.num_vertices, 2))
    assert (w.sum(1) - 1).abs().max() < 1e-6 and w.min() >= 0
    jaw_w = w[:, 1]
    up, lo = data.extras["lip_upper_ids"], data.extras["lip_lower_ids"]
    corners = torch.tensor(sorted(set(up.tolist()) & set(lo.tolist())))
    up_only, lo_only = up[~torch.isin(up, corners)], lo[~torch.isin(lo, corners)]
    assert jaw_w[lo_only].min() > 0.95 and jaw_w[up_only].max() < 0.05
    v = data.template.to(F64)
    for name, lo_w, hi_w in (("pronasale", 0.0, 0.05), ("soft_nasion", 0.0, 0.05), ("labrale_superius", 0.0, 0.1),
                             ("labrale_inferius", 0.9, 1.0)):
        i = data.landmark_names.index(name)
        assert data.landmark_vertices is not None
        wi = jaw_w[data.landmark_vertices[i]].mean()
        assert lo_w <= wi <= hi_w, (name, float(wi))
    del v, f


def test_lips_separate_when_the_mouth_opens(data: ModelData, model: ArticulatedModel) -> None:
    up, lo = data.extras["lip_upper_ids"], data.extras["lip_lower_ids"]
    v = data.template.to(F64)
    pair = torch.cdist(v[lo], v[up]).argmin(1)
    gap0 = (v[lo] - v[up[pair]]).norm(dim=1)
    pose = torch.zeros(1, 2, 3, dtype=F64)
    pose[0, 1, 0] = -0.5 * float(data.extras["jaw_rotation_upper"][0])  # head frame: opening is about -x
    out = model(pose).vertices[0]
    gap = (out[lo] - out[up[pair]]).norm(dim=1)
    mid = gap0 < 1e-3
    inner = (v[lo, 0] - v[lo, 0].mean()).abs() < 10.0  # the middle of the slit
    assert gap[mid & inner].min() > 5.0


# -- spaces --------------------------------------------------------------------------------------------------


def test_space_bases(data: ModelData) -> None:
    s, m, f = (data.tissue(n) for n in ("skull", "mandible", "face"))
    for name, b in data.spaces.items():
        assert torch.isfinite(b.to(F64)).all(), name
        assert b.to(F64).norm(dim=2).max(dim=1).values.min() > 0.1, name  # every component moves something
    e = data.spaces["expression"].to(F64)
    assert e[:, : f.start].abs().max() == 0
    peaks = e[:, f.start:].norm(dim=2).max(dim=1).values
    assert bool(((peaks >= 5.0) & (peaks <= 10.0)).all())
    sh = data.spaces["shape"].to(F64).reshape(data.spaces["shape"].shape[0], -1)
    gram = sh @ sh.T  # PCA directions scaled by their SDs: orthogonal, decreasing
    off = gram - torch.diag(torch.diag(gram))
    assert off.abs().max() < 1e-3 * gram.diag().max()
    assert bool((gram.diag()[1:] <= gram.diag()[:-1] * 1.001).all())
    assert sh[:, : 3 * m.stop].abs().max() > 0.5 and sh[:, 3 * f.start:].abs().max() > 0.5  # bone and skin
    pb = data.pose_basis
    assert pb is not None and torch.isfinite(pb.to(F64)).all() and pb[:, : f.start].abs().max() == 0
    del s


def _trait(data: ModelData, name: str) -> tuple[torch.Tensor, dict]:
    k = data.meta["trait_names"].index(name)
    info = data.meta["trait_components"][k]
    return data.spaces["trait"][k].to(F64), info


@pytest.mark.parametrize("name", ["mandibular_advancement", "mandibular_setback", "maxillary_advancement",
                                  "maxillary_impaction", "genioplasty_advancement"])
def test_trait_moves_its_segment(data: ModelData, model: ArticulatedModel, name: str) -> None:
    basis, info = _trait(data, name)
    v = data.template.to(F64)
    s, m = data.tissue("skull"), data.tissue("mandible")
    move = torch.tensor(info["movement_per_unit_mm"], dtype=F64)
    coeff = torch.zeros(1, len(data.meta["trait_names"]), dtype=F64)
    coeff[0, data.meta["trait_names"].index(name)] = 1.0
    out = model(trait=coeff).vertices[0]
    d = out - v
    assert torch.allclose(d, basis, atol=5e-3)  # the layer adds exactly the stored basis
    bony = landmark(data, out, info["bony_landmark"]) - landmark(data, v, info["bony_landmark"])
    assert torch.allclose(bony, move, atol=0.05), (name, bony)
    other = m if info["bone"] == "skull" else s
    assert d[other.start:other.stop].abs().max() == 0
    for lm in ("nasion", "porion_R", "condylion_R", "condylion_L"):  # unmoved reference points
        assert (landmark(data, out, lm) - landmark(data, v, lm)).norm() < 0.05, (name, lm)
    u = move / move.norm()
    for soft, vid in info["soft_tissue_control_vertex"].items():
        ratio = float(d[vid] @ u) / float(move.norm())
        assert abs(ratio - info["soft_tissue_ratio_realised"][soft]) < 0.01
        assert abs(ratio - info["soft_tissue_ratio_target"][soft]) < 0.1, (name, soft, ratio)
    if name == "genioplasty_advancement":
        assert (landmark(data, out, "infradentale") - landmark(data, v, "infradentale")).norm() < 0.1


def test_mandibular_advancement_soft_pogonion_ratio(data: ModelData) -> None:
    _, info = _trait(data, "mandibular_advancement")
    assert info["movement_per_unit_mm"] == [0.0, 5.0, 0.0]
    assert 0.9 <= info["soft_tissue_ratio_realised"]["soft_pogonion"] <= 1.0  # Joss et al. 2010: ~1:1
    assert 0.6 <= info["soft_tissue_ratio_realised"]["labrale_inferius"] <= 1.0
    _, mx = _trait(data, "maxillary_advancement")
    assert 0.5 <= mx["soft_tissue_ratio_realised"]["labrale_superius"] <= 0.8  # Mansour et al. 1983


# -- jaw -----------------------------------------------------------------------------------------------------


def test_opening_to_the_limit(data: ModelData, model: ArticulatedModel) -> None:
    limit = float(data.extras["jaw_rotation_upper"][0])  # anatomical opening angle, positive opens
    assert limit > 0 and float(data.extras["jaw_rotation_lower"][0]) == 0.0
    # the layer's limits read the angles in JAW_FRAME: head-frame axis-angle (-a, 0, 0) is opening a
    lim = jaw_joint_limits(data.extras)
    angles = lim.angles(rot_x(-limit)[None, None])[0, 0]
    assert torch.allclose(angles, torch.tensor([limit, 0.0, 0.0], dtype=F64), atol=1e-6)
    assert float(lim.penalty(rot_x(-limit)[None, None])[0]) < 1e-9
    assert float(lim.penalty(rot_x(-limit - 0.1)[None, None])[0]) > 0
    iid = lower_incisor(data)
    pose = torch.zeros(1, 2, 3, dtype=F64)
    pose[0, 1, 0] = -limit
    out = model(pose)
    assert torch.isfinite(out.vertices).all()
    d = out.vertices[0, iid] - data.template.to(F64)[iid]
    stated = data.meta["jaw"]["max_interincisal_opening_mm"]
    assert abs(float(d.norm()) - stated) < 0.1 * stated
    assert float(d[2]) < -0.5 * stated  # mostly downwards
    s = data.tissue("skull")
    assert (out.vertices[0, : s.stop] - data.template.to(F64)[: s.stop]).abs().max() < 1e-9
    # protrusive glide: the whole mandible moves by the joint offset
    off = torch.zeros(1, 2, 3, dtype=F64)
    off[0, 1] = data.extras["jaw_offset_upper"].to(F64)
    glide = model(joint_offsets=off).vertices[0, iid] - data.template.to(F64)[iid]
    assert torch.allclose(glide, off[0, 1], atol=1e-6)


def test_jaw_posing_matches_a_float64_reference(data: ModelData, model: ArticulatedModel) -> None:
    """Face under a jaw rotation = (1 - w) x' + w (R (x' - J) + J), x' = x + P vec(R - I)."""
    angle = -0.6 * float(data.extras["jaw_rotation_upper"][0])
    r = rot_x(angle)
    pose = torch.zeros(1, 2, 3, dtype=F64)
    pose[0, 1, 0] = angle
    out = model(pose).vertices[0]
    v = data.template.to(F64)
    assert data.pose_basis is not None
    x = v + torch.einsum("p,pvc->vc", (r - torch.eye(3, dtype=F64)).reshape(9), data.pose_basis.to(F64))
    jaw = dense(data.joint_regressor)[1] @ v
    w = dense(data.skinning_weights)[:, 1:]
    ref = (1 - w) * x + w * ((x - jaw) @ r.T + jaw)
    assert torch.allclose(out, ref, atol=1e-6)
    corr = x - v
    assert corr.norm(dim=1).max() > 0.5  # the correctives do something under opening


def test_correctives_reduce_the_error(data: ModelData) -> None:
    rep = data.meta["pose_correctives"]
    for split in ("train_error_mm", "test_error_mm"):
        e = rep[split]
        assert e["corrected_mean"] < 0.5 * e["lbs_mean"]
