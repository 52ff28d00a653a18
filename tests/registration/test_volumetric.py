"""anatomy.registration.volumetric: elastic tet-mesh registration to target surfaces."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from anatomy.core.elastic import StableNeoHookean, solve_quasistatic, tet_volumes
from anatomy.core.errors import ParameterError, ShapeError
from anatomy.core.signed_distance import signed_distance_to_faces
from anatomy.registration.nonrigid import corrupt_target, sample_surface
from anatomy.registration.volumetric import (
    VolumetricWeights,
    _pair,
    _terms,
    boundary_faces,
    register_volume,
)

SIZE = 10.0  # mm, edge of the test block


def block(n: int = 4, m: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A box of ``n x n x m`` cubes (edge SIZE / n), each split into 6 positive tets (Kuhn)."""
    m = n if m is None else m
    ax = torch.arange(n + 1, dtype=torch.float64) * (SIZE / n)
    az = torch.arange(m + 1, dtype=torch.float64) * (SIZE / n)
    nodes = torch.stack(torch.meshgrid(ax, ax, az, indexing="ij"), -1).reshape(-1, 3)

    def nid(i: int, j: int, k: int) -> int:
        return (i * (n + 1) + j) * (m + 1) + k

    paths = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    tets = []
    for i in range(n):
        for j in range(n):
            for k in range(m):
                for path in paths:
                    c = [0, 0, 0]
                    corner = [nid(i, j, k)]
                    for axis in path:
                        c[axis] += 1
                        corner.append(nid(i + c[0], j + c[1], k + c[2]))
                    tets.append(corner)
    t = torch.tensor(tets)
    neg = tet_volumes(nodes, t) < 0
    t[neg] = t[neg][:, [0, 2, 1, 3]]
    return nodes, t


def truth(nodes: torch.Tensor, tets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An elastic equilibrium: bottom (z = 0) clamped, the top pushed along z by a smooth bump
    (free to slide sideways), the sides free. Returns (positions, bottom node ids)."""
    z = nodes[:, 2]
    bottom = torch.nonzero(z == 0).flatten()
    top = z == z.max()
    mask = torch.zeros(nodes.shape[0], 3, dtype=torch.bool)
    mask[bottom] = True
    mask[top, 2] = True
    pos = nodes.clone()
    xy = nodes[:, :2] / SIZE
    pos[:, 2] += 0.15 * SIZE * torch.sin(torch.pi * xy[:, 0]) * torch.sin(torch.pi * xy[:, 1]) - 0.1 * SIZE * xy[:, 0]
    res = solve_quasistatic(nodes, tets, pos, mask, pos, rtol=1e-8, max_iter=5000)
    return res.positions, bottom


@pytest.fixture(scope="module")
def case() -> dict[str, torch.Tensor]:
    nodes, tets = block(4)
    gt, bottom = truth(nodes, tets)
    faces = boundary_faces(tets)
    pts, nrm = sample_surface(gt, faces, 3000, generator=torch.Generator().manual_seed(0))
    return {"nodes": nodes, "tets": tets, "gt": gt, "bottom": bottom, "faces": faces, "points": pts, "normals": nrm}


def test_boundary_faces_closed_and_outward() -> None:
    nodes, tets = block(3, 2)
    faces = boundary_faces(tets)
    assert faces.shape == (2 * (2 * 9 + 4 * 6), 3)
    tri = nodes[faces]
    normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    centre = nodes.mean(0)
    assert bool(((normal * (tri.mean(1) - centre)).sum(-1) > 0).all())
    # divergence theorem: the enclosed volume from the surface equals the box volume
    vol = float((tri[:, 0] * torch.linalg.cross(tri[:, 1], tri[:, 2], dim=-1)).sum()) / 6.0
    assert vol == pytest.approx(SIZE * SIZE * SIZE * 2 / 3, rel=1e-12)
    # every edge is shared by two faces with opposite directions (closed, consistently wound)
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    assert set(map(tuple, e.tolist())) == set(map(tuple, e[:, [1, 0]].tolist()))


def test_recovers_elastic_truth(case: dict[str, torch.Tensor]) -> None:
    gt, bottom = case["gt"], case["bottom"]
    before = float((case["nodes"] - gt).norm(dim=-1).mean())
    res = register_volume(case["nodes"], case["tets"], case["nodes"], case["points"], case["normals"],
                          attach_ids=bottom, attach_positions=gt[bottom], iterations=6)
    err = (res.nodes - gt).norm(dim=-1)
    # measured: before 0.73 mm, after 0.023 mm mean / 0.12 mm max on a 10 mm block
    assert before > 0.7
    assert float(err.mean()) < 0.04 and float(err.max()) < 0.2
    assert res.inverted == 0 and res.nodes.dtype == torch.float64
    assert float(res.residual.mean()) < 0.3 and res.residual.shape == res.surface_nodes.shape
    assert torch.equal(res.nodes[bottom], gt[bottom])  # hard attachments hold exactly
    assert len(res.log) == 6 and res.log[-1].energy <= res.log[0].energy


def test_robust_to_damaged_target(case: dict[str, torch.Tensor]) -> None:
    """30 % of the surface cut away, 10 % outliers, 0.2 mm noise (2 % of the block), normals estimated."""
    gt, bottom = case["gt"], case["bottom"]
    pts, _ = corrupt_target(case["points"], noise=0.2, generator=torch.Generator().manual_seed(3))
    res = register_volume(case["nodes"], case["tets"], case["nodes"], pts,
                          attach_ids=bottom, attach_positions=gt[bottom], iterations=6)
    err = (res.nodes - gt).norm(dim=-1)
    # measured: 0.11 mm mean, 0.75 mm max (clean 0.023 mm; before 0.73 mm)
    assert float(err.mean()) < 0.16 and float(err.max()) < 1.0
    assert res.inverted == 0


def test_noise_softens_the_data_terms(case: dict[str, torch.Tensor]) -> None:
    """A noisy target (1 mm RMS on a 10 mm block, 30 % cut, 10 % outliers): with ``noise_reference`` the
    data terms are divided by ``(sigma / reference)^2`` and the elastic prior carries the fit."""
    gt, bottom = case["gt"], case["bottom"]
    pts, _ = corrupt_target(case["points"], noise=1.0, generator=torch.Generator().manual_seed(3))
    kw = {"attach_ids": bottom, "attach_positions": gt[bottom], "iterations": 6}
    plain = register_volume(case["nodes"], case["tets"], case["nodes"], pts, **kw)  # type: ignore[arg-type]
    soft = register_volume(case["nodes"], case["tets"], case["nodes"], pts, **kw,  # type: ignore[arg-type]
                           weights=VolumetricWeights(noise_reference=0.1))
    clean = register_volume(case["nodes"], case["tets"], case["nodes"], case["points"], case["normals"],
                            **kw, weights=VolumetricWeights(noise_reference=0.1))  # type: ignore[arg-type]
    assert plain.softening == 1.0 and plain.noise == 0.0
    # per-axis noise 0.58 mm; 20 neighbours of a sparse 3000-point sampling partly fit it (reads ~0.3)
    assert 0.2 < soft.noise < 0.9 and soft.softening == pytest.approx((soft.noise / 0.1) ** 2)
    assert clean.softening == 1.0  # a clean sampling of flat faces reads far below 0.1 mm
    e_plain = float((plain.nodes - gt).norm(dim=-1).mean())
    e_soft = float((soft.nodes - gt).norm(dim=-1).mean())
    assert e_soft < e_plain, (e_soft, e_plain)
    with pytest.raises(ParameterError, match="noise_reference"):
        VolumetricWeights(noise_reference=-1.0)


def test_soft_attachments(case: dict[str, torch.Tensor]) -> None:
    gt, bottom = case["gt"], case["bottom"]
    moved = gt[bottom] + torch.tensor([0.0, 0.0, 0.3], dtype=torch.float64)  # conflicts with the data a little
    res = register_volume(case["nodes"], case["tets"], case["nodes"], case["points"], case["normals"],
                          attach_ids=bottom, attach_positions=moved, hard_attach=False, iterations=4,
                          weights=VolumetricWeights(attach=1000.0))
    off = (res.nodes[bottom] - moved).norm(dim=-1)
    assert float(off.max()) < 0.05 and float(off.max()) > 0.0


def _octahedron(centre: torch.Tensor, r: float) -> tuple[torch.Tensor, torch.Tensor]:
    v = torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=torch.float64)
    f = torch.tensor([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    return centre + r * v, f


def test_collision_pushes_nodes_out() -> None:
    nodes, tets = block(4)
    # an obstacle (octahedron, radius 4 mm) centred on the block's top face: the target asks for the
    # block as it is, the obstacle for a dent
    obstacle = _octahedron(torch.tensor([5.0, 5.0, 11.0], dtype=torch.float64), 4.0)
    pts, nrm = sample_surface(nodes, boundary_faces(tets), 3000, generator=torch.Generator().manual_seed(1))
    bottom = torch.nonzero(nodes[:, 2] == 0).flatten()

    def depth(x: torch.Tensor) -> float:
        return float(signed_distance_to_faces(x[None], obstacle[0][None], obstacle[1]).distance.min())

    assert depth(nodes) < -1.7  # the top centre node is 1.73 mm deep
    res = register_volume(nodes, tets, nodes, pts, nrm, attach_ids=bottom, attach_positions=nodes[bottom],
                          obstacles=[obstacle], weights=VolumetricWeights(collision=1000.0), iterations=8)
    assert depth(res.nodes) > -0.05
    assert res.inverted == 0 and res.log[0].colliding > 0
    free = register_volume(nodes, tets, nodes, pts, nrm, attach_ids=bottom, attach_positions=nodes[bottom],
                           iterations=2)
    assert depth(free.nodes) < -1.5  # without the obstacle the data keeps the block as it is


def test_terms_gradcheck() -> None:
    nodes, tets = block(2)
    x = nodes + 0.3 * torch.sin(nodes.flip(1))
    faces = boundary_faces(tets)
    pts, nrm = sample_surface(nodes, faces, 50, generator=torch.Generator().manual_seed(2))
    obstacle = _octahedron(torch.tensor([5.0, 5.0, 9.0], dtype=torch.float64), 3.0)
    w = VolumetricWeights(collision_band=0.5)
    surf = torch.unique(faces)
    from scipy.spatial import cKDTree

    from anatomy.core.elastic import StableNeoHookean, tet_rest_data
    mat = StableNeoHookean()
    k_node = (mat.mu + mat.lam) * tet_rest_data(nodes, tets).stiffness
    rim = torch.zeros(len(pts), dtype=torch.bool)
    pairs = _pair(x, faces, surf, pts, nrm, rim, cKDTree(pts.numpy()), 4, 0.0, w, k_node, 1.0, [obstacle],
                  torch.zeros(len(nodes), dtype=torch.bool))
    assert len(pairs.hit_node) > 0 and float(pairs.fit_weight.sum()) > 0 and float(pairs.back_weight.sum()) > 0
    soft = (torch.tensor([0, 5]), nodes[[0, 5]], torch.tensor([2.0, 3.0], dtype=torch.float64))

    def energy(y: torch.Tensor) -> torch.Tensor:
        return torch.stack(list(_terms(y, pairs, w, soft).values())).sum()

    y = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(energy, (y,), eps=1e-6, atol=1e-6)
    # independent reference of the collision and attachment energies
    terms = _terms(x, pairs, w, soft)
    ref = 0.0
    for i, node in enumerate(pairs.hit_node.tolist()):
        d = float((x[node] - pairs.hit_point[i]) @ pairs.hit_normal[i])
        ref += float(pairs.hit_weight[i]) * max(0.0, -d) ** 2
    assert float(terms["collision"]) == pytest.approx(ref, rel=1e-12)
    assert float(terms["attach"]) == pytest.approx(
        2.0 * float(((x[0] - nodes[0]) ** 2).sum()) + 3.0 * float(((x[5] - nodes[5]) ** 2).sum()), rel=1e-12)


def test_bad_input() -> None:
    nodes, tets = block(1)
    pts = nodes.clone()
    with pytest.raises(ShapeError):
        register_volume(nodes, tets, nodes[:-1], pts)
    with pytest.raises(ShapeError):
        register_volume(nodes, tets, nodes, pts, pts[:-1])
    with pytest.raises(ParameterError):
        register_volume(nodes, tets, nodes, pts, attach_ids=torch.tensor([0]))
    with pytest.raises(ShapeError):
        register_volume(nodes, tets, nodes, pts, attach_ids=torch.tensor([0, 1]), attach_positions=nodes[:1])
    with pytest.raises(ParameterError):
        register_volume(nodes, tets, nodes, pts, attach_ids=torch.tensor([0, 0]), attach_positions=nodes[:2])
    with pytest.raises(ParameterError):
        register_volume(nodes, tets, nodes, pts, obstacles=[nodes])  # type: ignore[list-item]
    with pytest.raises(ParameterError):
        register_volume(nodes, tets, nodes, pts, iterations=0)
    with pytest.raises(ParameterError, match="presolve"):
        register_volume(nodes, tets, nodes, pts, presolve=-1)
    with pytest.raises(ParameterError):
        register_volume(nodes, tets[:, [0, 2, 1, 3]], nodes, pts)  # inverted rest tets
    with pytest.raises(ParameterError):
        VolumetricWeights(data=-1.0)
    with pytest.raises(ParameterError):
        VolumetricWeights(neighbours=0)
    with pytest.raises(ParameterError):
        register_volume(nodes, tets, nodes, pts, weights=dataclasses.asdict(VolumetricWeights()))  # type: ignore
    with pytest.raises(ParameterError):
        register_volume(nodes, tets, nodes, pts, material=StableNeoHookean(poisson=0.5))


@pytest.mark.gpu
def test_cuda_matches_cpu(case: dict[str, torch.Tensor]) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    gt, bottom = case["gt"], case["bottom"]
    args = (case["nodes"], case["tets"], case["nodes"], case["points"], case["normals"])
    kw = {"attach_ids": bottom, "attach_positions": gt[bottom], "iterations": 4}
    cpu = register_volume(*args, **kw)  # type: ignore[arg-type]
    gpu = register_volume(*(a.cuda() for a in args), **{k: v.cuda() if isinstance(v, torch.Tensor) else v
                                                        for k, v in kw.items()})  # type: ignore[arg-type]
    assert gpu.nodes.device.type == "cuda"
    assert float((gpu.nodes.cpu() - cpu.nodes).abs().max()) < 1e-3
    assert float((gpu.nodes.cpu() - gt).norm(dim=-1).mean()) < 0.05


@pytest.fixture(scope="module")
def hand():  # type: ignore[no-untyped-def]
    import anatomy

    return anatomy.Nimble()


def test_hand_bad_input(hand) -> None:  # type: ignore[no-untyped-def]
    from anatomy.registration.volumetric_hand import register_hand_soft_tissue

    out = hand()
    pts = out.skin[0].detach().double()
    with pytest.raises(ParameterError, match="'muscles' is missing"):
        register_hand_soft_tissue(hand, out, {"skin": pts})
    with pytest.raises(ParameterError, match="one hand"):
        register_hand_soft_tissue(hand, hand(torch.zeros(2, 20, 3)), {"skin": pts, "muscles": pts})
    with pytest.raises(ParameterError, match="pair"):
        register_hand_soft_tissue(hand, out, {"skin": (pts, pts, pts), "muscles": pts})


@pytest.mark.slow  # ~1 min: elastic ground truth and two registrations of the hand
def test_hand_recovers_settled_soft_tissue(hand) -> None:  # type: ignore[no-untyped-def]
    from anatomy.registration.volumetric_hand import register_hand_soft_tissue
    from anatomy.scans.phantom_soft import settle_soft_tissue

    pose = hand.sample_pose(1, generator=torch.Generator().manual_seed(4), collision_free=True)
    with torch.no_grad():
        out = hand(pose)
    truth = settle_soft_tissue(hand, out)
    gen = torch.Generator().manual_seed(0)
    targets = {name: sample_surface(truth.tissue(name)[0].double(), truth.faces(name), 20000, generator=gen)
               for name in ("muscles", "skin")}
    res = register_hand_soft_tissue(hand, {"pose": pose}, targets, iterations=5)
    # measured: muscles 1.37 -> 0.026 mm, skin 1.06 -> 0.15 mm (mean node error)
    for name, bound in (("muscles", 0.1), ("skin", 0.3)):
        before = (out.tissue(name)[0].double() - truth.tissue(name)[0].double()).norm(dim=-1).mean()
        after = (res.output.tissue(name)[0].double() - truth.tissue(name)[0].double()).norm(dim=-1).mean()
        assert float(after) < bound and float(after) < 0.5 * float(before)
    assert torch.equal(res.output.bones, out.bones)
