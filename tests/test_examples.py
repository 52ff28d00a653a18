"""The numbered examples run with --smoke (a small, fast run) and print their figures."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("[0-9][0-9]_*.py"))


def test_examples_are_numbered_scripts() -> None:
    assert SCRIPTS[:3] == ["01_face_from_skull.py", "02_skull_from_face.py", "03_surgery_simulation.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_smoke(script: str, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(EXAMPLES / script), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"outputs in {tmp_path}" in done.stdout
    assert any(tmp_path.iterdir())
    if script.startswith(("01", "02")):
        # the recovery figure is printed and below 1e-3 mm
        worst = float(re.search(r"max ([0-9.e+-]+) mm", done.stdout).group(1))  # type: ignore[union-attr]
        assert worst < 1e-3
    if script.startswith("03"):
        assert re.search(r"pogonion\s+moves\s+5\.000 mm", done.stdout)
    if script.startswith("04"):
        # every pose (named and sampled) lies inside the joint limits; meshes and a picture are written
        violations = [float(v) for v in re.findall(r"([0-9.e+-]+) rad", done.stdout)]
        assert violations and max(violations) < 1e-6
        assert (tmp_path / "fist" / "skin.ply").exists() and (tmp_path / "hands.png").exists()
    if script.startswith("05"):
        # the incisors part further at every step of the opening sweep
        gaps = [float(g) for g in re.findall(r"([0-9.]+) mm\s+[0-9.]+ mm$", done.stdout, re.M)]
        assert len(gaps) == 3 and gaps[0] < gaps[1] < gaps[2]
        assert (tmp_path / "face_change.png").exists()
    if script.startswith("06"):
        for name in ("hand_mri", "head_ct"):
            manifest = json.loads((tmp_path / name / "manifest.json").read_text())
            assert manifest["num_samples"] == len(manifest["samples"]) >= 1
    if script.startswith("07"):
        # training through the layer lowers the held-out vertex error
        first, last = (float(x) for x in re.search(  # type: ignore[union-attr]
            r"held-out vertex error ([0-9.]+) -> ([0-9.]+) mm", done.stdout).groups())
        assert last < first
    if script.startswith("08"):
        # the keypoint fits come back to a few mm of vertex error (3D keypoints and two 2D views)
        errors = [float(v) for v in re.findall(r"vertices ([0-9.]+) mm", done.stdout)]
        assert len(errors) == 2 and max(errors) < 3.0
        assert (tmp_path / "fitted_skin.ply").exists()
    if script.startswith("09"):
        # a coarse (3 mm) CT and a short fit: every tissue within a few mm of the truth
        errors = [float(v) for v in re.findall(r"mean vertex error ([0-9.]+) mm", done.stdout)]
        assert len(errors) == 3 and max(errors) < 4.0
    if script.startswith("10"):
        # the learned trait space holds the directions the surgical plans moved
        found = re.search(r"learned trait space with them: (.*)$", done.stdout, re.M)
        assert found is not None
        cosines = [float(c) for c in found.group(1).split(",")]
        assert cosines and min(cosines) > 0.98
