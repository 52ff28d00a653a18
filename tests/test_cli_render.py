"""`anatomy sample` (random instances inside limits, reproducible, meshes = the layer at the written params) and
`anatomy render` (model, mesh folder, residual colours), bad input exits 2 with one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from anatomy import Nimble, Sculptor
from anatomy.cli import main
from anatomy.core.rotations import axis_angle_to_matrix
from anatomy.io import make_toy_model_data, read_mesh, save_model, write_ply

pytest.importorskip("matplotlib")


def _params(path: Path) -> dict[str, torch.Tensor]:
    doc = json.loads(path.read_text())
    assert doc["units"] == "mm, radians (axis-angle)"
    return {k: torch.tensor(v) for k, v in doc["params"].items()}


def test_sample_hand_inside_limits_and_reproducible(tmp_path: Path) -> None:
    args = ["sample", "--model", "hand", "--count", "3", "--seed", "4"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    hand = Nimble()
    limits = hand.joint_limits()
    for b in range(3):
        sub = f"sample{b:03d}"
        params = _params(tmp_path / "a" / sub / "params.json")
        assert params["pose"].shape == (1, 20, 3) and params["shape"].shape == (1, hand.space_sizes["shape"])
        again = _params(tmp_path / "b" / sub / "params.json")  # the same seed: the same samples
        assert all(torch.equal(v, again[k]) for k, v in params.items())
        violation = limits.violation(axis_angle_to_matrix(params["pose"].float()))
        assert float(violation.abs().max()) < 1e-4  # every angle inside its anatomical range
        with torch.no_grad():
            out = hand(params["pose"].float(), params["shape"].float())
        for tissue in ("bones", "muscles", "skin"):
            mesh = read_mesh(tmp_path / "a" / sub / f"{tissue}.ply")
            np.testing.assert_allclose(mesh.vertices, out.tissue(tissue)[0].numpy(), atol=1e-4)
        assert (tmp_path / "a" / sub / "skin.vtu").exists()
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["count"] == 3 and summary["parameters"] == ["pose", "shape"]
    seeds = [_params(tmp_path / "a" / f"sample{b:03d}" / "params.json")["pose"] for b in range(2)]
    assert not torch.equal(seeds[0], seeds[1])


def test_sample_head_jaw_inside_limits(tmp_path: Path) -> None:
    assert main(["sample", "--model", "head", "--count", "2", "--seed", "1", "--shape-sd", "0.5",
                 "--out", str(tmp_path)]) == 0
    head = Sculptor()
    for b in range(2):
        params = {k: v.float() for k, v in _params(tmp_path / f"sample{b:03d}" / "params.json").items()}
        assert set(params) >= {"shape", "trait", "expression", "jaw_pose", "jaw_offset"}
        assert float(head.jaw_penalty(params["jaw_pose"], params["jaw_offset"])[0]) < 1e-8
        assert float(params["expression"].min()) >= 0.0 and float(params["trait"].abs().max()) <= 1.0
        with torch.no_grad():
            out = head(**params, jaw_range="ignore")
        np.testing.assert_allclose(read_mesh(tmp_path / f"sample{b:03d}" / "face.ply").vertices,
                                   out.face[0].numpy(), atol=1e-4)


def test_sample_generic_model_and_picture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_model(make_toy_model_data(), tmp_path / "toy")
    out = tmp_path / "out"
    assert main(["sample", "--model", str(tmp_path / "toy.safetensors"), "--count", "2", "--out", str(out),
                 "--picture", "--backend", "matplotlib"]) == 0
    assert "rest pose" in capsys.readouterr().out  # no joint limits: said so
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG"
    assert _params(out / "sample001" / "params.json").keys() == {"shape"}


def test_render_model_at_params_and_mesh_folder_with_errors(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", "--model", "toy", "--count", "1", "--out", str(tmp_path / "s")]) == 0
    params = tmp_path / "s" / "sample000" / "params.json"
    assert main(["render", "--model", "toy", "--params", str(params), "--out", str(tmp_path / "a.png"),
                 "--backend", "matplotlib", "--view", "10,-60", "--size", "200"]) == 0
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    folder = tmp_path / "s" / "sample000"
    bone = read_mesh(folder / "bone.ply")
    errors = np.abs(bone.vertices[:, 0])
    skin = np.full(len(read_mesh(folder / "skin.ply").vertices), np.nan)
    np.savez(tmp_path / "residuals.npz", bone=errors, skin=skin)
    capsys.readouterr()
    assert main(["render", "--mesh-dir", str(folder), "--errors", str(tmp_path / "residuals.npz"),
                 "--out", str(tmp_path / "e.png"), "--backend", "matplotlib", "--size", "200"]) == 0
    printed = capsys.readouterr().out
    assert f"mean {errors.mean():.3f} mm" in printed and f"max {errors.max():.3f} mm" in printed
    assert "skin" not in printed.split("error of")[1].split(":")[0]  # all-NaN skin is drawn as context


def test_render_demo_folder(tmp_path: Path) -> None:
    assert main(["demo", "--model", "toy", "--samples", "2", "--out", str(tmp_path / "d"), "--no-picture"]) == 0
    assert main(["render", "--mesh-dir", str(tmp_path / "d"), "--sample", "1", "--out", str(tmp_path / "r.png"),
                 "--backend", "matplotlib", "--size", "200"]) == 0


def test_render_fallback_prints_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from anatomy.vis import render

    monkeypatch.setattr(render, "_PYVISTA_PROBLEM", ["pyvista is not installed (test)"])
    assert main(["render", "--model", "toy", "--out", str(tmp_path / "a.png"), "--size", "200"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("anatomy: note: pyvista is not installed (test)") and "matplotlib" in err
    assert main(["render", "--model", "toy", "--out", str(tmp_path / "b.png"), "--backend", "pyvista"]) == 2


def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "exists.png").write_bytes(b"x")
    (tmp_path / "bad.json").write_text('{"params": {"wings": [1.0]}}')
    folder = tmp_path / "meshes"
    folder.mkdir()
    write_ply(folder / "skin.ply", np.eye(3), np.array([[0, 1, 2]]))
    np.savez(tmp_path / "short.npz", skin=np.zeros(2))
    cases = [
        (["render", "--model", "toy", "--out", str(tmp_path / "a.jpg")], ".png"),
        (["render", "--model", "toy", "--out", str(tmp_path / "exists.png")], "--overwrite"),
        (["render", "--out", str(tmp_path / "a.png")], "--model"),
        (["render", "--model", "hand", "--params", str(tmp_path / "bad.json"), "--out", str(tmp_path / "a.png")],
         "wings"),
        (["render", "--model", "toy", "--params", str(tmp_path / "none.json"), "--out", str(tmp_path / "a.png")],
         "none.json"),
        (["render", "--model", "toy", "--view", "sideways", "--out", str(tmp_path / "a.png")], "unknown view"),
        (["render", "--model", "toy", "--view", "1,x", "--out", str(tmp_path / "a.png")], "ELEV,AZIM"),
        (["render", "--mesh-dir", str(folder), "--errors", str(tmp_path / "short.npz"),
          "--out", str(tmp_path / "a.png")], "3 vertices"),
        (["render", "--mesh-dir", str(folder), "--translucent", "face", "--out", str(tmp_path / "a.png")],
         "no such mesh"),
        (["render", "--mesh-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "a.png")], "not a folder"),
        (["sample", "--model", "hand", "--count", "0", "--out", str(tmp_path / "s")], "--count"),
        (["sample", "--model", "hand", "--seed", "-1", "--out", str(tmp_path / "s")], "--seed"),
        (["sample", "--model", "toy", "--out", str(folder)], "not empty"),
    ]
    for argv, reason in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"anatomy {argv[0]}: error:") and "\n" not in err and reason in err, (argv, err)
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "s").exists()


def test_help_explains_units(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("render", "sample"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "mm" in text and "radians" in text
