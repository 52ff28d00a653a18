"""Tissue penetration: depths, bone frames, differentiable penalty and the skin fix-up."""

from __future__ import annotations

import pytest
import torch
import trimesh

from anatomy.constraints.penetration import TissuePenetration
from anatomy.core.errors import ParameterError
from anatomy.core.rotations import axis_angle_to_matrix

DT = torch.float64


def ball(radius: float, centre: tuple[float, float, float], subdivisions: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return torch.tensor(mesh.vertices, dtype=DT) + torch.tensor(centre, dtype=DT), torch.tensor(mesh.faces)


def two_bones() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two balls of radius 5 (parts 0 and 1) centred 12 apart along x."""
    a, fa = ball(5.0, (0.0, 0.0, 0.0))
    b, fb = ball(5.0, (12.0, 0.0, 0.0))
    verts = torch.cat([a, b])
    faces = torch.cat([fa, fb + len(a)])
    parts = torch.cat([torch.zeros(len(a), dtype=torch.long), torch.ones(len(b), dtype=torch.long)])
    return verts, faces, parts


def hand_like() -> dict[str, torch.Tensor]:
    """Bones (two balls), a muscle ball between them, a skin ball around everything."""
    bones, bone_faces, parts = two_bones()
    muscle, muscle_faces = ball(3.0, (6.0, 0.0, 8.0))
    skin, skin_faces = ball(25.0, (6.0, 0.0, 0.0), subdivisions=3)
    return {"bones": bones, "bone_faces": bone_faces, "parts": parts, "muscle": muscle,
            "muscle_faces": muscle_faces, "skin": skin, "skin_faces": skin_faces}


def build(m: dict[str, torch.Tensor]) -> TissuePenetration:
    return TissuePenetration(m["bones"], m["bone_faces"], m["parts"], m["skin"], m["skin_faces"], None,
                             m["muscle"], m["muscle_faces"], grid_resolution=32, muscle_radius=30.0)


def test_rest_pose_has_no_penetration() -> None:
    m = hand_like()
    pen = build(m)
    d = pen.depths(m["bones"][None], m["skin"][None], m["muscle"][None])
    for name in ("bone_bone", "skin_bone", "muscle_bone", "skin_muscle"):
        assert float(getattr(d, name).max()) == 0.0, name


def test_bone_overlap_depth() -> None:
    """Ball 1 moved 4 towards ball 0: its nearest vertex is 2 deep inside ball 0 (and vice versa)."""
    bones, faces, parts = two_bones()
    pen = TissuePenetration(bones, faces, parts)
    posed = bones.clone()
    posed[parts == 1] -= torch.tensor([4.0, 0.0, 0.0], dtype=DT)
    depth = pen.depths(posed[None]).bone_bone[0]
    pairs = pen.bone_pair_distances(posed[None])[0]  # (n, 2): to part 0, to part 1
    assert torch.equal(pairs.amin(1), pen.distances(posed[None])["bone_bone"][0])
    assert bool(torch.isinf(pairs[parts == 0, 0]).all()) and bool(torch.isinf(pairs[parts == 1, 1]).all())
    assert abs(float(depth.max()) - 2.0) < 0.25  # facets and grid interpolation
    deepest = int(depth.argmax())
    expect = 5.0 - float((posed[deepest] - (torch.zeros(3, dtype=DT) if parts[deepest] == 1 else
                                            torch.tensor([8.0, 0.0, 0.0], dtype=DT))).norm())
    assert abs(float(depth[deepest]) - expect) < 0.25


def test_bone_frames_recover_a_rigid_motion_and_scale() -> None:
    bones, faces, parts = two_bones()
    pen = TissuePenetration(bones, faces, parts, grid_resolution=16)
    rot = axis_angle_to_matrix(torch.tensor([0.3, -0.5, 0.9], dtype=DT))
    shift = torch.tensor([1.0, 2.0, -3.0], dtype=DT)
    posed = bones.clone()
    posed[parts == 1] = 1.2 * bones[parts == 1] @ rot.T + shift
    mat, t, scale = pen.bone_frames(posed[None])
    assert torch.allclose(mat[0, 1], 1.2 * rot, atol=1e-10)
    assert torch.allclose(t[0, 1], shift, atol=1e-9)
    assert torch.allclose(scale[0], torch.tensor([1.0, 1.2], dtype=DT), atol=1e-10)
    # a point half-way from the centre to the surface of the scaled ball (off the centre,
    # where the distance has a kink) is half a scaled radius deep
    centre = (1.2 * torch.tensor([14.5, 0.0, 0.0], dtype=DT) @ rot.T + shift)
    queries = pen._pad([torch.tensor([], dtype=torch.long), torch.tensor([0])], 1)  # the probe vs part 1
    sd = pen._to_bones(centre[None, None], pen._rest_frames(posed[None]), queries)
    assert abs(float(sd[0, 0]) + 1.2 * 2.5) < 0.3


def test_penalty_is_differentiable_and_matches_its_definition() -> None:
    m = hand_like()
    pen = TissuePenetration(m["bones"], m["bone_faces"], m["parts"], grid_resolution=24)
    posed = m["bones"].clone()
    posed[m["parts"] == 1] -= torch.tensor([3.0, 0.0, 0.0], dtype=DT)
    posed = posed[None].requires_grad_()
    value = pen.penalty(posed, margin=0.2)
    sd = pen.distances(posed)["bone_bone"]
    assert torch.allclose(value, (0.2 - sd).clamp(min=0).square().mean(1))
    assert float(value.detach()) > 0
    (grad,) = torch.autograd.grad(value.sum(), posed)
    # moving the balls apart lowers the penalty: the gradient on ball 1 points towards ball 0 (-x)
    assert float(grad[0, m["parts"] == 1, 0].sum()) < 0
    assert float(grad[0, m["parts"] == 0, 0].sum()) > 0
    # gradcheck through the affine fit, the grid reading and the min over bones
    sub = posed.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: pen.penalty(x, margin=0.2), (sub,), eps=1e-6, atol=1e-5)


def test_skin_pushed_into_muscle_and_bone_is_measured_and_fixed() -> None:
    m = hand_like()
    pen = build(m)
    skin = m["skin"].clone()
    top = int(skin[:, 2].argmax())  # skin vertex above the muscle (muscle centre z = 8, radius 3)
    skin[top] = torch.tensor([6.0, 0.0, 9.0], dtype=DT)  # 2 inside the muscle (1 from its centre)
    side = int(skin[:, 0].argmin())  # skin vertex left of bone 0
    skin[side] = torch.tensor([-3.0, 0.0, 0.0], dtype=DT)  # 2 inside bone 0
    d = pen.depths(m["bones"][None], skin[None], m["muscle"][None])
    pos = {int(v): i for i, v in enumerate(pen.skin_surface)}
    assert abs(float(d.skin_muscle[0, pos[top]]) - 2.0) < 0.1
    assert abs(float(d.skin_bone[0, pos[side]]) - 2.0) < 0.25
    fixed = pen.push_skin_out(m["bones"][None], skin[None], m["muscle"][None], margin=0.5)
    assert not fixed.requires_grad
    after = pen.depths(m["bones"][None], fixed, m["muscle"][None])
    assert float(after.skin_muscle.max()) == 0.0
    assert float(after.skin_bone.max()) == 0.0
    sd = pen.distances(m["bones"][None], fixed, m["muscle"][None])
    assert float(sd["skin_muscle"][0, pos[top]]) > 0.45  # margin 0.5 along the interpolated normal
    # neighbours moved along (smoothing), far vertices did not
    far = int(skin[:, 2].argmin())
    assert torch.equal(fixed[0, far], skin[far])


def test_penalty_weights_and_missing_tissues() -> None:
    m = hand_like()
    pen = TissuePenetration(m["bones"], m["bone_faces"], m["parts"], grid_resolution=16)
    with pytest.raises(ParameterError, match="unknown penalty weight"):
        pen.penalty(m["bones"][None], weights={"bone": 1.0})
    with pytest.raises(ParameterError, match="unknown tissue pair"):
        pen.distances(m["bones"][None], pairs=["skin"])
    assert set(pen.distances(m["bones"][None], pairs=[])) == set()
    with pytest.raises(ParameterError, match="without the skin"):
        pen.distances(m["bones"][None], m["skin"][None])
    with pytest.raises(ParameterError, match="pass the skin too"):
        TissuePenetration(m["bones"], m["bone_faces"], m["parts"], muscle_vertices=m["muscle"],
                          muscle_faces=m["muscle_faces"])
    with pytest.raises(ParameterError, match="part ids"):
        TissuePenetration(m["bones"], m["bone_faces"], m["parts"][:-1])


@pytest.mark.gpu
def test_penalty_on_cuda_matches_cpu() -> None:
    m = hand_like()
    pen = build(m)
    skin = m["skin"].clone()
    skin[0] = m["muscle"].mean(0)
    cpu = pen.penalty(m["bones"][None], skin[None], m["muscle"][None], margin=0.3)
    pen.to("cuda")
    gpu = pen.penalty(m["bones"][None].cuda(), skin[None].cuda(), m["muscle"][None].cuda(), margin=0.3)
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-8)
