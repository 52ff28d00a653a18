"""The fits' fast kernels against the layer and the core: partial forward, elementwise rotations, Jacobians."""

import torch

import anatomy
from anatomy.core.kinematics import forward_kinematics
from anatomy.core.rotations import axis_angle_to_matrix, euler_to_matrix
from anatomy.fitting import FitOptions
from anatomy.fitting.fit_variables import surface_ids
from anatomy.fitting.hand_lm import HandKeypointSolver
from anatomy.fitting.partial_forward import PartialForward
from anatomy.fitting.small_rotations import Chain, limit_penalty, mm3, rodrigues

_HAND64 = None


def hand64() -> anatomy.Nimble:
    global _HAND64
    if _HAND64 is None:
        _HAND64 = anatomy.Nimble(dtype=torch.float64)
    return _HAND64


def test_rodrigues_mm3_chain_match_core():
    aa = torch.randn(5, 25, 3, dtype=torch.float64)
    aa[0, 0] = 0.0
    aa[1, 0] = torch.tensor([1e-5, 0.0, 0.0])
    rot = rodrigues(aa)
    assert torch.allclose(rot, axis_angle_to_matrix(aa), atol=1e-12)
    assert torch.allclose(mm3(rot, rot.transpose(-1, -2)), rot @ rot.transpose(-1, -2), atol=1e-12)
    hand = hand64()
    joints = hand.joint_template.expand(5, -1, -1) + torch.randn(5, 25, 3, dtype=torch.float64)
    scale, transl = torch.rand(5, dtype=torch.float64) + 0.5, torch.randn(5, 3, dtype=torch.float64)
    pos, glob = Chain(hand.tree, joints.device)(rot, joints, scale=scale, transl=transl)
    kin = forward_kinematics(rot, joints, hand.tree, scale=scale, translation=transl)
    assert torch.allclose(pos, kin.positions, atol=1e-9) and torch.allclose(glob, kin.rotations, atol=1e-12)
    limits = hand.joint_limits()
    bones = axis_angle_to_matrix(aa[:, :20])
    assert torch.allclose(limit_penalty(limits.frames, limits.lower, limits.upper, bones), limits.penalty(bones),
                          atol=1e-9)


def test_partial_forward_matches_layer():
    hand = hand64()
    g = torch.Generator().manual_seed(0)
    pose = hand.sample_pose(3, generator=g).double()
    shape = torch.randn(3, 11, generator=g, dtype=torch.float64)
    orient, transl = torch.randn(3, 3, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64) * 10
    scale = torch.tensor([0.9, 1.0, 1.1], dtype=torch.float64)
    out = hand(pose, shape, global_orient=orient, transl=transl, scale=scale)
    ids, _ = surface_ids(hand, "skin")
    rot = hand.joint_rotations(hand.bone_rotations(pose))
    rot = torch.cat([(axis_angle_to_matrix(orient) @ rot[:, 0])[:, None], rot[:, 1:]], 1)
    joints, verts = PartialForward(hand, ids)(rot, shape, scale=scale, transl=transl)
    assert torch.allclose(joints, out.joints, atol=1e-9)
    assert torch.allclose(verts, out.vertices[:, ids], atol=1e-9)


def test_lm_jacobian_matches_finite_differences():
    hand = hand64()
    torch.manual_seed(0)
    solver = HandKeypointSolver(hand, 2, [], opts=FitOptions(fit_scale=True, lm_dtype="float64"))
    lim = hand.joint_limits()
    solver.angles = (lim.lower + torch.rand(2, 20, 3, dtype=torch.float64) * (lim.upper - lim.lower)).clamp(-1, 1)
    solver.angles[:, 0] = 0.0
    solver.orient = axis_angle_to_matrix(torch.randn(2, 3, dtype=torch.float64))
    solver.transl = torch.randn(2, 3, dtype=torch.float64) * 10
    solver.log_scale = torch.randn(2, dtype=torch.float64) * 0.1
    solver.shape = torch.randn(2, 11, dtype=torch.float64)
    state = solver.state()
    pos, glob, _ = solver.pose(state)
    jac = solver.jacobian_points(pos, glob, state)
    eps = 1e-6
    for d in range(jac.shape[-1]):
        step = torch.zeros(2, jac.shape[-1], dtype=torch.float64)
        step[:, d] = eps
        moved, _, _ = solver.pose(solver.apply(state, step))
        plus = (moved - pos) / eps
        step[:, d] = -eps
        moved, _, _ = solver.pose(solver.apply(state, step))
        central = (plus + (pos - moved) / eps) / 2
        # angles sitting on a bound are clamped by apply: only the unclamped side is compared there
        assert torch.allclose(central, jac[..., d], atol=2e-6) or torch.allclose(plus, jac[..., d], atol=2e-4)
    params = solver.params(torch.float64)
    out = hand(params["pose"], params["shape"], global_orient=params["global_orient"], transl=params["transl"],
               scale=params["scale"])
    assert torch.allclose(out.joints, pos, atol=1e-9)
    bones = lim.frames @ euler_to_matrix(solver.angles, "XYZ") @ lim.frames.transpose(-1, -2)
    assert torch.allclose(hand.bone_rotations(params["pose"])[:, 1:], bones[:, 1:], atol=1e-9)
