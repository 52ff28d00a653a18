"""Joint limits and pose sampling of the embedded default hand."""

from __future__ import annotations

import math

import pytest
import torch

import anatomy
from anatomy.core.errors import ParameterError
from anatomy.core.rotations import axis_angle_to_matrix


@pytest.fixture(scope="module")
def hand() -> anatomy.Nimble:
    return anatomy.Nimble(dtype=torch.float64)


def test_rest_is_inside_and_flexion_beyond_the_range_is_penalised(hand: anatomy.Nimble) -> None:
    lim = hand.joint_limits()
    assert lim.num_joints == 20 and lim.frames.dtype == torch.float64
    rest = torch.eye(3, dtype=torch.float64).expand(1, 20, 3, 3)
    assert float(lim.penalty(rest)) < 1e-12
    b = hand.bone_names.index("int2")  # index PIP: a hinge, flexion range [0, 90 deg] in MyoHand
    assert float(lim.upper[b, 0]) == pytest.approx(math.pi / 2, abs=1e-5)
    assert float(lim.upper[b, 1]) == 0.0 and float(lim.lower[b, 1]) == 0.0
    pose = torch.zeros(1, 20, 3, dtype=torch.float64)
    pose[0, b] = lim.frames[b, :, 0] * math.radians(110)  # 20 deg past the limit about the flexion axis
    past = math.radians(110) - float(lim.upper[b, 0])
    assert float(lim.penalty(axis_angle_to_matrix(pose))) == pytest.approx(past**2, rel=1e-9)
    clamped = lim.clamp(axis_angle_to_matrix(pose))
    assert float(lim.angles(clamped)[0, b, 0]) == pytest.approx(float(lim.upper[b, 0]), abs=1e-9)


def test_sampled_poses_respect_the_limits_and_flex_toward_the_palm(hand: anatomy.Nimble) -> None:
    poses = hand.sample_pose(200, generator=torch.Generator().manual_seed(3))
    again = hand.sample_pose(200, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(poses, again, atol=0, rtol=0)
    lim = hand.joint_limits()
    assert float(lim.penalty(axis_angle_to_matrix(poses)).max()) < 1e-10
    assert float(poses[:, 0].abs().max()) == 0.0
    # fingertips of flexed fingers move palmar (+z in the hand frame) relative to the rest pose
    out = hand(poses)
    rest = hand()
    tips = [hand.joint_names.index(n) for n in ("dis2_end", "dis3_end", "dis4_end", "dis5_end")]
    dz = (out.joints[:, tips, 2] - rest.joints[:, tips, 2]).mean()
    assert float(dz) > 5.0


def test_models_without_axes_say_so() -> None:
    from tests.models.test_nimble_official import make_nimble_dict

    official = anatomy.Nimble.from_official(make_nimble_dict(), num_betas=4)
    with pytest.raises(ParameterError, match="joint axes"):
        official.joint_limits()
    with pytest.raises(ParameterError, match="at least 1"):
        anatomy.Nimble().sample_pose(0)


def test_default_hand_pose_pca_matches_axis_angle_and_closes_the_hand() -> None:
    pca = anatomy.Nimble(pose_mode="pca", dtype=torch.float64)
    aa = anatomy.Nimble(dtype=torch.float64)
    theta = torch.zeros(2, 30, dtype=torch.float64)
    theta[1, 0] = 1.5
    basis = pca.pca_scaled_basis
    full = theta @ basis + pca.pca_offset  # (2, 57) by the official formula
    rows = torch.cat([torch.zeros(2, 1, 3, dtype=torch.float64), full.view(2, 19, 3)], 1)
    torch.testing.assert_close(pca(theta).vertices, aa(rows).vertices, atol=1e-9, rtol=0)
    # the leading component opens/closes the hand: fingertips move by centimetres along it
    tips = [pca.joint_names.index(n) for n in ("dis2_end", "dis3_end", "dis4_end", "dis5_end")]
    lo, hi = torch.zeros(1, 30, dtype=torch.float64), torch.zeros(1, 30, dtype=torch.float64)
    lo[0, 0], hi[0, 0] = -2.0, 2.0
    moved = (pca(hi).joints[0, tips] - pca(lo).joints[0, tips]).norm(dim=-1)
    assert float(moved.mean()) > 20.0


def test_missing_or_batch_one_pose_broadcasts_against_shape(hand: anatomy.Nimble) -> None:
    shape = torch.randn(4, 11, dtype=torch.float64)
    pose = hand.sample_pose(1, generator=torch.Generator().manual_seed(1)).double()
    broadcast = hand(pose, shape).vertices
    stacked = hand(pose.expand(4, -1, -1), shape).vertices
    torch.testing.assert_close(broadcast, stacked, atol=0, rtol=0)
    rest = hand(None, shape).vertices
    torch.testing.assert_close(rest, hand(torch.zeros(4, 20, 3, dtype=torch.float64), shape).vertices,
                               atol=1e-12, rtol=0)
