"""Every command that makes a result can write its picture: phantom and learn (``--picture``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from anatomy.cli import main

pytest.importorskip("nibabel")
pytest.importorskip("matplotlib")


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_phantom_and_learn_pictures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "lucy"
    assert main(["phantom", "head", "--subjects", "8", "--spacing", "6", "--out", str(data), "--picture"]) == 0
    assert "picture of the first sample" in capsys.readouterr().out
    width, height = _png_size(data / "first_sample.png")
    assert width > 300 and height > 200
    assert main(["learn", "--registrations", str(data), "--out", str(tmp_path / "learned"), "--picture"]) == 0
    picture = tmp_path / "learned.variance.png"
    assert _png_size(picture)[0] > 300 and str(picture) in capsys.readouterr().out
    report = json.loads((tmp_path / "learned.learn.json").read_text())
    assert report["shape"]["components"] >= 1 and np.isfinite(report["shape"]["explained"]).all()
