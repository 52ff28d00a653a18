"""Converter from the official SCULPTOR head model file (``paradict.npy``) to :class:`ModelData`.

The official file is ``np.save`` of a dict of numpy arrays (a pickle); it is read only
through the restricted unpickler (:func:`~anatomy.io.safe_pickle.load_official_pickle`).
Conventions of the official layer (DESIGN §5), reproduced exactly:

* Vertex stack ``[skull | face]``: ``template_skull (Vs, 3)`` then ``template_face (Vf, 3)``;
  the official skull holds cranium, maxilla **and** mandible.
* Shape: ``v = template + sum_i beta_i d_i`` with ``beta (60,)`` used **as given** (the
  official coefficients are not normalised; no mean or std is applied) and
  ``d_i = [skull_div_i | face_div_i]`` for ``i < 10`` (the **trait** space: surgical change)
  and ``[skull_shape_{i-10} | face_shape_{i-10}]`` after (the **shape** space). Here they
  become two spaces, ``shape`` (50) and ``trait`` (10); ``Sculptor.official_inputs`` splits
  an official ``beta``.
* Joints ``J = J_reg (2, V) @ v`` on the shaped (not pose-corrected) stack (a regressor over
  the skull only, ``(2, Vs)``, is padded with zeros); ``parents == [-1, 0]``: root, jaw.
* Pose correctives ``pose_dir (9, 3V)`` (vertex-major rows) driven by ``R_jaw - I``
  (row-major); skinning with ``lbs_weights (V, 2)``.
* The jaw offset ``(3,)`` is added to the jaw's position relative to its parent, in the
  parent's frame, before the chain is composed (``joint_offsets`` of the layer).
* Rotations: the exact Rodrigues formula. The official layer normalises the axis-angle by
  ``|r + 1e-8|`` (a regulariser), which changes its rotations by about 1e-8 rad.
* ``facialmesh_face`` holds quads ``(F, 4)``: each quad ``(a, b, c, d)`` becomes the
  triangles ``(a, b, c)`` and ``(a, c, d)``; the quads are kept in ``extras['face_quads']``.

Mandible: with ``split_mandible=True`` the skull vertices whose jaw skinning weight is above
``jaw_threshold`` are moved into a ``mandible`` tissue (stack ``[skull | mandible | face]``,
each vertex moved with its rows of every array, so outputs are unchanged). This is done only
when no skull triangle joins a mandible vertex to a cranium vertex; otherwise the tissues stay
``skull`` and ``face`` and the skull gets parts ``cranium_maxilla`` / ``mandible``.
``extras['official_vertex_index'] (V,)`` records, for every vertex of our stack, its index in
the official stack (``Sculptor.to_official_order`` undoes the split).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..core.errors import ModelFileError, ParameterError
from .model_data import ModelData, TissueSpec
from .official_nimble import _check_rows, _check_shape, _load_dict, _local_faces, _tensor

__all__ = [
    "SCULPTOR_JOINT_NAMES",
    "SCULPTOR_KEYS",
    "SCULPTOR_PARENTS",
    "quads_to_triangles",
    "sculptor_to_model_data",
]

WHAT = "paradict.npy"
SCULPTOR_KEYS: tuple[str, ...] = (
    "template_skull", "template_face", "skullmesh_face", "facialmesh_face", "skull_shape", "face_shape",
    "skull_div", "face_div", "J_reg", "parents", "pose_dir", "lbs_weights",
)
SCULPTOR_JOINT_NAMES: tuple[str, ...] = ("root", "jaw")
SCULPTOR_PARENTS: tuple[int, ...] = (-1, 0)
SKULL_PART_NAMES: tuple[str, ...] = ("cranium_maxilla", "mandible")


def quads_to_triangles(faces: torch.Tensor) -> torch.Tensor:
    """``(F, 4)`` quads ``(a, b, c, d)`` -> ``(2F, 3)`` triangles ``(a, b, c), (a, c, d)`` (quad by quad);
    ``(F, 3)`` triangles are returned unchanged."""
    if faces.dim() != 2 or faces.shape[1] not in (3, 4):
        raise ModelFileError(f"faces: expected triangles (F, 3) or quads (F, 4), found {tuple(faces.shape)}.")
    if faces.shape[1] == 3:
        return faces
    return torch.stack([faces[:, [0, 1, 2]], faces[:, [0, 2, 3]]], 1).reshape(-1, 3)


def _read(src: Any) -> tuple[dict[str, Any], str]:
    if isinstance(src, np.ndarray) and src.dtype.hasobject and src.shape == ():
        src = src.item()  # the 0-d object array np.load returns for a saved dict (the caller forgot .item())
    if not isinstance(src, (Mapping, str, os.PathLike, bytes, bytearray, memoryview)):
        raise ModelFileError(f"{WHAT}: expected the path of the official file, its bytes or its loaded dict, "
                             f"got {type(src).__name__}.")
    d, source = _load_dict(src, WHAT)
    missing = [k for k in SCULPTOR_KEYS if k not in d]
    if missing:
        raise ModelFileError(
            f"{source}: missing key(s) {missing}; SCULPTOR's {WHAT} must be a dict with the keys "
            f"{', '.join(repr(k) for k in SCULPTOR_KEYS)}. Fix: pass the official file, complete and unmodified."
        )
    return d, source


def _basis(d: dict[str, Any], key: str, num_v: int, source: str) -> torch.Tensor:
    """``(K, n, 3)`` displacement basis (a flat ``(K, 3n)`` layout is accepted, vertex-major)."""
    x = _tensor(d, key, source, WHAT)
    if x.dim() == 2 and x.shape[1] == 3 * num_v:
        x = x.reshape(x.shape[0], num_v, 3)
    _check_shape(x, key, (None, num_v, 3), source, f"K components x {num_v} vertices x 3")
    return x


def sculptor_to_model_data(
    paradict: Any, *, split_mandible: bool = True, jaw_threshold: float = 0.5, length_scale: float = 1.0,
) -> ModelData:
    """Convert the official SCULPTOR ``paradict.npy`` (path, bytes or the loaded dict) to :class:`ModelData`.

    Tissues ``skull`` (+ ``mandible`` when split, see the module docstring) and ``face``;
    joints ``root``, ``jaw``; spaces ``shape`` and ``trait`` with the official, unnormalised
    coefficients; 9 jaw pose correctives. ``length_scale`` multiplies every length (template,
    bases, correctives): leave it at 1 for a file in millimetres, 1000 for one in metres.
    Raises ``ModelFileError`` (``UnsafePickleError`` for a crafted pickle) naming the bad key.
    """
    if not 0.0 < jaw_threshold < 1.0:
        raise ParameterError(f"jaw_threshold must lie in (0, 1), got {jaw_threshold}; the usual value is 0.5.")
    if not (isinstance(length_scale, (int, float)) and length_scale > 0):
        raise ParameterError(f"length_scale must be a positive number, got {length_scale!r}.")
    d, source = _read(paradict)
    skull_t = _tensor(d, "template_skull", source, WHAT, ndim=2)
    face_t = _tensor(d, "template_face", source, WHAT, ndim=2)
    _check_shape(skull_t, "template_skull", (None, 3), source, "Vs skull vertices")
    _check_shape(face_t, "template_face", (None, 3), source, "Vf face vertices")
    num_s, num_f = int(skull_t.shape[0]), int(face_t.shape[0])
    num_v = num_s + num_f
    template = torch.cat([skull_t, face_t])

    spaces = {}
    for name, (skull_key, face_key) in (("shape", ("skull_shape", "face_shape")),
                                        ("trait", ("skull_div", "face_div"))):
        skull_b, face_b = _basis(d, skull_key, num_s, source), _basis(d, face_key, num_f, source)
        if skull_b.shape[0] != face_b.shape[0]:
            raise ModelFileError(f"{source}: keys {skull_key!r} and {face_key!r}: expected the same number of "
                                 f"components, found {skull_b.shape[0]} and {face_b.shape[0]}.")
        spaces[name] = torch.cat([skull_b, face_b], 1)

    jreg = _tensor(d, "J_reg", source, WHAT, ndim=2)
    if jreg.shape == (2, num_s):
        jreg = torch.cat([jreg, jreg.new_zeros(2, num_f)], 1)
    _check_shape(jreg, "J_reg", (2, num_v), source, f"2 joints x V={num_v} (or x Vs={num_s})")
    parents = _tensor(d, "parents", source, WHAT, integer=True).reshape(-1)
    if parents.tolist() != list(SCULPTOR_PARENTS):
        raise ModelFileError(f"{source}: key 'parents': expected {list(SCULPTOR_PARENTS)} (root, jaw), found "
                             f"{parents.tolist()}. Fix: pass the official file.")
    pose_dir = _tensor(d, "pose_dir", source, WHAT, ndim=2)
    _check_shape(pose_dir, "pose_dir", (9, 3 * num_v), source, f"9 jaw features x 3V with V={num_v}")
    weights = _tensor(d, "lbs_weights", source, WHAT, ndim=2)
    _check_shape(weights, "lbs_weights", (num_v, 2), source, f"V={num_v} x 2 joints")
    _check_rows(weights, "lbs_weights", source, 1, "skinning-weight row")

    skull_f = _local_faces(_tensor(d, "skullmesh_face", source, WHAT, integer=True), "skullmesh_face",
                           0, num_s, source)
    quads = _tensor(d, "facialmesh_face", source, WHAT, integer=True)
    if quads.dim() != 2 or quads.shape[1] not in (3, 4):
        raise ModelFileError(f"{source}: key 'facialmesh_face': expected quads (F, 4) or triangles (F, 3), found "
                             f"{tuple(quads.shape)}. Fix: pass the official file.")
    face_f = _local_faces(quads_to_triangles(quads), "facialmesh_face", num_s, num_v, source)
    if quads.shape[1] == 4:
        quads = quads - (num_s if int(quads.min()) >= num_s else 0)

    scale = float(length_scale)
    template, pose_basis = template * scale, pose_dir.reshape(9, num_v, 3) * scale
    spaces = {k: v * scale for k, v in spaces.items()}

    jaw = weights[:num_s, 1] > jaw_threshold
    straddling = int((jaw[skull_f].any(1) & ~jaw[skull_f].all(1)).sum()) if skull_f.numel() else 0
    split = split_mandible and bool(jaw.any()) and bool((~jaw).any()) and straddling == 0
    extras: dict[str, torch.Tensor] = {}
    if quads.shape[1] == 4:
        extras["face_quads"] = quads
    if split:
        order = torch.cat([torch.nonzero(~jaw).flatten(), torch.nonzero(jaw).flatten(),
                           torch.arange(num_s, num_v)])
        new_index = torch.empty_like(order)
        new_index[order] = torch.arange(num_v)
        num_c = int((~jaw).sum())
        cranium_f = new_index[skull_f[~jaw[skull_f].any(1)]]
        mandible_f = new_index[skull_f[jaw[skull_f].all(1)]] - num_c
        tissues = [TissueSpec("skull", 0, num_c, cranium_f), TissueSpec("mandible", num_c, num_s, mandible_f),
                   TissueSpec("face", num_s, num_v, face_f)]
        template, weights, jreg = template[order], weights[order], jreg[:, order]
        pose_basis = pose_basis[:, order]
        spaces = {k: v[:, order] for k, v in spaces.items()}
        extras["official_vertex_index"] = order
    else:
        tissues = [TissueSpec("skull", 0, num_s, skull_f, part_names=list(SKULL_PART_NAMES), part_ids=jaw.long()),
                   TissueSpec("face", num_s, num_v, face_f)]
    meta = {
        "name": "SCULPTOR", "units": "mm", "source_format": "SCULPTOR paradict.npy (official)",
        "official_beta_layout": f"beta[:{spaces['trait'].shape[0]}] = trait (skull_div/face_div), "
                                f"beta[{spaces['trait'].shape[0]}:] = shape (skull_shape/face_shape)",
        "coefficients_normalised": False, "mandible_split": split, "jaw_threshold": jaw_threshold,
        "length_scale": scale, "official_counts": {"skull_vertices": num_s, "face_vertices": num_f,
                                                   "face_polygons": int(quads.shape[0])},
    }
    if split_mandible and not split:
        meta["mandible_split_skipped"] = (f"{straddling} skull triangles join mandible and cranium vertices"
                                          if straddling else "no vertex on one side of the jaw threshold")
    return ModelData(
        template=template, tissues=tissues, joint_names=list(SCULPTOR_JOINT_NAMES), parents=list(SCULPTOR_PARENTS),
        joint_regressor=jreg, skinning_weights=weights, spaces=spaces, pose_basis=pose_basis,
        pose_feature_joints=[1], extras=extras, meta=meta,
    )
