"""anatomy.pipeline.targets.bones_by_model: bone target points given to the nearer fitted bone, far ones dropped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anatomy.core.errors import ParameterError
from anatomy.pipeline.targets import bones_by_model


def _plane(z: float, n: int, seed: int) -> torch.Tensor:
    """``n`` points on the square [0, 40]^2 at height ``z`` (mm)."""
    xy = torch.from_numpy(np.random.default_rng(seed).uniform(0.0, 40.0, size=(n, 2)))
    return torch.cat([xy, torch.full((n, 1), z, dtype=torch.float64)], dim=1)


def _normals(points: torch.Tensor, sign: float) -> torch.Tensor:
    out = torch.zeros_like(points)
    out[:, 2] = sign
    return out


@pytest.fixture()
def scene() -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, torch.Tensor]]:
    # fitted skull: a plane at z = 10; fitted mandible: a plane at z = 0 (grids of vertices, 1 mm apart)
    g = torch.stack(torch.meshgrid(torch.arange(41.0), torch.arange(41.0), indexing="ij"), -1).reshape(-1, 2).double()
    fitted = {"skull": torch.cat([g, torch.full((len(g), 1), 10.0, dtype=torch.float64)], 1),
              "mandible": torch.cat([g, torch.zeros(len(g), 1, dtype=torch.float64)], 1)}
    # the skull target: 300 points on the skull (0.3 mm off), 150 on the mandible (a wrong jaw split),
    # 50 bone the model lacks (z = 5: 5 mm from both); the mandible target: 200 points on the mandible
    skull_pts = torch.cat([_plane(10.3, 300, 0), _plane(-0.2, 150, 1), _plane(5.0, 50, 2)])
    jaw_pts = _plane(0.1, 200, 3)
    points = {"skull": (skull_pts, _normals(skull_pts, 1.0)), "mandible": (jaw_pts, _normals(jaw_pts, -1.0)),
              "face": (_plane(30.0, 20, 4), _normals(_plane(30.0, 20, 4), 1.0))}
    return points, fitted


def test_points_go_to_the_nearer_bone_and_far_ones_are_dropped(scene):
    points, fitted = scene
    out = bones_by_model(points, fitted, far_mm=2.0)
    skull, skull_n = out["skull"]
    jaw, jaw_n = out["mandible"]
    assert len(skull) == 300 and torch.equal(skull, points["skull"][0][:300])  # its own points, in order
    assert torch.all(skull_n[:, 2] == 1.0)
    # the mandible keeps its 200 points and gains the 150 that the split gave the skull, with their normals
    assert len(jaw) == 350
    assert torch.equal(jaw, torch.cat([points["skull"][0][300:450], points["mandible"][0]]))
    assert torch.equal(jaw_n[:150, 2], torch.ones(150, dtype=torch.float64))
    assert torch.equal(jaw_n[150:, 2], -torch.ones(200, dtype=torch.float64))
    # the 50 points 5 mm from both bones are gone; the face passes through untouched
    assert float(torch.cat([skull, jaw])[:, 2].sub(5.0).abs().min()) > 4.0
    assert out["face"] is points["face"]
    assert len(points["skull"][0]) == 500  # the input is not changed


def test_a_larger_far_distance_keeps_the_in_between_points(scene):
    points, fitted = scene
    out = bones_by_model(points, fitted, far_mm=5.5)
    # z = 5 lies 5 mm from both planes; the tie goes to the first bone (the skull)
    assert len(out["skull"][0]) == 350 and len(out["mandible"][0]) == 350


def test_too_few_points_left_returns_the_targets_unchanged(scene):
    points, fitted = scene
    fitted = dict(fitted, mandible=fitted["mandible"] + torch.tensor([0.0, 0.0, -50.0], dtype=torch.float64))
    out = bones_by_model(points, fitted, far_mm=2.0)  # no point within 2 mm of the mandible: nothing judged
    assert all(out[k] is points[k] for k in points)


def test_bad_arguments_are_refused(scene):
    points, fitted = scene
    with pytest.raises(ParameterError, match="far_mm"):
        bones_by_model(points, fitted, far_mm=0.0)
    with pytest.raises(ParameterError, match="no fitted vertices"):
        bones_by_model(points, {"skull": fitted["skull"]})
    only_face = {"face": points["face"]}
    assert bones_by_model(only_face, fitted) == only_face
