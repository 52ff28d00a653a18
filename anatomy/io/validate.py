"""Consistency checks of a :class:`~anatomy.io.model_data.ModelData`.

:func:`validate_model_data` is run by :func:`anatomy.io.save_model` before anything is
written and by :func:`anatomy.io.load_model` after a file is read, so a layer is never
built from an inconsistent model. Every failure raises
:class:`~anatomy.core.errors.ModelFileError` whose message names the file (``source``),
the key, what was expected, what was found, and how to fix it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import NoReturn

import torch

from ..core.errors import ModelFileError
from .model_data import ModelData, TissueSpec

__all__ = ["validate_model_data", "SUM_TOLERANCE"]

#: Allowed deviation of a row sum (skinning weights, joint regressor, landmark weights) from 1.
SUM_TOLERANCE = 1e-3

_HANDEDNESS = ("right", "left")


class _Checker:
    """Holds the source name and builds the error messages."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, expected: str, found: str, fix: str) -> NoReturn:
        raise ModelFileError(
            f"{self.source}: {key}: expected {expected}, found {found}. Fix: {fix}"
        )

    # -- generic tensor checks ------------------------------------------------------------

    def tensor(self, x: object, key: str, *, sparse_ok: bool = False) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            self.fail(key, "a torch.Tensor", type(x).__name__, "convert it with torch.as_tensor(...).")
        if x.layout == torch.sparse_coo:
            if not sparse_ok:
                self.fail(key, "a dense tensor", "a sparse COO tensor", "convert it with .to_dense().")
        elif x.layout != torch.strided:
            self.fail(
                key,
                "a dense or sparse COO tensor" if sparse_ok else "a dense tensor",
                f"layout {x.layout}",
                "convert it with .to_sparse_coo() or .to_dense().",
            )
        return x

    def floating(self, x: torch.Tensor, key: str) -> None:
        if not x.is_floating_point():
            self.fail(
                key, "a floating dtype (float16/32/64)", f"dtype {x.dtype}",
                "convert it with .float() (or .half() for compact bases).",
            )

    def int64(self, x: torch.Tensor, key: str) -> None:
        if x.dtype != torch.int64:
            self.fail(key, "dtype torch.int64 (indices)", f"dtype {x.dtype}", "convert it with .long().")

    def shape(self, x: torch.Tensor, key: str, expected: tuple[int | None, ...], letters: str) -> None:
        actual = tuple(x.shape)
        ok = len(actual) == len(expected) and all(
            e is None or e == a for e, a in zip(expected, actual, strict=False)
        )
        if not ok:
            dims = ["*" if e is None else str(e) for e in expected]
            want = f"({dims[0]},)" if len(dims) == 1 else "(" + ", ".join(dims) + ")"
            self.fail(
                key, f"shape {want} {letters}", f"shape {actual}",
                "reshape the tensor or fix the sizes it must agree with.",
            )

    def finite(self, x: torch.Tensor, key: str) -> None:
        values = _values(x)
        if values.is_floating_point() and values.numel():
            bad = int((~torch.isfinite(values)).sum())
            if bad:
                self.fail(
                    key, "finite values", f"{bad} NaN/Inf value(s)",
                    "recompute or repair the tensor; a model must hold finite numbers only.",
                )

    def index_range(self, x: torch.Tensor, key: str, upper: int, what: str) -> None:
        if x.numel() == 0:
            return
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi >= upper:
            self.fail(
                key, f"indices in [0, {upper - 1}] ({what})", f"indices in [{lo}, {hi}]",
                "fix the indices or the vertex ranges they refer to (indices are local to the tissue "
                "for faces/tets).",
            )

    def rows_sum_to_one(self, x: torch.Tensor, key: str, dim: int, what: str) -> None:
        sums = _row_sums(x, dim)
        if sums.numel() == 0:
            return
        err = (sums - 1.0).abs()
        worst = int(err.argmax())
        if float(err[worst]) > SUM_TOLERANCE:
            self.fail(
                key, f"every {what} summing to 1 (tolerance {SUM_TOLERANCE:g})",
                f"{what} {worst} summing to {float(sums[worst]):.6g}",
                f"normalise the {what}s (divide each by its sum).",
            )

    def non_negative(self, x: torch.Tensor, key: str) -> None:
        values = _values(x)
        if values.numel() and bool((values < 0).any()):
            self.fail(
                key, "non-negative values", f"minimum {float(values.min()):.6g}",
                "clamp negative weights to 0 and renormalise.",
            )

    def str_list(self, x: object, key: str, *, unique: bool = True) -> list[str]:
        if not isinstance(x, (list, tuple)) or not all(isinstance(s, str) and s for s in x):
            self.fail(key, "a list of non-empty strings", repr(x)[:80], "pass a list of names.")
        names = list(x)
        if unique and len(set(names)) != len(names):
            dup = sorted({s for s in names if names.count(s) > 1})
            self.fail(key, "unique names", f"duplicates {dup}", "rename the duplicates.")
        return names

    def int_list(self, x: object, key: str) -> list[int]:
        if not isinstance(x, (list, tuple)) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in x
        ):
            self.fail(key, "a list of Python ints", repr(x)[:80], "pass a list of ints (use .tolist()).")
        return list(x)


def _values(x: torch.Tensor) -> torch.Tensor:
    return x.coalesce().values() if x.layout == torch.sparse_coo else x


def _row_sums(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sums over ``dim`` in float64 (dense or sparse COO 2-D ``x``), one per remaining row."""
    if x.layout == torch.sparse_coo:
        c = x.coalesce()
        row_dim = 1 - dim
        out = torch.zeros(x.shape[row_dim], dtype=torch.float64, device=x.device)
        return out.index_add_(0, c.indices()[row_dim], c.values().double())
    return x.double().sum(dim)


def _check_tissue_range(c: _Checker, t: object, i: int, num_vertices: int, seen: set[str], start: int) -> int:
    """Name and ``[start, stop)`` of tissue ``i``; returns its stop."""
    if not isinstance(t, TissueSpec):
        c.fail(f"tissues[{i}]", "a TissueSpec", type(t).__name__, "build it with anatomy.io.TissueSpec(...).")
    if not isinstance(t.name, str) or not t.name:
        c.fail(f"tissues[{i}].name", "a non-empty string", repr(t.name), "give the tissue a name.")
    if t.name in seen:
        c.fail(f"tissues[{i}].name", "unique tissue names", f"{t.name!r} twice", "rename one of them.")
    seen.add(t.name)
    key = f"tissues[{t.name!r}]"
    for attr in ("start", "stop"):
        v = getattr(t, attr)
        if not isinstance(v, int) or isinstance(v, bool):
            c.fail(f"{key}.{attr}", "a Python int", repr(v), "pass an int (use int(...)).")
    if t.start != start:
        c.fail(
            f"{key}.start", f"{start} (tissues must be contiguous, non-overlapping and in stack order)",
            str(t.start), "set start to the previous tissue's stop (the first tissue starts at 0).",
        )
    if t.stop <= t.start or t.stop > num_vertices:
        c.fail(
            f"{key}.stop", f"an int in ({t.start}, {num_vertices}] (V={num_vertices} template vertices)",
            str(t.stop), "fix the tissue range so that the tissues cover [0, V).",
        )
    return t.stop


def _check_tissue_tensors(c: _Checker, t: TissueSpec) -> None:
    key = f"tissues[{t.name!r}]"
    n = t.stop - t.start
    faces = c.tensor(t.faces, f"{key}.faces")
    c.int64(faces, f"{key}.faces")
    c.shape(faces, f"{key}.faces", (None, 3), "(F, 3)")
    c.index_range(faces, f"{key}.faces", n, f"local to the {n} vertices of tissue {t.name!r}")
    if t.tets is not None:
        tets = c.tensor(t.tets, f"{key}.tets")
        c.int64(tets, f"{key}.tets")
        c.shape(tets, f"{key}.tets", (None, 4), "(T, 4)")
        c.index_range(tets, f"{key}.tets", n, f"local to the {n} vertices of tissue {t.name!r}")
    parts = c.str_list(t.part_names, f"{key}.part_names")
    if t.part_ids is None:
        if parts:
            c.fail(
                f"{key}.part_ids", f"a ({n},) int64 tensor since part_names has {len(parts)} names",
                "None", "give every vertex of the tissue a part index, or drop part_names.",
            )
    else:
        ids = c.tensor(t.part_ids, f"{key}.part_ids")
        c.int64(ids, f"{key}.part_ids")
        c.shape(ids, f"{key}.part_ids", (n,), "(n,) one part index per tissue vertex")
        if not parts:
            c.fail(f"{key}.part_names", "one name per part used by part_ids", "[]", "name the parts.")
        c.index_range(ids, f"{key}.part_ids", len(parts), f"indices into the {len(parts)} part_names")


def _check_meta(c: _Checker, meta: object) -> None:
    if not isinstance(meta, Mapping) or not all(isinstance(k, str) for k in meta):
        c.fail("meta", "a dict with string keys", type(meta).__name__, "pass a plain dict of JSON values.")
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        c.fail("meta", "JSON-serialisable values (str, int, float, bool, None, list, dict)", str(exc),
               "convert tensors/arrays with .tolist() and drop other objects.")
    units = meta.get("units", "mm")
    if units != "mm":
        c.fail("meta['units']", "'mm' (the toolkit works in millimetres)", repr(units),
               "scale the model to millimetres and set meta['units'] = 'mm'.")
    hand = meta.get("handedness")
    if hand is not None and hand not in _HANDEDNESS:
        c.fail("meta['handedness']", f"one of {_HANDEDNESS} or absent", repr(hand),
               "set it to 'right' or 'left', or remove it.")


def validate_model_data(data: ModelData, source: str = "<memory>") -> None:
    """Check that ``data`` is a complete, consistent model; raise ``ModelFileError`` if not.

    Checks: required fields present and of the right type; dtypes (floating template,
    bases and weights; int64 faces, tets, part ids and landmark vertex ids); sizes (V
    vertices, J joints, ``(K, V, 3)`` per space, ``P = 9 * len(pose_feature_joints)``);
    ``parents`` in topological order (``parents[0] == -1``, ``0 <= parents[j] < j``);
    tissues contiguous, non-overlapping and covering ``[0, V)``; faces/tets indices in the
    range of their tissue; skinning weights non-negative with rows summing to 1;
    joint-regressor rows summing to 1; landmark ids in range with weights summing to 1;
    all floating values finite; ``meta`` JSON-serialisable and in millimetres.

    ``source`` names the file (or ``"<memory>"``) in the error messages.
    """
    c = _Checker(source)
    if not isinstance(data, ModelData):
        c.fail("data", "an anatomy.io.ModelData", type(data).__name__,
               "build one with anatomy.io.ModelData(...).")

    # template -------------------------------------------------------------------------------
    template = c.tensor(data.template, "template")
    c.floating(template, "template")
    c.shape(template, "template", (None, 3), "(V, 3)")
    num_v = int(template.shape[0])
    if num_v == 0:
        c.fail("template", "at least one vertex", "shape (0, 3)", "fill the template with the rest vertices.")
    c.finite(template, "template")

    # tissues ---------------------------------------------------------------------------------
    if not isinstance(data.tissues, (list, tuple)) or not data.tissues:
        c.fail("tissues", "a non-empty list of TissueSpec", repr(data.tissues)[:80],
               "describe at least one tissue covering [0, V).")
    seen: set[str] = set()
    stop = 0
    for i, t in enumerate(data.tissues):
        stop = _check_tissue_range(c, t, i, num_v, seen, stop)
    if stop != num_v:
        last = data.tissues[-1].name
        c.fail(f"tissues[{last!r}].stop", f"{num_v} (the tissues must cover all V={num_v} vertices)",
               str(stop), "extend the last tissue or add the missing tissue.")
    for t in data.tissues:
        _check_tissue_tensors(c, t)

    # joints ----------------------------------------------------------------------------------
    names = c.str_list(data.joint_names, "joint_names")
    num_j = len(names)
    if num_j == 0:
        c.fail("joint_names", "at least one joint (the root)", "[]", "add a root joint.")
    parents = c.int_list(data.parents, "parents")
    if len(parents) != num_j:
        c.fail("parents", f"{num_j} entries (one per joint name)", f"{len(parents)} entries",
               "give exactly one parent per joint.")
    if parents[0] != -1:
        c.fail("parents", "parents[0] == -1 (joint 0 is the root)", f"parents[0] == {parents[0]}",
               "reorder the joints so that the root comes first with parent -1.")
    for j in range(1, num_j):
        if not 0 <= parents[j] < j:
            c.fail("parents", f"0 <= parents[{j}] < {j} (joints in topological order)",
                   f"parents[{j}] == {parents[j]}",
                   "reorder the joints so that every parent comes before its children.")

    jreg = c.tensor(data.joint_regressor, "joint_regressor", sparse_ok=True)
    c.floating(jreg, "joint_regressor")
    c.shape(jreg, "joint_regressor", (num_j, num_v), f"(J, V) with J={num_j}, V={num_v}")
    c.finite(jreg, "joint_regressor")
    c.rows_sum_to_one(jreg, "joint_regressor", 1, "row")

    sw = c.tensor(data.skinning_weights, "skinning_weights", sparse_ok=True)
    c.floating(sw, "skinning_weights")
    c.shape(sw, "skinning_weights", (num_v, num_j), f"(V, J) with V={num_v}, J={num_j}")
    c.finite(sw, "skinning_weights")
    c.non_negative(sw, "skinning_weights")
    c.rows_sum_to_one(sw, "skinning_weights", 1, "row")

    # spaces ----------------------------------------------------------------------------------
    if not isinstance(data.spaces, Mapping):
        c.fail("spaces", "a dict name -> (K, V, 3) tensor", type(data.spaces).__name__, "pass a dict.")
    for name, basis in data.spaces.items():
        key = f"spaces[{name!r}]"
        if not isinstance(name, str) or not name:
            c.fail("spaces", "non-empty string names", repr(name), "name the space (e.g. 'shape').")
        basis = c.tensor(basis, key)
        c.floating(basis, key)
        c.shape(basis, key, (None, num_v, 3), f"(K, V, 3) with V={num_v}")
        c.finite(basis, key)

    # pose correctives ------------------------------------------------------------------------
    pfj = c.int_list(data.pose_feature_joints, "pose_feature_joints")
    if len(set(pfj)) != len(pfj) or any(not 0 <= j < num_j for j in pfj):
        c.fail("pose_feature_joints", f"unique joint indices in [0, {num_j - 1}]", str(pfj),
               "list each joint whose rotation drives the correctives once.")
    if data.pose_basis is None:
        if pfj:
            c.fail("pose_basis", f"a ({9 * len(pfj)}, V, 3) tensor since pose_feature_joints is {pfj}",
                   "None", "provide the pose basis or empty pose_feature_joints.")
    else:
        pb = c.tensor(data.pose_basis, "pose_basis")
        c.floating(pb, "pose_basis")
        c.shape(pb, "pose_basis", (9 * len(pfj), num_v, 3),
                f"(P, V, 3) with P = 9 * len(pose_feature_joints) = {9 * len(pfj)}, V={num_v}")
        c.finite(pb, "pose_basis")

    # landmarks -------------------------------------------------------------------------------
    lnames = c.str_list(data.landmark_names, "landmark_names")
    num_l = len(lnames)
    landmark_fields = (("landmark_vertices", data.landmark_vertices),
                       ("landmark_weights", data.landmark_weights))
    for key, value in landmark_fields:
        if value is None:
            if num_l:
                c.fail(key, f"a ({num_l}, 3) tensor for the {num_l} landmark names", "None",
                       "provide the landmark embedding or drop landmark_names.")
            continue
        value = c.tensor(value, key)
        c.shape(value, key, (num_l, 3), f"(L, 3) with L={num_l} landmark names")
        if key == "landmark_vertices":
            c.int64(value, key)
            c.index_range(value, key, num_v, f"global vertex ids, V={num_v}")
        else:
            c.floating(value, key)
            c.finite(value, key)
            c.rows_sum_to_one(value, key, 1, "landmark weight row")

    # extras and meta -------------------------------------------------------------------------
    if not isinstance(data.extras, Mapping):
        c.fail("extras", "a dict name -> tensor", type(data.extras).__name__, "pass a dict of tensors.")
    for name, value in data.extras.items():
        if not isinstance(name, str) or not name:
            c.fail("extras", "non-empty string names", repr(name), "name every extra tensor.")
        value = c.tensor(value, f"extras[{name!r}]", sparse_ok=True)
        c.finite(value, f"extras[{name!r}]")
    _check_meta(c, data.meta)

