"""anatomy.io: model files, official-file readers and mesh export.

* :class:`ModelData` / :class:`TissueSpec`: the in-memory model every layer is built from.
* :func:`save_model` / :func:`load_model`: our own format (safetensors + JSON sidecar).
* :func:`validate_model_data`: the consistency checks run by both.
* :func:`load_official_pickle` / :func:`to_tensor_dict`: a restricted reader for the official
  NIMBLE/PIANO (``.pkl``) and SCULPTOR (``paradict.npy``) files.
* :func:`write_obj`, :func:`write_ply`, :func:`write_vtu`, :func:`read_mesh`: mesh files.
* :func:`nimble_to_model_data` / :func:`piano_to_model_data`: the official NIMBLE/PIANO hand files
  converted to :class:`ModelData` (:func:`mirror_hand_model_data` for a left hand).
* :func:`sculptor_to_model_data`: the official SCULPTOR head file (``paradict.npy``) converted.
* :func:`make_toy_model_data`: a small built-in articulated model for demos and tests.
* :func:`write_glb` / :func:`read_glb` (:class:`GltfPart`): binary glTF 2.0 with embedded textures;
  :func:`write_textured_obj` / :func:`write_mtl`: OBJ with UVs and materials; :func:`write_png` /
  :func:`read_png`: a small zlib PNG codec.

This package imports nothing from :mod:`anatomy.models` (data flows core -> io -> models).
"""

from .gltf import GltfPart, read_glb, write_glb
from .mesh_export import Mesh, read_mesh, write_obj, write_ply, write_vtu
from .model_data import FORMAT_VERSION, ModelData, TissueSpec
from .model_file import FORMAT_NAME, load_model, model_paths, save_model
from .obj_textured import write_mtl, write_textured_obj
from .official_nimble import mirror_hand_model_data, nimble_to_model_data, piano_to_model_data
from .official_sculptor import sculptor_to_model_data
from .png import encode_png, read_png, write_png
from .safe_pickle import load_official_pickle, to_tensor_dict
from .toy import make_toy_model_data
from .validate import SUM_TOLERANCE, validate_model_data

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "GltfPart",
    "SUM_TOLERANCE",
    "Mesh",
    "ModelData",
    "TissueSpec",
    "encode_png",
    "load_model",
    "load_official_pickle",
    "make_toy_model_data",
    "mirror_hand_model_data",
    "model_paths",
    "nimble_to_model_data",
    "piano_to_model_data",
    "read_glb",
    "read_mesh",
    "read_png",
    "save_model",
    "sculptor_to_model_data",
    "to_tensor_dict",
    "validate_model_data",
    "write_glb",
    "write_mtl",
    "write_obj",
    "write_ply",
    "write_png",
    "write_textured_obj",
    "write_vtu",
]
