"""anatomy.learning.shape_space: Procrustes alignment and linear spaces, recovered from heads of known spaces."""

from __future__ import annotations

import pytest
import torch

import anatomy
from anatomy.core.alignment import procrustes
from anatomy.core.errors import ParameterError, ShapeError
from anatomy.core.rotations import axis_angle_to_matrix
from anatomy.learning import align_meshes, fit_linear_space, shape_space, trait_space


@pytest.fixture(scope="module")
def head() -> anatomy.Sculptor:
    return anatomy.Sculptor(dtype=torch.float64)


def _heads(head: anatomy.Sculptor, n: int, seed: int, **spaces: torch.Tensor) -> torch.Tensor:
    """(n, V, 3) all vertices of heads with random shapes (jaw closed, no expression)."""
    g = torch.Generator().manual_seed(seed)
    shape = torch.randn(n, head.space_sizes["shape"], generator=g, dtype=torch.float64)
    with torch.no_grad():
        return head(shape=shape, **spaces).vertices


def _random_rigid(x: torch.Tensor, seed: int, scale: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    rot = axis_angle_to_matrix(torch.randn(n, 3, generator=g, dtype=torch.float64))
    t = 50.0 * torch.randn(n, 1, 3, generator=g, dtype=torch.float64)
    s = torch.exp(0.1 * torch.randn(n, 1, 1, generator=g, dtype=torch.float64)) if scale else 1.0
    return s * x @ rot.transpose(1, 2) + t


def _subspace_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosines of the principal angles between the row spaces of (K, V, 3) bases."""
    qa, _ = torch.linalg.qr(a.reshape(a.shape[0], -1).T)
    qb, _ = torch.linalg.qr(b.reshape(b.shape[0], -1).T)
    return torch.linalg.svdvals(qa.T @ qb)


@pytest.mark.parametrize("scale", [False, True])
def test_align_meshes_undoes_random_similarities(head: anatomy.Sculptor, scale: bool) -> None:
    one = _heads(head, 1, 0)
    moved = _random_rigid(one.expand(6, -1, -1), 1, scale=scale)
    aligned, mean, fit = align_meshes(moved, scale=scale)
    assert float((aligned - aligned[0]).abs().max()) < 1e-8
    assert torch.allclose(fit.apply(moved), aligned, atol=1e-9)
    # the mean keeps the first mesh's pose and size
    assert float((mean - moved[0]).abs().max()) < 1e-8


def _true_basis(head: anatomy.Sculptor, k: int) -> torch.Tensor:
    """(k, V, 3): the model's shape directions (its blend is linear: one unit coefficient minus the mean)."""
    with torch.no_grad():
        mean = head().vertices[0]
        return head(shape=torch.eye(k, dtype=torch.float64)).vertices - mean


def test_fit_linear_space_recovers_the_generating_space(head: anatomy.Sculptor) -> None:
    k = head.space_sizes["shape"]
    train = _heads(head, 120, 1)
    space = fit_linear_space(train, components=k)
    cos = _subspace_cos(space.basis, _true_basis(head, k))
    assert float(cos.min()) > 1 - 1e-9
    assert float(space.explained.sum()) > 1 - 1e-9
    # training coefficients have unit variance (the model files' convention)
    assert torch.allclose(space.coefficients(train).var(0), torch.ones(k, dtype=torch.float64), atol=1e-9)


def test_shape_space_ignores_the_pose_of_each_mesh(head: anatomy.Sculptor) -> None:
    k = head.space_sizes["shape"]
    train = _heads(head, 120, 1)
    still = shape_space(train, components=k)
    moved = shape_space(_random_rigid(train, 2), components=k)
    # the spaces agree up to the frame of their means (each keeps its first mesh's pose)
    frame = procrustes(moved.mean, still.mean)
    assert float((frame.apply(moved.mean) - still.mean).abs().max()) < 1e-6
    turned = moved.basis @ frame.rotation.T
    assert float(_subspace_cos(still.basis, turned).min()) > 1 - 1e-6
    assert torch.allclose(still.variance, moved.variance, rtol=1e-6)
    # the alignment removes only rigid motion (the rotation it picks depends a little on each shape, so
    # the aligned set is not exactly linear any more): k components explain nearly all of it, and
    # held-out heads in any pose, aligned to the learned mean, are reconstructed to a small fraction of a mm
    assert float(moved.explained.sum()) > 0.9995
    test, _, _ = align_meshes(torch.cat([moved.mean[None], _random_rigid(_heads(head, 5, 3), 4)]))
    back = moved.reconstruct(moved.coefficients(test[1:]))
    err = (back - test[1:]).norm(dim=-1)
    assert float(err.max()) < 0.2


def test_fit_linear_space_keeps_the_share_of_variance_asked_for() -> None:
    g = torch.Generator().manual_seed(0)
    dirs = torch.linalg.qr(torch.randn(30, 3, generator=g, dtype=torch.float64))[0].T.reshape(3, 10, 3)
    coeffs = torch.randn(400, 3, generator=g, dtype=torch.float64) * torch.tensor([10.0, 3.0, 1.0])
    samples = torch.einsum("nk,kvd->nvd", coeffs, dirs) + 5.0
    space = fit_linear_space(samples, variance=0.95)
    assert space.num_components == 2  # 100 / 110 < 0.95 <= 109 / 110
    assert torch.allclose(space.variance.sqrt(), torch.tensor([10.0, 3.0], dtype=torch.float64), rtol=0.1)
    full = fit_linear_space(samples, variance=1.0)
    assert full.num_components == 3
    assert float((full.reconstruct(full.coefficients(samples)) - samples).abs().max()) < 1e-9


def test_trait_space_recovers_planned_movements(head: anatomy.Sculptor) -> None:
    """Post = pre + a known change (two of the model's traits with random amounts) + a rigid move of
    the whole head: the learned space is the span of the two trait fields."""
    n = 40
    g = torch.Generator().manual_seed(5)
    shape = torch.randn(n, head.space_sizes["shape"], generator=g, dtype=torch.float64)
    amount = torch.zeros(n, head.space_sizes["trait"], dtype=torch.float64)
    amount[:, :2] = torch.randn(n, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        pre = head(shape=shape).vertices
        post = head(shape=shape, trait=amount).vertices
    out = head(shape=shape[:1])
    skull = torch.zeros(pre.shape[1], dtype=torch.bool)
    lay = {t.name: t for t in out.layout}
    skull[lay["skull"].start:lay["skull"].stop] = True
    # a trait moves the maxilla too: use the cranial vault (upper half of the skull) as the fixed part
    upper = skull & (pre[0, :, 2] > pre[0, skull, 2].median())
    space = trait_space(pre, _random_rigid(post, 6), fixed=upper, variance=0.999999)
    assert space.num_components == 2
    with torch.no_grad():
        fields = head(trait=torch.eye(2, head.space_sizes["trait"], dtype=torch.float64)).vertices - head().vertices
    cos = _subspace_cos(space.basis, fields)
    assert float(cos.min()) > 0.999
    assert float(space.mean.abs().max()) == 0.0


def test_bad_input() -> None:
    with pytest.raises(ShapeError, match="correspondence"):
        fit_linear_space(torch.zeros(4, 5))
    with pytest.raises(ShapeError, match="at least 2"):
        fit_linear_space(torch.zeros(1, 5, 3))
    with pytest.raises(ParameterError, match="do not vary"):
        fit_linear_space(torch.ones(4, 5, 3))
    with pytest.raises(ParameterError, match="NaN"):
        fit_linear_space(torch.full((4, 5, 3), float("nan")))
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    with pytest.raises(ParameterError, match="at most 3"):
        fit_linear_space(x, components=4)
    with pytest.raises(ParameterError, match="variance"):
        fit_linear_space(x, variance=0.0)
    with pytest.raises(ShapeError, match="same number"):
        trait_space(x, x[:3])
    with pytest.raises(ParameterError, match="weights"):
        align_meshes(x, weights=torch.zeros(5))


def test_a_learned_shape_space_becomes_a_model_file_the_layer_loads(head: anatomy.Sculptor, tmp_path) -> None:
    from anatomy.io import load_model, save_model
    from anatomy.learning import with_learned_spaces
    from anatomy.models.sculptor import default_head_path

    k = head.space_sizes["shape"]
    meshes = _random_rigid(_heads(head, 80, 7), 8)  # "registrations" in random scanner frames
    space = shape_space(meshes, components=k)
    base = load_model(default_head_path())
    data = with_learned_spaces(base, {"shape": space}, provenance={"scans": "80 phantom heads, seed 7"})
    path = tmp_path / "learned_head"
    save_model(data, path)
    learned = anatomy.Sculptor(path, dtype=torch.float64)
    assert learned.space_sizes["shape"] == k
    assert load_model(path).meta["provenance"]["learned"]["scans"] == "80 phantom heads, seed 7"
    # the learned template sits in the base's frame (within the mean shape's difference from it)
    with torch.no_grad():
        rest = learned().vertices[0]
        base_rest = head().vertices[0]
    assert float((rest - base_rest).norm(dim=-1).mean()) < 1.0
    # a held-out head in the model frame is reproduced by the learned layer from its coefficients
    target = _heads(head, 1, 9)
    aligned = procrustes(target[0], rest).apply(target[0])
    coeffs = space.coefficients(align_meshes(torch.cat([space.mean[None], _random_rigid(target, 10)]))[0][1:])
    with torch.no_grad():
        out = learned(shape=coeffs).vertices[0]
    fit = procrustes(out, aligned)
    assert float((fit.apply(out) - aligned).norm(dim=-1).mean()) < 0.1
