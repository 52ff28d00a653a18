"""Conversions: keypoints, pose PCA, left <-> right, units."""

import torch

import anatomy
from anatomy.fitting import convert
from anatomy.io import load_model
from anatomy.io.official_nimble import mirror_hand_model_data
from anatomy.models.nimble import default_hand_path


def test_axis_angle_pca_round_trip_inside_span():
    hand = anatomy.Nimble(pose_mode="pca", dtype=torch.float64)
    theta = torch.randn(5, hand.num_pose_pca, dtype=torch.float64)
    aa = convert.pca_to_axis_angle(hand, theta)
    assert torch.allclose(hand.bone_rotations(theta), anatomy.core.rotations.axis_angle_to_matrix(aa), atol=1e-9)
    back = convert.axis_angle_to_pca(hand, aa)
    assert torch.allclose(back, theta, atol=1e-8)
    assert torch.allclose(convert.pca_to_axis_angle(hand, back), aa, atol=1e-9)


def test_left_right_mirror():
    data = load_model(default_hand_path())
    right = anatomy.Nimble(data, dtype=torch.float64)
    left = anatomy.Nimble(mirror_hand_model_data(data), dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    params = {"pose": right.sample_pose(2, generator=g).double(), "shape": torch.randn(2, 11, dtype=torch.float64),
              "global_orient": torch.randn(2, 3, dtype=torch.float64),
              "transl": torch.randn(2, 3, dtype=torch.float64) * 10}
    mirrored = convert.mirror_params(params)
    again = convert.mirror_params(mirrored)
    assert all(torch.equal(again[k], params[k]) for k in params)
    m = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    out_r = right(**params)
    out_l = left(**mirrored)
    assert torch.allclose(out_l.vertices, out_r.vertices * m, atol=1e-8)
    assert torch.allclose(convert.params_to_keypoints(left, **mirrored), out_r.keypoints * m, atol=1e-8)


def test_keypoints_round_trip_and_units():
    hand = anatomy.Nimble()
    g = torch.Generator().manual_seed(4)
    params = {"pose": hand.sample_pose(2, generator=g), "shape": torch.randn(2, 11, generator=g)}
    with torch.no_grad():
        kp = convert.params_to_keypoints(hand, **params)
    fitted = convert.keypoints_to_params(hand, kp, penetration=False)
    with torch.no_grad():
        again = convert.params_to_keypoints(hand, **fitted)
    assert float((again - kp).norm(dim=-1).mean()) < 0.5
    x = torch.randn(3, 3)
    assert torch.allclose(convert.to_mm(convert.to_m(x)), x) and torch.allclose(convert.to_m(x) * 1000, x)
