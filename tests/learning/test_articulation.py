"""anatomy.learning articulation: pose PCA, SMPL-style weights / correctives / regressor / poses learned
from synthetic posed hands made by the default hand with a known pose corrective."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import anatomy
from anatomy.core.errors import ParameterError, ShapeError
from anatomy.core.kinematics import KinematicTree, forward_kinematics
from anatomy.core.rotations import axis_angle_to_matrix
from anatomy.io import load_model, save_model
from anatomy.io.official_nimble import BONE_TO_JOINT
from anatomy.learning import (
    Registration,
    bulge_correctives,
    fit_linear_space,
    fit_poses,
    in_model_frame,
    learn_articulation,
    learn_model,
    learn_posed_hand,
    pose_pca,
    pose_pca_coefficients,
    with_learned_articulation,
)
from anatomy.learning.articulation import simplex_lstsq
from anatomy.learning.pose_fit import posed_vertices
from anatomy.models.nimble import default_hand_path

SUBJECTS, TRAIN, HELD = 4, 8, 3
ROWS = [0, 4, 5, 6, 7, 8, 9, 10, 11]  # root, index and middle fingers move; the rest stay flat


def _generator(base: anatomy.io.ModelData) -> anatomy.io.ModelData:
    """The base hand with a known corrective (:func:`bulge_correctives`: 4 mm bulges at every joint)."""
    feats = [j for j in BONE_TO_JOINT if j != 0]
    joints = base.joint_regressor.to_dense().double() @ base.template.double()
    data = copy.copy(base)
    data.pose_basis = bulge_correctives(base.template, base.skinning_weights, joints, base.parents, feats,
                                        rigid=base.tissue_mask("bones")).float()
    data.pose_feature_joints = feats
    return data


def _joints(bone_pose: torch.Tensor) -> torch.Tensor:
    out = bone_pose.new_zeros(bone_pose.shape[0], 25, 3)
    out[:, list(BONE_TO_JOINT)] = bone_pose
    return out


@pytest.fixture(scope="module")
def setup() -> dict:
    base = load_model(default_hand_path())
    truth = _generator(base)
    model = anatomy.Nimble(truth, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    per = TRAIN + HELD
    shape = torch.randn(SUBJECTS, 11, generator=g, dtype=torch.float64)
    pose = model.sample_pose(SUBJECTS * per, generator=g).double()
    keep = torch.zeros(20, dtype=torch.bool)
    keep[ROWS] = True
    pose[:, ~keep] = 0.0
    pose[:, 0] = 0.3 * torch.randn(SUBJECTS * per, 3, generator=g, dtype=torch.float64)
    index = torch.arange(SUBJECTS * per) % per
    pose[index == 0, 1:] = 0.0  # every subject's first scan is a rest scan
    sub = torch.arange(SUBJECTS).repeat_interleave(per)
    transl = 5.0 * torch.randn(SUBJECTS * per, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = model(pose, shape[sub], transl=transl)
    truej = _joints(pose)
    noisy = truej + 0.03 * torch.randn(truej.shape, generator=g, dtype=torch.float64) * (truej.abs().sum(-1, True) > 0)
    noisy[index == 0, 1:] = 0.0
    tnoisy = transl + 0.5 * torch.randn(transl.shape, generator=g, dtype=torch.float64)
    train = index < TRAIN
    art = learn_articulation(out.vertices[train], noisy[train], sub[train], base.template, base.skinning_weights,
                             base.joint_regressor, base.parents, transl=tnoisy[train], iterations=2, fit_steps=4,
                             rigid_vertices=base.tissue_mask("bones"))
    return {"base": base, "truth": truth, "art": art, "meshes": out.vertices, "joints": out.joints, "pose": truej,
            "noisy": noisy, "transl": transl, "tnoisy": tnoisy, "sub": sub, "train": train, "shape": shape}


def test_simplex_lstsq_matches_a_brute_force_reference() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 12, 3, generator=g, dtype=torch.float64)
    y = torch.randn(50, 12, generator=g, dtype=torch.float64)
    gram, rhs = a.transpose(1, 2) @ a, (a.transpose(1, 2) @ y[..., None])[..., 0]
    w = simplex_lstsq(gram, rhs, torch.ones(50, 3, dtype=torch.bool))
    assert bool((w >= 0).all()) and torch.allclose(w.sum(1), torch.ones(50, dtype=torch.float64))
    # reference: a fine grid over the 2-simplex
    s = torch.linspace(0, 1, 201, dtype=torch.float64)
    u, v = torch.meshgrid(s, s, indexing="ij")
    grid = torch.stack([u, v, 1 - u - v], -1).reshape(-1, 3)
    grid = grid[grid[:, 2] >= 0]
    cost = ((a[:, None] @ grid[None, :, :, None])[..., 0] - y[:, None]).pow(2).sum(-1)
    best = cost.min(1).values
    mine = ((a @ w[..., None])[..., 0] - y).pow(2).sum(-1)
    assert bool((mine <= best + 1e-9).all())


def test_pose_pca_round_trip_through_nimble(tmp_path: Path) -> None:
    base = load_model(default_hand_path())
    g = torch.Generator().manual_seed(3)
    train = 0.3 * torch.randn(12, 20, 3, generator=g, dtype=torch.float64)
    extras, report = pose_pca(train, variance=1.0)
    assert report["components"] == 11 and extras["pose_pca_basis"].shape == (30, 57)
    basis = extras["pose_pca_basis"]
    assert torch.allclose(basis @ basis.T, torch.eye(30, dtype=torch.float64), atol=1e-12)
    data = copy.copy(base)
    data.extras = {**base.extras, **extras}
    pose = train[:2].clone()
    pose[:, 0] = 0.0  # pca mode has a zero root
    theta = pose_pca_coefficients(extras, pose)
    assert float(theta[:, 11:].abs().max()) == 0.0
    pca = anatomy.Nimble(data, pose_mode="pca", dtype=torch.float64)
    aa = anatomy.Nimble(data, dtype=torch.float64)
    assert torch.allclose(pca.bone_rotations(theta), axis_angle_to_matrix(pose), atol=1e-10)
    with torch.no_grad():
        assert torch.allclose(pca(theta).vertices, aa(pose).vertices, atol=1e-9)
    # the training coefficients have unit variance per learned component
    coeffs = pose_pca_coefficients(extras, train)[:, :11]
    assert torch.allclose(coeffs.var(0), torch.ones(11, dtype=torch.float64), atol=1e-9)
    with pytest.raises(ShapeError, match="poses must be"):
        pose_pca(torch.zeros(5, 20))
    with pytest.raises(ShapeError, match="at least 2"):
        pose_pca(torch.zeros(1, 20, 3))


def test_learned_rig_is_valid_and_close_to_the_generator(setup: dict) -> None:
    art, base = setup["art"], setup["base"]
    w = art.weights
    assert bool((w >= 0).all()) and torch.allclose(w.sum(1), torch.ones(w.shape[0], dtype=torch.float64))
    assert int((w > 0).sum(1).max()) <= 4
    assert bool((art.regressor >= 0).all()) and int((art.regressor > 0).sum(1).max()) <= 8
    assert torch.allclose(art.regressor.sum(1), torch.ones(25, dtype=torch.float64))
    assert art.feature_joints == (5, 6, 7, 8, 10, 11, 12, 13)
    assert art.history[-1] < 0.08  # training meshes reproduced to hundredths of a mm
    # weights of the vertices moved only by the moving joints come back
    w0 = base.skinning_weights.to_dense().double()
    moving = w0[:, [0, 5, 6, 7, 8, 10, 11, 12, 13]].sum(1) > 0.999
    assert float((w - w0)[moving].abs().sum(1).mean()) < 0.02
    # posed joints of the re-fitted training poses (frame-free) match the truth
    tree = KinematicTree.from_parents(base.parents)
    train = setup["train"]
    pj = forward_kinematics(axis_angle_to_matrix(art.poses), art.rest_joints[art.subjects], tree,
                            translation=art.transl).positions
    err = float((pj - setup["joints"][train]).norm(dim=-1).mean())
    assert err < 1.0
    init = forward_kinematics(axis_angle_to_matrix(setup["noisy"][train]), art.rest_joints[art.subjects], tree,
                              translation=setup["tnoisy"][train]).positions
    assert err < 0.3 * float((init - setup["joints"][train]).norm(dim=-1).mean())


def test_learned_correctives_reproduce_held_out_poses(setup: dict) -> None:
    art, base = setup["art"], setup["base"]
    held = ~setup["train"]
    sub = setup["sub"][held]
    tree = KinematicTree.from_parents(base.parents)
    ids = torch.randperm(base.num_vertices, generator=torch.Generator().manual_seed(0))[:1500]

    def error(basis: torch.Tensor | None, feats: tuple[int, ...]) -> tuple[float, float]:
        p, t, _ = fit_poses(setup["meshes"][held], art.rest[sub], art.rest_joints[sub], art.weights, base.parents,
                            setup["noisy"][held], transl=setup["tnoisy"][held], free=[0, *art.feature_joints],
                            pose_basis=basis, feature_joints=feats, vertex_ids=ids, steps=6)
        rot = axis_angle_to_matrix(p)
        out, _ = posed_vertices(art.rest[sub], art.rest_joints[sub], art.weights, tree, rot, t, basis, feats)
        joints = forward_kinematics(rot, art.rest_joints[sub], tree, translation=t).positions
        return (float((out - setup["meshes"][held]).norm(dim=-1).mean()),
                float((joints - setup["joints"][held]).norm(dim=-1).mean()))

    (with_c, joints_c), (without, _) = error(art.pose_basis, art.feature_joints), error(None, ())
    assert with_c < 0.15 and without > 3 * with_c
    # the bones carry no correctives, so the held-out fits place the joints too (0.48 mm when they do)
    assert joints_c < 0.4


def test_model_file_loads_in_nimble(setup: dict, tmp_path: Path) -> None:
    art, base = setup["art"], setup["base"]
    shape = fit_linear_space(art.rest, components=3)
    extras, _ = pose_pca(art.poses[:, list(BONE_TO_JOINT)])
    data = with_learned_articulation(base, shape, art.weights, art.regressor, art.pose_basis, art.feature_joints,
                                     pose_extras=extras, provenance={"test": True})
    save_model(data, tmp_path / "hand")
    back = load_model(tmp_path / "hand")
    assert back.meta["provenance"]["learned"]["test"] is True and back.pose_feature_joints == list(art.feature_joints)
    hand = anatomy.Nimble(back, dtype=torch.float64)
    assert hand.space_sizes["shape"] == 3
    # a training mesh is reproduced by the layer from its learned rest mesh's shape coefficients and pose
    i = 1
    s = int(art.subjects[i])
    coeffs = shape.coefficients(art.rest[s:s + 1])
    with torch.no_grad():
        out = hand(art.poses[i:i + 1, list(BONE_TO_JOINT)], coeffs, transl=art.transl[i:i + 1])
    assert float((out.vertices[0] - setup["meshes"][setup["train"]][i]).norm(dim=-1).mean()) < 0.1
    anatomy.Nimble(back, pose_mode="pca")


def test_registered_global_pose_folds_into_the_root_row() -> None:
    # anatomy register writes world meshes made with global_orient, transl and scale: in_model_frame
    # turns them into the pose-only meshes that learning compares with the layer
    hand = anatomy.Nimble(dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    pose = hand.sample_pose(1, generator=g).double()
    pose[:, 0] = torch.tensor([0.2, -0.1, 0.3], dtype=torch.float64)
    shape = torch.randn(1, 4, generator=g, dtype=torch.float64)
    params = {"pose": pose, "shape": shape, "global_orient": torch.tensor([[0.5, 1.0, -0.3]], dtype=torch.float64),
              "transl": torch.tensor([[10.0, -5.0, 100.0]], dtype=torch.float64),
              "scale": torch.tensor([1.1], dtype=torch.float64)}
    with torch.no_grad():
        world = hand(**params).vertices[0]
        verts, folded = in_model_frame(world.numpy(), {k: v.tolist() for k, v in params.items()})
        local = hand(folded, shape).vertices[0]
    assert float((verts - local).abs().max()) < 1e-4 and float((verts - world).abs().max()) > 50.0
    assert torch.allclose(folded[:, 1:], pose[:, 1:])
    same, unchanged = in_model_frame(world.numpy(), {"pose": pose.tolist()})  # nothing to fold
    assert torch.equal(same, world) and torch.equal(unchanged, pose)
    with pytest.raises(ParameterError, match="scale must be positive"):
        in_model_frame(world.numpy(), {"pose": pose.tolist(), "scale": [0.0]})


def test_bad_input() -> None:
    base = load_model(default_hand_path())
    v = base.num_vertices
    args = (base.template, base.skinning_weights, base.joint_regressor, base.parents)
    meshes = base.template.double().expand(6, -1, -1)
    poses = torch.zeros(6, 25, 3, dtype=torch.float64)
    with pytest.raises(ShapeError, match=f"\\(N, {v}, 3\\)"):
        learn_articulation(meshes[:, :10], poses, torch.zeros(6, dtype=torch.long), *args)
    with pytest.raises(ShapeError, match="poses must be"):
        learn_articulation(meshes, poses[:, :20], torch.zeros(6, dtype=torch.long), *args)
    with pytest.raises(ShapeError, match="subjects must be"):
        learn_articulation(meshes, poses, torch.zeros(5, dtype=torch.long), *args)
    with pytest.raises(ParameterError, match="at least 4 meshes"):
        learn_articulation(meshes[:3], poses[:3], torch.zeros(3, dtype=torch.long), *args)
    with pytest.raises(ParameterError, match="2 or more"):
        learn_articulation(meshes, poses, torch.arange(6), *args)
    with pytest.raises(ParameterError, match="NaN"):
        learn_articulation(meshes, poses.clone().fill_(float("nan")), torch.zeros(6, dtype=torch.long), *args)
    with pytest.raises(ShapeError, match="rigid_vertices must be"):
        learn_articulation(meshes, poses, torch.zeros(6, dtype=torch.long), *args, rigid_vertices=torch.ones(7) > 0)
    with pytest.raises(ShapeError, match="Nimble axis-angle"):
        learn_posed_hand(base, meshes, torch.zeros(6, 19, 3), ["a"] * 6)
    with pytest.raises(ParameterError, match="at least 2 subjects"):
        learn_posed_hand(base, meshes, torch.zeros(6, 20, 3), ["a"] * 6)


def test_learn_model_takes_posed_hand_registrations(setup: dict) -> None:
    """learn_model's hand branch: registrations with their poses (phantom manifests' params.pose) go
    through learn_posed_hand; the model file has learned weights, correctives and a pose PCA."""
    base = setup["base"]
    per = TRAIN + HELD
    regs = []
    for i in [0, 1, 2, 3, per, per + 1, per + 2, per + 3]:
        bones = setup["pose"][i:i + 1, list(BONE_TO_JOINT)]
        regs.append(Registration(f"sub-{int(setup['sub'][i])}", f"pose{i % per:02d}", Path("."),
                                 setup["meshes"][i].numpy(), {"params": {"pose": bones.tolist()}}))
    data, report = learn_model(regs, base)
    assert report["posed_meshes"] == 8 and report["subjects"] == 2 and report["shape"]["components"] == 1
    assert report["feature_joints"] == ["met2", "pro2", "int2", "dis2", "met3", "pro3", "int3", "dis3"]
    assert report["training_error_mm"][-1] < 0.2
    assert data.pose_basis is not None and data.pose_basis.shape == (72, base.num_vertices, 3)
    assert data.meta["provenance"]["learned"]["articulation"]["subjects"] == 2
    bones = base.tissue_mask("bones")  # rigid: no correctives on the bones, joints regressed from bone vertices
    spec = base.tissue("bones")
    assert int(bones.sum()) == spec.stop - spec.start and bool(bones[spec.start:spec.stop].all())
    assert float(data.pose_basis[:, bones].abs().max()) == 0.0 and float(data.pose_basis[:, ~bones].abs().max()) > 0.1
    reg = data.joint_regressor.to_dense()
    assert bool((reg[:, ~bones] == 0).all()) and torch.allclose(reg.sum(1), torch.ones(25), atol=1e-5)
    hand = anatomy.Nimble(data, pose_mode="pca", dtype=torch.float64)
    assert hand.num_pose_pca == 30
