"""Shared pieces of the ``anatomy`` sub-commands: model names, output folders, atomic writers."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.errors import AnatomyError
from ..io import load_model, make_toy_model_data, write_obj, write_ply
from ..io._atomic import write_atomic
from ..io.model_data import ModelData
from ..models import ModelOutput

EPILOG = (
    "Conventions: millimetres, radians, right-handed frames; rotation matrices act on column "
    "vectors; axis-angle pose rows are axis * angle. Exit status 2 means bad input (the reason is "
    "printed on one line)."
)


def resolve_model(name: str) -> ModelData:
    if name == "toy":
        return make_toy_model_data()
    if name == "hand":
        from ..models.nimble import default_hand_path

        return load_model(default_hand_path())
    if name == "head":
        from ..models.sculptor import default_head_path

        return load_model(default_head_path())
    path = Path(name)
    if not path.exists() and not path.with_suffix(".safetensors").exists():
        raise AnatomyError(
            f"model {name!r} is neither a built-in model ('hand', 'head', 'toy') nor an existing model file."
        )
    return load_model(path)


def new_out_folder(name: str, create: bool) -> Path:
    """The output folder of the head commands: refused if it is a file or holds anything (so no
    earlier result and no input is ever replaced); created when ``create`` (after the work is done)."""
    folder = Path(name)
    if folder.exists() and not folder.is_dir():
        raise AnatomyError(f"--out {name!r} is a file; pass a new or empty folder.")
    if folder.is_dir() and any(folder.iterdir()):
        raise AnatomyError(f"--out {name!r} is not empty; pass a new or empty folder (nothing was written).")
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_json(path: Path, doc: object) -> Path:
    return write_atomic(path, (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode("utf-8"))


def write_npy(path: Path, array: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return write_atomic(path, buffer.getvalue())


def write_tissues(out: ModelOutput, folder: Path, suffix: str = "", names: Sequence[str] | None = None) -> list[str]:
    written = []
    for layout in out.layout:
        if names is not None and layout.name not in names:
            continue
        verts = out.tissue(layout.name)[0].detach()
        for ext, writer in ((".obj", write_obj), (".ply", write_ply)):
            written.append(writer(folder / f"{layout.name}{suffix}{ext}", verts, layout.faces).name)
    return written
