"""Kinematics, skinning and the full LBS pass against the naive float64 reference."""

from __future__ import annotations

import math

import pytest
import torch

from anatomy.core.blend import blend_shapes, pose_features, stack_bases
from anatomy.core.errors import DeviceError, DtypeError, ParameterError, ShapeError
from anatomy.core.kinematics import KinematicTree, forward_kinematics
from anatomy.core.lbs import blend_skin, lbs, prepare
from anatomy.core.regress import precompute_joint_regression, regress_joints
from anatomy.core.rotations import axis_angle_to_matrix
from anatomy.core.skinning import skin_vertices
from tests.reference import naive_lbs, random_model

D = torch.float64
PARENTS = [-1, 0, 1, 2, 0, 4, 1]  # two chains plus a branch off joint 1


def _model(num_v: int = 24, num_k: int = 3) -> dict[str, torch.Tensor]:
    return random_model(num_v, PARENTS, num_k)


def test_tree_levels_and_validation() -> None:
    tree = KinematicTree.from_parents(PARENTS)
    assert tree.levels == ((0,), (1, 4), (2, 5, 6), (3,))
    for bad in ([0, 0], [-1, 1], [-1, 0, 3, 1], []):
        with pytest.raises(ParameterError):
            KinematicTree.from_parents(bad)


def test_zero_pose_returns_template_and_regressed_joints() -> None:
    m = _model()
    rot = torch.eye(3, dtype=D).expand(2, len(PARENTS), 3, 3)
    out = lbs(m["template"], rot, m["weights"], m["regressor"], PARENTS,
              pose_basis=m["pose_basis"], pose_feature_joints=range(1, len(PARENTS)))
    torch.testing.assert_close(out.vertices, m["template"].expand(2, -1, -1), atol=1e-12, rtol=0)
    torch.testing.assert_close(out.joints[0], m["regressor"] @ m["template"], atol=1e-12, rtol=0)


def test_root_rotation_rotates_rest_mesh_about_root_joint() -> None:
    m = _model()
    aa = torch.zeros(1, len(PARENTS), 3, dtype=D)
    aa[0, 0] = torch.tensor([0.3, -1.1, 0.5], dtype=D)
    rot = axis_angle_to_matrix(aa)
    out = lbs(m["template"], rot, m["weights"], m["regressor"], PARENTS)
    root = m["regressor"][0] @ m["template"]
    expected = (m["template"] - root) @ rot[0, 0].T + root
    torch.testing.assert_close(out.vertices[0], expected, atol=1e-12, rtol=0)


def test_one_hot_weights_move_each_part_rigidly() -> None:
    m = _model(num_v=21)
    part = torch.arange(21) % len(PARENTS)
    weights = torch.nn.functional.one_hot(part, len(PARENTS)).to(D)
    rot = axis_angle_to_matrix(torch.randn(1, len(PARENTS), 3, dtype=D))
    out = lbs(m["template"], rot, weights, m["regressor"], PARENTS)
    for j in range(len(PARENTS)):
        ids = (part == j).nonzero().flatten()
        a, b = m["template"][ids], out.vertices[0, ids]
        # pairwise distances are preserved within a rigid part
        torch.testing.assert_close(torch.cdist(a, a), torch.cdist(b, b), atol=1e-10, rtol=0)
        # and the part moves with its joint frame: x' = R_global (x - j_rest) + j_posed
        expected = (a - out.rest_joints[0, j]) @ out.rotations[0, j].T + out.joints[0, j]
        torch.testing.assert_close(b, expected, atol=1e-10, rtol=0)


def _inputs(m: dict[str, torch.Tensor], batch: int = 3) -> dict[str, torch.Tensor]:
    return {
        "aa": torch.randn(batch, len(PARENTS), 3, dtype=D) * 0.8,
        "coeffs": torch.randn(batch, m["bases"].shape[0], dtype=D),
        "offsets": torch.randn(batch, len(PARENTS), 3, dtype=D),
        "scale": torch.rand(batch, dtype=D) + 0.5,
        "translation": torch.randn(batch, 3, dtype=D) * 20,
    }


def test_full_pass_matches_naive_reference_outputs_and_gradients() -> None:
    m = _model()
    x = {k: v.requires_grad_() for k, v in _inputs(m).items()}
    pj = list(range(1, len(PARENTS)))

    def ours() -> tuple[torch.Tensor, torch.Tensor]:
        out = lbs(m["template"], axis_angle_to_matrix(x["aa"]), m["weights"], m["regressor"], PARENTS,
                  space_bases=m["bases"], coeffs=x["coeffs"], pose_basis=m["pose_basis"], pose_feature_joints=pj,
                  offsets=x["offsets"], scale=x["scale"], translation=x["translation"])
        return out.vertices, out.joints

    def ref() -> tuple[torch.Tensor, torch.Tensor]:
        return naive_lbs(m["template"], axis_angle_to_matrix(x["aa"]), m["weights"], m["regressor"], PARENTS,
                         m["bases"], x["coeffs"], m["pose_basis"], pj, x["offsets"], x["scale"], x["translation"])

    v1, j1 = ours()
    v2, j2 = ref()
    torch.testing.assert_close(v1, v2, atol=1e-10, rtol=0)
    torch.testing.assert_close(j1, j2, atol=1e-10, rtol=0)
    probe_v, probe_j = torch.randn_like(v1), torch.randn_like(j1)
    g1 = torch.autograd.grad((v1 * probe_v).sum() + (j1 * probe_j).sum(), list(x.values()))
    g2 = torch.autograd.grad((v2 * probe_v).sum() + (j2 * probe_j).sum(), list(x.values()))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


def test_gradients_flow_to_model_arrays() -> None:
    m = _model(num_v=10, num_k=2)
    arrays = {k: m[k].clone().requires_grad_() for k in ("template", "weights", "regressor", "bases", "pose_basis")}
    aa = torch.randn(2, len(PARENTS), 3, dtype=D) * 0.5
    coeffs = torch.randn(2, 2, dtype=D)
    pj = list(range(1, len(PARENTS)))

    def f(t: torch.Tensor, w: torch.Tensor, r: torch.Tensor, s: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return lbs(t, axis_angle_to_matrix(aa), w, r, PARENTS, space_bases=s, coeffs=coeffs,
                   pose_basis=p, pose_feature_joints=pj).vertices

    assert torch.autograd.gradcheck(f, tuple(arrays.values()))


@pytest.mark.parametrize("angle", [0.0, math.pi - 1e-7])
def test_gradcheck_pose_inputs_at_special_angles(angle: float) -> None:
    m = _model(num_v=12, num_k=2)
    aa = torch.zeros(2, len(PARENTS), 3, dtype=D)
    aa[:, :, 2] = angle
    aa.requires_grad_()
    coeffs = torch.randn(2, 2, dtype=D, requires_grad=True)
    offsets = torch.randn(2, len(PARENTS), 3, dtype=D, requires_grad=True)
    pj = list(range(1, len(PARENTS)))

    def f(a: torch.Tensor, c: torch.Tensor, o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = lbs(m["template"], axis_angle_to_matrix(a), m["weights"], m["regressor"], PARENTS,
                  space_bases=m["bases"], coeffs=c, pose_basis=m["pose_basis"], pose_feature_joints=pj, offsets=o)
        return out.vertices, out.joints

    assert torch.autograd.gradcheck(f, (aa, coeffs, offsets))


def test_batch_consistency_and_block_sizes() -> None:
    m = _model()
    x = _inputs(m, batch=7)
    buf = prepare(m["template"], m["weights"], m["regressor"], PARENTS, space_bases=m["bases"],
                  pose_basis=m["pose_basis"], pose_feature_joints=range(1, len(PARENTS)))
    rot = axis_angle_to_matrix(x["aa"])
    whole = blend_skin(buf, rot, x["coeffs"], offsets=x["offsets"]).vertices
    for block in (1, 1 << 30):  # the smallest blocks (64 vertices), everything in one block
        again = blend_skin(buf, rot, x["coeffs"], offsets=x["offsets"], block_bytes=block).vertices
        torch.testing.assert_close(again, whole, atol=1e-12, rtol=0)
    singles = torch.cat([blend_skin(buf, rot[i:i + 1], x["coeffs"][i:i + 1],
                                    offsets=x["offsets"][i:i + 1]).vertices for i in range(7)])
    torch.testing.assert_close(singles, whole, atol=1e-12, rtol=0)


def test_sparse_weights_and_regressor_match_dense() -> None:
    m = _model()
    w = m["weights"] * (m["weights"] > 0.05)
    w = w / w.sum(1, keepdim=True)
    rot = axis_angle_to_matrix(torch.randn(2, len(PARENTS), 3, dtype=D))
    coeffs = torch.randn(2, 3, dtype=D)
    dense = lbs(m["template"], rot, w, m["regressor"], PARENTS, space_bases=m["bases"], coeffs=coeffs)
    sparse = lbs(m["template"], rot, w.to_sparse(), m["regressor"].to_sparse(), PARENTS,
                 space_bases=m["bases"], coeffs=coeffs)
    torch.testing.assert_close(sparse.vertices, dense.vertices, atol=1e-10, rtol=0)
    torch.testing.assert_close(regress_joints(dense.vertices, m["regressor"].to_sparse()),
                               regress_joints(dense.vertices, m["regressor"]), atol=1e-10, rtol=0)


def test_skinning_gradcheck_including_weights_and_broadcast_points() -> None:
    v = torch.randn(1, 9, 3, dtype=D, requires_grad=True)
    a = torch.randn(3, 4, 3, 4, dtype=D, requires_grad=True)
    w = torch.rand(9, 4, dtype=D)
    w = (w / w.sum(1, keepdim=True)).requires_grad_()
    assert torch.autograd.gradcheck(lambda *t: skin_vertices(*t, block_bytes=1), (v, a, w))


def test_precomputed_joint_regression_equals_regressing_shaped_vertices() -> None:
    m = _model()
    coeffs = torch.randn(4, 3, dtype=D)
    shaped = blend_shapes(m["template"], stack_bases([m["bases"]]), coeffs)
    jt, jb = precompute_joint_regression(m["regressor"], m["template"], m["bases"])
    assert jb is not None
    torch.testing.assert_close(jt + (coeffs @ jb).view(4, -1, 3), regress_joints(shaped, m["regressor"]),
                               atol=1e-10, rtol=0)


def test_pose_features_are_r_minus_identity_row_major() -> None:
    rot = axis_angle_to_matrix(torch.randn(2, 4, 3, dtype=D))
    feats = pose_features(rot, [1, 3])
    torch.testing.assert_close(feats[:, :9].view(2, 3, 3), rot[:, 1] - torch.eye(3, dtype=D))
    torch.testing.assert_close(feats[:, 9:].view(2, 3, 3), rot[:, 3] - torch.eye(3, dtype=D))


def test_forward_kinematics_offset_translates_child_subtree() -> None:
    tree = KinematicTree.from_parents(PARENTS)
    joints = torch.randn(1, len(PARENTS), 3, dtype=D)
    rot = torch.eye(3, dtype=D).expand(1, len(PARENTS), 3, 3)
    off = torch.zeros(1, len(PARENTS), 3, dtype=D)
    off[0, 1] = torch.tensor([1.0, 2.0, 3.0], dtype=D)
    kin = forward_kinematics(rot, joints, tree, off)
    moved = torch.tensor([0, 1, 1, 1, 0, 0, 1], dtype=D)[:, None] * off[0, 1]
    torch.testing.assert_close(kin.positions[0], joints[0] + moved)


def test_bad_inputs_raise_typed_errors() -> None:
    m = _model()
    buf = prepare(m["template"], m["weights"], m["regressor"], PARENTS, space_bases=m["bases"])
    rot = torch.eye(3, dtype=D).expand(2, len(PARENTS), 3, 3)
    with pytest.raises(ShapeError, match="rotations"):
        blend_skin(buf, rot[:, :3])
    with pytest.raises(ShapeError, match="coeffs"):
        blend_skin(buf, rot, torch.zeros(2, 5, dtype=D))
    with pytest.raises(DtypeError, match="float32"):
        blend_skin(buf, rot.float())
    bad = torch.zeros(2, 3, dtype=D)
    bad[0, 0] = math.nan
    with pytest.raises(ParameterError, match="NaN"):
        blend_skin(buf, rot, bad)
    with pytest.raises(ShapeError, match="skinning_weights"):
        prepare(m["template"], m["weights"][:-1], m["regressor"], PARENTS)
    with pytest.raises(ParameterError, match="parents"):
        prepare(m["template"], m["weights"], m["regressor"], [-1, 0, 5, 1, 1, 1, 1])


@pytest.mark.gpu
def test_cuda_matches_cpu_and_rejects_mixed_devices() -> None:
    m = _model()
    rot = axis_angle_to_matrix(torch.randn(3, len(PARENTS), 3, dtype=D))
    coeffs = torch.randn(3, 3, dtype=D)
    cpu = lbs(m["template"], rot, m["weights"], m["regressor"], PARENTS, space_bases=m["bases"], coeffs=coeffs)
    gm = {k: v.cuda() for k, v in m.items()}
    gpu = lbs(gm["template"], rot.cuda(), gm["weights"], gm["regressor"], PARENTS, space_bases=gm["bases"],
              coeffs=coeffs.cuda())
    torch.testing.assert_close(gpu.vertices.cpu(), cpu.vertices, atol=1e-10, rtol=0)
    buf = prepare(gm["template"], gm["weights"], gm["regressor"], PARENTS)
    with pytest.raises(DeviceError):
        blend_skin(buf, rot)


@pytest.mark.parametrize("small_batch", [0, 8])  # the blocked path / the plain small-batch path
def test_skinning_vertex_blocks_agree_and_gradcheck_across_blocks(
    small_batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anatomy.core.skinning as skinning

    monkeypatch.setattr(skinning, "SMALL_BATCH", small_batch)
    num_v, num_j = 150, 5  # 150 vertices = three blocks of at least 64 with block_bytes=1
    v = torch.randn(2, num_v, 3, dtype=D, requires_grad=True)
    a = torch.randn(2, num_j, 3, 4, dtype=D, requires_grad=True)
    w = torch.rand(num_v, num_j, dtype=D)
    w = (w / w.sum(1, keepdim=True)).requires_grad_()
    one = skin_vertices(v, a, w, block_bytes=1 << 30)
    many = skin_vertices(v, a, w, block_bytes=1)
    torch.testing.assert_close(many, one, atol=1e-12, rtol=0)
    t = torch.einsum("vj,bjmn->bvmn", w, a)
    ref = (t[..., :3] @ v[..., None])[..., 0] + t[..., 3]
    torch.testing.assert_close(many, ref, atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(lambda *x: skin_vertices(*x, block_bytes=1), (v, a, w))
    sparse = skin_vertices(v, a, w.detach().to_sparse(), block_bytes=1)
    torch.testing.assert_close(sparse, one, atol=1e-12, rtol=0)
    g_sparse = torch.autograd.grad(sparse.sum(), (v, a))
    g_dense = torch.autograd.grad(one.sum(), (v, a))
    for x, y in zip(g_sparse, g_dense):
        torch.testing.assert_close(x, y, atol=1e-10, rtol=0)
    shared = v[:1].detach().requires_grad_()  # one set of points for the whole batch (broadcast)
    expanded = skin_vertices(shared.expand(2, -1, -1), a, w)
    torch.testing.assert_close(skin_vertices(shared, a, w, block_bytes=1), expanded)
    assert torch.autograd.gradcheck(lambda p: skin_vertices(p, a.detach(), w.detach(), block_bytes=1), (shared,))


def test_blend_batch_last_matches_blend_shapes_and_gradcheck() -> None:
    from anatomy.core.blend import blend_batch_last

    m = _model(num_v=9, num_k=4)
    coeffs = torch.randn(3, 4, dtype=D, requires_grad=True)
    basis_t = m["bases"].reshape(4, -1).t().contiguous().requires_grad_()
    template = m["template"].clone().requires_grad_()
    ours = blend_batch_last(template, basis_t, coeffs).permute(2, 0, 1)
    torch.testing.assert_close(ours, blend_shapes(m["template"], stack_bases([m["bases"]]), coeffs))
    assert torch.autograd.gradcheck(blend_batch_last, (template, basis_t, coeffs))
    # the small-batch row layout gives the same values and coefficient gradients
    rows = basis_t.detach().t().contiguous()
    for batch in (1, 3, 6):
        c = torch.randn(batch, 4, dtype=D, requires_grad=True)
        a = blend_batch_last(m["template"], basis_t.detach(), c, rows)
        b = blend_batch_last(m["template"], basis_t.detach(), c)
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
        assert torch.autograd.gradcheck(lambda x: blend_batch_last(m["template"], basis_t.detach(), x, rows), (c,))
