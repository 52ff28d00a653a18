"""SheetCover (bone under an open skin sheet) and the head's bone-through-skin measure."""

from __future__ import annotations

import pytest
import torch

import anatomy
from anatomy.constraints.cover import SheetCover, boundary_vertices
from anatomy.core.errors import ParameterError, ShapeError
from anatomy.core.rotations import axis_angle_to_matrix

D = torch.float64


def grid_sheet(n: int = 11, size: float = 20.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A flat n x n vertex sheet in z = 0 over [-size/2, size/2]^2, triangles wound for +z normals."""
    xs = torch.linspace(-size / 2, size / 2, n, dtype=D)
    y, x = torch.meshgrid(xs, xs, indexing="ij")
    verts = torch.stack([x.flatten(), y.flatten(), torch.zeros(n * n, dtype=D)], 1)
    idx = torch.arange(n * n).view(n, n)
    a, b, c, d = idx[:-1, :-1].flatten(), idx[:-1, 1:].flatten(), idx[1:, :-1].flatten(), idx[1:, 1:].flatten()
    faces = torch.cat([torch.stack([a, b, d], 1), torch.stack([a, d, c], 1)])
    return verts, faces


def test_boundary_vertices_of_a_grid_are_its_outline() -> None:
    verts, faces = grid_sheet(5)
    mask = boundary_vertices(faces, len(verts)).view(5, 5)
    assert int(mask.sum()) == 16
    assert not bool(mask[1:4, 1:4].any())


def test_heights_of_points_under_a_flat_sheet_are_minus_their_depth_and_follow_the_sheet() -> None:
    verts, faces = grid_sheet()
    g = torch.Generator().manual_seed(0)
    xy = (torch.rand(30, 2, generator=g, dtype=D) - 0.5) * 10
    pts = torch.cat([xy, -1 - 5 * torch.rand(30, 1, generator=g, dtype=D)], 1)
    far = torch.tensor([[0.0, 0.0, -50.0], [9.9, 9.9, -1.0]], dtype=D)  # beyond reach; under the outline band
    cover = SheetCover(torch.cat([pts, far]), verts, faces, reach=30.0, patch=3.0)
    assert cover.ids.tolist() == list(range(30))
    torch.testing.assert_close(cover.rest_height, pts[:, 2], atol=1e-12, rtol=0)
    all_pts = torch.cat([pts, far])[None]
    # the sheet drops by 3 mm: every height grows by 3
    h = cover.heights(all_pts, (verts - torch.tensor([0, 0, 3.0], dtype=D))[None])
    torch.testing.assert_close(h[0], pts[:, 2] + 3.0, atol=1e-12, rtol=0)
    # a rigid motion of both changes nothing
    rot = axis_angle_to_matrix(torch.tensor([[0.3, -0.5, 0.9]], dtype=D))[0]
    t = torch.tensor([5.0, -2.0, 7.0], dtype=D)
    moved = cover.heights((all_pts @ rot.T + t), (verts @ rot.T + t)[None])
    torch.testing.assert_close(moved[0], pts[:, 2], atol=1e-10, rtol=0)
    # inward winding is detected and flipped: same heights
    flipped = SheetCover(torch.cat([pts, far]), verts, faces[:, [0, 2, 1]], reach=30.0, patch=3.0)
    torch.testing.assert_close(flipped.heights(all_pts, verts[None]), cover.heights(all_pts, verts[None]))
    # penalty = sum relu(h + margin)^2, by hand
    sheet = (verts - torch.tensor([0, 0, 4.0], dtype=D))[None]
    expect = (pts[:, 2] + 4.0 + 0.5).clamp_min(0).square().sum()
    torch.testing.assert_close(cover.penalty(all_pts, sheet, margin=0.5)[0], expect)


def test_turned_flags_a_patch_folded_over_but_not_a_rotated_sheet() -> None:
    verts, faces = grid_sheet()
    pts = torch.tensor([[0.0, 0.0, -2.0], [5.0, 5.0, -2.0]], dtype=D)
    cover = SheetCover(pts, verts, faces, patch=3.0)
    torch.testing.assert_close(cover.rest_normal, torch.tensor([[0.0, 0.0, 1.0]] * 2, dtype=D))
    eye = torch.eye(3, dtype=D).expand(1, 2, 3, 3)
    assert not bool(cover.turned(verts[None], eye).any())
    rot = axis_angle_to_matrix(torch.tensor([[3.0, 0.4, 0.0]], dtype=D))  # ~172 degrees
    spun = verts @ rot[0].T
    assert not bool(cover.turned(spun[None], rot[:, None].expand(1, 2, 3, 3)).any())  # carried along: no fold
    assert bool(cover.turned(spun[None], eye).all())  # against the identity the sheet looks folded
    # fold the part of the sheet around the first point over: mirror its region through z = 0
    folded = verts.clone()
    near = (verts[:, :2].norm(dim=1) < 4.5)
    folded[near, 2] = -0.3 * (4.5 - verts[near, :2].norm(dim=1))  # a dimple, normals still up
    assert not bool(cover.turned(folded[None], eye).any())
    inverted = verts.clone()
    inverted[near, 0] = -inverted[near, 0]  # mirroring x inside the patch flips its triangles
    assert cover.turned(inverted[None], eye)[0].tolist() == [True, False]


def test_penalty_gradcheck_and_bad_input() -> None:
    verts, faces = grid_sheet(6, 10.0)
    pts = torch.tensor([[0.3, -0.4, -0.5], [1.1, 0.7, -0.2], [-1.0, 1.2, -0.8]], dtype=D)
    cover = SheetCover(pts, verts, faces, patch=2.5)
    noise = 0.05 * torch.randn(1, *verts.shape, generator=torch.Generator().manual_seed(1), dtype=D)
    sheet = (verts[None] + noise - torch.tensor([0, 0, 0.6], dtype=D)).requires_grad_()
    p = pts[None].clone().requires_grad_()
    assert float(cover.penalty(p, sheet).detach()[0]) > 0  # some points are through: the hinge is active
    assert torch.autograd.gradcheck(lambda a, b: cover.penalty(a, b, margin=0.1), (p, sheet))
    with pytest.raises(ShapeError, match=r"points must be \(B, 3, 3\)"):
        cover.heights(pts, sheet)
    with pytest.raises(ParameterError, match="no bone point lies under the skin"):
        SheetCover(pts + torch.tensor([0, 0, -100.0], dtype=D), verts, faces)
    with pytest.raises(ShapeError):
        SheetCover(pts[:, :2], verts, faces)


@pytest.fixture(scope="module")
def head() -> anatomy.Sculptor:
    return anatomy.Sculptor(dtype=D)


def test_default_head_bones_under_the_skin_at_rest_and_a_protruded_jaw_comes_through(head: anatomy.Sculptor) -> None:
    pen = head.penetration()
    assert pen is head.penetration()  # cached
    assert len(pen.point_ids) > 2000
    assert float(pen.cover.rest_height.max()) < -2.0  # every paired bone vertex >= 2 mm under the skin
    rest = pen.report(head())
    assert rest["max_depth_mm"] == 0.0 and rest["samples_over_0.5_mm"] == 0
    # 40 mm of protrusion (far beyond the jaw's range): the chin comes out through its skin
    offset = torch.tensor([[0.0, 40.0, 0.0]], dtype=D, requires_grad=True)
    out = head(jaw_offset=offset)
    report = pen.report(out)
    assert report["max_depth_mm_per_tissue"]["mandible"] > 5.0
    assert report["max_depth_mm_per_tissue"]["skull"] == 0.0
    penalty = head.penetration().penalty(out)
    penalty.sum().backward()
    assert offset.grad is not None and float(offset.grad[0, 1]) > 0  # descent pulls the jaw back


@pytest.mark.parametrize("spaces", [("shape",), ("trait",), ("expression",), ()])
def test_default_head_bone_stays_under_the_skin_for_each_space_with_the_jaw(
    head: anatomy.Sculptor, spaces: tuple[str, ...]
) -> None:
    kw = head.sample(200, generator=torch.Generator().manual_seed(0), spaces=spaces)
    report = head.penetration().report(head(**kw))
    assert report["samples_over_0.5_mm"] == 0, report
    assert report["samples_with_folded_skin_over_bone"] == 0, report


def test_sample_draws_inside_the_jaw_limits(head: anatomy.Sculptor) -> None:
    kw = head.sample(64, generator=torch.Generator().manual_seed(3))
    assert set(kw) == {"shape", "trait", "expression", "jaw_pose", "jaw_offset"}
    assert float(kw["expression"].min()) >= 0 and float(kw["expression"].max()) <= 1
    assert float(kw["trait"].abs().max()) <= 1
    angles = head.jaw_angles(kw["jaw_pose"])
    lim = head.jaw_limits()
    assert bool((angles >= lim.lower[0] - 1e-9).all() and (angles <= lim.upper[0] + 1e-9).all())
    lo, hi = head.jaw_offset_limits()
    assert bool((kw["jaw_offset"] >= lo).all() and (kw["jaw_offset"] <= hi).all())
    assert float(head.jaw_penalty(kw["jaw_pose"], kw["jaw_offset"]).max()) < 1e-12
    only = head.sample(2, spaces=("shape",), jaw=False)
    assert set(only) == {"shape"}
    with pytest.raises(ParameterError, match="unknown space"):
        head.sample(2, spaces=("pose",))
    with pytest.raises(ParameterError, match="at least 1"):
        head.sample(0)
