"""Folders of registrations (meshes in template correspondence) read for learning.

A registration is a folder holding one PLY/OBJ per tissue of the base model, named by tissue
(``skull.ply``, ``mandible.ply``, ``face.ply`` / ``bones.ply``, ``muscles.ply``, ``skin.ply``), each
with the base tissue's vertex count and order, in world mm. Two layouts are read:

* a folder with ``manifest.json`` (the phantom datasets of :mod:`anatomy.scans.datasets`, whose meshes
  are exact registrations): every sample entry, with its subject, session and parameters;
* any other folder (e.g. the output of ``anatomy register``): every sub-folder (any depth) that holds
  all the tissue files, except unfinished ``*.partial-*`` ones; the subject is the first path part below
  the root and the session the last (``sub-003/ses-post`` -> ``sub-003``, ``post``); the layer
  parameters of a ``params.json`` beside the meshes go into ``info["params"]``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ModelFileError, ShapeError
from ..io import read_mesh

__all__ = ["Registration", "read_registrations"]

_SUFFIXES = (".ply", ".obj")


@dataclass(frozen=True)
class Registration:
    """One registered scan: ``vertices (V, 3)`` float64, the tissues stacked in the base model's order."""

    subject: str
    session: str
    folder: Path
    vertices: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)  # manifest entry (params, trait_delta, ...), if any


def _mesh_file(folder: Path, tissue: str) -> Path | None:
    for suffix in _SUFFIXES:
        if (folder / f"{tissue}{suffix}").is_file():
            return folder / f"{tissue}{suffix}"
    return None


def _stack(files: Sequence[Path], tissues: Sequence[tuple[str, int]]) -> np.ndarray:
    parts = []
    for path, (name, count) in zip(files, tissues):
        try:
            verts = np.asarray(read_mesh(path).vertices, dtype=np.float64)
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"cannot read the {name} mesh {path}: {exc}") from exc
        if verts.shape != (count, 3):
            raise ShapeError(f"{path}: {len(verts)} vertices, but the base model's {name} has {count}; "
                             f"registrations must be in the base model's vertex order.")
        parts.append(verts)
    return np.concatenate(parts)


def _params_info(folder: Path) -> dict[str, Any]:
    """``{"params": ...}`` of the ``params.json`` that ``anatomy register`` writes beside the meshes, if any."""
    path = folder / "params.json"
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelFileError(f"{path} is not readable JSON ({err}); remove or repair it.") from None
    return {"params": doc["params"]} if isinstance(doc, dict) and isinstance(doc.get("params"), dict) else {}


def read_registrations(folder: str | Path, tissues: Sequence[tuple[str, int]]) -> list[Registration]:
    """Every registration under ``folder`` (see the module text), for tissues ``[(name, vertex count)]``
    in the base model's order. Raises :class:`ModelFileError` when there is none or a file is unreadable,
    :class:`ShapeError` when a mesh does not match its tissue."""
    root = Path(folder)
    if not root.is_dir():
        raise ModelFileError(f"registrations folder {root} does not exist (or is not a folder).")
    names = [n for n, _ in tissues]
    out: list[Registration] = []
    manifest = root / "manifest.json"
    if manifest.is_file():
        try:
            doc = json.loads(manifest.read_text())
            entries = list(doc["samples"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelFileError(f"{manifest}: not a dataset manifest with 'samples' ({exc}).") from exc
        for entry in entries:
            files = entry.get("files", {})
            missing = [n for n in names if n not in files]
            if missing:
                raise ModelFileError(f"{manifest}: sample {entry.get('subject')}/{entry.get('session')} has no "
                                     f"{missing} mesh; the base model's tissues are {names}.")
            paths = [root / files[n] for n in names]
            out.append(Registration(str(entry.get("subject", "")), str(entry.get("session", "")), paths[0].parent,
                                    _stack(paths, tissues), dict(entry)))
    else:
        for sub in sorted(p for p in root.rglob("*") if p.is_dir()):
            found = [_mesh_file(sub, n) for n in names]
            rel = sub.relative_to(root).parts
            if any(f is None for f in found) or any(".partial" in part for part in rel):
                continue  # not a registration, or an unfinished one (anatomy.pipeline)
            session = rel[-1].removeprefix("ses-") if len(rel) > 1 else ""
            out.append(Registration(rel[0], session, sub, _stack([f for f in found if f is not None], tissues),
                                    _params_info(sub)))
        if (root / f"{names[0]}.ply").is_file() or (root / f"{names[0]}.obj").is_file():
            found = [_mesh_file(root, n) for n in names]
            if all(f is not None for f in found):
                out.append(Registration(root.name, "", root, _stack([f for f in found if f is not None], tissues)))
    if not out:
        raise ModelFileError(f"no registrations under {root}: expected manifest.json or folders holding "
                             f"{', '.join(n + '.ply' for n in names)}.")
    return out
