"""The `anatomy` command: demo writes readable meshes, info reports the layout, bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from anatomy.cli import main
from anatomy.io import make_toy_model_data, read_mesh, save_model
from anatomy.models import ArticulatedModel


def test_demo_writes_meshes_matching_the_model(tmp_path: Path) -> None:
    assert main(["demo", "--out", str(tmp_path), "--samples", "2", "--no-picture"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["tissues"] == {"bone": 186, "skin": 530}
    rest = read_mesh(tmp_path / "sample0_skin.obj")
    model = ArticulatedModel(make_toy_model_data())
    with torch.no_grad():
        expected = model().skin[0].numpy()
    # sample 0 is the rest pose with a random shape: same topology, shape within a few mm
    assert rest.vertices.shape == expected.shape
    np.testing.assert_array_equal(rest.faces, model.layout[1].faces.numpy())
    assert np.abs(rest.vertices - expected).max() < 15.0
    ply = read_mesh(tmp_path / "sample1_bone.ply")
    assert ply.vertices.shape == (186, 3)
    assert (tmp_path / "sample1_skin.vtu").read_text().startswith("<?xml")


def test_demo_picture(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    assert main(["demo", "--out", str(tmp_path), "--samples", "1"]) == 0
    assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_info_reports_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_model(make_toy_model_data(), tmp_path / "toy")
    assert main(["info", str(tmp_path / "toy.safetensors")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in info["tissues"]] == ["bone", "skin"]
    assert [j["parent"] for j in info["joints"]] == [-1, 0, 1, 2]
    assert info["spaces"] == {"shape": 3}


def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("anatomy info: error:") and "\n" not in err
    (tmp_path / "broken.safetensors").write_bytes(b"not a model")
    (tmp_path / "broken.json").write_text("{}")
    assert main(["info", str(tmp_path / "broken.safetensors")]) == 2
    with pytest.raises(SystemExit):
        main(["demo", "--samples", "0"])
