"""predict_face / predict_skull on the embedded default head and on an official-layout head.

Targets are made by the layer itself from known parameters and moved into a random "scanner"
frame, so the fit must give back the parameters and the other tissues. The default head's trait
space has one direction that moves no bone (mandibular advancement and setback move the same bone
in opposite directions, with different soft-tissue ratios), so a skull cannot tell it apart: the
prior resolves it to the smallest coefficients, and the recovery tests draw traits without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from anatomy import Sculptor, TopologyError, predict_face, predict_skull
from anatomy.core.errors import DtypeError, ModelFileError, ParameterError
from anatomy.core.rotations import axis_angle_to_matrix
from anatomy.fitting.head import bone_tissues
from anatomy.fitting.synthetic import hidden_traits, move_points, random_rigid
from anatomy.fitting.targets import tissue_faces
from anatomy.io import write_obj, write_ply
from tests.models.test_sculptor_official import make_paradict

F64 = torch.float64
TINY_PRIOR = 1e-6  # a prior this weak biases nothing measurable but fixes the null direction


@pytest.fixture(scope="module")
def head() -> Sculptor:
    return Sculptor(dtype=F64)


@pytest.fixture(scope="module")
def bone_null_trait(head: Sculptor) -> torch.Tensor:
    """Unit trait-coefficient directions that move no bone vertex, (5, n_null)."""
    null = hidden_traits(head)
    assert null.shape[1] == 1  # advancement vs setback
    torch.testing.assert_close(null[:2, 0].abs(), torch.full((2,), 0.5 ** 0.5, dtype=F64))
    return null


def random_head(head: Sculptor, batch: int, seed: int, null: torch.Tensor | None = None,
                expression: bool = False) -> dict[str, torch.Tensor]:
    """Random heads inside the model's ranges (``Sculptor.sample``), traits without ``null``."""
    spaces = ("shape", "trait", "expression") if expression else ("shape", "trait")
    params = head.sample(batch, generator=torch.Generator().manual_seed(seed), spaces=spaces)
    if null is not None:
        params["trait"] = params["trait"] - (params["trait"] @ null) @ null.T
    return params


def scanner_frame(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return random_rigid(batch, generator=torch.Generator().manual_seed(seed + 100))


move = move_points


def bones_of(out: object, head: Sculptor) -> torch.Tensor:
    return torch.cat([out.tissue(n) for n in bone_tissues(head)], 1)  # type: ignore[attr-defined]


def test_predict_face_recovers_face_and_parameters(head: Sculptor, bone_null_trait: torch.Tensor) -> None:
    truth = random_head(head, 2, seed=1, null=bone_null_trait)
    rot, t = scanner_frame(2, seed=1)
    with torch.no_grad():
        out = head(**truth)
    target = move(bones_of(out, head), rot, t)
    fit = predict_face(target, head, prior_weight=TINY_PRIOR)
    assert fit.converged == (True, True)
    assert float(fit.rms_mm.max()) < 1e-6
    assert float((fit.face - move(out.face, rot, t)).norm(dim=-1).max()) < 1e-3  # measured 1.6e-7 mm
    for name in ("shape", "trait", "jaw_pose", "jaw_offset"):
        torch.testing.assert_close(fit.params[name], truth[name], atol=1e-5, rtol=0)
    torch.testing.assert_close(axis_angle_to_matrix(fit.params["global_orient"]), rot, atol=1e-8, rtol=0)
    # the predicted face is neutral, the output is the layer at the params, in the target's frame
    assert torch.equal(fit.params["expression"], torch.zeros(2, 10, dtype=F64))
    with torch.no_grad():
        again = head(**fit.params)
    torch.testing.assert_close(again.vertices, fit.output.vertices, atol=0, rtol=0)
    torch.testing.assert_close(fit.mandible, move(out.mandible, rot, t), atol=1e-6, rtol=0)
    assert fit.residual_mm.shape == (2, 4669) and fit.face.shape == (2, 10082, 3)


def test_predict_face_reads_mesh_files(head: Sculptor, bone_null_trait: torch.Tensor, tmp_path: Path) -> None:
    truth = random_head(head, 1, seed=2, null=bone_null_trait)
    rot, t = scanner_frame(1, seed=2)
    with torch.no_grad():
        out = head(**truth)
    skull, mandible = move(out.skull, rot, t)[0], move(out.mandible, rot, t)[0]
    both = write_obj(tmp_path / "bones.obj", torch.cat([skull, mandible]), tissue_faces(head, ("skull", "mandible")))
    parts = [write_ply(tmp_path / "skull.ply", skull, out.faces("skull")),
             write_obj(tmp_path / "mandible.obj", mandible, out.faces("mandible"))]
    expected = move(out.face, rot, t)
    for source in (both, str(both), parts):
        fit = predict_face(source, head, prior_weight=TINY_PRIOR)
        assert float((fit.face - expected).norm(dim=-1).max()) < 1e-3


def test_predict_skull_recovers_bones_under_an_expression(head: Sculptor) -> None:
    truth = random_head(head, 2, seed=3, expression=True)
    rot, t = scanner_frame(2, seed=3)
    with torch.no_grad():
        out = head(**truth)
    fit = predict_skull(move(out.face, rot, t), head, prior_weight=TINY_PRIOR)
    assert float(fit.rms_mm.max()) < 1e-6
    err = (bones_of(fit.output, head) - move(bones_of(out, head), rot, t)).norm(dim=-1)
    assert float(err.max()) < 1e-3  # measured 1.2e-8 mm
    for name in ("shape", "trait", "expression", "jaw_pose", "jaw_offset"):
        torch.testing.assert_close(fit.params[name], truth[name], atol=1e-5, rtol=0)
    torch.testing.assert_close(fit.skull, move(out.skull, rot, t), atol=1e-6, rtol=0)


def test_noise_and_prior_bias(head: Sculptor, bone_null_trait: torch.Tensor) -> None:
    """0.5 mm Gaussian noise per coordinate on the target, default prior (1 mm^2)."""
    truth = random_head(head, 3, seed=4, null=bone_null_trait, expression=True)
    rot, t = scanner_frame(3, seed=4)
    with torch.no_grad():
        out = head(**truth)
        neutral = head(**{**truth, "expression": None})
    g = torch.Generator().manual_seed(5)
    bones = move(bones_of(out, head), rot, t)
    # noise-free at the default prior: the prior's bias alone (10 heads: mean 0.008-0.11 mm, max 0.03-0.40 mm;
    # it comes mostly from the last shape component, which the bones barely determine)
    clean = predict_face(bones, head)
    assert float((clean.face - move(neutral.face, rot, t)).norm(dim=-1).max()) < 0.6
    noisy = predict_face(bones + 0.5 * torch.randn(bones.shape, generator=g, dtype=F64), head)
    err = (noisy.face - move(neutral.face, rot, t)).norm(dim=-1)
    # these 3 heads: mean <= 0.09 mm, max <= 0.33 mm; 10 heads of example 01: mean 0.10 mm, max 0.70 mm.
    # The residual is the noise (rms 0.5 * sqrt(3))
    assert float(err.mean(1).max()) < 0.2 and float(err.max()) < 1.0
    torch.testing.assert_close(noisy.rms_mm, torch.full((3,), 0.5 * 3 ** 0.5, dtype=F64), atol=0.03, rtol=0)
    face = move(out.face, rot, t)
    skull_fit = predict_skull(face + 0.5 * torch.randn(face.shape, generator=g, dtype=F64), head)
    bone_err = (bones_of(skull_fit.output, head) - bones).norm(dim=-1)
    assert float(bone_err.mean(1).max()) < 0.15 and float(bone_err.max()) < 0.35  # 10 heads: <= 0.075 / 0.22 mm


def test_fit_scale_and_closed_jaw(head: Sculptor, bone_null_trait: torch.Tensor) -> None:
    truth = random_head(head, 1, seed=6, null=bone_null_trait)
    truth["jaw_pose"] = torch.zeros(1, 3, dtype=F64)
    truth["jaw_offset"] = torch.zeros(1, 3, dtype=F64)
    rot, t = scanner_frame(1, seed=6)
    with torch.no_grad():
        out = head(**truth, scale=torch.tensor([1.1], dtype=F64))
    fit = predict_face(move(bones_of(out, head), rot, t), head, fit_scale=True, fit_jaw=False,
                       prior_weight=TINY_PRIOR)
    torch.testing.assert_close(fit.params["scale"], torch.tensor([1.1], dtype=F64), atol=1e-9, rtol=0)
    assert torch.equal(fit.params["jaw_pose"], torch.zeros(1, 3, dtype=F64))
    assert float((fit.face - move(out.face, rot, t)).norm(dim=-1).max()) < 1e-3
    # a target in metres: the prior keeps its meaning (residuals in model mm), so the fit is the same
    bones = bones_of(head(**truth), head)
    in_mm = predict_face(bones, head, fit_scale=True)
    in_m = predict_face(bones * 1e-3, head, fit_scale=True)
    torch.testing.assert_close(in_m.params["scale"], in_mm.params["scale"] * 1e-3, atol=0, rtol=1e-9)
    torch.testing.assert_close(in_m.face * 1e3, in_mm.face, atol=1e-6, rtol=0)


def test_float32_model_gives_float32_results() -> None:
    head32 = Sculptor()
    with torch.no_grad():
        target = head32(shape=torch.ones(1, 10) * 0.5)
    fit = predict_face(torch.cat([target.skull, target.mandible], 1), head32, prior_weight=TINY_PRIOR)
    assert fit.face.dtype == torch.float32 and fit.params["shape"].dtype == torch.float32
    assert float((fit.face - target.face).norm(dim=-1).max()) < 1e-3


def test_official_layout_head_mandible_inside_the_skull() -> None:
    """An official SCULPTOR file converted without the mandible split: bones = the skull tissue,
    no expression space, unnamed traits."""
    model = Sculptor.from_official(make_paradict(), split_mandible=False, num_betas=5, dtype=F64)
    assert bone_tissues(model) == ("skull",) and "expression" not in model.space_sizes
    g = torch.Generator().manual_seed(7)
    truth = {"shape": torch.randn(1, 5, generator=g, dtype=F64), "trait": torch.randn(1, 10, generator=g, dtype=F64),
             "jaw_pose": torch.tensor([[-0.1, 0.01, 0.02]], dtype=F64)}
    rot, t = scanner_frame(1, seed=7)
    with torch.no_grad():
        out = model(**truth)
    fit = predict_face(move(out.skull, rot, t), model, faces=out.faces("skull"), prior_weight=1e-8)
    assert "expression" not in fit.params
    assert float((fit.face - move(out.face, rot, t)).norm(dim=-1).max()) < 1e-3
    torch.testing.assert_close(fit.mandible, move(out.mandible, rot, t), atol=1e-6, rtol=0)
    back = predict_skull(move(out.face, rot, t), model, prior_weight=1e-8)
    assert float((back.skull - move(out.skull, rot, t)).norm(dim=-1).max()) < 1e-3


def test_bad_input(head: Sculptor, tmp_path: Path) -> None:
    with torch.no_grad():
        out = head()
    bones = torch.cat([out.skull, out.mandible], 1)[0]
    with pytest.raises(TopologyError, match=r"3300 vertices.*V = 4669.*skull 3300 \+ mandible 1369.*Register"):
        predict_face(out.skull[0], head)
    with pytest.raises(TopologyError, match="faces"):
        predict_face(bones, head, faces=out.faces("skull"))
    shuffled = tissue_faces(head, ("skull", "mandible"))[:, [1, 0, 2]]
    path = write_obj(tmp_path / "flipped.obj", bones, shuffled)
    with pytest.raises(TopologyError, match="differ from the model's 9346 faces"):
        predict_face(path, head)
    nan = bones.clone()
    nan[5, 1] = float("nan")
    with pytest.raises(ParameterError, match="1 vertices with NaN"):
        predict_face(nan, head)
    with pytest.raises(ModelFileError, match="missing.obj"):
        predict_face(tmp_path / "missing.obj", head)
    with pytest.raises(DtypeError):
        predict_face(object(), head)
    with pytest.raises(TopologyError, match="V = 10082"):
        predict_skull(bones, head)
    with pytest.raises(ParameterError, match="prior_weight"):
        predict_face(bones, head, prior_weight=-1.0)
    # numpy input works too (and a (B, V, 3) batch of one)
    fit = predict_face(np.asarray(bones)[None], head, max_iter=2)
    assert fit.face.shape == (1, 10082, 3)
