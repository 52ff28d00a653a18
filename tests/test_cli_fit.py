"""``anatomy fit``: files written for a keypoint target, exit 2 with one line on a bad target."""

import json

import torch

import anatomy
from anatomy.cli import main


def test_cli_fit_keypoints(tmp_path, capsys):
    hand = anatomy.Nimble()
    with torch.no_grad():
        kp = hand(hand.sample_pose(1, generator=torch.Generator().manual_seed(0))).keypoints[0] / 1000.0
    target = tmp_path / "kp.json"
    target.write_text(json.dumps({"keypoints": dict(zip(hand.keypoint_names, kp.tolist()))}))
    out = tmp_path / "out"
    code = main(["fit", "--model", "hand", "--target", str(target), "--out", str(out), "--no-penetration",
                 "--no-picture"])
    assert code == 0
    files = sorted(p.name for p in out.iterdir())
    assert {"params.json", "report.json", "bones.ply", "muscles.ply", "skin.ply", "skin.obj"} <= set(files)
    report = json.loads((out / "report.json").read_text())
    assert report["units"] == "m" and report["targets"][0]["mean"] < 1.0 and "p95" in report["targets"][0]
    params = json.loads((out / "params.json").read_text())["params"]
    assert len(params["pose"][0]) == 20


def test_cli_fit_bad_target(tmp_path, capsys):
    target = tmp_path / "kp.json"
    target.write_text(json.dumps({"keypoints": [[0.0, 0.0, float(i)] for i in range(20)]}))
    code = main(["fit", "--model", "hand", "--target", str(target), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "21 keypoints" in err[0]
    assert not (tmp_path / "o").exists()
