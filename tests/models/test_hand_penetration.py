"""Penetration on the embedded default hand: rest pose clean, fix-up and penalty work on real poses."""

from __future__ import annotations

import pytest
import torch

import anatomy


@pytest.fixture(scope="module")
def hand() -> anatomy.Nimble:
    model = anatomy.Nimble()
    model.penetration()  # build the grids once for the module
    return model


def test_rest_pose_is_free_of_penetration(hand: anatomy.Nimble) -> None:
    out = hand()
    d = hand.penetration().depths(out.bones, out.skin, out.muscles)
    assert float(d.bone_bone.max()) < 0.5  # articular surfaces of the source meshes nearly touch
    assert d.skin_bone is not None and float(d.skin_bone.max()) == 0.0
    assert d.muscle_bone is not None and float(d.muscle_bone.max()) == 0.0
    assert d.skin_muscle is not None and float(d.skin_muscle.max()) == 0.0


def test_push_skin_out_removes_skin_inside_muscle(hand: anatomy.Nimble) -> None:
    pose = hand.sample_pose(6, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = hand(pose)
        pen = hand.penetration()
        before = pen.depths(out.bones, out.skin, out.muscles)
        fixed = hand.push_skin_out(out)
        after = pen.depths(fixed.bones, fixed.skin, fixed.muscles)
    assert before.skin_muscle is not None and after.skin_muscle is not None and after.skin_bone is not None
    assert float(before.skin_muscle.max()) > 0.5  # plain LBS pushes muscle through the skin here
    assert float(after.skin_muscle.max()) == 0.0
    assert float(after.skin_bone.max()) == 0.0
    # only the skin moved, and only a small part of it
    assert torch.equal(fixed.bones, out.bones) and torch.equal(fixed.muscles, out.muscles)
    moved = (fixed.skin - out.skin).norm(dim=-1) > 1e-6
    assert 0 < float(moved.float().mean()) < 0.1


def test_penalty_gradient_separates_colliding_fingers(hand: anatomy.Nimble) -> None:
    """A few gradient steps on the pose remove bone-bone penetration of sampled poses."""
    pen = hand.penetration()
    pose = hand.sample_pose(40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        depth = pen.depths(hand(pose).bones).bone_bone.amax(1)
    pose = pose[depth > 0.8][:4].clone().requires_grad_()
    assert pose.shape[0] > 0
    start = pen.penalty(hand(pose).bones, margin=0.2).detach()
    opt = torch.optim.Adam([pose], lr=0.02)
    for _ in range(25):
        opt.zero_grad()
        loss = pen.penalty(hand(pose).bones, margin=0.2).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = pen.penalty(hand(pose).bones, margin=0.2)
        depth_after = pen.depths(hand(pose).bones).bone_bone.amax(1)
    assert bool((end < 0.1 * start).all())
    assert float(depth_after.max()) < 0.5


def test_separate_bones_and_collision_free_sampling(hand: anatomy.Nimble) -> None:
    pen = hand.penetration()
    pose = hand.sample_pose(12, generator=torch.Generator().manual_seed(2))
    separated = hand.separate_bones(pose, steps=30)
    with torch.no_grad():
        before = pen.depths(hand(pose).bones).bone_bone.amax(1)
        after = pen.depths(hand(separated).bones).bone_bone.amax(1)
        penalty_before = pen.penalty(hand(pose).bones)  # margin 0: penetration only
        penalty_after = pen.penalty(hand(separated).bones)
    untouched = before <= 0.5
    assert 0 < int(untouched.sum()) < len(pose)
    assert float(penalty_after.sum()) < 0.2 * float(penalty_before.sum())
    assert float(after.max()) < float(before.max())
    assert torch.equal(separated[untouched], pose[untouched])
    assert torch.equal(separated[:, 0], pose[:, 0])  # the root is not moved
    limits = hand.joint_limits()
    excess = limits.violation(anatomy.core.rotations.axis_angle_to_matrix(separated))
    assert float(excess.max()) < 0.02  # radians; the limit penalty keeps the poses inside
    # collision_free sampling = the same draws passed through separate_bones
    sampled = hand.sample_pose(12, generator=torch.Generator().manual_seed(2), collision_free=True)
    torch.testing.assert_close(sampled, hand.separate_bones(pose), rtol=0, atol=1e-6)
    with pytest.raises(anatomy.ParameterError, match="axis-angle"):
        anatomy.Nimble(pose_mode="pca").separate_bones(pose)
