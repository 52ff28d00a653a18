"""The hand start searched on the bone surface (no keypoints): rigid bones, estimated keypoints, ambiguity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

import anatomy
from anatomy.core.alignment import Similarity
from anatomy.core.errors import ParameterError, ShapeError
from anatomy.core.rotations import matrix_to_axis_angle
from anatomy.fitting.synthetic import random_rigid
from anatomy.registration import fit_model_to_surfaces
from anatomy.registration.hand_start import (
    AmbiguousHandStartWarning,
    _chamfer,
    _climb,
    _fit_hand,
    _move,
    _RigidHand,
    _turn_deg,
    _turned,
    estimate_hand_keypoints,
    search_hand_start,
)
from anatomy.registration.nonrigid import sample_surface

_TIPS = [4, 8, 12, 16, 20]  # thumb .. little fingertips in the 21-keypoint order


@pytest.fixture(scope="module")
def hand():
    return anatomy.Nimble().double()


def _posed(hand, seed):
    gen = torch.Generator().manual_seed(seed)
    rot, trans = random_rigid(1, generator=gen, max_angle=math.pi, spread=50.0)
    out = hand(pose=hand.sample_pose(1, generator=gen), global_orient=matrix_to_axis_angle(rot), transl=trans)
    pts, _ = sample_surface(out.tissue("bones")[0], out.faces("bones"), 4000, generator=gen)
    return out, pts


def test_rigid_bones_are_the_layers_bones(hand):
    """The search moves each bone rigidly about its joint: exactly the layer's bones and keypoints (float64)."""
    rigid = _RigidHand(hand)
    pose = hand.sample_pose(3, generator=torch.Generator().manual_seed(0))
    angles = rigid.limits.angles(hand.bone_rotations(pose))
    out = hand(pose)
    ids = torch.arange(rigid.verts.shape[0])
    assert torch.allclose(rigid.pose(angles, ids), out.tissue("bones"), atol=1e-9)
    for i in range(3):
        assert torch.allclose(rigid.keypoints(angles[i:i + 1]), out.keypoints[i], atol=1e-9)


@pytest.mark.slow  # ~20-30 s each (one thread)
@pytest.mark.parametrize("seed", [7, 1])
def test_keypoints_from_the_bone_surface(hand, seed):
    """A posed, turned hand's keypoints found from its bone points alone: every fingertip on its own finger."""
    out, pts = _posed(hand, seed)
    keys = estimate_hand_keypoints(hand, pts)
    assert list(keys) == list(hand.keypoint_names)
    est = torch.as_tensor(np.stack(list(keys.values())))
    true = out.keypoints[0]
    err = (est - true).norm(dim=-1)
    assert float(err.mean()) < 6.0, err
    # each estimated tip is nearest to its own true tip (the failure without a search: a finger on its neighbour)
    tips = torch.cdist(est[_TIPS], true[_TIPS])
    assert torch.equal(tips.argmin(1), torch.arange(5)), tips


def test_symmetric_bones_are_ambiguous(hand):
    """Points on a sphere are no hand's bones: the start says it is ambiguous (and the fit warns, below)."""
    gen = torch.Generator().manual_seed(2)
    sphere = torch.nn.functional.normalize(torch.randn(3000, 3, generator=gen, dtype=torch.float64), dim=-1) * 50.0
    found = search_hand_start(hand, sphere, rounds=1, climb_deg=())
    assert found.ambiguous and found.chamfer_mm > 4.0  # far from any hand's bones


@pytest.mark.slow  # ~30 s: the full search inside a (short) fit
def test_ambiguous_start_warns_in_the_fit(hand):
    gen = torch.Generator().manual_seed(2)
    sphere = torch.nn.functional.normalize(torch.randn(3000, 3, generator=gen, dtype=torch.float64), dim=-1) * 50.0
    with pytest.warns(AmbiguousHandStartWarning, match="landmarks="):
        fit = fit_model_to_surfaces(hand, {"bones": sphere}, outer=1, inner=1, max_points=500)
    assert fit.hand_start is not None and fit.hand_start.ambiguous


def test_bad_input(hand):
    pts = hand().tissue("bones")[0].detach()
    with pytest.raises(ShapeError, match=r"\(N, 3\)"):
        search_hand_start(hand, pts[:, :2])
    bad = pts.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ParameterError, match="NaN"):
        search_hand_start(hand, bad)
    with pytest.raises(ParameterError, match="keypoints"):
        search_hand_start(anatomy.Sculptor(), pts)


def test_turned_palms_keep_the_centre(hand):
    """The climb's six placements: each the start turned by exactly ``deg`` about one of its own axes, the
    palm centre fixed, the scale kept."""
    gen = torch.Generator().manual_seed(3)
    rot, trans = random_rigid(1, generator=gen, max_angle=math.pi, spread=50.0)
    sim = Similarity(rot[0].double(), trans[0].double(), torch.tensor(1.07, dtype=torch.float64))
    centre = torch.tensor([5.0, -20.0, 40.0], dtype=torch.float64)
    turned = _turned(sim, centre, 25.0)
    assert len(turned) == 6
    for i, t in enumerate(turned):
        assert _turn_deg(sim, t) == pytest.approx(25.0, abs=1e-6)
        assert torch.allclose(t.rotation @ t.rotation.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
        assert torch.allclose(t.apply(sim.inverse().apply(centre[None])), centre[None], atol=1e-9)
        # the turn is about the rest palm's own axis i // 2: that axis, moved by sim and by t, stays the same
        axis = torch.zeros(3, dtype=torch.float64)
        axis[i // 2] = 1.0
        assert torch.allclose(t.rotation @ axis, sim.rotation @ axis, atol=1e-9)
        assert float(t.scale) == pytest.approx(1.07)


def test_climb_turns_a_pulled_palm_back(hand):
    """Exact rigid bones at a known pose and placement, the search started from the palm turned 30° off: the
    climb comes back to within a few degrees of the true palm and a lower chamfer, each fingertip on its own
    finger."""
    rigid = _RigidHand(hand)
    gen = torch.Generator().manual_seed(5)
    angles = rigid.limits.angles(hand.bone_rotations(hand.sample_pose(1, generator=gen)))
    rot, trans = random_rigid(1, generator=gen, max_angle=math.pi, spread=50.0)
    true = Similarity(rot[0].double(), trans[0].double(), torch.tensor(1.0, dtype=torch.float64))
    every = torch.arange(rigid.verts.shape[0])
    target = _move(rigid.pose(angles, every)[0], true)[torch.randperm(len(every), generator=gen)[:3000]].numpy()
    tree = cKDTree(target)
    ids = rigid.sample(list(range(len(rigid.names))), 80, gen)
    palm = rigid.sample([rigid.names.index(n) for n in ("carpal", "met2", "met3", "met4", "met5")], 40, gen)
    pulled = _turned(true, _move(rigid.verts[palm], true).mean(0), 30.0)[4]  # about the rest frame's z axis
    start = _fit_hand(rigid, pulled, target, tree, ids, gen, 6, 1, False)
    chamfer, sim, found = _climb(rigid, start, target, tree, ids, palm, gen, 6, (25.0, 12.0))
    exact = _chamfer(_move(rigid.pose(angles, ids)[0], true).numpy(), target, tree)  # the true start's
    assert chamfer < start[0] - 2.0 and chamfer < exact + 1.5, (start[0], chamfer, exact)  # 4.7 -> 1.9; 0.8
    assert _turn_deg(sim, true) < 6.0, _turn_deg(sim, true)
    tips = (_move(rigid.keypoints(found[None]), sim) - _move(rigid.keypoints(angles), true))[_TIPS]
    assert float(tips.norm(dim=-1).max()) < 10.0, tips.norm(dim=-1)


@pytest.mark.slow  # ~30 s (one thread): the whole search
def test_search_recovers_the_benchmarks_failed_case(hand):
    """Benchmark case 2 (``benchmarks/registration_hand_start.py``) ended with the ring and little fingers on
    the wrong fingers: its best palm was turned ~36° along the fingers. The palm climb finds every fingertip
    within 10 mm of the truth."""
    gen = torch.Generator().manual_seed(2)
    rot, trans = random_rigid(1, generator=gen, max_angle=math.pi)
    out = hand(pose=hand.sample_pose(1, generator=gen), shape=0.5 * torch.randn(1, 10, generator=gen,
               dtype=torch.float64), global_orient=matrix_to_axis_angle(rot.double()), transl=trans.double())
    pts, _ = sample_surface(out.tissue("bones")[0], out.faces("bones"), 12000, generator=gen)
    found = search_hand_start(hand, pts)
    est = torch.as_tensor(np.stack([found.keypoints[k] for k in hand.keypoint_names]))
    assert float((est - out.keypoints[0])[_TIPS].norm(dim=-1).max()) < 10.0
