"""The Sculptor head layer on a small synthetic head (tests/models/toy_head.py) and, when it is
present, on the embedded default head.

Outputs and gradients are compared with the naive float64 reference of tests/reference.py
(4x4 chain joint by joint, skinning vertex by vertex), which knows nothing of the layer's
jaw_pose / jaw_offset / space keywords: they are laid out here by hand.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from anatomy import Sculptor
from anatomy.core.errors import DtypeError, ModelFileError, ParameterError, RangeWarning, ShapeError
from anatomy.core.rotations import matrix_to_axis_angle
from anatomy.io import load_model, save_model
from anatomy.models import sculptor as sculptor_module
from anatomy.models.head_limits import JAW_FRAME
from anatomy.models.sculptor import DEFAULT_HEAD_NAME
from tests.models.toy_head import CHIN_DIR, TMJ, make_toy_head_model_data
from tests.reference import naive_lbs, rodrigues

F64 = torch.float64
K = {"shape": 4, "trait": 2, "expression": 3}


@pytest.fixture(scope="module")
def data() -> Any:
    return make_toy_head_model_data()


@pytest.fixture(scope="module")
def head(data: Any) -> Sculptor:
    return Sculptor(data, dtype=F64)


def _inputs(batch: int = 2, seed: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "shape": torch.randn(batch, K["shape"], generator=g, dtype=F64),
        "trait": torch.randn(batch, K["trait"], generator=g, dtype=F64),
        "expression": torch.randn(batch, K["expression"], generator=g, dtype=F64),
        "jaw_pose": torch.randn(batch, 3, generator=g, dtype=F64) * 0.3,
        "jaw_offset": torch.randn(batch, 3, generator=g, dtype=F64) * 2.0,
        "global_orient": torch.randn(batch, 3, generator=g, dtype=F64) * 0.4,
        "transl": torch.randn(batch, 3, generator=g, dtype=F64) * 10.0,
        "scale": 1.0 + 0.1 * torch.rand(batch, generator=g, dtype=F64),
    }


def _reference(data: Any, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    batch = p["jaw_pose"].shape[0]
    rot = torch.stack([torch.stack([rodrigues(p["global_orient"][b]), rodrigues(p["jaw_pose"][b])])
                       for b in range(batch)])
    bases = torch.cat([data.spaces[n] for n in ("shape", "trait", "expression")])
    coeffs = torch.cat([p["shape"], p["trait"], p["expression"]], 1)
    offsets = torch.stack([torch.zeros_like(p["jaw_offset"]), p["jaw_offset"]], 1)
    return naive_lbs(data.template, rot, data.skinning_weights, data.joint_regressor, data.parents,
                     bases=bases, coeffs=coeffs, pose_basis=data.pose_basis, pose_joints=[1], offsets=offsets,
                     scale=p["scale"], translation=p["transl"])


# ------------------------------------------------------------------------------------------
# formulas
# ------------------------------------------------------------------------------------------


def test_forward_matches_reference_outputs_and_gradients(head: Sculptor, data: Any) -> None:
    p = {k: v.requires_grad_(True) for k, v in _inputs().items()}
    out = head(**p)
    ref_v, ref_j = _reference(data, p)
    torch.testing.assert_close(out.vertices, ref_v, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(out.joints, ref_j, atol=1e-9, rtol=1e-9)
    w_v, w_j = torch.randn_like(ref_v), torch.randn_like(ref_j)
    names = list(p)
    got = torch.autograd.grad((out.vertices * w_v).sum() + (out.joints * w_j).sum(), [p[n] for n in names])
    want = torch.autograd.grad((ref_v * w_v).sum() + (ref_j * w_j).sum(), [p[n] for n in names])
    for n, g, r in zip(names, got, want):
        torch.testing.assert_close(g, r, atol=1e-8, rtol=1e-8, msg=f"gradient of {n}")
    # per-tissue access and landmarks as barycentric points of the posed vertices
    for t in data.tissues:
        torch.testing.assert_close(out.tissue(t.name), ref_v[:, t.start:t.stop], atol=1e-9, rtol=1e-9)
    assert out.tissue_names == ("skull", "mandible", "face")
    for i, name in enumerate(data.landmark_names):
        tri = ref_v[:, data.landmark_vertices[i]]
        want_lm = (tri * data.landmark_weights[i][None, :, None]).sum(1)
        torch.testing.assert_close(out.landmark(name), want_lm, atol=1e-9, rtol=1e-9)
    assert out.skull_landmarks.shape == (2, 3, 3) and out.face_landmarks.shape == (2, 2, 3)
    torch.testing.assert_close(out.face_landmarks[:, 0], out.landmark("pronasale"))


def test_gradcheck_every_parameter(head: Sculptor) -> None:
    p = _inputs(1, seed=7)
    names = ["shape", "trait", "expression", "jaw_pose", "jaw_offset"]
    w = torch.randn(head.num_vertices, 3, dtype=F64)

    def f(*args: torch.Tensor) -> torch.Tensor:
        out = head(**dict(zip(names, args)))
        return (out.vertices[0] * w).sum(-1)[::7]

    assert torch.autograd.gradcheck(f, tuple(p[n].requires_grad_(True) for n in names), eps=1e-6, atol=1e-5)
    # the jaw rotation at angle 0 (axis-angle has a removable singularity there)
    zero = torch.zeros(1, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda r: (head(jaw_pose=r).vertices[0] * w).sum(-1)[::7], (zero,),
                                    eps=1e-6, atol=1e-5)


def test_batch_broadcasting_and_padding(head: Sculptor, data: Any) -> None:
    p = _inputs(3)
    one_shape = {**p, "shape": p["shape"][:1]}
    out = head(**one_shape)
    for b in range(3):
        single = head(**{k: (v[:1] if k == "shape" else v[b:b + 1]) for k, v in p.items()})
        torch.testing.assert_close(out.vertices[b:b + 1], single.vertices, atol=1e-10, rtol=0)
    # fewer coefficients are padded with zeros
    short = head(shape=p["shape"][:, :2], trait=p["trait"][:, :1])
    full = head(shape=torch.nn.functional.pad(p["shape"][:, :2], (0, 2)),
                trait=torch.nn.functional.pad(p["trait"][:, :1], (0, 1)))
    torch.testing.assert_close(short.vertices, full.vertices, atol=0, rtol=0)
    # no input: the template, joints from the regressor
    rest = head()
    torch.testing.assert_close(rest.vertices[0], data.template, atol=1e-12, rtol=0)
    torch.testing.assert_close(rest.joints[0], data.joint_regressor @ data.template, atol=1e-12, rtol=0)


def test_expression_moves_the_face_only_and_traits_move_bone(head: Sculptor) -> None:
    p = _inputs(2)
    base = head(shape=p["shape"], jaw_pose=p["jaw_pose"])
    expr = head(shape=p["shape"], jaw_pose=p["jaw_pose"], expression=p["expression"] * 3)
    assert torch.equal(expr.skull, base.skull) and torch.equal(expr.mandible, base.mandible)
    assert torch.equal(expr.joints, base.joints)
    assert float((expr.face - base.face).norm(dim=-1).max()) > 1.0
    adv = head(trait=torch.tensor([[1.0, 0.0]], dtype=F64))
    rest = head()
    torch.testing.assert_close(adv.mandible - rest.mandible, torch.tensor([0.0, 3.0, 0.0], dtype=F64).expand_as(
        rest.mandible), atol=1e-12, rtol=0)
    torch.testing.assert_close(adv.skull, rest.skull, atol=0, rtol=0)


def test_jaw_offset_translates_the_jaw_and_its_joint(head: Sculptor, data: Any) -> None:
    off = torch.tensor([[1.5, 4.0, -2.0]], dtype=F64)
    moved, rest = head(jaw_offset=off), head()
    torch.testing.assert_close(moved.mandible - rest.mandible, off[:, None].expand_as(rest.mandible),
                               atol=1e-12, rtol=0)
    torch.testing.assert_close(moved.joints[:, 1] - rest.joints[:, 1], off, atol=1e-12, rtol=0)
    torch.testing.assert_close(moved.skull, rest.skull, atol=0, rtol=0)
    # the offset is expressed in the root's frame: a head turned by R sees its jaw glide along R off
    go = torch.tensor([[0.0, 0.0, 0.7]], dtype=F64)
    turned, turned_rest = head(jaw_offset=off, global_orient=go), head(global_orient=go)
    torch.testing.assert_close(turned.joints[:, 1] - turned_rest.joints[:, 1], off @ rodrigues(go[0]).t(),
                               atol=1e-12, rtol=0)
    assert set(head.mandible_vertex_ids.tolist()) == set(range(data.tissue("mandible").start,
                                                               data.tissue("mandible").stop))


# ------------------------------------------------------------------------------------------
# jaw angles, sign convention and limits
# ------------------------------------------------------------------------------------------


def test_jaw_sign_convention_opening_moves_the_chin_down(head: Sculptor) -> None:
    limits = head.jaw_limits()
    assert torch.equal(limits.frames[0], torch.tensor(JAW_FRAME, dtype=F64))
    opening = torch.tensor([[[0.35, 0.0, 0.0]]], dtype=F64)
    rot = limits.rotations(opening)[:, 0]
    aa = torch.tensor([[-0.35, 0.0, 0.0]], dtype=F64)  # opening = negative rotation about +x (head frame)
    torch.testing.assert_close(rot, rodrigues(aa[0])[None], atol=1e-12, rtol=0)
    torch.testing.assert_close(head.jaw_angles(aa), opening[:, 0], atol=1e-12, rtol=0)
    rest, opened = head(), head(jaw_pose=aa)
    drop = rest.landmark("menton")[0, 2] - opened.landmark("menton")[0, 2]
    chin = torch.tensor(CHIN_DIR, dtype=F64)
    # analytic: the chin rotates about the TMJ's x axis: z' = sin(-a) y + cos(-a) z of the TMJ->chin vector
    tmj = torch.tensor(TMJ, dtype=F64)
    menton_rest = rest.landmark("menton")[0] - tmj
    want = menton_rest[2] - (-torch.sin(torch.tensor(0.35, dtype=F64)) * menton_rest[1]
                             + torch.cos(torch.tensor(0.35, dtype=F64)) * menton_rest[2])
    torch.testing.assert_close(drop, want, atol=1e-9, rtol=0)
    assert float(drop) > 10.0 and float(chin[2]) < 0
    assert float(opened.landmark("menton")[0, 1]) < float(rest.landmark("menton")[0, 1])  # and back
    # yaw: positive third angle turns the chin to the subject's left (-x)
    yaw = head(jaw_pose=torch.tensor([[0.0, 0.0, 0.1]], dtype=F64))
    assert float(yaw.landmark("menton")[0, 0]) < float(rest.landmark("menton")[0, 0])
    assert float(head.jaw_angles(torch.tensor([[0.0, 0.0, 0.1]], dtype=F64))[0, 2]) == pytest.approx(0.1)


def test_clamp_and_penalty(head: Sculptor) -> None:
    lo, hi = head.jaw_limits().lower[0], head.jaw_limits().upper[0]
    angles = torch.tensor([[0.9, 0.2, -0.4], [0.3, 0.0, 0.1]], dtype=F64)
    rot = head.jaw_limits().rotations(angles[:, None])[:, 0]
    pose = matrix_to_axis_angle(rot)
    offset = torch.tensor([[5.0, -2.0, 0.0], [0.0, 1.0, -1.0]], dtype=F64)
    cp, co = head.clamp_jaw(pose, offset)
    assert co is not None
    got = head.jaw_angles(cp)
    torch.testing.assert_close(got[0], torch.maximum(torch.minimum(angles[0], hi), lo), atol=1e-9, rtol=0)
    torch.testing.assert_close(got[1], angles[1], atol=1e-9, rtol=0)  # inside: unchanged
    olo, ohi = head.jaw_offset_limits()
    torch.testing.assert_close(co[0], torch.tensor([3.0, -1.0, 0.0], dtype=F64))
    torch.testing.assert_close(co[1], offset[1])
    assert bool((co >= olo).all() and (co <= ohi).all())
    pose.requires_grad_(True)
    offset.requires_grad_(True)
    pen = head.jaw_penalty(pose, offset, offset_weight=0.5)
    want0 = (angles[0] - hi).clamp_min(0).square().sum() + (lo - angles[0]).clamp_min(0).square().sum() \
        + 0.5 * (2.0 ** 2 + 1.0 ** 2)
    torch.testing.assert_close(pen[0], want0, atol=1e-9, rtol=0)
    assert float(pen[1]) == 0.0
    pen.sum().backward()
    assert pose.grad is not None and bool(torch.isfinite(pose.grad).all()) and float(pose.grad[0].abs().sum()) > 0
    assert offset.grad is not None
    torch.testing.assert_close(offset.grad[0], torch.tensor([2.0, -1.0, 0.0], dtype=F64))  # 0.5 * 2 * violation
    # matrices in, matrices out
    mats, _ = head.clamp_jaw(rot)
    assert mats.shape == (2, 3, 3)


def test_out_of_range_jaw_warns_clamps_or_is_ignored(head: Sculptor) -> None:
    _, ohi = head.jaw_offset_limits()
    far = torch.tensor([[0.0, float(ohi[1]) + 20.0, 0.0]], dtype=F64)
    wide = matrix_to_axis_angle(head.jaw_limits().rotations(torch.tensor([[[1.2, 0.0, 0.0]]], dtype=F64))[:, 0])
    with pytest.warns(RangeWarning, match=r"jaw_offset .* mm outside"):
        warned = head(jaw_offset=far)
    with pytest.warns(RangeWarning, match=r"jaw angles \(opening, roll, yaw\) \[68.8"):
        head(jaw_pose=wide)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither inside the limits nor with "ignore" warns
        ignored = head(jaw_offset=far, jaw_range="ignore")
        head(jaw_pose=torch.zeros(1, 3, dtype=F64), jaw_offset=torch.zeros(1, 3, dtype=F64))
        clamped = head(jaw_pose=wide, jaw_offset=far, jaw_range="clamp")
    torch.testing.assert_close(warned.vertices, ignored.vertices)  # "warn" computes the value as given
    pose, offset = head.clamp_jaw(wide, far)
    torch.testing.assert_close(clamped.vertices, head(jaw_pose=pose, jaw_offset=offset).vertices)
    assert offset is not None and float(offset[0, 1]) == pytest.approx(float(ohi[1]))
    with pytest.raises(ParameterError, match="jaw_range must be"):
        head(jaw_offset=far, jaw_range="clip")


def test_torch_compile_matches_eager_outputs_and_gradients(head: Sculptor) -> None:
    p = _inputs(3)
    shape = p["shape"].clone().requires_grad_()
    compiled = torch.compile(lambda s: head(s, p["trait"], jaw_pose=p["jaw_pose"], jaw_offset=p["jaw_offset"],
                                            jaw_range="ignore").vertices, backend="aot_eager")
    eager = head(shape, p["trait"], jaw_pose=p["jaw_pose"], jaw_offset=p["jaw_offset"], jaw_range="ignore").vertices
    got = compiled(shape)
    torch.testing.assert_close(got, eager, atol=1e-10, rtol=0)
    g_got, = torch.autograd.grad(got.square().sum(), shape)
    g_want, = torch.autograd.grad(eager.square().sum(), shape)
    torch.testing.assert_close(g_got, g_want, atol=1e-8, rtol=1e-10)


def test_limits_missing_are_explained_and_a_model_frame_is_used(data: Any) -> None:
    from dataclasses import replace

    turned = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # columns: +y, -x, +z
    own = Sculptor(replace(data, extras={**data.extras, "jaw_frame": turned}), dtype=F64)
    torch.testing.assert_close(own.jaw_limits().frames[0], turned.double())
    # about the frame's first axis (+y here): a head-frame rotation about +y reads as the first angle
    torch.testing.assert_close(own.jaw_angles(torch.tensor([[0.0, 0.2, 0.0]], dtype=F64)),
                               torch.tensor([[0.2, 0.0, 0.0]], dtype=F64), atol=1e-12, rtol=0)
    bare = Sculptor(replace(data, extras={}), dtype=F64)
    with pytest.raises(ParameterError, match="jaw rotation limits"):
        bare.jaw_limits()
    with pytest.raises(ParameterError, match="jaw offset limits"):
        bare.jaw_offset_limits()


# ------------------------------------------------------------------------------------------
# bad input, files, dtype
# ------------------------------------------------------------------------------------------


def test_bad_inputs_raise_typed_errors(head: Sculptor) -> None:
    with pytest.raises(ShapeError, match=r"global_orient=pose\[:, 0\]"):
        head(jaw_pose=torch.zeros(1, 2, 3, dtype=F64))
    with pytest.raises(ShapeError, match=r"jaw_pose\[None\]"):
        head(jaw_pose=torch.zeros(3, dtype=F64))
    with pytest.raises(ShapeError, match=r"jaw_offset\[\.\.\., 0\]"):
        head(jaw_offset=torch.zeros(1, 3, 1, dtype=F64))
    with pytest.raises(ShapeError, match="k <= 4"):
        head(torch.zeros(1, 5, dtype=F64))
    with pytest.raises(ShapeError, match="batch sizes"):
        head(torch.zeros(2, 4, dtype=F64), jaw_pose=torch.zeros(3, 3, dtype=F64))
    bad = torch.zeros(1, 3, dtype=F64)
    bad[0, 1] = float("nan")
    with pytest.raises(ParameterError, match="NaN"):
        head(jaw_pose=bad)
    with pytest.raises(ParameterError, match="NaN"):
        head(jaw_offset=bad)
    with pytest.raises(ParameterError, match="NaN"):
        head(expression=torch.full((1, 3), float("inf"), dtype=F64))
    with pytest.raises(DtypeError, match="float64"):
        head(jaw_pose=torch.zeros(1, 3))
    with pytest.raises(DtypeError):
        head(torch.zeros(1, 4, dtype=torch.int64))
    with pytest.raises(ParameterError, match="landmark"):
        head().landmark("opisthion")
    with pytest.raises(ParameterError, match="scale"):
        head(scale=torch.zeros(1, dtype=F64))


def test_wrong_models_are_refused(data: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from anatomy.io import make_toy_model_data

    with pytest.raises(ParameterError, match="joints"):
        Sculptor(make_toy_model_data())
    with pytest.raises(ParameterError, match="num_betas"):
        Sculptor(data, num_betas=5)
    assert Sculptor(data, num_betas=2).space_sizes["shape"] == 2
    with pytest.raises(ParameterError, match="unknown linear space"):
        Sculptor(replace(data, spaces={**data.spaces, "mood": data.spaces["trait"]}))
    missing = tmp_path / "nowhere" / "head.safetensors"
    monkeypatch.setattr(sculptor_module, "default_head_path", lambda: missing)
    with pytest.raises(ModelFileError, match=r"head\.safetensors.*templates/head"):
        Sculptor()


def test_save_load_round_trip_and_float32(data: Any, head: Sculptor, tmp_path: Path) -> None:
    save_model(data, tmp_path / "toy_head")
    again = Sculptor(load_model(tmp_path / "toy_head"), dtype=F64)
    p = _inputs(2)
    a, b = head(**p), again(**p)
    assert torch.equal(a.vertices, b.vertices) and torch.equal(a.landmarks, b.landmarks)  # type: ignore[arg-type]
    assert again.landmark_groups == head.landmark_groups
    single = Sculptor(tmp_path / "toy_head.safetensors")
    out32 = single(**{k: v.float() for k, v in p.items()})
    assert out32.vertices.dtype == torch.float32
    torch.testing.assert_close(out32.vertices.double(), a.vertices, atol=2e-3, rtol=1e-4)
    torch.testing.assert_close(single.to(F64)(**p).vertices, a.vertices, atol=1e-4, rtol=1e-6)  # float32 model data


@pytest.mark.gpu
def test_cuda_matches_cpu(head: Sculptor, data: Any) -> None:
    gpu = Sculptor(data, dtype=F64, device="cuda")
    p = _inputs(2)
    out = gpu(**{k: v.cuda() for k, v in p.items()})
    torch.testing.assert_close(out.vertices.cpu(), head(**p).vertices, atol=1e-9, rtol=1e-9)
    assert out.landmarks is not None and out.landmarks.is_cuda


# ------------------------------------------------------------------------------------------
# the embedded default head
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def default_head() -> Sculptor:
    return Sculptor(dtype=F64)


def test_default_head_contract(default_head: Sculptor) -> None:
    m = default_head
    assert m.data_meta["name"] == DEFAULT_HEAD_NAME
    assert [t.name for t in m.layout] == ["skull", "mandible", "face"]
    assert list(m.space_sizes) == ["shape", "trait", "expression"]
    assert m.space_sizes["shape"] >= 10 and m.space_sizes["expression"] >= 10
    assert len(m.data_meta["trait_names"]) == m.space_sizes["trait"]
    assert len(m.data_meta["expression_names"]) == m.space_sizes["expression"]
    assert m.pose_feature_joints == (1,)
    groups = m.landmark_groups
    assert len(groups["skeletal"]) >= 20 and len(groups["soft_tissue"]) >= 12
    assert set(groups["skeletal"]) | set(groups["soft_tissue"]) <= set(m.landmark_names)
    for name in ("nasion", "menton", "pogonion", "gonion_R", "pronasale", "subnasale", "stomion"):
        assert any(n == name or n.startswith(name) for n in m.landmark_names), name
    out = m()
    assert bool(torch.isfinite(out.vertices).all()) and bool(torch.isfinite(out.landmarks).all())  # type: ignore[arg-type]
    assert out.skull_landmarks.shape[1] == len(groups["skeletal"])


def test_default_head_jaw_opening_within_limits(default_head: Sculptor) -> None:
    m = default_head
    hi = m.jaw_limits().upper[0]
    angles = torch.stack([hi[0] * 0.9, torch.zeros((), dtype=F64), torch.zeros((), dtype=F64)])[None, None]
    pose = matrix_to_axis_angle(m.jaw_limits().rotations(angles)[:, 0])
    assert float(m.jaw_penalty(pose)[0]) == 0.0
    rest, opened = m(), m(jaw_pose=pose)
    menton = next(n for n in m.landmark_names if n.startswith("menton"))
    assert float(rest.landmark(menton)[0, 2] - opened.landmark(menton)[0, 2]) > 10.0
    torch.testing.assert_close(opened.skull, rest.skull, atol=1e-9, rtol=0)
    lo, up = m.jaw_offset_limits()
    assert bool((lo <= 0).all() and (up >= 0).all()) and float(up[1]) > 0  # protrusion is +y


def test_default_head_expression_moves_only_the_face(default_head: Sculptor) -> None:
    m = default_head
    psi = torch.randn(2, m.space_sizes["expression"], dtype=F64)
    rest, expr = m(), m(expression=psi)
    assert torch.equal(expr.skull, rest.skull.expand_as(expr.skull))
    assert torch.equal(expr.mandible, rest.mandible.expand_as(expr.mandible))
    assert float((expr.face - rest.face).norm(dim=-1).amax()) > 0.5
