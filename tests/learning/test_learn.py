"""anatomy.learning.learn_model and `anatomy learn` on a small LUCY-like phantom dataset (exact registrations)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import anatomy
from anatomy.cli import main
from anatomy.core.errors import ModelFileError, ShapeError
from anatomy.io import load_model, write_ply
from anatomy.learning import Registration, learn_model, read_registrations
from anatomy.models.sculptor import default_head_path

pytest.importorskip("nibabel")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lucy") / "lucy"
    assert main(["phantom", "head", "--subjects", "8", "--spacing", "6", "--out", str(out)]) == 0
    return out


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    return float(a @ b / (a.norm() * b.norm()))


def test_learn_command_recovers_the_traits_of_the_plans(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "models" / "head"
    assert main(["learn", "--registrations", str(dataset), "--model", "head", "--out", str(out)]) == 0
    report = json.loads((tmp_path / "models" / "head.learn.json").read_text())
    assert report["registrations"] == 16 and report["subjects"] == 8 and report["pairs"] == 8
    assert report["trait"]["named"] is True
    base, learned = load_model(default_head_path()), load_model(out)
    made = [k for k in range(base.spaces["trait"].shape[0]) if k not in report["trait"]["kept_from_base"]]
    assert 0 in made  # every plan moves the mandible
    for k in made:  # regressed on the planned coefficients: the generating fields come back
        assert _cos(learned.spaces["trait"][k], base.spaces["trait"][k]) > 0.999
        ratio = float(learned.spaces["trait"][k].norm() / base.spaces["trait"][k].norm())
        assert ratio == pytest.approx(1.0, abs=0.01)
    for k in report["trait"]["kept_from_base"]:
        assert torch.equal(learned.spaces["trait"][k], base.spaces["trait"][k])
    # named traits keep their descriptions; the relearned shape space drops the base's
    assert learned.meta["trait_components"] == base.meta["trait_components"]
    assert "shape_components" not in learned.meta
    assert learned.meta["provenance"]["learned"]["registrations"] == 16
    # the layer loads it; 8 subjects give at most 7 shape components
    layer = anatomy.Sculptor(out, dtype=torch.float64)
    assert 1 <= layer.space_sizes["shape"] <= 7
    assert report["shape"]["leave_one_out_mm"] > 0
    # the same --out again is refused, nothing replaced
    before = (tmp_path / "models" / "head.safetensors").stat().st_mtime_ns
    assert main(["learn", "--registrations", str(dataset), "--out", str(out)]) == 2
    assert (tmp_path / "models" / "head.safetensors").stat().st_mtime_ns == before


def test_plain_folders_give_principal_traits(dataset: Path, tmp_path: Path) -> None:
    """Without the manifest (no planned amounts), the traits are principal components of the changes,
    and they span the generating fields of the movements the plans made."""
    plain = tmp_path / "plain"
    for ply in dataset.glob("sub-*/ses-*/*.ply"):
        target = plain / ply.relative_to(dataset)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ply, target)
    base = load_model(default_head_path())
    regs = read_registrations(plain, [(t.name, t.num_vertices) for t in base.tissues])
    assert sorted({r.session for r in regs}) == ["post", "pre"] and len({r.subject for r in regs}) == 8
    data, report = learn_model(plain, base, variance=0.999999)
    assert report["trait"]["named"] is False
    made = json.loads((dataset / "manifest.json").read_text())["samples"]
    deltas = torch.tensor([s["trait_delta"] for s in made if s["session"] == "pre"], dtype=torch.float64)
    used = deltas.abs().sum(0) > 0
    k = int(used.sum())
    assert data.spaces["trait"].shape[0] >= k
    assert sum(report["trait"]["explained"][:k]) > 0.9999  # the rest is alignment noise
    learned = data.spaces["trait"][:k].reshape(k, -1).double()
    truth = base.spaces["trait"][used].reshape(k, -1).double()
    q1, _ = torch.linalg.qr(learned.T)
    q2, _ = torch.linalg.qr(truth.T)
    assert float(torch.linalg.svdvals(q1.T @ q2).min()) > 0.99
    assert "trait_components" not in data.meta


def test_expression_scans_give_the_expression_space() -> None:
    """Subjects scanned neutral and with expressions (sessions expr*): the learned expression space
    spans the generating one, and the neutral heads alone make the shape space."""
    base = load_model(default_head_path())
    head = anatomy.Sculptor(base, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    used = 4  # expressions drive the first 4 expression components
    regs = []
    with torch.no_grad():
        for s in range(6):
            shape = torch.randn(1, 10, generator=g, dtype=torch.float64)
            expr = torch.zeros(4, 10, dtype=torch.float64)
            expr[:, :used] = 1.5 * torch.randn(4, used, generator=g, dtype=torch.float64)
            neutral = head(shape=shape).vertices[0].numpy()
            regs.append(Registration(f"sub-{s}", "neutral", Path("."), neutral))
            for e, out in enumerate(head(shape=shape.expand(4, -1), expression=expr).vertices.numpy()):
                regs.append(Registration(f"sub-{s}", f"expr{e:02d}", Path("."), out))
    regs.append(Registration("sub-9", "expr00", Path("."), neutral))  # no neutral scan: left out, reported
    data, report = learn_model(regs, base, variance=0.999999)
    assert report["expression_scans"] == 24 and report["expression_without_neutral"] == ["sub-9"]
    assert report["subjects"] == 6 and report["expression"]["components"] >= used
    assert sum(report["expression"]["explained"][:used]) > 0.999  # rounded to 4 places
    learned = data.spaces["expression"][:used].reshape(used, -1).double()
    truth = base.spaces["expression"][:used].reshape(used, -1).double()
    q1, _ = torch.linalg.qr(learned.T)
    q2, _ = torch.linalg.qr(truth.T)
    assert float(torch.linalg.svdvals(q1.T @ q2).min()) > 0.99
    anatomy.Sculptor(data)  # the learned file loads


def test_bad_registrations(tmp_path: Path) -> None:
    base = load_model(default_head_path())
    tissues = [(t.name, t.num_vertices) for t in base.tissues]
    with pytest.raises(ModelFileError, match="no registrations"):
        read_registrations(tmp_path, tissues)
    sub = tmp_path / "sub-000"
    sub.mkdir()
    tri = np.array([[0, 1, 2]])
    for name, count in tissues:
        write_ply(sub / f"{name}.ply", np.zeros((count - (name == "face"), 3)), tri)
    with pytest.raises(ShapeError, match="vertex order"):
        read_registrations(tmp_path, tissues)
    assert main(["learn", "--registrations", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert main(["learn", "--registrations", str(tmp_path / "none"), "--out", str(tmp_path / "m")]) == 2
    assert not list(tmp_path.glob("m*"))
