"""Our own model file format: safetensors tensors + a JSON sidecar.

A model ``hand`` is the pair ``hand.safetensors`` (every tensor of the
:class:`~anatomy.io.model_data.ModelData`, stored bit-exact in the dtype given) and
``hand.json`` (everything else: format version, units, handedness, tissue layout, joint
names and parents, space names and sizes, pose feature joints, landmark names, which
tensors are sparse, ``meta``, and the SHA-256 of the safetensors file). No pickle is
involved. Either file name, or the common stem, may be passed to :func:`save_model` and
:func:`load_model`.

Tensor keys in the safetensors file::

    template, joint_regressor, skinning_weights, pose_basis,
    landmark_vertices, landmark_weights,
    tissues.<name>.faces, tissues.<name>.tets, tissues.<name>.part_ids,
    spaces.<name>, extras.<name>

A sparse COO tensor ``<key>`` is stored coalesced as ``<key>.indices (2, nnz)`` int64
and ``<key>.values (nnz,)``; its shape is recorded in the sidecar's ``tensors`` table.

Saving is atomic: both files are written to temporary files in the destination folder,
flushed to disk, then moved into place with :func:`os.replace`, the JSON last. Because
the JSON names the checksum of the tensors it belongs to, a pair left half-replaced by a
crash is detected on load instead of being read inconsistently.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _safetensors_load
from safetensors.torch import save as _safetensors_save

from ..core.errors import DtypeError, ModelFileError
from ._atomic import fsync_dir, remove_quietly, write_temp
from .model_data import FORMAT_VERSION, ModelData, TissueSpec
from .validate import validate_model_data

__all__ = ["FORMAT_NAME", "model_paths", "save_model", "load_model"]

#: Value of the sidecar's ``format`` field.
FORMAT_NAME = "anatomy-model"
_TENSORS_SUFFIX = ".safetensors"
_SIDECAR_SUFFIX = ".json"

PathLike = str | os.PathLike[str]


def model_paths(path: PathLike) -> tuple[Path, Path]:
    """Return ``(tensors_path, sidecar_path)`` for ``hand.safetensors``, ``hand.json`` or ``hand``.

    Any other suffix is kept as part of the stem (``hand.v2`` -> ``hand.v2.safetensors``).
    """
    p = Path(os.fspath(path))
    if p.suffix in (_TENSORS_SUFFIX, _SIDECAR_SUFFIX):
        p = p.with_suffix("")
    return p.with_name(p.name + _TENSORS_SUFFIX), p.with_name(p.name + _SIDECAR_SUFFIX)


# ---------------------------------------------------------------------------------------
# save
# ---------------------------------------------------------------------------------------


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _logical_tensors(data: ModelData) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of ``data`` under its logical key, in a fixed order."""
    yield "template", data.template
    yield "joint_regressor", data.joint_regressor
    yield "skinning_weights", data.skinning_weights
    if data.pose_basis is not None:
        yield "pose_basis", data.pose_basis
    if data.landmark_vertices is not None:
        yield "landmark_vertices", data.landmark_vertices
    if data.landmark_weights is not None:
        yield "landmark_weights", data.landmark_weights
    for t in data.tissues:
        yield f"tissues.{t.name}.faces", t.faces
        if t.tets is not None:
            yield f"tissues.{t.name}.tets", t.tets
        if t.part_ids is not None:
            yield f"tissues.{t.name}.part_ids", t.part_ids
    for name, basis in data.spaces.items():
        yield f"spaces.{name}", basis
    for name, value in data.extras.items():
        yield f"extras.{name}", value


def _pack(data: ModelData, source: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``data`` into the safetensors dict and the sidecar's ``tensors`` table."""
    stored: dict[str, torch.Tensor] = {}
    table: dict[str, Any] = {}

    def put(key: str, value: torch.Tensor) -> None:
        if key in stored:
            raise ModelFileError(
                f"{source}: {key}: expected unique tensor keys, found {key!r} twice (a name ending "
                f"in '.indices'/'.values' collides with a sparse tensor). Fix: rename the space, "
                f"tissue or extra."
            )
        # clone: safetensors refuses tensors sharing memory, and we never hand it views.
        stored[key] = value.detach().to("cpu").contiguous().clone()

    for key, tensor in _logical_tensors(data):
        if key in table:
            raise ModelFileError(
                f"{source}: {key}: expected unique tensor keys, found {key!r} twice. Fix: rename it."
            )
        entry: dict[str, Any] = {"dtype": _dtype_name(tensor.dtype), "shape": list(tensor.shape)}
        if tensor.layout == torch.sparse_coo:
            c = tensor.detach().coalesce()
            entry["layout"] = "sparse_coo"
            entry["nnz"] = int(c.values().shape[0])
            put(key + ".indices", c.indices())
            put(key + ".values", c.values())
        else:
            entry["layout"] = "dense"
            put(key, tensor)
        table[key] = entry
    return stored, table


def _sidecar(
    data: ModelData, table: dict[str, Any], tensors_name: str, digest: str, size: int
) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "units": "mm",
        "handedness": data.meta.get("handedness"),
        "num_vertices": data.num_vertices,
        "tissues": [
            {
                "name": t.name,
                "start": t.start,
                "stop": t.stop,
                "num_faces": int(t.faces.shape[0]),
                "has_tets": t.tets is not None,
                "num_tets": 0 if t.tets is None else int(t.tets.shape[0]),
                "part_names": list(t.part_names),
                "has_part_ids": t.part_ids is not None,
            }
            for t in data.tissues
        ],
        "joints": {"names": list(data.joint_names), "parents": list(data.parents)},
        "spaces": [{"name": n, "size": int(b.shape[0])} for n, b in data.spaces.items()],
        "pose_feature_joints": list(data.pose_feature_joints),
        "has_pose_basis": data.pose_basis is not None,
        "landmarks": {
            "names": list(data.landmark_names),
            "has_vertices": data.landmark_vertices is not None,
            "has_weights": data.landmark_weights is not None,
        },
        "extras": list(data.extras),
        "tensors": table,
        "meta": data.meta,
        "safetensors": {"file": tensors_name, "sha256": digest, "bytes": size},
    }


def save_model(data: ModelData, path: PathLike, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``data`` as ``<stem>.safetensors`` + ``<stem>.json``; return both paths.

    ``path`` may be either file name or the stem. ``data`` is validated first
    (:func:`~anatomy.io.validate_model_data`). Tensors are stored as given (dtype
    preserved, e.g. float16 bases), so :func:`load_model` returns them bit-exact; sparse
    COO tensors are stored coalesced. ``meta`` must be JSON-serialisable (it comes back
    through JSON: tuples return as lists).

    The save is atomic (temporary files in the same folder, fsync, :func:`os.replace`,
    JSON last). It refuses to replace an existing model unless ``overwrite=True``.
    """
    tensors_path, sidecar_path = model_paths(path)
    source = str(tensors_path)
    validate_model_data(data, source=source)
    if not overwrite:
        for p in (tensors_path, sidecar_path):
            if p.exists():
                raise FileExistsError(
                    f"{p} already exists; refusing to overwrite it. Pass overwrite=True to replace "
                    f"the model, or choose another path."
                )
    folder = tensors_path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot save the model to {tensors_path}: folder {folder} does not exist; "
                                f"create it first.")

    stored, table = _pack(data, source)
    blob = _safetensors_save(stored, metadata={"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)})
    digest = hashlib.sha256(blob).hexdigest()
    doc = _sidecar(data, table, tensors_path.name, digest, len(blob))
    text = json.dumps(doc, indent=1, allow_nan=False, ensure_ascii=False) + "\n"

    temps: list[Path] = []
    backup: Path | None = None
    replaced_tensors = False
    try:
        temps.append(write_temp(folder, tensors_path.name, blob))
        temps.append(write_temp(folder, sidecar_path.name, text.encode("utf-8")))
        if tensors_path.exists():
            # keep a hard link to the old tensors so a failed JSON replace can be rolled back
            backup = folder / f".{tensors_path.name}.{os.urandom(6).hex()}.bak"
            try:
                os.link(tensors_path, backup)
            except OSError:
                backup = None
        os.replace(temps[0], tensors_path)
        replaced_tensors = True
        os.replace(temps[1], sidecar_path)
        replaced_tensors = False
        fsync_dir(folder)
    except BaseException:
        if replaced_tensors and backup is not None:
            with contextlib.suppress(OSError):
                os.replace(backup, tensors_path)
        elif replaced_tensors:
            # no backup possible: remove the orphan so that no unmatched pair is left behind
            # (a sidecar from before then fails its checksum check, loudly)
            with contextlib.suppress(OSError):
                if not sidecar_path.exists():
                    os.unlink(tensors_path)
        raise
    finally:
        for p in [*temps, *([backup] if backup is not None else [])]:
            remove_quietly(p)
    return tensors_path, sidecar_path


# ---------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------


class _Sidecar:
    """Typed access to the parsed JSON with errors that name the file and the field."""

    def __init__(self, doc: object, source: str) -> None:
        self.source = source
        self.doc = self.dict_of(doc, "<top level>")

    def fail(self, key: str, expected: str, found: object, fix: str) -> ModelFileError:
        return ModelFileError(f"{self.source}: {key}: expected {expected}, found {found!r}. Fix: {fix}")

    def dict_of(self, value: object, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, "a JSON object", type(value).__name__, "re-save the model with save_model.")
        return value

    def get(self, obj: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
        if key not in obj:
            raise self.fail(f"{where}{key}", "the field to be present", "nothing",
                            "the sidecar is incomplete; re-save the model with save_model.")
        value = obj[key]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise self.fail(f"{where}{key}", f"a {getattr(typ, '__name__', typ)}", value,
                            "the sidecar is corrupt; re-save the model with save_model.")
        return value


def _read_sidecar(tensors_path: Path, sidecar_path: Path) -> _Sidecar:
    source = str(sidecar_path)
    if not sidecar_path.is_file():
        hint = (f"{tensors_path.name} exists without it: the save was interrupted or the file was not "
                f"written by save_model; re-save the model" if tensors_path.is_file()
                else "check the path (pass 'name', 'name.safetensors' or 'name.json')")
        raise ModelFileError(f"{source}: sidecar: expected the JSON sidecar of the model, found no file. "
                             f"Fix: {hint}.")
    try:
        doc = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{source}: sidecar: expected valid JSON, found a parse error ({exc}). "
                             f"Fix: the file is truncated or corrupt; re-save the model.") from exc
    sc = _Sidecar(doc, source)
    fmt = sc.doc.get("format")
    if fmt != FORMAT_NAME:
        raise sc.fail("format", repr(FORMAT_NAME), fmt,
                      "this JSON is not an anatomy model sidecar; official NIMBLE/SCULPTOR files are read "
                      "with the converters in anatomy.io.")
    version = sc.doc.get("format_version")
    if version != FORMAT_VERSION:
        fix = ("upgrade the anatomy package to read this newer file"
               if isinstance(version, int) and version > FORMAT_VERSION
               else "re-save the model with this version of anatomy")
        raise sc.fail("format_version", f"{FORMAT_VERSION}", version, fix + ".")
    units = sc.doc.get("units")
    if units != "mm":
        raise sc.fail("units", "'mm'", units, "convert the model to millimetres and re-save it.")
    return sc


def _read_tensors(sc: _Sidecar, tensors_path: Path) -> dict[str, torch.Tensor]:
    source = str(tensors_path)
    info = sc.dict_of(sc.get(sc.doc, "safetensors", dict, ""), "safetensors")
    digest = sc.get(info, "sha256", str, "safetensors.")
    size = sc.get(info, "bytes", int, "safetensors.")
    if not tensors_path.is_file():
        raise ModelFileError(f"{source}: tensors: expected the safetensors file named by {sc.source}, found "
                             f"no file. Fix: copy both files of the model together.")
    blob = tensors_path.read_bytes()
    if len(blob) != size:
        raise ModelFileError(
            f"{source}: tensors: expected {size} bytes (as recorded in {sc.source}), found {len(blob)} "
            f"bytes. Fix: the file is truncated or belongs to another save; copy or re-save the model.")
    actual = hashlib.sha256(blob).hexdigest()
    if actual != digest:
        raise ModelFileError(
            f"{source}: sha256: expected {digest} (recorded in {sc.source}), found {actual}. Fix: the "
            f"tensors were modified or do not belong to this sidecar (an interrupted save?); re-save the "
            f"model.")
    try:
        return _safetensors_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{source}: tensors: expected a valid safetensors file, found: {exc}. Fix: "
                             f"re-save the model.") from exc


def _unpack(sc: _Sidecar, raw: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Rebuild the logical tensors (sparse ones included) and check them against the table."""
    table = sc.dict_of(sc.get(sc.doc, "tensors", dict, ""), "tensors")
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, entry in table.items():
        entry = sc.dict_of(entry, f"tensors.{key}")
        dtype_name = sc.get(entry, "dtype", str, f"tensors.{key}.")
        shape = sc.get(entry, "shape", list, f"tensors.{key}.")
        layout = sc.get(entry, "layout", str, f"tensors.{key}.")
        if layout == "dense":
            parts = [key]
        elif layout == "sparse_coo":
            parts = [key + ".indices", key + ".values"]
        else:
            raise sc.fail(f"tensors.{key}.layout", "'dense' or 'sparse_coo'", layout, "re-save the model.")
        for part in parts:
            if part not in raw:
                raise ModelFileError(f"{source}: {part}: expected this tensor (listed in {sc.source}), found "
                                     f"nothing. Fix: the pair is inconsistent; re-save the model.")
            used.add(part)
        if layout == "dense":
            tensor = raw[key]
        else:
            indices, values = raw[key + ".indices"], raw[key + ".values"]
            try:
                tensor = torch.sparse_coo_tensor(indices, values, shape, check_invariants=True).coalesce()
            except (RuntimeError, ValueError, TypeError) as exc:
                raise ModelFileError(f"{source}: {key}: expected a valid sparse COO tensor of shape {shape}, "
                                     f"found: {exc}. Fix: re-save the model.") from exc
        if _dtype_name(tensor.dtype) != dtype_name or list(tensor.shape) != shape:
            raise ModelFileError(
                f"{source}: {key}: expected dtype {dtype_name} and shape {tuple(shape)} (from {sc.source}), "
                f"found dtype {_dtype_name(tensor.dtype)} and shape {tuple(tensor.shape)}. Fix: re-save "
                f"the model.")
        out[key] = tensor
    extra = sorted(set(raw) - used)
    if extra:
        raise ModelFileError(f"{source}: tensors: expected only the tensors listed in {sc.source}, found "
                             f"unlisted {extra}. Fix: re-save the model with save_model.")
    return out


def _assemble(sc: _Sidecar, tensors: dict[str, torch.Tensor], source: str) -> ModelData:
    doc = sc.doc

    def need(key: str) -> torch.Tensor:
        if key not in tensors:
            raise ModelFileError(f"{source}: {key}: expected this tensor (the sidecar {sc.source} refers to "
                                 f"it), found nothing. Fix: re-save the model.")
        return tensors.pop(key)

    tissues: list[TissueSpec] = []
    for i, t in enumerate(sc.get(doc, "tissues", list, "")):
        t = sc.dict_of(t, f"tissues[{i}]")
        where = f"tissues[{i}]."
        name = sc.get(t, "name", str, where)
        tissues.append(TissueSpec(
            name=name,
            start=sc.get(t, "start", int, where),
            stop=sc.get(t, "stop", int, where),
            faces=need(f"tissues.{name}.faces"),
            tets=need(f"tissues.{name}.tets") if sc.get(t, "has_tets", bool, where) else None,
            part_names=list(sc.get(t, "part_names", list, where)),
            part_ids=need(f"tissues.{name}.part_ids") if sc.get(t, "has_part_ids", bool, where) else None,
        ))
    joints = sc.dict_of(sc.get(doc, "joints", dict, ""), "joints")
    spaces: dict[str, torch.Tensor] = {}
    for i, s in enumerate(sc.get(doc, "spaces", list, "")):
        s = sc.dict_of(s, f"spaces[{i}]")
        name = sc.get(s, "name", str, f"spaces[{i}].")
        spaces[name] = need(f"spaces.{name}")
    landmarks = sc.dict_of(sc.get(doc, "landmarks", dict, ""), "landmarks")
    extras = {}
    for name in sc.get(doc, "extras", list, ""):
        if not isinstance(name, str):
            raise sc.fail("extras", "a list of names", name, "re-save the model.")
        extras[name] = need(f"extras.{name}")
    data = ModelData(
        template=need("template"),
        tissues=tissues,
        joint_names=list(sc.get(joints, "names", list, "joints.")),
        parents=list(sc.get(joints, "parents", list, "joints.")),
        joint_regressor=need("joint_regressor"),
        skinning_weights=need("skinning_weights"),
        spaces=spaces,
        pose_basis=need("pose_basis") if sc.get(doc, "has_pose_basis", bool, "") else None,
        pose_feature_joints=list(sc.get(doc, "pose_feature_joints", list, "")),
        landmark_names=list(sc.get(landmarks, "names", list, "landmarks.")),
        landmark_vertices=need("landmark_vertices") if sc.get(landmarks, "has_vertices", bool, "landmarks.")
        else None,
        landmark_weights=need("landmark_weights") if sc.get(landmarks, "has_weights", bool, "landmarks.")
        else None,
        extras=extras,
        meta=sc.dict_of(sc.get(doc, "meta", dict, ""), "meta"),
    )
    if tensors:
        raise ModelFileError(f"{source}: tensors: expected every tensor to belong to the model described by "
                             f"{sc.source}, found unused {sorted(tensors)}. Fix: re-save the model.")
    return data


def _convert(data: ModelData, device: torch.device | str | None, dtype: torch.dtype | None) -> ModelData:
    if device is None and dtype is None:
        return data

    def cv(t: torch.Tensor) -> torch.Tensor:
        if dtype is not None and t.is_floating_point():
            return t.to(device=device, dtype=dtype)
        return t.to(device=device) if device is not None else t

    def cv_opt(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else cv(t)

    return ModelData(
        template=cv(data.template),
        tissues=[
            TissueSpec(t.name, t.start, t.stop, cv(t.faces), cv_opt(t.tets), list(t.part_names),
                       cv_opt(t.part_ids))
            for t in data.tissues
        ],
        joint_names=data.joint_names,
        parents=data.parents,
        joint_regressor=cv(data.joint_regressor),
        skinning_weights=cv(data.skinning_weights),
        spaces={k: cv(v) for k, v in data.spaces.items()},
        pose_basis=cv_opt(data.pose_basis),
        pose_feature_joints=data.pose_feature_joints,
        landmark_names=data.landmark_names,
        landmark_vertices=cv_opt(data.landmark_vertices),
        landmark_weights=cv_opt(data.landmark_weights),
        extras={k: cv(v) for k, v in data.extras.items()},
        meta=data.meta,
    )


def load_model(
    path: PathLike, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> ModelData:
    """Read a model written by :func:`save_model` (``path``: either file name or the stem).

    The sidecar's format and version are checked, the safetensors file is checked against
    the recorded size and SHA-256, and the assembled model is validated
    (:func:`~anatomy.io.validate_model_data`); any problem raises ``ModelFileError``.
    Tensors come back bit-exact in their stored dtypes, unless ``dtype`` (a floating
    dtype) is given: then every floating tensor is converted to it (integer tensors keep
    int64). ``device`` moves every tensor.
    """
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise DtypeError(f"dtype must be a floating torch.dtype (e.g. torch.float32) or None, got {dtype!r}; "
                         f"integer tensors always stay int64.")
    tensors_path, sidecar_path = model_paths(path)
    sc = _read_sidecar(tensors_path, sidecar_path)
    raw = _read_tensors(sc, tensors_path)
    source = str(tensors_path)
    tensors = _unpack(sc, raw, source)
    data = _assemble(sc, tensors, source)
    validate_model_data(data, source=source)
    return _convert(data, device, dtype)
