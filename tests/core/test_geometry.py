"""Geometry: normals, Procrustes, k-NN, Chamfer, closest points on meshes, landmarks.

References: analytic values, brute force through ``torch.cdist`` / all faces, scipy's
``Rotation.align_vectors`` and trimesh (``triangles.closest_point``, ``mean_vertex_normals``)
as oracles, float64 gradcheck.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from anatomy.core import geometry as geo
from anatomy.core.errors import DeviceError, DtypeError, ParameterError, ShapeError

D = torch.float64


@pytest.fixture(scope="module")
def trimesh():
    return pytest.importorskip("trimesh")


def sphere_mesh(subdivisions: int = 2, noise: float = 0.03, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A perturbed icosphere (radius 1) as float64 vertices and int64 faces, built without trimesh."""
    t = (1 + math.sqrt(5)) / 2
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
                  [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], float)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
                  [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
                  [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    verts = list(v / np.linalg.norm(v, axis=1, keepdims=True))
    for _ in range(subdivisions):
        cache: dict[tuple[int, int], int] = {}

        def mid(i: int, j: int, cache: dict[tuple[int, int], int] = cache) -> int:
            key = (min(i, j), max(i, j))
            if key not in cache:
                m = verts[i] + verts[j]
                verts.append(m / np.linalg.norm(m))
                cache[key] = len(verts) - 1
            return cache[key]

        nf = []
        for a, b, c in f:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            nf += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        f = np.array(nf)
    rng = np.random.default_rng(seed)
    vv = np.array(verts) + noise * rng.standard_normal((len(verts), 3))
    return torch.tensor(vv, dtype=D), torch.tensor(f, dtype=torch.int64)


def brute_closest(points: np.ndarray, verts: np.ndarray, faces: np.ndarray, trimesh) -> tuple:
    """Closest points over ALL faces with trimesh's per-triangle oracle."""
    tri = verts[faces]
    n, f = len(points), len(faces)
    cp = trimesh.triangles.closest_point(np.tile(tri, (n, 1, 1)), np.repeat(points, f, 0)).reshape(n, f, 3)
    d = np.linalg.norm(cp - points[:, None], axis=-1)
    j = d.argmin(1)
    return cp[np.arange(n), j], d[np.arange(n), j]


def random_rotation(n: int | None = None, seed: int = 0) -> torch.Tensor:
    return torch.tensor(Rotation.random(n, random_state=seed).as_matrix(), dtype=D)


# --------------------------------------------------------------------------------------
# normals
# --------------------------------------------------------------------------------------


def test_face_normal_of_known_triangle() -> None:
    v = torch.tensor([[0.0, 0, 0], [2, 0, 0], [0, 3, 0]], dtype=D)
    f = torch.tensor([[0, 1, 2]])
    torch.testing.assert_close(geo.face_normals(v, f, normalize=False), torch.tensor([[0.0, 0, 6]], dtype=D))
    torch.testing.assert_close(geo.face_normals(v, f), torch.tensor([[0.0, 0, 1]], dtype=D))
    # reversed winding flips the normal
    torch.testing.assert_close(geo.face_normals(v, f.flip(1)), torch.tensor([[0.0, 0, -1]], dtype=D))


def test_face_normals_of_unit_cube(trimesh) -> None:
    box = trimesh.creation.box(extents=(1, 1, 1))
    v, f = torch.tensor(box.vertices), torch.tensor(box.faces)
    n = geo.face_normals(v, f)
    np.testing.assert_allclose(n.numpy(), box.face_normals, atol=1e-12)
    # every cube normal is a signed unit axis
    np.testing.assert_allclose(np.sort(np.abs(n.numpy()), 1), np.tile([0, 0, 1.0], (12, 1)), atol=1e-12)
    area2 = geo.face_normals(v, f, normalize=False).norm(dim=-1)
    np.testing.assert_allclose(area2.numpy(), 1.0, atol=1e-12)  # each triangle: area 1/2


def test_vertex_normals_match_area_weighted_trimesh(trimesh) -> None:
    v, f = sphere_mesh(2, noise=0.05)
    ours = geo.vertex_normals(v, f).numpy()
    mesh = trimesh.Trimesh(v.numpy(), f.numpy(), process=False)
    ref = trimesh.geometry.mean_vertex_normals(len(v), f.numpy(), mesh.face_normals * mesh.area_faces[:, None])
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    # on an unperturbed sphere (outward winding) the normals are radial
    vs, fs = sphere_mesh(2, noise=0.0)
    assert torch.einsum("ij,ij->i", geo.vertex_normals(vs, fs), vs).min() > 0.999


def test_normals_batched_and_float32() -> None:
    v, f = sphere_mesh(1)
    vb = torch.stack([v, 2 * v + 1, v @ random_rotation(seed=3).T])
    nb = geo.vertex_normals(vb, f)
    for i in range(3):
        torch.testing.assert_close(nb[i], geo.vertex_normals(vb[i], f))
    fb = geo.face_normals(vb[None], f)
    assert fb.shape == (1, 3, f.shape[0], 3)
    n32 = geo.vertex_normals(v.float(), f)
    assert n32.dtype == torch.float32
    torch.testing.assert_close(n32, nb[0].float(), atol=1e-5, rtol=0)


def test_isolated_vertex_and_degenerate_face_have_zero_normal_and_finite_grad() -> None:
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5], [2, 0, 0], [3, 0, 0]], dtype=D,
                     requires_grad=True)
    f = torch.tensor([[0, 1, 2], [1, 4, 5]])  # vertex 3 isolated, face 1 collinear
    vn = geo.vertex_normals(v, f)
    torch.testing.assert_close(vn[3], torch.zeros(3, dtype=D))
    torch.testing.assert_close(vn[5], torch.zeros(3, dtype=D))
    torch.testing.assert_close(vn[0], torch.tensor([0.0, 0, 1], dtype=D))
    fn = geo.face_normals(v, f)
    torch.testing.assert_close(fn[1], torch.zeros(3, dtype=D))
    (vn.sum() + fn.sum()).backward()
    assert v.grad is not None and torch.isfinite(v.grad).all()
    torch.testing.assert_close(v.grad[3], torch.zeros(3, dtype=D))


def test_normals_gradcheck() -> None:
    v, f = sphere_mesh(0, noise=0.1)
    v = v.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: geo.face_normals(x, f), (v,))
    assert torch.autograd.gradcheck(lambda x: geo.face_normals(x, f, normalize=False), (v,))
    assert torch.autograd.gradcheck(lambda x: geo.vertex_normals(x, f), (v,))


# --------------------------------------------------------------------------------------
# Procrustes
# --------------------------------------------------------------------------------------


def test_procrustes_recovers_similarity_exactly() -> None:
    x = torch.randn(4, 50, 3, dtype=D)
    r = random_rotation(4, seed=1)
    t = torch.randn(4, 3, dtype=D) * 10
    s = torch.rand(4, dtype=D) + 0.5
    y = s[:, None, None] * x @ r.transpose(-1, -2) + t[:, None, :]
    fit = geo.procrustes(x, y, scale=True)
    torch.testing.assert_close(fit.rotation, r, atol=1e-10, rtol=0)
    torch.testing.assert_close(fit.translation, t, atol=1e-10, rtol=0)
    torch.testing.assert_close(fit.scale, s, atol=1e-10, rtol=0)
    torch.testing.assert_close(fit.apply(x), y, atol=1e-10, rtol=0)
    # rigid fit of a rigid motion; scale reported as 1
    rigid = geo.procrustes(x, x @ r.transpose(-1, -2) + t[:, None, :])
    torch.testing.assert_close(rigid.rotation, r, atol=1e-10, rtol=0)
    torch.testing.assert_close(rigid.translation, t, atol=1e-10, rtol=0)
    torch.testing.assert_close(rigid.scale, torch.ones(4, dtype=D))


def test_procrustes_weights_ignore_zero_weight_outliers() -> None:
    x = torch.randn(40, 3, dtype=D)
    r, t, s = random_rotation(seed=2), torch.tensor([1.0, -2, 3], dtype=D), 1.7
    y = s * x @ r.T + t
    w = torch.rand(40, dtype=D) + 0.1
    y_bad = y.clone()
    y_bad[:10] += 100 * torch.randn(10, 3, dtype=D)  # outliers ...
    w[:10] = 0  # ... that carry no weight
    fit = geo.procrustes(x, y_bad, w, scale=True)
    torch.testing.assert_close(fit.rotation, r, atol=1e-10, rtol=0)
    torch.testing.assert_close(fit.translation, t, atol=1e-10, rtol=0)
    torch.testing.assert_close(fit.scale, torch.tensor(s, dtype=D), atol=1e-10, rtol=0)


def test_procrustes_weighted_rotation_matches_scipy_on_noisy_data() -> None:
    x = torch.randn(30, 3, dtype=D)
    y = x @ random_rotation(seed=4).T + 0.3 * torch.randn(30, 3, dtype=D)
    w = torch.rand(30, dtype=D) + 0.05
    fit = geo.procrustes(x, y, w)
    wn = (w / w.sum())[:, None]
    xc, yc = x - (wn * x).sum(0), y - (wn * y).sum(0)
    ref, _ = Rotation.align_vectors(yc.numpy(), xc.numpy(), weights=w.numpy())
    np.testing.assert_allclose(fit.rotation.numpy(), ref.as_matrix(), atol=1e-10)


def test_procrustes_reflection_guard() -> None:
    x = torch.randn(25, 3, dtype=D) * torch.tensor([3.0, 2, 1], dtype=D)
    mirror = torch.diag(torch.tensor([1.0, 1, -1], dtype=D))
    y = x @ (random_rotation(seed=5) @ mirror).T
    fit = geo.procrustes(x, y)
    torch.testing.assert_close(torch.linalg.det(fit.rotation), torch.tensor(1.0, dtype=D))
    torch.testing.assert_close(fit.rotation @ fit.rotation.T, torch.eye(3, dtype=D))
    ref, _ = Rotation.align_vectors(y.numpy() - y.numpy().mean(0), x.numpy() - x.numpy().mean(0))
    np.testing.assert_allclose(fit.rotation.numpy(), ref.as_matrix(), atol=1e-10)
    # the best proper rotation beats the identity and a few random ones
    res = (fit.apply(x) - y).pow(2).sum()
    for seed in range(5):
        other = geo.Similarity(random_rotation(seed=10 + seed), fit.translation, fit.scale)
        assert res <= (other.apply(x) - y).pow(2).sum()


def test_similarity_helpers_and_broadcast() -> None:
    x = torch.randn(3, 20, 3, dtype=D)
    y = 2.0 * x @ random_rotation(3, seed=6).transpose(-1, -2) + 1.0
    fit = geo.procrustes(x, y, scale=True)
    torch.testing.assert_close(fit.inverse().apply(fit.apply(x)), x)
    m = fit.as_matrix()
    hom = torch.cat([x, torch.ones_like(x[..., :1])], -1) @ m.transpose(-1, -2)
    torch.testing.assert_close(hom[..., :3], fit.apply(x))
    torch.testing.assert_close(hom[..., 3], torch.ones_like(hom[..., 3]))
    # batch equals stacked singles; a single target broadcasts against a batched source
    for i in range(3):
        single = geo.procrustes(x[i], y[i], scale=True)
        torch.testing.assert_close(single.rotation, fit.rotation[i])
    assert geo.procrustes(x, y[0]).rotation.shape == (3, 3, 3)


@settings(max_examples=40, deadline=None)
@given(
    q=st.lists(st.floats(-1, 1, allow_nan=False), min_size=4, max_size=4).filter(
        lambda q: sum(c * c for c in q) > 1e-2
    ),
    t=st.lists(st.floats(-100, 100, allow_nan=False), min_size=3, max_size=3),
)
def test_procrustes_recovers_any_rotation(q: list[float], t: list[float]) -> None:
    r = torch.tensor(Rotation.from_quat(q).as_matrix(), dtype=D)
    x = torch.tensor(np.random.default_rng(7).standard_normal((12, 3)), dtype=D)
    tt = torch.tensor(t, dtype=D)
    fit = geo.procrustes(x, x @ r.T + tt)
    torch.testing.assert_close(fit.rotation, r, atol=1e-10, rtol=0)
    torch.testing.assert_close(fit.translation, tt, atol=1e-9, rtol=0)


def test_procrustes_gradcheck() -> None:
    x = (torch.randn(8, 3, dtype=D) * torch.tensor([3.0, 2, 1], dtype=D)).requires_grad_()
    y = (x.detach() @ random_rotation(seed=8).T + 0.2 * torch.randn(8, 3, dtype=D)).requires_grad_()
    w = (torch.rand(8, dtype=D) + 0.5).requires_grad_()

    def f(a: torch.Tensor, b: torch.Tensor, ww: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s = geo.procrustes(a, b, ww, scale=True)
        return s.rotation, s.translation, s.scale

    assert torch.autograd.gradcheck(f, (x, y, w))


def test_procrustes_errors() -> None:
    x = torch.randn(5, 3, dtype=D)
    with pytest.raises(ShapeError, match="at least 3"):
        geo.procrustes(x[:2], x[:2])
    with pytest.raises(ShapeError):
        geo.procrustes(x, x[:4])
    with pytest.raises(ShapeError):
        geo.procrustes(x[:, :2], x[:, :2])
    with pytest.raises(ParameterError, match="all zero"):
        geo.procrustes(x, x, torch.zeros(5, dtype=D))
    with pytest.raises(ParameterError, match="negative"):
        geo.procrustes(x, x, -torch.ones(5, dtype=D))
    with pytest.raises(ShapeError):
        geo.procrustes(x, x, torch.ones(4, dtype=D))
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ParameterError, match="NaN"):
        geo.procrustes(bad, x)
    with pytest.raises(DtypeError):
        geo.procrustes(x, x.float())
    with pytest.raises(DtypeError):
        geo.procrustes(x.long(), x.long())
    with pytest.raises(DtypeError):
        geo.procrustes(x.numpy(), x)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# k-NN and Chamfer
# --------------------------------------------------------------------------------------


def test_knn_matches_cdist_brute_force_values_and_grads() -> None:
    q = torch.randn(60, 3, dtype=D, requires_grad=True)
    p = torch.randn(80, 3, dtype=D, requires_grad=True)
    d, i = geo.knn(q, p, k=4)
    ref_all = torch.cdist(q, p)
    ref_d, ref_i = ref_all.topk(4, dim=1, largest=False)
    torch.testing.assert_close(i, ref_i)
    torch.testing.assert_close(d, ref_d)
    wts = torch.randn(60, 4, dtype=D)
    g_ours = torch.autograd.grad((d * wts).sum(), (q, p))
    g_ref = torch.autograd.grad((ref_d * wts).sum(), (q, p))
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b)
    d2, i2 = geo.knn(q, p, k=1, squared=True)
    torch.testing.assert_close(d2, ref_d[:, :1] ** 2)
    assert d2.shape == (60, 1) and i2.dtype == torch.int64


def test_knn_float32_and_zero_distance_grad() -> None:
    p = torch.randn(30, 3)
    q = p[:10].clone().requires_grad_()
    d, i = geo.knn(q, p)
    assert d.dtype == torch.float32
    torch.testing.assert_close(i[:, 0], torch.arange(10))
    torch.testing.assert_close(d, torch.zeros(10, 1))
    d.sum().backward()
    assert q.grad is not None
    torch.testing.assert_close(q.grad, torch.zeros(10, 3))


def test_knn_gradcheck() -> None:
    q = torch.randn(10, 3, dtype=D, requires_grad=True)
    p = torch.randn(15, 3, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: geo.knn(a, b, k=3)[0], (q, p))


def test_knn_errors() -> None:
    p = torch.randn(5, 3)
    with pytest.raises(ParameterError):
        geo.knn(p, p, k=6)
    with pytest.raises(ParameterError):
        geo.knn(p, p, k=0)
    with pytest.raises(ShapeError):
        geo.knn(p[:, :2], p)
    with pytest.raises(ShapeError):
        geo.knn(p[None], p)
    with pytest.raises(ParameterError, match="empty"):
        geo.knn(p[:0], p)
    with pytest.raises(DtypeError):
        geo.knn(p.long(), p.long())
    with pytest.raises(DtypeError):
        geo.knn(p.double(), p)
    inf = p.clone()
    inf[1, 2] = float("inf")
    with pytest.raises(ParameterError):
        geo.knn(p, inf)


def brute_chamfer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(a, b) ** 2
    return d.min(1).values.mean() + d.min(0).values.mean()


def test_chamfer_identical_shifted_and_brute_force() -> None:
    g = torch.stack(torch.meshgrid(*[torch.arange(5, dtype=D)] * 3, indexing="ij"), -1).reshape(-1, 3)
    zero = geo.chamfer_distance(g, g)
    assert float(zero.total) == 0.0
    shift = torch.tensor([0.3, 0.0, 0.0], dtype=D)  # < half the spacing: the twin stays nearest
    res = geo.chamfer_distance(g, g + shift)
    torch.testing.assert_close(res.a_to_b, torch.tensor(0.09, dtype=D))
    torch.testing.assert_close(res.total, torch.tensor(0.18, dtype=D))
    torch.testing.assert_close(res.a_index, torch.arange(len(g)))
    plain = geo.chamfer_distance(g, g + shift, squared=False, reduction="sum")
    torch.testing.assert_close(plain.total, torch.tensor(0.6 * len(g), dtype=D))
    a, b = torch.randn(70, 3, dtype=D), torch.randn(50, 3, dtype=D)
    torch.testing.assert_close(geo.chamfer_distance(a, b).total, brute_chamfer(a, b))


def test_chamfer_weights_truncate_and_none() -> None:
    a = torch.zeros(3, 3, dtype=D)
    a[:, 0] = torch.tensor([0.0, 1.0, 10.0], dtype=D)
    b = torch.zeros(1, 3, dtype=D)
    none = geo.chamfer_distance(a, b, reduction="none")
    torch.testing.assert_close(none.a_to_b, torch.tensor([0.0, 1.0, 100.0], dtype=D))
    torch.testing.assert_close(none.b_to_a, torch.tensor([0.0], dtype=D))
    assert none.total.shape == (4,)
    torch.testing.assert_close(none.total.sum(), geo.chamfer_distance(a, b, reduction="sum").total)
    w = torch.tensor([1.0, 3.0, 0.0], dtype=D)
    weighted = geo.chamfer_distance(a, b, weights_a=w)
    torch.testing.assert_close(weighted.a_to_b, torch.tensor(3.0 / 4.0, dtype=D))
    a_req = a.clone().requires_grad_()
    trunc = geo.chamfer_distance(a_req, b, truncate=2.0, reduction="sum")
    torch.testing.assert_close(trunc.a_to_b, torch.tensor(0.0 + 1.0 + 4.0, dtype=D))
    trunc.total.backward()
    assert a_req.grad is not None
    torch.testing.assert_close(a_req.grad[2], torch.zeros(3, dtype=D))  # the truncated outlier
    torch.testing.assert_close(a_req.grad[1], torch.tensor([2.0, 0, 0], dtype=D))


def test_chamfer_errors() -> None:
    a = torch.randn(4, 3)
    with pytest.raises(ParameterError):
        geo.chamfer_distance(a, a, reduction="max")  # type: ignore[arg-type]
    with pytest.raises(ParameterError):
        geo.chamfer_distance(a, a, truncate=-1.0)
    with pytest.raises(ParameterError):
        geo.chamfer_distance(a, a, weights_a=torch.zeros(4))
    with pytest.raises(ShapeError):
        geo.chamfer_distance(a, a, weights_b=torch.ones(3))


# --------------------------------------------------------------------------------------
# closest points on a mesh
# --------------------------------------------------------------------------------------


def test_closest_point_every_region_of_one_triangle() -> None:
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=D)
    f = torch.tensor([[0, 1, 2]])
    p = torch.tensor([
        [0.2, 0.2, 1.0],     # interior
        [-1.0, -1.0, 0.5],   # vertex a
        [2.0, -0.5, 0.0],    # vertex b
        [-0.5, 2.0, 0.0],    # vertex c
        [0.5, -1.0, 0.0],    # edge ab
        [-1.0, 0.5, 0.0],    # edge ac
        [1.0, 1.0, -2.0],    # edge bc
    ], dtype=D)
    expect = torch.tensor([
        [0.2, 0.2, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0.5, 0, 0], [0, 0.5, 0], [0.5, 0.5, 0],
    ], dtype=D)
    bary = torch.tensor([
        [0.6, 0.2, 0.2], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5],
    ], dtype=D)
    closest, face, b, dist = geo.closest_points_on_mesh(p, v, f)
    torch.testing.assert_close(closest, expect)
    torch.testing.assert_close(b, bary)
    torch.testing.assert_close(dist, (p - expect).norm(dim=-1))
    assert (face == 0).all()


@pytest.mark.parametrize("scale", [0.05, 0.5, 3.0])
def test_closest_points_match_brute_force(trimesh, scale: float) -> None:
    v, f = sphere_mesh(2, noise=0.05, seed=1)
    p = torch.randn(200, 3, dtype=D)
    p = p / p.norm(dim=-1, keepdim=True) * (1 + scale * torch.randn(200, 1, dtype=D))
    ref_c, ref_d = brute_closest(p.numpy(), v.numpy(), f.numpy(), trimesh)
    for exact, eps in ((False, 0.0), (True, 0.0), (True, 0.5)):
        res = geo.closest_points_on_mesh(p, v, f, exact=exact, search_eps=eps)
        np.testing.assert_allclose(res.distance.numpy(), ref_d, atol=1e-12)
        np.testing.assert_allclose(res.closest.numpy(), ref_c, atol=1e-9)
        # barycentric weights are valid and rebuild the point on the reported face
        assert (res.barycentric >= -1e-12).all()
        torch.testing.assert_close(res.barycentric.sum(-1), torch.ones(200, dtype=D))
        rebuilt = (res.barycentric[:, :, None] * v[f[res.face_index]]).sum(1)
        torch.testing.assert_close(rebuilt, res.closest)


def test_closest_points_exact_mode_beats_the_heuristic(trimesh) -> None:
    # a big floor triangle under a cluster of 60 small triangles: the nearest centroids and
    # vertices of the query all belong to the cluster, but the floor is closer
    rng = np.random.default_rng(0)
    verts = [[-100.0, -100, 0], [100, -100, 0], [0, 100, 0]]
    faces = [[0, 1, 2]]
    for _ in range(60):
        c = np.array([20.0, 0, 10]) + rng.uniform(-2, 2, 3)
        base = len(verts)
        verts += (c + 0.2 * rng.standard_normal((3, 3))).tolist()
        faces.append([base, base + 1, base + 2])
    v, f = torch.tensor(verts, dtype=D), torch.tensor(faces)
    p = torch.tensor([[20.0, 0, 3]], dtype=D)
    _, ref_d = brute_closest(p.numpy(), v.numpy(), f.numpy(), trimesh)
    assert ref_d[0] == pytest.approx(3.0)
    heuristic = geo.closest_points_on_mesh(p, v, f, k_candidates=8)
    assert heuristic.distance[0] > 3.5  # the documented failure of the candidate heuristic
    for eps in (0.0, 1.0):
        exact = geo.closest_points_on_mesh(p, v, f, k_candidates=8, exact=True, search_eps=eps)
        assert exact.distance[0].item() == pytest.approx(3.0, abs=1e-12)
        assert exact.face_index[0].item() == 0


def test_closest_points_float32_degenerate_faces_and_isolated_vertices() -> None:
    v, f = sphere_mesh(1)
    v = torch.cat([v, torch.tensor([[9.0, 9, 9]], dtype=D)])  # isolated vertex
    f = torch.cat([f, torch.tensor([[0, 0, 1], [2, 2, 2]])])  # a degenerate edge and point face
    p = torch.randn(100, 3, dtype=D) * 1.5
    ref = geo.closest_points_on_mesh(p, v, f, exact=True)
    p32 = p.float().requires_grad_()
    v32 = v.float().requires_grad_()
    res = geo.closest_points_on_mesh(p32, v32, f)
    assert res.closest.dtype == torch.float32
    torch.testing.assert_close(res.distance.double(), ref.distance, atol=1e-5, rtol=0)
    res.distance.sum().backward()
    assert p32.grad is not None and v32.grad is not None
    assert torch.isfinite(p32.grad).all() and torch.isfinite(v32.grad).all()


def test_closest_points_gradients() -> None:
    v, f = sphere_mesh(0, noise=0.05)
    p = torch.randn(8, 3, dtype=D) * 1.3
    v.requires_grad_()
    p.requires_grad_()

    def f_closest(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        res = geo.closest_points_on_mesh(a, b, f)
        return res.closest, res.distance

    assert torch.autograd.gradcheck(f_closest, (p, v))
    # d distance / d point is the unit vector from the closest point (off the surface)
    res = geo.closest_points_on_mesh(p, v, f)
    (g,) = torch.autograd.grad(res.distance.sum(), p)
    torch.testing.assert_close(g, (p - res.closest).detach() / res.distance.detach()[:, None])


def test_point_to_surface_distance_values_and_zero_on_surface() -> None:
    v, f = sphere_mesh(1)
    w = torch.rand(40, 3, dtype=D)
    w = w / w.sum(-1, keepdim=True)
    fid = torch.randint(0, f.shape[0], (40,))
    on = geo.barycentric_interpolate(v, f[fid], w).requires_grad_()
    d = geo.point_to_surface_distance(on, v, f)
    assert d.item() < 1e-24
    d.backward()
    assert on.grad is not None and torch.isfinite(on.grad).all()
    p = torch.randn(30, 3, dtype=D) * 2
    res = geo.closest_points_on_mesh(p, v, f)
    torch.testing.assert_close(geo.point_to_surface_distance(p, v, f), (res.distance ** 2).mean())
    torch.testing.assert_close(
        geo.point_to_surface_distance(p, v, f, squared=False, reduction="sum"), res.distance.sum()
    )
    torch.testing.assert_close(
        geo.point_to_surface_distance(p, v, f, squared=False, reduction="none"), res.distance
    )


def test_closest_points_errors() -> None:
    v, f = sphere_mesh(0)
    p = torch.randn(5, 3, dtype=D)
    with pytest.raises(ParameterError, match="indices"):
        geo.closest_points_on_mesh(p, v, f + 100)
    with pytest.raises(ParameterError):
        geo.closest_points_on_mesh(p, v, f[:0])
    with pytest.raises(DtypeError):
        geo.closest_points_on_mesh(p, v, f.double())
    with pytest.raises(ShapeError):
        geo.closest_points_on_mesh(p, v, f[:, :2])
    with pytest.raises(ShapeError):
        geo.closest_points_on_mesh(p, v[None], f)
    with pytest.raises(DtypeError):
        geo.closest_points_on_mesh(p.float(), v, f)
    with pytest.raises(ParameterError):
        geo.closest_points_on_mesh(p, v, f, k_candidates=0)
    with pytest.raises(ParameterError):
        geo.closest_points_on_mesh(p, v, f, search_eps=-1.0)
    with pytest.raises(ParameterError):
        geo.point_to_surface_distance(p, v, f, reduction="median")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="empty"):
        geo.point_to_surface_distance(p[:0], v, f)
    nan = v.clone()
    nan[3, 1] = float("nan")
    with pytest.raises(ParameterError, match="NaN"):
        geo.closest_points_on_mesh(p, nan, f)
    with pytest.raises(ParameterError):
        geo.face_normals(v, -f)
    with pytest.raises(ParameterError, match="empty"):
        geo.vertex_normals(v[:, :0].reshape(0, 3), f[:0])


@pytest.mark.gpu
def test_geometry_on_cuda() -> None:
    v, f = sphere_mesh(1)
    v, f = v.cuda().requires_grad_(), f.cuda()
    p = torch.randn(50, 3, dtype=D, device="cuda")
    res = geo.closest_points_on_mesh(p, v, f)
    assert res.closest.device.type == "cuda" and res.face_index.device.type == "cuda"
    cpu = geo.closest_points_on_mesh(p.cpu(), v.detach().cpu(), f.cpu())
    torch.testing.assert_close(res.distance.detach().cpu(), cpu.distance)
    res.distance.sum().backward()
    assert v.grad is not None and v.grad.device.type == "cuda"
    d, i = geo.knn(p, v)
    assert d.device.type == "cuda" and i.device.type == "cuda"
    assert geo.vertex_normals(v, f).device.type == "cuda"
    assert geo.procrustes(p[:10], p[:10] + 1).rotation.device.type == "cuda"
    with pytest.raises(DeviceError):
        geo.face_normals(v, f.cpu())


# --------------------------------------------------------------------------------------
# landmarks
# --------------------------------------------------------------------------------------


def test_barycentric_interpolate() -> None:
    v = torch.randn(3, 10, 3, dtype=D, requires_grad=True)
    ids = torch.tensor([[0, 1, 2], [3, 4, 5], [9, 8, 7]])
    w = torch.tensor([[1.0, 0, 0], [0.2, 0.3, 0.5], [0, 0, 1]], dtype=D)
    out = geo.barycentric_interpolate(v, ids, w)
    assert out.shape == (3, 3, 3)
    torch.testing.assert_close(out[:, 0], v[:, 0])
    torch.testing.assert_close(out[:, 1], 0.2 * v[:, 3] + 0.3 * v[:, 4] + 0.5 * v[:, 5])
    torch.testing.assert_close(out[:, 2], v[:, 7])
    assert torch.autograd.gradcheck(lambda x: geo.barycentric_interpolate(x, ids, w), (v,))
    with pytest.raises(ParameterError):
        geo.barycentric_interpolate(v, ids + 5, w)
    with pytest.raises(ShapeError):
        geo.barycentric_interpolate(v, ids, w[:2])
    with pytest.raises(DtypeError):
        geo.barycentric_interpolate(v, ids, w.float())
