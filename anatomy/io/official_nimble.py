"""Converters from the official NIMBLE / PIANO hand model files to :class:`ModelData`.

The official files are pickles; they are read only through the restricted unpickler
(:func:`~anatomy.io.safe_pickle.load_official_pickle`). Conventions (DESIGN §4):

* ``vert`` stacks ``[bone | muscle | skin]``; bones are ``vert[:bone_v_sep]``, skin is
  ``vert[skin_v_sep:]`` with ``skin_v_sep`` a negative index from the end (a non-negative
  value is taken as the absolute start of the skin), muscles lie in between.
* ``bone_f`` / ``muscle_f`` / ``skin_f``: each tissue's triangles. **Assumption**: the
  official file stores them local to their tissue. A face array whose largest index does not
  fit the tissue but whose indices all lie inside the tissue's global range is taken as
  global and shifted to local (a real mesh uses every vertex, so the two cases cannot be
  confused); anything else is refused.
* Bone part ids: each bone vertex is labelled with the bone of its dominant skinning-weight
  joint (joint -> bone: a joint named like a bone maps to it, a ``*_end`` fingertip joint to
  the distal phalanx it ends). The official bone weights are rigid (one-hot), so this is exact.
* Shape: ``v = vert + reshape(shape_basis[:k]^T (beta * shape_pm_std[:k] + shape_pm_mean[:k]), (V, 3))``.
  The mean part is baked into the template and the std part into a normalised basis
  ``(k, V, 3)`` (``basis_i = shape_pm_std[i] * shape_basis[i]``), so ``beta`` stays the
  official normalised coefficient; ``k`` is the number of components kept (``num_shape``).
* Pose correctives ``all_pbs (V, 3, 171)`` -> ``pose_basis (171, V, 3)`` driven by the local
  rotations of the joints of bones 1..19 (``R - I``, row-major), joint regressor
  ``jreg_bone (25, V_bone)`` padded with zeros to ``(25, V)``, skinning weights ``all_sw``.
* Pose PCA and the other official tensors go to ``extras`` (names in :data:`NIMBLE_EXTRAS`).

:func:`mirror_hand_model_data` turns a right hand into a left hand (mirror about x = 0).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from ..core.errors import ModelFileError, ParameterError
from .model_data import ModelData, TissueSpec
from .safe_pickle import load_official_pickle, to_tensor_dict

__all__ = [
    "BONE_NAMES",
    "BONE_TO_JOINT",
    "JOINT_TO_BONE",
    "KEYPOINT_JOINTS",
    "KEYPOINT_NAMES",
    "NIMBLE_EXTRAS",
    "NIMBLE_JOINT_NAMES",
    "NIMBLE_PARENTS",
    "mirror_hand_model_data",
    "nimble_to_model_data",
    "piano_to_model_data",
    "read_mano_vreg",
    "read_nimble_texture",
]

BONE_NAMES: tuple[str, ...] = (
    "carpal", "met1", "pro1", "dis1", "met2", "pro2", "int2", "dis2", "met3", "pro3", "int3", "dis3",
    "met4", "pro4", "int4", "dis4", "met5", "pro5", "int5", "dis5",
)


def _joint_table() -> tuple[tuple[str, ...], tuple[int, ...]]:
    names = ["carpal"]
    parents = [-1]
    for finger in range(1, 6):
        chain = ["met", "pro", "dis"] if finger == 1 else ["met", "pro", "int", "dis"]
        chain_names = [f"{c}{finger}" for c in chain] + [f"dis{finger}_end"]
        for i, name in enumerate(chain_names):
            parents.append(0 if i == 0 else len(names) - 1)
            names.append(name)
    return tuple(names), tuple(parents)


NIMBLE_JOINT_NAMES, NIMBLE_PARENTS = _joint_table()
#: joint index of each bone (the joint with the same name, at the bone's proximal end)
BONE_TO_JOINT: tuple[int, ...] = tuple(NIMBLE_JOINT_NAMES.index(b) for b in BONE_NAMES)
#: bone index of each joint (a ``*_end`` fingertip joint belongs to its distal phalanx)
JOINT_TO_BONE: tuple[int, ...] = tuple(
    BONE_NAMES.index(n[: -len("_end")] if n.endswith("_end") else n) for n in NIMBLE_JOINT_NAMES
)
#: the common 21-keypoint hand order and the NIMBLE joint giving each keypoint
KEYPOINT_NAMES: tuple[str, ...] = (
    "wrist", "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip",
    *(f"{f}_{p}" for f in ("index", "middle", "ring", "little") for p in ("mcp", "pip", "dip", "tip")),
)
KEYPOINT_JOINTS: tuple[int, ...] = (
    0,  # wrist <- carpal (joint 0, the centre of the merged carpals, not the radiocarpal joint)
    1, 2, 3, 4,  # thumb CMC <- met1, MCP <- pro1, IP <- dis1, tip <- dis1_end
    6, 7, 8, 9,  # index MCP <- pro2, PIP <- int2, DIP <- dis2, tip <- dis2_end
    11, 12, 13, 14,  # middle
    16, 17, 18, 19,  # ring
    21, 22, 23, 24,  # little
)

_NIMBLE_KEYS = (
    "vert", "bone_v_sep", "skin_v_sep", "all_sw", "all_pbs", "jreg_bone", "shape_basis", "shape_pm_std",
    "shape_pm_mean", "pose_basis", "pose_mean", "pose_pm_std", "pose_pm_mean", "bone_f", "muscle_f", "skin_f",
)
#: official key -> name in ``ModelData.extras``
NIMBLE_EXTRAS: dict[str, str] = {
    "pose_basis": "pose_pca_basis",
    "pose_mean": "pose_pca_mean",
    "pose_pm_std": "pose_pca_pm_std",
    "pose_pm_mean": "pose_pca_pm_mean",
    "jreg_mano": "jreg_mano",
    "skin_v_surface_mask": "skin_v_surface_mask",
    "skin_v_gd": "skin_v_gd",
}
_PIANO_KEYS = ("shape_mean", "faces", "shape_basis", "sw", "jreg")
_MIRROR = (-1.0, 1.0, 1.0)


# --------------------------------------------------------------------------------------------
# reading helpers
# --------------------------------------------------------------------------------------------


def _load_dict(src: Any, what: str) -> tuple[dict[str, Any], str]:
    if isinstance(src, Mapping):
        return dict(to_tensor_dict(dict(src))), f"<{what} dict>"
    if isinstance(src, (str, os.PathLike, bytes, bytearray, memoryview)):
        source = os.fspath(src) if isinstance(src, (str, os.PathLike)) else "<bytes>"
        return dict(to_tensor_dict(load_official_pickle(src))), source
    raise ModelFileError(f"{what}: expected a path to the official file or its loaded dict, got {type(src).__name__}.")


def _need(d: dict[str, Any], key: str, source: str, what: str) -> Any:
    if key not in d:
        raise ModelFileError(
            f"{source}: missing key {key!r}; {what} must be a pickled dict with the keys "
            f"{', '.join(repr(k) for k in _expected_keys(what))}. "
            f"Fix: pass the official {what} file, complete and unmodified."
        )
    return d[key]


def _expected_keys(what: str) -> tuple[str, ...]:
    return {"NIMBLE_DICT_*.pkl": _NIMBLE_KEYS, "PIANO model": _PIANO_KEYS}.get(what, ())


def _tensor(d: dict[str, Any], key: str, source: str, what: str, *, ndim: int | None = None,
            integer: bool = False) -> torch.Tensor:
    value = _need(d, key, source, what)
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(value)
        except Exception as exc:
            raise ModelFileError(f"{source}: key {key!r}: expected an array, found {type(value).__name__}.") from exc
    if ndim is not None and value.dim() != ndim:
        raise ModelFileError(f"{source}: key {key!r}: expected a {ndim}-D array, found shape {tuple(value.shape)}. "
                             f"Fix: pass the official {what} file.")
    if integer:
        if value.is_floating_point():
            if value.numel() and not bool((value == value.round()).all()):
                raise ModelFileError(f"{source}: key {key!r}: expected integer indices, found fractional values.")
        return value.long()
    if not value.is_floating_point():
        value = value.double()
    if value.numel() and not bool(torch.isfinite(value).all()):
        raise ModelFileError(f"{source}: key {key!r}: found NaN/Inf values. Fix: download the file again.")
    return value.detach().double()


def _int(d: dict[str, Any], key: str, source: str, what: str) -> int:
    value = _need(d, key, source, what)
    try:
        if isinstance(value, torch.Tensor):
            if value.numel() != 1 or value.is_floating_point() and float(value) != int(value):
                raise ValueError(f"shape {tuple(value.shape)}")
            return int(value.reshape(()).item())
        if isinstance(value, bool) or int(value) != value:
            raise ValueError(repr(value))
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{source}: key {key!r}: expected one integer, found {exc}.") from None


def _check_shape(x: torch.Tensor, key: str, expected: tuple[int | None, ...], source: str, why: str) -> None:
    ok = x.dim() == len(expected) and all(e is None or e == a for e, a in zip(expected, x.shape))
    if not ok:
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ModelFileError(f"{source}: key {key!r}: expected shape {want} ({why}), found {tuple(x.shape)}. "
                             f"Fix: pass the official, unmodified file.")


def _local_faces(faces: torch.Tensor, key: str, start: int, stop: int, source: str) -> torch.Tensor:
    """Faces of the tissue ``[start, stop)``, local (see the module docstring)."""
    n = stop - start
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ModelFileError(f"{source}: key {key!r}: expected triangles (F, 3), found {tuple(faces.shape)}.")
    if faces.numel() == 0:
        return faces
    lo, hi = int(faces.min()), int(faces.max())
    if lo >= 0 and hi < n:
        return faces
    if lo >= start and hi < stop:
        return faces - start
    raise ModelFileError(
        f"{source}: key {key!r}: indices in [{lo}, {hi}] fit neither the {n} vertices of the tissue (local) nor "
        f"its global range [{start}, {stop}). Fix: check bone_v_sep/skin_v_sep and the face arrays."
    )


def _bone_part_ids(sw_bone: torch.Tensor) -> torch.Tensor:
    joint = sw_bone.argmax(1)
    return torch.tensor(JOINT_TO_BONE, dtype=torch.long)[joint]


def _check_rows(x: torch.Tensor, key: str, source: str, dim: int, what: str) -> None:
    if x.numel() == 0:
        return
    err = (x.sum(dim) - 1).abs().max()
    if float(err) > 1e-3:
        raise ModelFileError(f"{source}: key {key!r}: expected every {what} to sum to 1, worst is off by "
                             f"{float(err):.3g}. Fix: pass the official, unmodified file.")


# --------------------------------------------------------------------------------------------
# NIMBLE
# --------------------------------------------------------------------------------------------


def nimble_to_model_data(pm_dict_path_or_dict: Any, *, num_shape: int = 20) -> ModelData:
    """Convert the official ``NIMBLE_DICT_*.pkl`` (path, bytes or loaded dict) to a right-hand :class:`ModelData`.

    Tissues ``bones`` (parts: the 20 bones), ``muscles`` and ``skin``; space ``shape`` with
    ``num_shape`` normalised components; 171 pose correctives; the 25 NIMBLE joints.
    See the module docstring for the exact conventions and assumptions.
    Raises ``ModelFileError`` (``UnsafePickleError`` for a crafted pickle) naming the bad key.
    """
    what = "NIMBLE_DICT_*.pkl"
    d, source = _load_dict(pm_dict_path_or_dict, what)
    vert = _tensor(d, "vert", source, what, ndim=2)
    _check_shape(vert, "vert", (None, 3), source, "V vertices")
    num_v = int(vert.shape[0])
    bone_sep = _int(d, "bone_v_sep", source, what)
    skin_sep = _int(d, "skin_v_sep", source, what)
    skin_start = num_v + skin_sep if skin_sep < 0 else skin_sep
    if not 0 < bone_sep < skin_start < num_v:
        raise ModelFileError(
            f"{source}: keys 'bone_v_sep'={bone_sep}, 'skin_v_sep'={skin_sep}: expected 0 < bone_v_sep < "
            f"skin start < V={num_v} (skin_v_sep is a negative index from the end). Fix: pass the official file."
        )
    ranges = {"bones": (0, bone_sep), "muscles": (bone_sep, skin_start), "skin": (skin_start, num_v)}
    num_j = len(NIMBLE_JOINT_NAMES)

    sw = _tensor(d, "all_sw", source, what)
    _check_shape(sw, "all_sw", (num_v, num_j), source, f"V={num_v} x {num_j} joints")
    _check_rows(sw, "all_sw", source, 1, "skinning-weight row")
    jreg_bone = _tensor(d, "jreg_bone", source, what)
    _check_shape(jreg_bone, "jreg_bone", (num_j, bone_sep), source, f"{num_j} joints x {bone_sep} bone vertices")
    _check_rows(jreg_bone, "jreg_bone", source, 1, "joint-regressor row")
    jreg = torch.cat([jreg_bone, jreg_bone.new_zeros(num_j, num_v - bone_sep)], 1)

    pbs = _tensor(d, "all_pbs", source, what)
    num_p = 9 * (len(BONE_NAMES) - 1)
    _check_shape(pbs, "all_pbs", (num_v, 3, num_p), source, f"V={num_v} x 3 x {num_p} pose features")
    pose_basis = pbs.permute(2, 0, 1).contiguous()

    basis = _tensor(d, "shape_basis", source, what, ndim=2)
    _check_shape(basis, "shape_basis", (None, 3 * num_v), source, f"K x 3V with V={num_v}")
    avail = int(basis.shape[0])
    std = _tensor(d, "shape_pm_std", source, what).reshape(-1)
    mean = _tensor(d, "shape_pm_mean", source, what).reshape(-1)
    for key, arr in (("shape_pm_std", std), ("shape_pm_mean", mean)):
        if arr.shape[0] < avail:
            raise ModelFileError(f"{source}: key {key!r}: expected {avail} values (one per shape component), "
                                 f"found {arr.shape[0]}.")
    if not 0 <= num_shape <= avail:
        raise ParameterError(f"num_shape must be in [0, {avail}] (the file has {avail} shape components), "
                             f"got {num_shape}.")
    k = num_shape
    rows = basis[:k].reshape(k, num_v, 3)
    template = vert + (mean[:k, None, None] * rows).sum(0)
    shape_space = std[:k, None, None] * rows

    faces = {}
    for name, key in (("bones", "bone_f"), ("muscles", "muscle_f"), ("skin", "skin_f")):
        start, stop = ranges[name]
        faces[name] = _local_faces(_tensor(d, key, source, what, integer=True), key, start, stop, source)
    part_ids = _bone_part_ids(sw[:bone_sep])
    tissues = [
        TissueSpec("bones", 0, bone_sep, faces["bones"], part_names=list(BONE_NAMES), part_ids=part_ids),
        TissueSpec("muscles", bone_sep, skin_start, faces["muscles"]),
        TissueSpec("skin", skin_start, num_v, faces["skin"]),
    ]

    pca = _tensor(d, "pose_basis", source, what, ndim=2)
    num_rot = 3 * (len(BONE_NAMES) - 1)
    _check_shape(pca, "pose_basis", (None, num_rot), source, f"K_pose x {num_rot} (rows 1..19 of the pose)")
    extras = {"pose_pca_basis": pca}
    for key in ("pose_mean", "pose_pm_std", "pose_pm_mean"):
        arr = _tensor(d, key, source, what).reshape(-1)
        want = num_rot if key == "pose_mean" else int(pca.shape[0])
        if arr.shape[0] != want:
            raise ModelFileError(f"{source}: key {key!r}: expected {want} values, found {arr.shape[0]}.")
        extras[NIMBLE_EXTRAS[key]] = arr
    for key in ("jreg_mano", "skin_v_surface_mask", "skin_v_gd"):
        if key in d and isinstance(d[key], torch.Tensor):
            value = d[key].detach()
            extras[NIMBLE_EXTRAS[key]] = value.double() if value.is_floating_point() else value
    meta = {
        "name": "NIMBLE", "units": "mm", "handedness": "right", "source_format": "NIMBLE_DICT (official)",
        "num_shape_components_in_file": avail, "pose_pca_components": int(pca.shape[0]),
        "bone_names": list(BONE_NAMES), "bone_joints": list(BONE_TO_JOINT),
    }
    return ModelData(
        template=template, tissues=tissues, joint_names=list(NIMBLE_JOINT_NAMES), parents=list(NIMBLE_PARENTS),
        joint_regressor=jreg, skinning_weights=sw, spaces={"shape": shape_space}, pose_basis=pose_basis,
        pose_feature_joints=list(BONE_TO_JOINT[1:]), extras=extras, meta=meta,
    )


# --------------------------------------------------------------------------------------------
# PIANO
# --------------------------------------------------------------------------------------------


def piano_to_model_data(path: Any) -> ModelData:
    """Convert the official PIANO model (path, bytes or loaded dict) to a right-hand :class:`ModelData`.

    One ``bones`` tissue (parts: the 20 bones), the 25 NIMBLE joints, space ``shape`` taken
    as is from ``shape_basis (K, 3V)`` (PIANO's coefficients are not normalised: they are
    used unscaled), no pose correctives.
    """
    what = "PIANO model"
    d, source = _load_dict(path, what)
    vert = _tensor(d, "shape_mean", source, what, ndim=2)
    _check_shape(vert, "shape_mean", (None, 3), source, "V vertices")
    num_v = int(vert.shape[0])
    num_j = len(NIMBLE_JOINT_NAMES)
    faces = _local_faces(_tensor(d, "faces", source, what, integer=True), "faces", 0, num_v, source)
    basis = _tensor(d, "shape_basis", source, what, ndim=2)
    _check_shape(basis, "shape_basis", (None, 3 * num_v), source, f"K x 3V with V={num_v}")
    sw = _tensor(d, "sw", source, what)
    _check_shape(sw, "sw", (num_v, num_j), source, f"V={num_v} x {num_j} joints")
    _check_rows(sw, "sw", source, 1, "skinning-weight row")
    jreg = _tensor(d, "jreg", source, what)
    _check_shape(jreg, "jreg", (num_j, num_v), source, f"{num_j} joints x V={num_v}")
    _check_rows(jreg, "jreg", source, 1, "joint-regressor row")
    tissue = TissueSpec("bones", 0, num_v, faces, part_names=list(BONE_NAMES), part_ids=_bone_part_ids(sw))
    meta = {"name": "PIANO", "units": "mm", "handedness": "right", "source_format": "PIANO (official)",
            "bone_names": list(BONE_NAMES), "bone_joints": list(BONE_TO_JOINT)}
    return ModelData(
        template=vert, tissues=[tissue], joint_names=list(NIMBLE_JOINT_NAMES), parents=list(NIMBLE_PARENTS),
        joint_regressor=jreg, skinning_weights=sw, spaces={"shape": basis.reshape(-1, num_v, 3)}, meta=meta,
    )


# --------------------------------------------------------------------------------------------
# left hand
# --------------------------------------------------------------------------------------------


def mirror_hand_model_data(data: ModelData) -> ModelData:
    """Mirror a hand model about the plane x = 0 (right <-> left); returns a new :class:`ModelData`.

    With ``M = diag(-1, 1, 1)``: x of the template, every linear space and the pose
    correctives is negated; face winding is flipped; the corrective basis is re-expressed
    for mirrored rotations ``R -> M R M`` (feature ``(R - I)_{ab}`` changes sign with
    ``m_a m_b``); the pose PCA (axis-angle rows) is mirrored ``(x, y, z) -> (x, -y, -z)``.
    A mirrored model posed with mirrored rotations gives the mirrored output exactly.
    """
    m = torch.tensor(_MIRROR, dtype=data.template.dtype)
    tissues = [replace(t, faces=t.faces[:, [0, 2, 1]].contiguous()) for t in data.tissues]
    pose_basis = None
    if data.pose_basis is not None:
        sign = (m[:, None] * m[None, :]).reshape(9).repeat(len(data.pose_feature_joints))
        pose_basis = data.pose_basis * sign[:, None, None].to(data.pose_basis.dtype) * m.to(data.pose_basis.dtype)
    extras = dict(data.extras)
    aa_sign = -m  # axis-angle of M R M is -M r = (x, -y, -z)
    if "pose_pca_basis" in extras:
        pca = extras["pose_pca_basis"]
        extras["pose_pca_basis"] = (pca.reshape(pca.shape[0], -1, 3) * aa_sign.to(pca.dtype)).reshape(pca.shape)
    if "pose_pca_mean" in extras:
        pm = extras["pose_pca_mean"]
        extras["pose_pca_mean"] = (pm.reshape(-1, 3) * aa_sign.to(pm.dtype)).reshape(pm.shape)
    meta = dict(data.meta)
    meta["handedness"] = "left" if meta.get("handedness", "right") == "right" else "right"
    return replace(
        data, template=data.template * m, tissues=tissues,
        spaces={k: v * m.to(v.dtype) for k, v in data.spaces.items()}, pose_basis=pose_basis,
        extras=extras, meta=meta,
    )


# --------------------------------------------------------------------------------------------
# texture and MANO link files
# --------------------------------------------------------------------------------------------


def read_nimble_texture(tex: Any) -> dict[str, dict[str, torch.Tensor]]:
    """Read ``NIMBLE_TEX_DICT.pkl`` (path, bytes or dict): per map ``diffuse``/``normal``/``spec``
    the ``basis (3 R^2, K)``, ``mean (3 R^2,)`` and ``std (K,)`` as float64 (any resolution ``R``)."""
    what = "NIMBLE_TEX_DICT.pkl"
    d, source = _load_dict(tex, what)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name in ("diffuse", "normal", "spec"):
        entry = d.get(name)
        if not isinstance(entry, Mapping):
            raise ModelFileError(f"{source}: missing key {name!r} (a dict with 'basis', 'mean', 'std'); "
                                 f"{what} must hold 'diffuse', 'normal' and 'spec'. Fix: pass the official file.")
        sub = dict(entry)
        basis = _tensor(sub, "basis", f"{source}[{name!r}]", what, ndim=2)
        mean = _tensor(sub, "mean", f"{source}[{name!r}]", what).reshape(-1)
        std = _tensor(sub, "std", f"{source}[{name!r}]", what).reshape(-1)
        rows = int(basis.shape[0])
        res = math.isqrt(rows // 3)
        if rows % 3 or res * res * 3 != rows or mean.shape[0] != rows or std.shape[0] < basis.shape[1]:
            raise ModelFileError(
                f"{source}: key {name!r}: expected basis (3 R^2, K), mean (3 R^2,), std (K,), found "
                f"{tuple(basis.shape)}, {tuple(mean.shape)}, {tuple(std.shape)}. Fix: pass the official file."
            )
        out[name] = {"basis": basis, "mean": mean, "std": std[: basis.shape[1]]}
    return out


def read_mano_vreg(vreg: Any, skin_faces: torch.Tensor, num_skin: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Read ``NIMBLE_MANO_VREG.pkl``: ``lmk_faces_idx (N, 778)`` (skin-face indices) and
    ``lmk_bary_coords (N, 778, 3)``, N alternative embeddings (flattened ``(N*778, ...)`` also
    accepted). Returns skin-local vertex ids ``(N, 778, 3)`` and barycentric weights ``(N, 778, 3)``.

    ``skin_faces`` must be the skin faces in the official winding (``skin_f``, local)."""
    what = "NIMBLE_MANO_VREG.pkl"
    d, source = _load_dict(vreg, what)
    idx = _tensor(d, "lmk_faces_idx", source, what, integer=True)
    bary = _tensor(d, "lmk_bary_coords", source, what)
    if idx.dim() == 1:
        idx = idx.reshape(-1, 778) if idx.numel() % 778 == 0 else idx[None]
    if bary.dim() == 2:
        bary = bary.reshape(idx.shape[0], -1, 3) if bary.shape[0] == idx.numel() else bary[None]
    if bary.shape != (*idx.shape, 3):
        raise ModelFileError(f"{source}: keys 'lmk_faces_idx' {tuple(idx.shape)} and 'lmk_bary_coords' "
                             f"{tuple(bary.shape)}: expected (N, 778) and (N, 778, 3).")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= skin_faces.shape[0]):
        raise ModelFileError(f"{source}: key 'lmk_faces_idx': indices must lie in [0, {skin_faces.shape[0] - 1}] "
                             f"(the skin faces); found [{int(idx.min())}, {int(idx.max())}].")
    ids = skin_faces.long()[idx]
    if ids.numel() and int(ids.max()) >= num_skin:
        raise ModelFileError(f"{source}: skin faces index beyond the {num_skin} skin vertices.")
    return ids, bary
