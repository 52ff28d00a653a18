"""Recovery of known hands and heads from 3D / 2D keypoints (batched), units and frames detected."""

import math

import pytest
import torch

import anatomy
from anatomy.core.errors import ShapeError
from anatomy.fitting import Keypoints2D, Keypoints3D, PinholeCamera, fit

_CACHE: dict[str, object] = {}


def _hand() -> anatomy.Nimble:
    if "hand" not in _CACHE:
        _CACHE["hand"] = anatomy.Nimble()
    return _CACHE["hand"]  # type: ignore[return-value]


def _truth(batch: int, seed: int = 0):
    hand = _hand()
    g = torch.Generator().manual_seed(seed)
    pose = hand.sample_pose(batch, generator=g)
    shape = torch.randn(batch, 11, generator=g)
    orient = torch.randn(batch, 3, generator=g)  # any orientation: a target in another frame
    transl = torch.randn(batch, 3, generator=g) * 200
    with torch.no_grad():
        out = hand(pose, shape, global_orient=orient, transl=transl)
    return out


def _errors(res, out):
    with torch.no_grad():
        fitted = _hand()(**res.params)
    joint = (fitted.keypoints - out.keypoints).norm(dim=-1).mean(1)
    vert = (fitted.vertices - out.vertices).norm(dim=-1).mean(1)
    return joint, vert


def test_hand_from_3d_keypoints_batched_any_frame_and_metres():
    out = _truth(4)
    res = fit(_hand(), Keypoints3D(out.keypoints), penetration=False)
    joint, vert = _errors(res, out)
    assert res.params["pose"].shape == (4, 20, 3) and res.output.vertices.shape[0] == 4
    assert float(joint.max()) < 0.6  # noise-free: only the (unit-variance) shape prior pulls
    assert float(vert.max()) < 2.0  # components that move no joint (soft tissue) stay at the prior mean
    assert res.report["units"] == "mm" and res.residuals[0].shape == (4, 21)
    assert res.report["targets"][0]["mean"] == pytest.approx(float(res.residuals[0].mean()), abs=1e-3)
    # the same target in metres is detected and fitted in mm
    res_m = fit(_hand(), Keypoints3D(out.keypoints / 1000.0), penetration=False, output=False)
    assert res_m.units_scale == 1000.0 and res_m.report["units"] == "m"
    assert torch.allclose(res_m.params["transl"], res.params["transl"], atol=0.05)


def test_hand_from_3d_keypoints_with_noise_and_confidence():
    out = _truth(4, seed=1)
    g = torch.Generator().manual_seed(5)
    noisy = out.keypoints + torch.randn(out.keypoints.shape, generator=g)
    conf = torch.ones(4, 21)
    noisy[:, 8] += 40.0  # a gross outlier the confidence switches off
    conf[:, 8] = 0.0
    res = fit(_hand(), Keypoints3D(noisy, conf), penetration=False, output=False)
    joint, vert = _errors(res, out)
    assert float(joint.mean()) < 2.0 and float(vert.mean()) < 2.5  # 1 mm noise per coordinate: 1.6 mm per point


def test_hand_from_2d_keypoints_two_views():
    out = _truth(4, seed=2)
    centre = out.keypoints.mean((0, 1)).double()
    cams = [PinholeCamera.looking_at(centre + 500 * torch.tensor([math.sin(a), 0.3, math.cos(a)],
                                                                 dtype=torch.float64), centre, fx=1000.0, cx=320.0,
                                     cy=240.0) for a in (0.0, 1.6)]
    g = torch.Generator().manual_seed(3)
    views = [Keypoints2D(c.project(out.keypoints.double()) + torch.randn(4, 21, 2, generator=g, dtype=torch.float64),
                         c) for c in cams]
    res = fit(_hand(), views, penetration=False)
    joint, vert = _errors(res, out)
    assert float(joint.mean()) < 2.0 and float(vert.mean()) < 2.5
    assert [r["unit"] for r in res.report["targets"]] == ["px", "px"]
    assert all(r["mean"] < 2.5 for r in res.report["targets"])


def test_head_from_named_landmarks():
    head = anatomy.Sculptor()
    g = torch.Generator().manual_seed(0)
    truth = {"shape": torch.randn(2, 10, generator=g), "global_orient": torch.randn(2, 3, generator=g) * 0.5,
             "transl": torch.randn(2, 3, generator=g) * 30}
    with torch.no_grad():
        out = head(**truth)
    names = head.landmark_names
    res = fit(head, Keypoints3D(out.landmarks, names=names), penetration=False, iterations=(20, 20, 80))
    with torch.no_grad():
        fitted = head(**{k: v for k, v in res.params.items()}, jaw_range="ignore")
    err = (fitted.vertices - out.vertices).norm(dim=-1).mean(1)
    assert float(res.residuals[0].mean()) < 1.0 and float(err.max()) < 2.5


def test_bad_keypoints():
    with pytest.raises(ShapeError, match="21 keypoints"):
        fit(_hand(), Keypoints3D(torch.zeros(1, 20, 3)))
    with pytest.raises(ShapeError, match="not this model"):
        fit(_hand(), Keypoints3D(torch.zeros(1, 3, 3), names=["wrist", "nose", "index_tip"]))
    with pytest.raises(ShapeError, match="need names"):
        fit(anatomy.Sculptor(), Keypoints3D(torch.zeros(1, 5, 3)))


@pytest.mark.gpu
def test_hand_keypoint_and_cloud_fit_on_cuda_match_cpu():
    out = _truth(4, seed=3)
    cuda = anatomy.Nimble(device="cuda")
    res_cpu = fit(_hand(), Keypoints3D(out.keypoints), penetration=False, output=False)
    res_gpu = fit(cuda, Keypoints3D(out.keypoints.cuda()), penetration=False)
    assert res_gpu.params["pose"].device.type == "cuda" and res_gpu.output.vertices.device.type == "cuda"
    assert torch.allclose(res_gpu.params["transl"].cpu(), res_cpu.params["transl"], atol=0.5)
    views = [Keypoints2D(c.project(out.keypoints.double()), c) for c in
             (PinholeCamera.looking_at((0.0, 0.0, -600.0), (0.0, 0.0, 0.0), fx=1000.0),
              PinholeCamera.looking_at((600.0, 0.0, 0.0), (0.0, 0.0, 0.0), fx=1000.0))]
    res2 = fit(cuda, views, penetration=False, output=False)
    assert all(r["mean"] < 3.0 for r in res2.report["targets"])
