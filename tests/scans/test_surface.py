"""anatomy.scans.surface: marching-cubes surfaces of voxel balls against the true sphere."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skimage")

from anatomy.core.errors import ParameterError  # noqa: E402
from anatomy.io import Mesh  # noqa: E402
from anatomy.scans import Volume  # noqa: E402
from anatomy.scans.segment import Tissue  # noqa: E402
from anatomy.scans.surface import (  # noqa: E402
    decimate,
    extract_surface,
    keep_largest_component,
    mesh_volume,
    taubin_smooth,
)

R = 10.0


def ball(h: float, radius: float = R, pad: int = 4) -> Volume:
    """A voxel ball of ``radius`` mm (voxel centres inside), centred on the world origin."""
    n = int(np.ceil(2 * radius / h)) + 2 * pad
    c = (n - 1) / 2.0
    g = (np.indices((n, n, n)) - c) * h
    aff = np.diag([h, h, h, 1.0])
    aff[:3, 3] = -c * h
    return Volume(np.sqrt((g**2).sum(axis=0)) <= radius, aff, "labels")


def _radial_error(vertices: np.ndarray, radius: float = R) -> np.ndarray:
    return np.abs(np.linalg.norm(vertices, axis=1) - radius)


def _edges_twice(faces: np.ndarray) -> bool:
    """Closed and consistently wound: every directed edge appears once and its reverse once."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    fwd = {tuple(x) for x in e.tolist()}
    return len(fwd) == len(e) and all((b, a) in fwd for a, b in fwd)


# measured (mean / max radial distance of the vertices to the true sphere, r = 10 mm):
#   0.5 mm voxels: 0.085 / 0.23 mm raw, 0.044 / 0.18 mm after 10 Taubin passes
#   1.0 mm voxels: 0.164 / 0.42 mm raw, 0.092 / 0.28 mm after 10 Taubin passes
@pytest.mark.parametrize(("h", "raw_mean", "smooth_mean"), [(0.5, 0.10, 0.06), (1.0, 0.20, 0.12)])
def test_sphere_surface_distance_and_volume(h: float, raw_mean: float, smooth_mean: float) -> None:
    raw = extract_surface(ball(h), smooth_iterations=0)
    smooth = extract_surface(ball(h), smooth_iterations=10)
    assert _radial_error(raw.vertices).mean() < raw_mean
    assert _radial_error(smooth.vertices).mean() < smooth_mean
    assert _radial_error(smooth.vertices).mean() < 0.3  # the bound at 0.5 mm holds at 1 mm too
    true_volume = 4.0 / 3.0 * np.pi * R**3
    assert raw.enclosed_volume == pytest.approx(true_volume, rel=0.01)
    # Taubin keeps the volume (within 1 %; the raw surface is the reference)
    assert smooth.enclosed_volume == pytest.approx(raw.enclosed_volume, rel=0.01)
    assert _edges_twice(raw.faces) and _edges_twice(smooth.faces)
    np.testing.assert_array_equal(raw.faces, smooth.faces)  # smoothing moves vertices only, order kept


def test_faces_point_outward() -> None:
    surf = extract_surface(ball(1.0), smooth_iterations=0)
    v, f = surf.vertices, surf.faces
    normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    centres = v[f].mean(axis=1)
    assert (np.einsum("ij,ij->i", normals, centres) > 0).mean() > 0.99
    assert surf.enclosed_volume > 0
    assert isinstance(surf.to_mesh(), Mesh)


@pytest.mark.parametrize("mirror", [False, True])
def test_affine_moves_the_mesh_exactly(mirror: bool) -> None:
    base = ball(1.0, radius=6.0)
    # an oblique, sheared, anisotropic affine (mirrored too: det < 0)
    rot = np.array([[0.8, -0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])
    lin = rot @ np.array([[0.7, 0.1, 0.0], [0.0, 0.9, 0.2], [0.0, 0.0, 1.3]])
    if mirror:
        lin = lin @ np.diag([-1.0, 1.0, 1.0])
    aff = np.eye(4)
    aff[:3, :3] = lin
    aff[:3, 3] = [12.0, -7.0, 30.5]
    ident = Volume(base.data, np.eye(4), "labels")
    ref = extract_surface(ident, smooth_iterations=0)  # vertices in voxel index units
    moved = extract_surface(Volume(base.data, aff, "labels"), smooth_iterations=0)
    assert moved.vertices.shape == ref.vertices.shape
    np.testing.assert_allclose(moved.vertices, ref.vertices @ lin.T + aff[:3, 3], atol=1e-9)
    # volume scales by |det| and the winding stays outward
    assert moved.enclosed_volume == pytest.approx(ref.enclosed_volume * abs(np.linalg.det(lin)), rel=1e-9)


def test_label_selection_largest_piece_and_hole_filling() -> None:
    vol = ball(1.0, radius=8.0, pad=10)
    g = np.indices(vol.shape) - (np.array(vol.shape)[:, None, None, None] - 1) / 2.0
    labels = np.where(vol.data, np.uint8(Tissue.BONE), np.uint8(0))
    labels[(g**2).sum(axis=0) <= 3**2] = 0  # a cavity inside: filled, no inner surface
    labels[1:4, 1:4, 1:4] = Tissue.BONE  # a speck apart: dropped as a smaller piece
    labels[-5:-2, -5:-2, -5:-2] = Tissue.SKIN  # another label: ignored
    surf = extract_surface(vol.with_data(labels), label=Tissue.BONE, smooth_iterations=0)
    assert surf.tissue == "bone" and surf.label == int(Tissue.BONE)
    assert np.abs(np.linalg.norm(surf.vertices, axis=1) - 8.0).max() < 0.9
    full = extract_surface(vol, smooth_iterations=0, tissue="skull")
    assert surf.enclosed_volume == pytest.approx(full.enclosed_volume, rel=1e-12)
    assert full.tissue == "skull"
    both = extract_surface(vol.with_data(labels), label=[Tissue.BONE, Tissue.SKIN], largest_only=False)
    assert both.tissue == "labels_3_1"
    v, f = keep_largest_component(both.vertices, both.faces)
    assert len(v) == len(surf.vertices)


@pytest.mark.parametrize("method", ["quadric", "cluster"])
def test_decimation_hits_the_target(method: str) -> None:
    if method == "quadric":
        pytest.importorskip("fast_simplification")
    surf = extract_surface(ball(0.5), smooth_iterations=0)
    assert len(surf.vertices) > 7000
    small = extract_surface(ball(0.5), target_vertices=1000, smooth_iterations=5, decimation=method)
    assert abs(len(small.vertices) - 1000) <= 100
    assert np.all(small.faces < len(small.vertices)) and len(np.unique(small.faces)) == len(small.vertices)
    assert small.enclosed_volume == pytest.approx(4 / 3 * np.pi * R**3, rel=0.03)
    assert _radial_error(small.vertices).mean() < 0.3


def test_taubin_keeps_volume_where_laplacian_shrinks() -> None:
    surf = extract_surface(ball(1.0), smooth_iterations=0)
    v0 = mesh_volume(surf.vertices, surf.faces)
    taubin = taubin_smooth(surf.vertices, surf.faces, iterations=50)
    assert mesh_volume(taubin, surf.faces) == pytest.approx(v0, rel=0.02)
    with pytest.raises(ParameterError, match="lam < -mu"):
        taubin_smooth(surf.vertices, surf.faces, lam=0.5, mu=-0.4)


def test_bad_input() -> None:
    vol = ball(1.0)
    with pytest.raises(ParameterError, match="mask is empty.*holds the values"):
        extract_surface(vol.with_data(np.zeros(vol.shape, dtype=np.uint8)))
    with pytest.raises(ParameterError, match="mask is empty"):
        extract_surface(vol.with_data(vol.data.astype(np.uint8)), label=Tissue.MANDIBLE)
    with pytest.raises(ParameterError, match="smooth_iterations"):
        extract_surface(vol, smooth_iterations=-1)
    with pytest.raises(ParameterError, match="target_vertices"):
        extract_surface(vol, target_vertices=2)
    with pytest.raises(ParameterError, match="method"):
        decimate(np.zeros((3, 3)), np.array([[0, 1, 2]]), 3, method="fast")
    with pytest.raises(ParameterError, match="empty list"):
        extract_surface(vol, label=[])
