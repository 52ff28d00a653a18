"""The head-application commands: predict-face, predict-skull, surgery."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from anatomy import Sculptor
from anatomy.cli import main
from anatomy.core.rotations import axis_angle_to_matrix
from anatomy.fitting.targets import tissue_faces
from anatomy.io import read_mesh, write_obj, write_ply

F64 = torch.float64


@pytest.fixture(scope="module")
def head() -> Sculptor:
    return Sculptor(dtype=F64)


@pytest.fixture(scope="module")
def scan(head: Sculptor, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A head with a known shape and an opened jaw, in a rotated and shifted frame: bones as one
    OBJ and as one file per bone, the face as a PLY."""
    folder = tmp_path_factory.mktemp("scan")
    rot = axis_angle_to_matrix(torch.tensor([[0.4, -2.0, 0.7]], dtype=F64))
    t = torch.tensor([[120.0, -40.0, 900.0]], dtype=F64)
    with torch.no_grad():
        out = head(shape=torch.linspace(-1, 1, 10, dtype=F64)[None], jaw_pose=torch.tensor([[-0.15, 0, 0]], dtype=F64))
    moved = {name: (out.tissue(name) @ rot.transpose(1, 2) + t)[0] for name in ("skull", "mandible", "face")}
    bones = write_obj(folder / "bones.obj", torch.cat([moved["skull"], moved["mandible"]]),
                      tissue_faces(head, ("skull", "mandible")))
    skull = write_obj(folder / "skull.obj", moved["skull"], out.faces("skull"))
    mandible = write_obj(folder / "mandible.obj", moved["mandible"], out.faces("mandible"))
    face = write_ply(folder / "face.ply", moved["face"], out.faces("face"))
    return {"bones": bones, "skull": skull, "mandible": mandible, "face": face, "truth": moved}


def test_predict_face_writes_face_bones_and_fit(scan: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pf"
    assert main(["predict-face", str(scan["bones"]), "--out", str(out), "--prior-weight", "1e-6"]) == 0
    assert "rms" in capsys.readouterr().out
    face = read_mesh(out / "face.obj")
    assert np.abs(face.vertices - scan["truth"]["face"].numpy()).max() < 1e-3
    np.testing.assert_allclose(read_mesh(out / "face.ply").vertices, face.vertices, atol=1e-9)
    assert np.abs(read_mesh(out / "mandible.obj").vertices - scan["truth"]["mandible"].numpy()).max() < 1e-3
    fit = json.loads((out / "fit.json").read_text())
    assert set(fit["params"]) == {"shape", "trait", "expression", "jaw_pose", "jaw_offset", "global_orient",
                                  "transl", "scale"}
    np.testing.assert_allclose(fit["params"]["shape"][0], np.linspace(-1, 1, 10), atol=1e-5)
    assert fit["rms_mm"] < 1e-6 and len(fit["residual_mm"]["per_vertex"]) == 4669
    # one file per bone gives the same fit
    out2 = tmp_path / "pf2"
    assert main(["predict-face", str(scan["skull"]), str(scan["mandible"]), "--out", str(out2),
                 "--prior-weight", "1e-6"]) == 0
    np.testing.assert_allclose(read_mesh(out2 / "face.obj").vertices, face.vertices, atol=1e-6)


def test_predict_skull(scan: dict, tmp_path: Path) -> None:
    out = tmp_path / "ps"
    assert main(["predict-skull", str(scan["face"]), "--out", str(out), "--prior-weight", "1e-6"]) == 0
    assert np.abs(read_mesh(out / "skull.obj").vertices - scan["truth"]["skull"].numpy()).max() < 1e-3
    assert json.loads((out / "fit.json").read_text())["command"] == "predict-skull"


def test_surgery_from_a_fit(scan: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fit_dir = tmp_path / "fit"
    assert main(["predict-face", str(scan["bones"]), "--out", str(fit_dir), "--picture"]) == 0
    out = tmp_path / "surgery"
    assert main(["surgery", "--params", str(fit_dir / "fit.json"), "--move", "mandibular_advancement=5",
                 "--out", str(out), "--picture"]) == 0
    for picture in (fit_dir / "fit.png", out / "surgery.png"):  # pictures on request, real PNGs
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 5000
    change = json.loads((out / "change.json").read_text())
    assert change["landmarks"]["pogonion"]["mm"] == pytest.approx(5.0, abs=1e-5)
    assert change["landmarks"]["soft_pogonion"]["mm"] == pytest.approx(5.0 * 0.9333, abs=0.05)
    assert change["face_change_mm"]["max"] == pytest.approx(5.0, abs=1e-4)
    pre, post = read_mesh(out / "face_pre.obj"), read_mesh(out / "face_post.obj")
    per_vertex = np.load(out / "change_mm.npy")
    np.testing.assert_allclose(np.linalg.norm(post.vertices - pre.vertices, axis=1), per_vertex, atol=1e-6)
    coloured = read_mesh(out / "face_change.ply")
    assert coloured.vertex_colors is not None and coloured.vertex_colors.shape == (10082, 3)
    # the pre-operative face is the fitted one
    np.testing.assert_allclose(pre.vertices, read_mesh(fit_dir / "face.obj").vertices, atol=1e-6)
    capsys.readouterr()
    assert main(["surgery", "--move", "mandibular_advancement=18", "--out", str(tmp_path / "big")]) == 0
    assert "warning: planned mandibular_advancement of 18 mm" in capsys.readouterr().err


def test_bad_input_exits_2(scan: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def fails(argv: list[str], message: str) -> None:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and message in err, err

    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    fails(["predict-face", str(scan["bones"]), "--out", str(full)], "is not empty")
    assert (full / "keep.txt").read_text() == "mine"
    fails(["predict-face", str(scan["skull"]), "--out", str(tmp_path / "a")], "has 3300 vertices")
    assert not (tmp_path / "a").exists()
    fails(["predict-face", str(tmp_path / "missing.obj"), "--out", str(tmp_path / "b")], "does not exist")
    fails(["predict-skull", str(scan["bones"]), "--out", str(tmp_path / "c")], "V = 10082")
    fails(["surgery", "--move", "chin_wing=3", "--out", str(tmp_path / "d")], "unknown movement 'chin_wing'")
    fails(["surgery", "--move", "mandibular_advancement", "--out", str(tmp_path / "e")], "NAME=MILLIMETRES")
    (tmp_path / "bad.json").write_text("{}")
    fails(["surgery", "--params", str(tmp_path / "bad.json"), "--move", "mandibular_advancement=2",
           "--out", str(tmp_path / "f")], "fit.json")
    fails(["predict-face", str(scan["bones"]), "--model", "toy", "--out", str(tmp_path / "g")], "Sculptor needs")
    for name in "abcdefg":
        assert not (tmp_path / name).exists()
