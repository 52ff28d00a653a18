"""Signed distances: winding numbers, SDF grids, closest faces of deforming surfaces."""

from __future__ import annotations

import pytest
import torch
import trimesh

from anatomy.core.errors import ParameterError
from anatomy.core.signed_distance import (
    angle_weighted_normals,
    sample_sdf_grids,
    sdf_grid,
    signed_distance_to_faces,
    winding_number,
)

RADIUS = 10.0


def sphere(subdivisions: int = 3, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=RADIUS)
    return torch.tensor(mesh.vertices, dtype=dtype), torch.tensor(mesh.faces, dtype=torch.long)


def random_points(n: int, scale: float = 8.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 3, generator=g, dtype=torch.float64) * scale


def test_winding_number_is_one_inside_zero_outside() -> None:
    v, f = sphere(2)
    p = random_points(400)
    r = p.norm(dim=1)
    wn = winding_number(p[None], v[None], f)[0]
    clear = (r - RADIUS).abs() > 0.5  # the icosphere's facets lie within 0.3 of the sphere
    assert torch.allclose(wn[clear & (r < RADIUS)], torch.ones(1, dtype=wn.dtype), atol=1e-9)
    assert torch.allclose(wn[clear & (r > RADIUS)], torch.zeros(1, dtype=wn.dtype), atol=1e-9)


def test_sdf_grid_matches_the_analytic_sphere() -> None:
    v, f = sphere(3)
    values, lower, upper = sdf_grid(v, f, resolution=32, margin=3.0)
    assert values.shape == (32, 32, 32)
    assert torch.allclose(lower, torch.full((3,), -RADIUS - 3.0, dtype=v.dtype), atol=0.1)
    p = random_points(500)
    sd = sample_sdf_grids(values[None], lower[None], upper[None], p[None])[0]
    r = p.norm(dim=1)
    near = r < RADIUS + 2
    # facets (0.08 below the sphere at subdivision 3) plus trilinear error over 0.85-unit cells
    assert (sd - (r - RADIUS))[near].abs().max() < 0.2
    assert bool(((sd < 0) == (r < RADIUS))[(r - RADIUS).abs() > 0.3].all())


def test_sdf_grid_reads_each_part_in_its_own_frame_and_is_differentiable() -> None:
    v, f = sphere(2)
    grid_a = sdf_grid(v, f, 16, 2.0)
    grid_b = sdf_grid(v * 0.5, f, 16, 2.0)
    values = torch.stack([grid_a[0], grid_b[0]])
    lower, upper = torch.stack([grid_a[1], grid_b[1]]), torch.stack([grid_a[2], grid_b[2]])
    # half-way to the surface of each (off the centre, where the distance has a kink)
    half = torch.tensor([[[RADIUS / 2, 0.0, 0.0]], [[RADIUS / 4, 0.0, 0.0]]], dtype=v.dtype)
    sd = sample_sdf_grids(values, lower, upper, half)
    # the facets of a level-2 icosphere sit about 0.2 inside the sphere
    assert torch.allclose(sd[:, 0], torch.tensor([-RADIUS / 2, -RADIUS / 4], dtype=v.dtype), atol=0.4)
    p = (random_points(6, 3.0)[None].expand(2, -1, -1)).clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: sample_sdf_grids(values, lower, upper, x), (p,))
    with pytest.raises(ParameterError, match="points must be"):
        sample_sdf_grids(values, lower, upper, half[:1])


def test_sdf_grid_rejects_bad_arguments() -> None:
    v, f = sphere(1)
    with pytest.raises(ParameterError, match="resolution"):
        sdf_grid(v, f, resolution=1)
    with pytest.raises(ParameterError, match="margin"):
        sdf_grid(v, f, margin=0.0)


def test_signed_distance_to_faces_matches_trimesh_and_sign() -> None:
    v, f = sphere(3)
    g = torch.Generator().manual_seed(5)
    # a deformed sphere (stretched along x) in a batch of two
    verts = torch.stack([v, v * torch.tensor([1.3, 1.0, 0.9], dtype=v.dtype)])
    p = torch.randn(2, 300, 3, generator=g, dtype=v.dtype) * 7
    res = signed_distance_to_faces(p, verts, f)
    for b in range(2):
        mesh = trimesh.Trimesh(verts[b].numpy(), f.numpy(), process=False)
        closest, dist, _ = trimesh.proximity.closest_point(mesh, p[b].numpy())
        inside = mesh.contains(p[b].numpy())
        assert torch.allclose(res.distance[b].abs(), torch.tensor(dist), atol=1e-9)
        assert torch.allclose(res.closest[b], torch.tensor(closest), atol=1e-9)
        assert torch.equal(res.distance[b] < 0, torch.tensor(inside))
    assert torch.allclose(res.normal.norm(dim=-1), torch.ones(1, dtype=v.dtype))


def test_signed_distance_to_faces_gradcheck() -> None:
    v, f = sphere(1)
    p = (random_points(5, 6.0)[None]).requires_grad_()
    verts = v[None].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: signed_distance_to_faces(a, b, f).distance, (p, verts))


def test_folded_surface_is_confirmed_by_the_winding_number() -> None:
    """Faces wound the wrong way (a fold) fool the local normal test, not the winding number."""
    v, f = sphere(3)
    p = torch.tensor([[[RADIUS + 1.0, 0.0, 0.0]]], dtype=v.dtype)
    centroids = v[f].mean(1)
    near = (centroids - p[0]).norm(dim=1).argsort()[:12]
    folded = f.clone()
    folded[near] = folded[near][:, [0, 2, 1]]
    local = signed_distance_to_faces(p, v[None], folded, confirm_inside=False).distance
    confirmed = signed_distance_to_faces(p, v[None], folded).distance
    assert float(local) < -0.9  # the flipped normals say "inside"
    assert float(confirmed) > 0.9  # the whole surface says "outside"


def test_angle_weighted_normals_of_a_sphere_are_radial() -> None:
    v, f = sphere(2)
    n = angle_weighted_normals(v[None], f)[0]
    assert torch.allclose(n, v / v.norm(dim=1, keepdim=True), atol=0.015)


def test_signed_distance_to_faces_rejects_bad_shapes() -> None:
    v, f = sphere(1)
    with pytest.raises(ParameterError, match="same B"):
        signed_distance_to_faces(torch.zeros(2, 4, 3, dtype=v.dtype), v[None], f)
    with pytest.raises(ParameterError, match="positive int"):
        signed_distance_to_faces(torch.zeros(1, 4, 3, dtype=v.dtype), v[None], f, k=0)
