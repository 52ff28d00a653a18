"""simulate_surgery: planned movements in mm -> trait coefficients -> the face before and after."""

from __future__ import annotations

import warnings

import pytest
import torch

from anatomy import Sculptor, load_model, simulate_surgery
from anatomy.core.errors import ParameterError, ShapeError
from anatomy.core.rotations import axis_angle_to_matrix
from anatomy.core.surface import vertex_normals
from anatomy.fitting.surgery import trait_movements
from anatomy.models.sculptor import default_head_path
from tests.models.test_sculptor_official import make_paradict

F64 = torch.float64


@pytest.fixture(scope="module")
def head() -> Sculptor:
    return Sculptor(dtype=F64)


@pytest.fixture(scope="module")
def meta() -> dict:
    return load_model(default_head_path()).meta


def patient(batch: int = 2, seed: int = 0, jaw: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    params = {"shape": torch.randn(batch, 10, generator=g, dtype=F64),
              "trait": 0.3 * torch.randn(batch, 5, generator=g, dtype=F64),
              "expression": torch.randn(batch, 10, generator=g, dtype=F64),
              "global_orient": torch.randn(batch, 3, generator=g, dtype=F64),
              "transl": 50.0 * torch.randn(batch, 3, generator=g, dtype=F64)}
    if jaw:
        params["jaw_pose"] = torch.tensor([[-0.2, 0.01, 0.02]], dtype=F64).expand(batch, 3)
    return params


def test_zero_movement_changes_nothing(head: Sculptor) -> None:
    for movement in ({"mandibular_advancement": 0.0}, {}, torch.zeros(1, 5, dtype=F64)):
        result = simulate_surgery(patient(), movement, head)
        assert torch.equal(result.face_change, torch.zeros_like(result.face_change))
        assert torch.equal(result.pre.vertices, result.post.vertices)


def test_change_equals_the_trait_basis_moved_with_the_head(head: Sculptor) -> None:
    """Jaw at rest: the face change is R (sum_k delta_k T_k[face]) with the trait basis read from
    the model file (independent of the layer), R the global rotation."""
    params = patient()
    movement = {"mandibular_advancement": 4.0, "maxillary_impaction": -2.0, "genioplasty_advancement": 3.0}
    result = simulate_surgery(params, movement, head)
    data = load_model(default_head_path())
    per_unit = {c["name"]: c["bony_landmark_movement_mm"] for c in data.meta["trait_components"]}
    names = [c["name"] for c in data.meta["trait_components"]]
    delta = torch.zeros(5, dtype=F64)
    for name, mm in movement.items():
        delta[names.index(name)] = mm / per_unit[name]
    torch.testing.assert_close(result.trait_delta, delta.expand(2, 5), atol=1e-15, rtol=0)
    face = next(t for t in data.tissues if t.name == "face")
    basis = data.spaces["trait"][:, face.start:face.stop].double()
    rot = axis_angle_to_matrix(params["global_orient"])
    expected = torch.einsum("k,kvd->vd", delta, basis) @ rot.transpose(1, 2)
    torch.testing.assert_close(result.face_change, expected, atol=1e-9, rtol=0)
    torch.testing.assert_close(result.change_mm, expected.norm(dim=-1), atol=1e-9, rtol=0)
    normals = vertex_normals(result.pre.face, result.pre.faces("face"))
    torch.testing.assert_close(result.change_normal_mm, (expected * normals).sum(-1), atol=1e-9, rtol=0)


def test_change_with_an_open_jaw_is_the_layer_difference(head: Sculptor) -> None:
    params = patient(jaw=True)
    delta = torch.tensor([[0.5, 0.0, -0.3, 0.2, 0.1]], dtype=F64)
    result = simulate_surgery(params, delta, head)
    with torch.no_grad():
        pre = head(**params)
        post = head(**{**params, "trait": params["trait"] + delta})
    torch.testing.assert_close(result.face_change, post.face - pre.face, atol=1e-12, rtol=0)
    torch.testing.assert_close(result.post.mandible, post.mandible, atol=0, rtol=0)
    # expression and jaw are kept
    torch.testing.assert_close(result.post.joints, post.joints, atol=0, rtol=0)


def test_mandibular_advancement_moves_pogonion_5mm_and_soft_pogonion_by_the_ratio(head: Sculptor, meta: dict) -> None:
    params = patient(batch=3, seed=1)
    params["global_orient"] = torch.zeros(3, 3, dtype=F64)
    result = simulate_surgery(params, {"mandibular_advancement": 5.0}, head)
    # 5 mm straight forward (to the float32 rounding of the stored basis)
    torch.testing.assert_close(result.landmark_change("pogonion"),
                               torch.tensor([[0.0, 5.0, 0.0]] * 3, dtype=F64), atol=1e-6, rtol=0)
    comp = meta["trait_components"][0]
    assert comp["name"] == "mandibular_advancement"
    ratio = result.landmark_change_mm("soft_pogonion") / 5.0
    # the landmark sits on a face next to the model's control vertex: measured 0.9283 vs 0.9333
    torch.testing.assert_close(ratio, torch.full((3,), comp["soft_tissue_ratio_realised"]["soft_pogonion"],
                                                 dtype=F64), atol=0.01, rtol=0)
    vertex = comp["soft_tissue_control_vertex"]["soft_pogonion"] - head.layout[2].start
    at_vertex = result.change_mm[:, vertex] / 5.0
    torch.testing.assert_close(at_vertex, torch.full((3,), comp["soft_tissue_ratio_realised"]["soft_pogonion"],
                                                     dtype=F64), atol=1e-3, rtol=0)
    assert bool((result.change_normal_mm[:, vertex] > 4.0).all())  # the chin moves outwards
    assert float(result.change_mm.max()) <= 5.0 + 1e-6  # the skin never outruns the bone
    setback = simulate_surgery(params, {"mandibular_advancement": -5.0}, head)
    torch.testing.assert_close(setback.face_change, -result.face_change, atol=1e-9, rtol=0)


def test_bad_movements(head: Sculptor) -> None:
    with pytest.raises(ParameterError, match=r"unknown movement 'chin_wing'.*mandibular_advancement"):
        simulate_surgery({}, {"chin_wing": 3.0}, head)
    with pytest.raises(ParameterError, match="finite"):
        simulate_surgery({}, {"mandibular_advancement": float("nan")}, head)
    with pytest.warns(UserWarning, match="beyond the clinically plausible range"):
        simulate_surgery({}, {"mandibular_advancement": 20.0}, head)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        simulate_surgery({}, {"mandibular_advancement": -15.0}, head)  # at the limit: no warning
    with pytest.raises(ShapeError, match=r"\(B, 5\)"):
        simulate_surgery({}, torch.zeros(1, 4, dtype=F64), head)
    with pytest.raises(ShapeError, match="batch"):
        simulate_surgery(patient(batch=2), torch.zeros(3, 5, dtype=F64), head)
    with pytest.raises(ParameterError, match="NaN"):
        simulate_surgery({}, torch.full((1, 5), float("nan"), dtype=F64), head)
    with pytest.raises(ParameterError, match="dict"):
        simulate_surgery({}, [1.0, 2.0], head)  # type: ignore[arg-type]


def test_official_model_takes_coefficient_deltas() -> None:
    model = Sculptor.from_official(make_paradict(), dtype=F64)
    assert trait_movements(model) == {}
    with pytest.raises(ParameterError, match="unnamed traits"):
        simulate_surgery({}, {"mandibular_advancement": 5.0}, model)
    delta = torch.zeros(1, 10, dtype=F64)
    delta[0, 2] = 1.5
    result = simulate_surgery({"shape": torch.ones(1, 50, dtype=F64)}, delta, model)
    with torch.no_grad():
        pre = model(shape=torch.ones(1, 50, dtype=F64))
        post = model(shape=torch.ones(1, 50, dtype=F64), trait=delta)
    torch.testing.assert_close(result.face_change, post.face - pre.face, atol=1e-12, rtol=0)
    assert float(result.change_mm.max()) > 0


def test_default_model_follows_the_params_precision() -> None:
    """``simulate_surgery(fit.params, ...)`` without a model: fits return float64 params, and the
    default head is built in their dtype (float32 params get the float32 head)."""
    params64 = {"shape": torch.linspace(-1, 1, 10, dtype=torch.float64)[None]}
    res64 = simulate_surgery(params64, {"mandibular_advancement": 5.0})
    res32 = simulate_surgery({k: v.float() for k, v in params64.items()}, {"mandibular_advancement": 5.0})
    assert res64.post.face.dtype == torch.float64 and res32.post.face.dtype == torch.float32
    assert float(res64.landmark_change_mm("pogonion")[0]) == pytest.approx(5.0, abs=1e-6)
    torch.testing.assert_close(res32.change_mm.double(), res64.change_mm, atol=1e-3, rtol=0)
