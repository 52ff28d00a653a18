"""fit_model_to_surfaces(init=): a warm start from earlier parameters runs the final stage only."""

from __future__ import annotations

import pytest
import torch

import anatomy
from anatomy.core.errors import ParameterError, ShapeError
from anatomy.registration import fit_model_to_surfaces
from anatomy.registration.nonrigid import sample_surface

DT = torch.float64
TISSUES = ("skull", "mandible", "face")


@pytest.fixture(scope="module")
def case():
    head = anatomy.Sculptor().double()
    gen = torch.Generator().manual_seed(5)
    truth = dict(shape=torch.randn(1, 10, generator=gen, dtype=DT),
                 trait=0.5 * torch.randn(1, 5, generator=gen, dtype=DT),
                 jaw_pose=torch.tensor([[-0.1, 0.0, 0.0]], dtype=DT),
                 global_orient=torch.tensor([[0.05, -0.2, 0.1]], dtype=DT),
                 transl=torch.tensor([[3.0, 6.0, -4.0]], dtype=DT), scale=torch.tensor([1.04], dtype=DT))
    gt = head(**truth, jaw_range="ignore")
    targets = {k: sample_surface(gt.tissue(k)[0], gt.faces(k), 12000, generator=gen) for k in TISSUES}
    return head, truth, gt, targets


def _error(fit, gt):
    return max(float((fit.output.tissue(k)[0] - gt.tissue(k)[0]).norm(dim=-1).mean()) for k in TISSUES)


def test_warm_start_from_perturbed_parameters_converges(case):
    head, truth, gt, targets = case
    gen = torch.Generator().manual_seed(6)
    start = {k: v.clone() for k, v in truth.items()}
    start["shape"] = start["shape"] + 0.1 * torch.randn(1, 10, generator=gen, dtype=DT)
    start["transl"] = start["transl"] + torch.tensor([[0.6, -0.4, 0.3]], dtype=DT)
    start["jaw_pose"] = torch.tensor([[-0.08, 0.0, 0.0]], dtype=DT)
    before = head(**start, jaw_range="ignore")
    moved = max(float((before.tissue(k)[0] - gt.tissue(k)[0]).norm(dim=-1).mean()) for k in TISSUES)
    assert moved > 1.5  # the start is visibly off (1.9 mm)
    fit = fit_model_to_surfaces(head, targets, init=start, outer=3)
    assert [stage for stage, _ in fit.log] == ["all"] * 3  # no search, no early stages
    assert _error(fit, gt) < 0.35  # 0.30 measured: a warm start refines, the staged cold fit reaches 0.10
    assert abs(float(fit.params["jaw_pose"][0, 0]) - truth["jaw_pose"][0, 0].item()) < 0.01
    # the caller's start is not modified
    assert float(start["jaw_pose"][0, 0]) == -0.08


def test_warm_start_from_a_fit_keeps_a_converged_fit(case):
    head, truth, gt, targets = case
    exact = fit_model_to_surfaces(head, targets, init=truth, outer=1, inner=1)
    for key, value in truth.items():  # one L-BFGS step from the exact parameters barely moves them
        assert torch.allclose(exact.params[key], value, atol=2e-3), key
    again = fit_model_to_surfaces(head, targets, init=exact, outer=2)  # a ModelFit is accepted as is
    assert _error(again, gt) < 0.1


def test_bad_init_is_refused(case):
    head, truth, _, targets = case
    with pytest.raises(ParameterError, match="lacks"):
        fit_model_to_surfaces(head, targets, init={k: v for k, v in truth.items() if k != "scale"})
    with pytest.raises(ParameterError, match="does not solve for"):
        fit_model_to_surfaces(head, targets, init={**truth, "pose": torch.zeros(1, 20, 3)})
    with pytest.raises(ShapeError, match="init\\['shape'\\]"):
        fit_model_to_surfaces(head, targets, init={**truth, "shape": torch.zeros(1, 3)})
    with pytest.raises(ShapeError, match="finite"):
        fit_model_to_surfaces(head, targets, init={**truth, "transl": torch.full((1, 3), float("nan"))})
    with pytest.raises(ParameterError, match="ModelFit"):
        fit_model_to_surfaces(head, targets, init=[1.0, 2.0])
