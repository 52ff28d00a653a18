"""Read the right-hand bones and joints of the ``myo-sim`` wheel (Apache-2.0) without MuJoCo.

Build-time helper for ``build_geometry.py``. It locates (or downloads with ``pip download``)
the ``myo-sim`` wheel, reads it as a zip file, parses the MyoArm MuJoCo XML with
``xml.etree`` and composes the body poses of the hand chain, so every bone mesh and every
joint comes out in one common frame: the frame of the ``lunate_r`` body (the body that carries
the two wrist joints), in metres. Nothing here is imported by the ``anatomy`` package.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MYO_SIM_VERSION = "0.2.4"
CHAIN_XML = "myo_sim/models/arm/assets/myoarm_r_chain.xml"
ASSETS_XML = "myo_sim/models/arm/assets/myoarm_r_assets.xml"
HAND_ROOT_BODY = "lunate_r"

# MuJoCo body name -> NIMBLE bone id (DESIGN.md section 4). The 8 carpals all map to bone 0.
BODY_TO_BONE = {
    "lunate_r": 0, "scaphoid_r": 0, "pisiform_r": 0, "triquetrum_r": 0,
    "capitate_r": 0, "trapezium_r": 0, "trapezoid_r": 0, "hamate_r": 0,
    "firstmc_r": 1, "proximal_thumb_r": 2, "distal_thumb_r": 3,
    "secondmc_r": 4, "2proxph_r": 5, "midph2_r": 6, "distph2_r": 7,
    "thirdmc_r": 8, "3proxph_r": 9, "midph3_r": 10, "distph3_r": 11,
    "fourthmc_r": 12, "4proxph_r": 13, "midph4_r": 14, "distph4_r": 15,
    "fifthmc_r": 16, "5proxph_r": 17, "midph5_r": 18, "distph5_r": 19,
}


@dataclass
class MjJoint:
    name: str
    body: str
    pos: np.ndarray  # (3,) in the hand-root frame, metres
    axis: np.ndarray  # (3,) unit, in the hand-root frame
    range: tuple[float, float]  # radians


@dataclass
class MjBody:
    name: str
    parent: str | None
    rot: np.ndarray  # (3, 3) body -> hand-root frame
    pos: np.ndarray  # (3,) body origin in the hand-root frame, metres
    meshes: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list)  # (file, R, t)
    joints: list[MjJoint] = field(default_factory=list)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def locate_wheel(cache_dir: Path, wheel: Path | None = None) -> Path:
    """Return the myo-sim wheel: an explicit path, a cached copy, or a fresh ``pip download``."""
    if wheel is not None:
        if not wheel.is_file():
            raise FileNotFoundError(f"wheel {wheel} does not exist")
        return wheel
    pattern = f"myo_sim-{MYO_SIM_VERSION}-*.whl"
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(cache_dir.glob(pattern))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               f"myo-sim=={MYO_SIM_VERSION}", "-d", str(cache_dir)]
        print("downloading:", " ".join(cmd))
        subprocess.run(cmd, check=True)
        found = sorted(cache_dir.glob(pattern))
    if not found:
        raise FileNotFoundError(f"no {pattern} in {cache_dir} after pip download")
    return found[0]


# --------------------------------------------------------------------------- rotations
def quat_wxyz_to_mat(q) -> np.ndarray:
    """MuJoCo quaternions are scalar-first (w, x, y, z); normalised here as MuJoCo does."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def _axis_rot(axis: int, a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def euler_to_mat(angles, seq: str) -> np.ndarray:
    """MuJoCo ``euler`` with ``eulerseq``: lower case = intrinsic (moving axes), upper = extrinsic."""
    r = np.eye(3)
    for a, ch in zip(angles, seq):
        m = _axis_rot("xyz".index(ch.lower()), a)
        r = r @ m if ch.islower() else m @ r
    return r


class _Compiler:
    def __init__(self, node: ET.Element | None):
        self.degree = True  # MuJoCo's default is degrees
        self.eulerseq = "xyz"
        self.meshdir = ""
        if node is not None:
            self.degree = node.get("angle", "degree") == "degree"
            self.eulerseq = node.get("eulerseq", "xyz")
            self.meshdir = node.get("meshdir", "")

    def angle(self, a: float) -> float:
        return np.deg2rad(a) if self.degree else a


def _vec(node: ET.Element, key: str, default) -> np.ndarray:
    s = node.get(key)
    return np.asarray(default if s is None else [float(v) for v in s.split()], dtype=np.float64)


def _frame(node: ET.Element, comp: _Compiler) -> tuple[np.ndarray, np.ndarray]:
    """Local rotation and translation of a body or geom element."""
    pos = _vec(node, "pos", [0.0, 0.0, 0.0])
    given = [k for k in ("quat", "euler", "axisangle", "xyaxes", "zaxis") if node.get(k) is not None]
    if len(given) > 1:
        raise ValueError(f"{node.tag} {node.get('name')}: several orientations {given}")
    rot = np.eye(3)
    if given == ["quat"]:
        rot = quat_wxyz_to_mat(_vec(node, "quat", None))
    elif given == ["euler"]:
        rot = euler_to_mat([comp.angle(a) for a in _vec(node, "euler", None)], comp.eulerseq)
    elif given == ["axisangle"]:
        aa = _vec(node, "axisangle", None)
        ax = aa[:3] / np.linalg.norm(aa[:3])
        k = np.array([[0, -ax[2], ax[1]], [ax[2], 0, -ax[0]], [-ax[1], ax[0], 0]])
        t = comp.angle(aa[3])
        rot = np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k
    elif given:
        raise NotImplementedError(f"{node.tag} {node.get('name')}: orientation {given[0]} not handled")
    return rot, pos


def read_hand(wheel: Path) -> tuple[dict[str, MjBody], dict[str, np.ndarray], dict]:
    """Parse the hand subtree. Returns bodies (poses in the lunate_r frame), mesh vertex/face
    arrays placed in that frame (metres) keyed by body name, and provenance facts."""
    with zipfile.ZipFile(wheel) as z:
        assets = ET.fromstring(z.read(ASSETS_XML))
        chain = ET.fromstring(z.read(CHAIN_XML))
        comp = _Compiler(assets.find("compiler"))
        # geoms/joints inherit defaults by class; the hand uses only hinge joints (MuJoCo default
        # type), so the classes matter only for a possible ``type`` -- checked below.
        for d in assets.iter("default"):
            j = d.find("joint")
            if j is not None and j.get("type", "hinge") != "hinge":
                raise NotImplementedError(f"default class {d.get('class')} has non-hinge joints")
        names = set(z.namelist())
        mesh_assets = {}
        for m in assets.iter("mesh"):
            mesh_assets[m.get("name")] = m
        root = next((b for b in chain.iter("body") if b.get("name") == HAND_ROOT_BODY), None)
        if root is None:
            raise ValueError(f"body {HAND_ROOT_BODY} not found in {CHAIN_XML}")

        bodies: dict[str, MjBody] = {}
        meshes: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}

        def visit(node: ET.Element, parent: str | None, R: np.ndarray, t: np.ndarray) -> None:
            name = node.get("name")
            b = MjBody(name=name, parent=parent, rot=R, pos=t)
            for j in node.findall("joint"):
                if j.get("type", "hinge") != "hinge":
                    raise NotImplementedError(f"joint {j.get('name')} is not a hinge")
                ax = _vec(j, "axis", [0.0, 0.0, 1.0])
                lo, hi = (comp.angle(v) for v in _vec(j, "range", [0.0, 0.0]))
                b.joints.append(MjJoint(j.get("name"), name, R @ _vec(j, "pos", [0, 0, 0]) + t,
                                        R @ (ax / np.linalg.norm(ax)), (float(lo), float(hi))))
            for g in node.findall("geom"):
                mname = g.get("mesh")
                if mname is None:
                    continue
                ma = mesh_assets[mname]
                gR, gt = _frame(g, comp)
                scale = _vec(ma, "scale", [1.0, 1.0, 1.0])
                refpos = _vec(ma, "refpos", [0.0, 0.0, 0.0])
                refR = quat_wxyz_to_mat(_vec(ma, "refquat", [1.0, 0.0, 0.0, 0.0]))
                path = _resolve(names, ma.get("file"), comp.meshdir)
                v, f = read_stl(z.read(path))
                # MuJoCo: scale first, then express relative to refpos/refquat, then the geom frame
                v = ((v * scale) - refpos) @ refR
                v = (v @ gR.T + gt) @ R.T + t
                b.meshes.append((path, R @ gR, R @ gt + t))
                meshes.setdefault(name, []).append((v, f))
            bodies[name] = b
            for c in node.findall("body"):
                cR, ct = _frame(c, comp)
                visit(c, name, R @ cR, R @ ct + t)

        visit(root, None, np.eye(3), np.zeros(3))
        info = {"wheel": wheel.name, "wheel_sha256": sha256(wheel), "chain_xml": CHAIN_XML,
                "assets_xml": ASSETS_XML, "angle_unit_in_xml": "degree" if comp.degree else "radian"}
        license_name = next((n for n in z.namelist() if n.endswith("licenses/LICENSE")), None)
        info["license_text"] = z.read(license_name).decode() if license_name else None

    merged = {}
    for name, parts in meshes.items():
        vs, fs, off = [], [], 0
        for v, f in parts:
            vs.append(v)
            fs.append(f + off)
            off += len(v)
        merged[name] = (np.concatenate(vs), np.concatenate(fs))
    return bodies, merged, info


def _resolve(names: set[str], file: str, meshdir: str) -> str:
    """Zip path of a mesh file. ``meshdir`` is relative to the top-level model that includes the
    asset file (not shipped as XML: myo_sim composes it in code), so try the usual places and then
    a unique suffix match."""
    here = posixpath.dirname(ASSETS_XML)
    cands = [posixpath.normpath(posixpath.join(d, meshdir, file))
             for d in (here, posixpath.dirname(here), posixpath.dirname(posixpath.dirname(here)))]
    for c in cands:
        if c in names:
            return c
    hits = [n for n in names if n.endswith("/" + file)]
    if len(hits) != 1:
        raise FileNotFoundError(f"mesh {file}: tried {cands}, suffix matches {hits}")
    return hits[0]


def read_stl(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Binary or ASCII STL -> (welded vertices float64, faces int64)."""
    if data[:5].lower() == b"solid" and b"facet" in data[:1000]:
        pts = [list(map(float, ln.split()[1:4])) for ln in io.StringIO(data.decode(errors="replace"))
               if ln.strip().startswith("vertex")]
        tri = np.asarray(pts, dtype=np.float64).reshape(-1, 3, 3)
    else:
        n = int(np.frombuffer(data, dtype="<u4", count=1, offset=80)[0])
        rec = np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
        tri = np.frombuffer(data, dtype=rec, count=n, offset=84)["v"].astype(np.float64)
    flat = tri.reshape(-1, 3)
    uniq, inv = np.unique(flat, axis=0, return_inverse=True)
    faces = inv.reshape(-1, 3).astype(np.int64)
    good = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    return uniq, faces[good]
