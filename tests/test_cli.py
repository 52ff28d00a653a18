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
    assert main(["demo", "--model", "toy", "--out", str(tmp_path), "--samples", "2", "--no-picture"]) == 0
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
    assert main(["demo", "--model", "toy", "--out", str(tmp_path), "--samples", "1"]) == 0
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


def test_export_writes_rest_meshes(tmp_path: Path) -> None:
    assert main(["export", "toy", "--out", str(tmp_path)]) == 0
    skin = read_mesh(tmp_path / "sample0_skin.ply")
    data = make_toy_model_data()
    t = data.tissue("skin")
    np.testing.assert_allclose(skin.vertices, data.template[t.start:t.stop].numpy(), atol=1e-5)
    assert (tmp_path / "sample0_skin.vtu").exists() and not (tmp_path / "sample0_bone.vtu").exists()


def test_convert_official_nimble_gives_the_same_layer(tmp_path: Path) -> None:
    import pickle

    from anatomy.models import Nimble
    from tests.models.test_nimble_official import make_nimble_dict

    src = tmp_path / "NIMBLE_DICT_test.pkl"
    with open(src, "wb") as f:
        pickle.dump(make_nimble_dict(), f)
    assert main(["convert", str(src), "--kind", "nimble", "--num-betas", "4", "--out", str(tmp_path / "hand")]) == 0
    official = Nimble.from_official(src, num_betas=4, dtype=torch.float64)
    converted = Nimble(tmp_path / "hand.safetensors", dtype=torch.float64)
    pose = torch.randn(2, 20, 3, dtype=torch.float64) * 0.3
    shape = torch.randn(2, 4, dtype=torch.float64)
    torch.testing.assert_close(converted(pose, shape).vertices, official(pose, shape).vertices, atol=1e-6, rtol=0)
    # an existing output is not replaced without --overwrite, and the input is never the output
    assert main(["convert", str(src), "--kind", "nimble", "--num-betas", "4", "--out", str(tmp_path / "hand")]) == 2
    assert main(["convert", str(src), "--kind", "nimble", "--num-betas", "4", "--out", str(src)]) == 2
    assert src.read_bytes()[:1] == b"\x80"  # still the pickle


def test_demo_default_is_the_embedded_hand(tmp_path: Path) -> None:
    assert main(["demo", "--out", str(tmp_path), "--samples", "1", "--no-picture"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["tissues"]) == ["bones", "muscles", "skin"]
    bones = read_mesh(tmp_path / "sample0_bones.ply")
    assert bones.vertices.shape == (summary["tissues"]["bones"], 3)
    assert (tmp_path / "sample0_skin.vtu").exists() and (tmp_path / "sample0_muscles.vtu").exists()


def test_convert_official_sculptor_gives_the_same_layer(tmp_path: Path) -> None:
    from anatomy.models import Sculptor
    from tests.models.test_sculptor_official import make_paradict

    src = tmp_path / "paradict.npy"
    np.save(src, make_paradict(), allow_pickle=True)
    assert main(["convert", str(src), "--kind", "sculptor", "--out", str(tmp_path / "head")]) == 0
    official = Sculptor.from_official(src, dtype=torch.float64)
    converted = Sculptor(tmp_path / "head.safetensors", dtype=torch.float64)
    beta = torch.randn(2, 60, dtype=torch.float64)
    pose = torch.randn(2, 6, dtype=torch.float64) * 0.3
    offset = torch.randn(2, 3, dtype=torch.float64)
    a = official(**official.official_inputs(beta, pose, offset))
    b = converted(**converted.official_inputs(beta, pose, offset))
    torch.testing.assert_close(b.vertices, a.vertices, atol=1e-9, rtol=0)
    assert b.tissue_names == ("skull", "mandible", "face")
    # options: no split, fewer shape components; bad options and an existing output exit 2
    assert main(["convert", str(src), "--kind", "sculptor", "--no-split-mandible", "--num-betas", "5",
                 "--out", str(tmp_path / "flat")]) == 0
    flat = Sculptor(tmp_path / "flat.safetensors", dtype=torch.float64)
    assert flat.space_sizes == {"shape": 5, "trait": 10} and flat.layout[0].name == "skull"
    assert main(["convert", str(src), "--kind", "sculptor", "--out", str(tmp_path / "head")]) == 2
    assert main(["convert", str(src), "--kind", "sculptor", "--num-betas", "51", "--out", str(tmp_path / "x")]) == 2
    assert main(["convert", str(src), "--kind", "sculptor", "--side", "left", "--out", str(tmp_path / "y")]) == 2
    assert np.load(src, allow_pickle=True).item()["parents"].tolist() == [-1, 0]  # the input is untouched


def test_demo_head(tmp_path: Path) -> None:
    assert main(["demo", "--model", "head", "--out", str(tmp_path), "--samples", "2", "--no-picture"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["tissues"]) == ["skull", "mandible", "face"] and summary["joints"] == ["root", "jaw"]
    face = read_mesh(tmp_path / "sample1_face.ply")
    assert face.vertices.shape == (summary["tissues"]["face"], 3)


def test_demo_head_on_a_stand_in_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from anatomy.models import sculptor
    from tests.models.toy_head import make_toy_head_model_data

    (tmp_path / "model").mkdir()
    save_model(make_toy_head_model_data(dtype=torch.float32), tmp_path / "model" / "head")
    monkeypatch.setattr(sculptor, "default_head_path", lambda: tmp_path / "model" / "head.safetensors")
    out = tmp_path / "out"
    assert main(["demo", "--model", "head", "--out", str(out), "--samples", "3", "--no-picture"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tissues"] == {"skull": 42, "mandible": 26, "face": 62}
    rest = read_mesh(out / "sample0_mandible.ply").vertices
    opened = read_mesh(out / "sample2_mandible.ply").vertices
    assert rest[:, 2].min() - opened[:, 2].min() > 5.0  # the last sample opens the mouth (and has another shape)
