"""UV layouts: no flipped triangles, no overlapping charts, bounded area distortion, exact on flat meshes."""

from __future__ import annotations

import numpy as np
import pytest

from anatomy.appearance import UVLayout, area_distortion, rasterize, signed_uv_areas, unwrap
from anatomy.core.errors import ParameterError, ShapeError


def symmetric(ratio: np.ndarray) -> np.ndarray:
    return np.maximum(ratio, 1.0 / ratio)


def _check_layout(layout: UVLayout, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Common assertions; returns the symmetric per-face area distortion."""
    assert layout.uv_faces.shape == faces.shape
    np.testing.assert_array_equal(layout.vertex_of_uv[layout.uv_faces], faces)  # UV faces follow the mesh faces
    assert layout.uv.min() >= 0.0 and layout.uv.max() <= 1.0
    assert (signed_uv_areas(layout.uv, layout.uv_faces) > 0).all()  # no flipped triangle, every chart
    # faces of one chart share UV vertices only within that chart
    chart_of_uv = np.full(len(layout.uv), -1)
    chart_of_uv[layout.uv_faces] = layout.chart_of_face[:, None]
    assert (chart_of_uv[layout.uv_faces] == layout.chart_of_face[:, None]).all()
    # no two triangles (same chart or not) contain one texel centre
    raster = rasterize(layout, 1024)
    assert raster.coverage.max() == 1
    return symmetric(area_distortion(vertices, faces, layout))


@pytest.mark.parametrize("which, p50, p95", [("hand", 1.2, 2.0), ("head", 1.5, 3.0)])
def test_default_layouts(which: str, p50: float, p95: float, hand_app, head_app) -> None:
    built = hand_app if which == "hand" else head_app
    dist = _check_layout(built.app.layout, built.vertices, built.faces)
    pct = np.percentile(dist, [50, 90, 95, 99])
    print(f"{which}: {built.app.layout.num_charts} charts, area distortion p50/p90/p95/p99 "
          f"{pct.round(2).tolist()}, max {dist.max():.1f}")
    assert pct[0] < p50 and pct[2] < p95
    if which == "hand":  # per finger and side, cut further where distortion asks
        assert 12 <= built.app.layout.num_charts <= 40
    else:  # the face stays one chart (a seam across it would show)
        assert built.app.layout.num_charts == 1


def test_flat_grid_is_exact() -> None:
    """A planar grid flattens with no distortion at all (LSCM of a plane is a similarity)."""
    n = 12
    x, y = np.meshgrid(np.arange(n, dtype=float), np.arange(n, dtype=float) * 2.0)
    pts = np.stack([x.ravel(), y.ravel(), 0.3 * x.ravel()], 1)  # a tilted plane
    ids = np.arange(n * n).reshape(n, n)
    quads = np.stack([ids[:-1, :-1].ravel(), ids[:-1, 1:].ravel(), ids[1:, 1:].ravel(), ids[1:, :-1].ravel()], 1)
    faces = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    layout = unwrap(pts, faces)
    dist = _check_layout(layout, pts, faces)
    np.testing.assert_allclose(dist, 1.0, atol=1e-9)
    # lengths preserved up to the packing scale: the ratio of UV to 3D edge lengths is one constant
    e3 = np.linalg.norm(pts[faces[:, 1]] - pts[faces[:, 0]], axis=1)
    e2 = np.linalg.norm(layout.uv[layout.uv_faces[:, 1]] - layout.uv[layout.uv_faces[:, 0]], axis=1)
    np.testing.assert_allclose(e2 / e3, (e2 / e3)[0], rtol=1e-9)


def test_closed_surface_is_cut() -> None:
    """A closed sphere needs seams: it comes back in several flip-free, non-overlapping charts."""
    theta, phi = np.meshgrid(np.linspace(0.15, np.pi - 0.15, 14), np.linspace(0, 2 * np.pi, 24, endpoint=False))
    ring = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], -1)  # (24, 14, 3)
    pts = np.concatenate([ring.reshape(-1, 3), [[0, 0, 1.0], [0, 0, -1.0]]]) * 30.0
    ids = np.arange(24 * 14).reshape(24, 14)
    nxt = np.roll(ids, -1, 0)
    a, b, c, d = ids[:, :-1].ravel(), ids[:, 1:].ravel(), nxt[:, 1:].ravel(), nxt[:, :-1].ravel()
    faces = np.concatenate([np.stack([a, d, c], 1), np.stack([a, c, b], 1),
                            np.stack([ids[:, 0], np.full(24, 24 * 14), nxt[:, 0]], 1),
                            np.stack([ids[:, -1], nxt[:, -1], np.full(24, 24 * 14 + 1)], 1)])
    faces = faces[:, [0, 2, 1]]  # outward winding
    centroid_dir = pts[faces].mean(1)
    normal = np.cross(pts[faces[:, 1]] - pts[faces[:, 0]], pts[faces[:, 2]] - pts[faces[:, 0]])
    assert ((normal * centroid_dir).sum(1) > 0).all()
    layout = unwrap(pts, faces)
    assert layout.num_charts >= 2
    dist = _check_layout(layout, pts, faces)
    assert np.percentile(dist, 95) < 2.5


def test_bad_input() -> None:
    pts = np.zeros((3, 3))
    with pytest.raises(ShapeError, match=r"\(V, 3\)"):
        unwrap(np.zeros((3, 2)), np.array([[0, 1, 2]]))
    with pytest.raises(ShapeError, match="labels"):
        unwrap(np.eye(3), np.array([[0, 1, 2]]), labels=np.zeros(2))
    with pytest.raises(ParameterError, match="gutter"):
        unwrap(np.eye(3), np.array([[0, 1, 2]]), gutter=0.5)
    with pytest.raises(ParameterError, match="at least one face"):
        unwrap(pts, np.zeros((0, 3), dtype=int))
    with pytest.raises(ShapeError, match="more than two faces"):
        unwrap(np.random.default_rng(0).normal(size=(5, 3)), np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4]]))
