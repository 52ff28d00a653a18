"""Locate and read the upstream inputs of the head geometry build.

Inputs are two wheels from PyPI, fetched with ``pip download --no-deps`` into
``templates/_cache/wheels`` (gitignored) and read as zip files; nothing is installed:

* ``myo-sim`` (Apache-2.0): ``myo_sim/models/meshes/hat_skull.stl`` and ``hat_jaw.stl``.
* ``pydeface`` (MIT): ``pydeface/data/mean_reg2mean.nii.gz`` (mean head T1 MRI).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE.parent
CACHE = TEMPLATES / "_cache"
WHEELS = CACHE / "wheels"

# pinned versions that the figures in README.md were measured with
PINS = {"myo-sim": "myo_sim-0.2.4", "pydeface": "pydeface-2.1.0"}
SKULL_MEMBER = "myo_sim/models/meshes/hat_skull.stl"
JAW_MEMBER = "myo_sim/models/meshes/hat_jaw.stl"
# MuJoCo include that places both meshes as geoms of the same body with the same offset
MYO_HEAD_XML = "myo_sim/models/head/assets/myohead_rigid_chain.xml"
MRI_MEMBER = "pydeface/data/mean_reg2mean.nii.gz"
PYDEFACE_LICENSE = "pydeface-2.1.0.dist-info/licenses/LICENSE.txt"


def wheel_path(project: str) -> Path:
    """Path of the pinned wheel of ``project``, downloading it on first use."""
    stem = PINS[project]
    WHEELS.mkdir(parents=True, exist_ok=True)
    hits = sorted(glob.glob(str(WHEELS / f"{stem}-*.whl")))
    if hits:
        return Path(hits[0])
    # a local copy left by an earlier session saves a network round trip
    for cand in sorted(glob.glob(f"/tmp/wh/{stem}-*.whl")):
        dst = WHEELS / os.path.basename(cand)
        shutil.copyfile(cand, dst)
        return dst
    version = stem.split("-", 1)[1]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           f"{project}=={version}", "-d", str(WHEELS)]
    subprocess.run(cmd, check=True)
    hits = sorted(glob.glob(str(WHEELS / f"{stem}-*.whl")))
    if not hits:
        raise FileNotFoundError(f"pip download did not leave {stem}-*.whl in {WHEELS}")
    return Path(hits[0])


def read_member(project: str, member: str) -> bytes:
    """Bytes of one file inside the pinned wheel of ``project``."""
    with zipfile.ZipFile(wheel_path(project)) as zf:
        return zf.read(member)
