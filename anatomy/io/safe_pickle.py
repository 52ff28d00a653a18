"""A restricted reader for the official model files that are pickles.

The official NIMBLE/PIANO files (``*.pkl``) are a pickled dict of torch tensors, either
written with the standard :mod:`pickle` module or with ``torch.save``; the official
SCULPTOR file (``paradict.npy``) is ``np.save`` of a dict, i.e. a ``.npy`` header for a
0-d object array followed by a pickle of the dict of numpy arrays. Unpickling runs
whatever callables a pickle names, so a crafted file could execute code. This module
never uses the unrestricted loaders: :class:`_RestrictedUnpickler` resolves each global
the pickle names through an allow-list of exactly the functions needed to rebuild numpy
arrays, torch tensors/storages and plain containers, most of them replaced by checking
wrappers. Any other global raises :class:`~anatomy.core.errors.UnsafePickleError` before
anything is imported or called. ``torch.save`` zip files (and torch storages embedded in
plain pickles) are read with ``torch.load(..., weights_only=True)``, torch's own
restricted loader.
"""

from __future__ import annotations

import ast
import functools
import io
import math
import os
import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from typing import Any, TypeGuard

import numpy as np
import torch

from ..core.errors import ModelFileError, UnsafePickleError

__all__ = ["load_official_pickle", "to_tensor_dict"]

# First object of a torch.save file written in the legacy (non-zip) format.
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_MAX_RECONSTRUCT_ELEMENTS = 1 << 16  # _reconstruct only allocates a stub that BUILD then fills


class _Refused(Exception):
    """Raised by a wrapper when the arguments a pickle passes are not those of a real file."""


# --------------------------------------------------------------------------------------
# checking wrappers for the allowed globals
# --------------------------------------------------------------------------------------


class _NdarrayClass:
    """Stands in for ``numpy.ndarray`` (only valid as the subtype argument of ``_reconstruct``)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise _Refused("numpy.ndarray may only be used through numpy's _reconstruct")


def _np_reconstruct(subtype: object, shape: object, dtype: object) -> np.ndarray:
    if subtype is not _NdarrayClass:
        raise _Refused(f"_reconstruct of subtype {subtype!r} (only numpy.ndarray is allowed)")
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise _Refused(f"_reconstruct with shape {shape!r}")
    if math.prod(shape) > _MAX_RECONSTRUCT_ELEMENTS:
        raise _Refused(f"_reconstruct of a {shape} stub")
    if not isinstance(dtype, (bytes, str, np.dtype)):
        raise _Refused(f"_reconstruct with dtype {dtype!r}")
    return np.ndarray(shape, dtype=np.dtype(dtype))  # type: ignore[arg-type]


def _np_dtype(spec: object, align: object = False, copy: object = False) -> np.dtype:
    if isinstance(spec, bytes):
        spec = spec.decode("latin1")
    if not isinstance(spec, str) or not isinstance(align, bool) or not isinstance(copy, bool):
        raise _Refused(f"numpy.dtype({spec!r}, {align!r}, {copy!r})")
    return np.dtype(spec, align, copy)


def _np_scalar(dtype: object, data: object = None) -> object:
    if not isinstance(dtype, np.dtype):
        raise _Refused(f"numpy scalar of dtype {dtype!r}")
    if dtype.hasobject:
        return data  # an object scalar is the (already restricted) object itself
    if isinstance(data, str):  # Python 2 pickles read with encoding='latin1'
        data = data.encode("latin1")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise _Refused(f"numpy scalar of dtype {dtype} from {type(data).__name__}")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _np_frombuffer(buf: object, dtype: object, shape: object, order: object) -> np.ndarray:
    if isinstance(buf, pickle.PickleBuffer):
        buf = buf.raw()
    if not isinstance(buf, (bytes, bytearray, memoryview)) or not isinstance(dtype, np.dtype) \
            or dtype.hasobject:
        raise _Refused("numpy _frombuffer with a non-bytes buffer or an object dtype")
    if not isinstance(shape, tuple) or order not in ("C", "F"):
        raise _Refused(f"numpy _frombuffer with shape {shape!r} and order {order!r}")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


def _codecs_encode(text: object, encoding: object = "utf-8") -> bytes:
    # protocol <= 2 pickles store bytes as _codecs.encode(latin-1 text, 'latin1')
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _bytearray(data: object = b"") -> bytearray:
    # protocol < 5 pickles bytearray(b"...") as a call; refuse bytearray(<huge int>)
    if isinstance(data, str):
        data = data.encode("latin1")
    if not isinstance(data, (bytes, bytearray)):
        raise _Refused(f"bytearray from {type(data).__name__}")
    return bytearray(data)


def _load_storage(blob: object, source: str = "<embedded torch storage>") -> object:
    """Replacement for ``torch.storage._load_from_bytes``: torch's restricted loader, on CPU."""
    if not isinstance(blob, bytes):
        raise _Refused("torch storage from a non-bytes payload")
    storage = _torch_weights_only(blob, f"{source} (embedded torch storage)")
    if not isinstance(storage, torch.storage.TypedStorage):
        raise _Refused(f"embedded torch storage decoded to {type(storage).__name__}")
    return storage


def _is_int_tuple(x: object) -> TypeGuard[tuple[int, ...]]:
    return isinstance(x, tuple) and all(isinstance(i, int) and not isinstance(i, bool) for i in x)


def _rebuild_tensor(storage: object, offset: object, size: object, stride: object) -> torch.Tensor:
    if not isinstance(storage, torch.storage.TypedStorage):
        raise _Refused(f"tensor rebuilt from {type(storage).__name__} instead of a torch storage")
    if not isinstance(offset, int) or not _is_int_tuple(size) or not _is_int_tuple(stride):
        raise _Refused("tensor rebuilt with a non-integer offset, size or stride")
    t = torch.empty((0,), dtype=storage.dtype)
    return t.set_(storage._untyped_storage, offset, size, stride)  # torch checks the bounds


def _rebuild_tensor_v2(
    storage: object,
    offset: object,
    size: object,
    stride: object,
    requires_grad: object = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> torch.Tensor:
    if backward_hooks:
        raise _Refused("tensor with backward hooks")
    if metadata:
        raise _Refused(f"tensor with metadata {metadata!r}")
    t = _rebuild_tensor(storage, offset, size, stride)
    if requires_grad is True and t.is_floating_point():
        t.requires_grad_(True)
    return t


def _rebuild_parameter(
    data: object, requires_grad: object = False, backward_hooks: object = None
) -> torch.Tensor:
    if not isinstance(data, torch.Tensor) or backward_hooks:
        raise _Refused("parameter rebuilt from a non-tensor or with backward hooks")
    return data  # returned as a plain tensor


_LAYOUTS = {"torch.sparse_coo": torch.sparse_coo, "torch.strided": torch.strided}


def _get_layout(name: object) -> torch.layout:
    if name not in _LAYOUTS:
        raise _Refused(f"torch layout {name!r}")
    return _LAYOUTS[str(name)]


def _rebuild_sparse_tensor(layout: object, data: object) -> torch.Tensor:
    if layout is not torch.sparse_coo or not isinstance(data, tuple) or len(data) not in (3, 4):
        raise _Refused(f"sparse tensor of layout {layout!r}")
    indices, values, size = data[:3]
    size = tuple(size) if isinstance(size, torch.Size) else size
    tensors = isinstance(indices, torch.Tensor) and isinstance(values, torch.Tensor)
    if not tensors or not _is_int_tuple(size):
        raise _Refused("sparse tensor from non-tensor parts")
    t = torch.sparse_coo_tensor(indices, values, size, check_invariants=True)
    return t.coalesce() if len(data) == 4 and data[3] else t


def _torch_size(dims: object = ()) -> torch.Size:
    if not _is_int_tuple(tuple(dims) if isinstance(dims, (list, tuple)) else dims):
        raise _Refused(f"torch.Size({dims!r})")
    return torch.Size(dims)  # type: ignore[arg-type]


def _torch_device(spec: object, index: object = None) -> torch.device:
    if not isinstance(spec, (str, int)) or not (index is None or isinstance(index, int)):
        raise _Refused(f"torch.device({spec!r})")
    return torch.device(spec) if index is None else torch.device(str(spec), int(index))


def _allowed() -> dict[tuple[str, str], object]:
    table: dict[tuple[str, str], object] = {
        ("collections", "OrderedDict"): OrderedDict,
        # dict/list/tuple have opcodes; these containers and scalars reduce to calls before protocol 4/5
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "bytearray"): _bytearray,
        ("builtins", "complex"): complex,
        ("_codecs", "encode"): _codecs_encode,
        ("numpy", "ndarray"): _NdarrayClass,
        ("numpy", "dtype"): _np_dtype,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_sparse_tensor"): _rebuild_sparse_tensor,
        ("torch.serialization", "_get_layout"): _get_layout,
        ("torch.storage", "_load_from_bytes"): _load_storage,
        ("torch", "Size"): _torch_size,
        ("torch", "device"): _torch_device,
        ("torch", "sparse_coo"): torch.sparse_coo,
        ("torch", "strided"): torch.strided,
    }
    for core in ("numpy.core", "numpy._core"):  # numpy 1.x and numpy 2 module names
        for mod in ("multiarray", "_multiarray_umath"):
            table[(f"{core}.{mod}", "_reconstruct")] = _np_reconstruct
            table[(f"{core}.{mod}", "scalar")] = _np_scalar
        table[(f"{core}.numeric", "_frombuffer")] = _np_frombuffer
    for name in dir(torch):  # dtype objects such as torch.float32 (values, never called)
        if isinstance(getattr(torch, name, None), torch.dtype):
            table[("torch", name)] = getattr(torch, name)
    return table


_ALLOWED = _allowed()
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose ``find_class`` only returns allow-listed (wrapped) globals."""

    def __init__(self, file: io.BytesIO, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        try:
            found = _ALLOWED[(module, name)]
        except KeyError:
            what = f"to load the global '{module}.{name}'"
            raise UnsafePickleError(_unsafe_message(self.source, what)) from None
        if found is _load_storage:
            return functools.partial(_load_storage, source=self.source)
        return found


def _unsafe_message(source: str, what: str) -> str:
    return (
        f"{source}: refused {what}: an official model file only needs numpy arrays, "
        f"torch tensors and plain containers, so nothing else is rebuilt or called (nothing was executed). "
        f"Fix: this is not a genuine NIMBLE/PIANO/SCULPTOR file or it was tampered with; download it again "
        f"from the official source."
    )


def _corrupt(source: str, exc: BaseException | str) -> ModelFileError:
    return ModelFileError(
        f"{source}: contents: expected a complete pickled dict of arrays, found a truncated or corrupt file "
        f"({exc}). Fix: download or copy the file again."
    )


def _torch_weights_only(blob: bytes, source: str) -> Any:
    """``torch.load`` with torch's restricted unpickler, tensors mapped to CPU."""
    try:
        return torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        text = str(exc)
        match = re.search(r"GLOBAL ([\w.]+)", text)
        if match or "Unsupported" in text:
            what = (f"to load the global '{match.group(1)}'" if match
                    else f"an unsupported object ({text[:200]})")
            raise UnsafePickleError(_unsafe_message(source, what)) from None
        raise _corrupt(source, exc) from exc
    except ModelFileError:
        raise
    except Exception as exc:  # truncated zip, bad storage sizes, ...
        raise _corrupt(source, exc) from exc


def _unpickle(blob: bytes, source: str) -> Any:
    stream = io.BytesIO(blob)
    first = _RestrictedUnpickler(stream, source).load()
    if isinstance(first, int) and first == _TORCH_LEGACY_MAGIC:  # torch.save, legacy format
        return _torch_weights_only(blob, source)
    return first


def _npy_header(stream: io.BytesIO, source: str) -> tuple[np.dtype, tuple[int, ...], bool]:
    """Parse a ``.npy`` header (versions 1-3) without any pickle: a Python literal dict."""
    magic = stream.read(8)
    major = magic[6] if len(magic) == 8 else 0
    if major not in (1, 2, 3):
        raise _corrupt(source, f"unsupported .npy version {major}")
    fmt, width = ("<H", 2) if major == 1 else ("<I", 4)
    raw_len = stream.read(width)
    if len(raw_len) != width:
        raise _corrupt(source, "short .npy header")
    (length,) = struct.unpack(fmt, raw_len)
    if length > 1 << 16:
        raise _corrupt(source, f".npy header of {length} bytes")
    text = stream.read(length)
    if len(text) != length:
        raise _corrupt(source, "short .npy header")
    header = ast.literal_eval(text.decode("utf-8" if major == 3 else "latin1"))
    if not isinstance(header, dict) or not {"descr", "fortran_order", "shape"} <= set(header):
        raise _corrupt(source, f".npy header {header!r}")
    dtype = np.lib.format.descr_to_dtype(header["descr"])
    shape = tuple(header["shape"])
    return dtype, shape, bool(header["fortran_order"])


def _read_npy(blob: bytes, source: str) -> Any:
    stream = io.BytesIO(blob)
    dtype, shape, fortran = _npy_header(stream, source)
    if dtype.hasobject:
        array = _RestrictedUnpickler(stream, source).load()
        if not isinstance(array, np.ndarray):
            raise _corrupt(source, f"object payload decoded to {type(array).__name__}")
    else:
        count = math.prod(shape)
        data = stream.read()
        if len(data) < count * dtype.itemsize:
            raise _corrupt(source, f"{len(data)} data bytes for {count} x {dtype}")
        flat = np.frombuffer(data, dtype=dtype, count=count)
        array = flat.reshape(shape, order="F" if fortran else "C").copy()
    if array.dtype.hasobject and array.shape == ():
        return array.item()
    return array


def _read_zip(blob: bytes, source: str) -> Any:
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        names = zf.namelist()
        if any(n.endswith("data.pkl") for n in names):  # torch.save zip format
            return _torch_weights_only(blob, source)
        if names and all(n.endswith(".npy") for n in names):  # np.savez
            return {n[:-4]: _read_npy(zf.read(n), f"{source}:{n}") for n in names}
    raise _corrupt(source, f"a zip archive with entries {names[:5]} (neither torch.save nor .npz)")


def load_official_pickle(
    path_or_bytes: str | os.PathLike[str] | bytes | bytearray | memoryview,
) -> dict[str, Any]:
    """Read an official pickled model file safely and return its top-level dict.

    Handles a plain pickle of a dict of torch tensors or numpy arrays (NIMBLE/PIANO
    ``*.pkl``), ``torch.save`` files (zip and legacy formats), ``np.save`` of a dict
    (SCULPTOR ``paradict.npy``) and ``.npz``. Values come back as they were stored
    (torch tensors, numpy arrays, Python scalars, nested dicts); use
    :func:`to_tensor_dict` to turn every array into a torch tensor.

    Raises ``UnsafePickleError`` (a ``ModelFileError``) naming the refused global when the
    file asks for anything but arrays, tensors and plain containers (nothing is executed),
    and ``ModelFileError`` for a missing, truncated or corrupt file or when the top level
    is not a dict.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        blob, source = bytes(path_or_bytes), "<bytes>"
    else:
        source = os.fspath(path_or_bytes)
        try:
            with open(source, "rb") as f:
                blob = f.read()
        except OSError as exc:
            raise ModelFileError(f"{source}: file: expected a readable official model file, found: {exc}. "
                                 f"Fix: check the path.") from exc
    if not blob:
        raise _corrupt(source, "an empty file")
    try:
        if blob.startswith(_NPY_MAGIC):
            obj = _read_npy(blob, source)
        elif blob.startswith(_ZIP_MAGIC):
            obj = _read_zip(blob, source)
        else:
            obj = _unpickle(blob, source)
    except ModelFileError:
        raise
    except _Refused as exc:
        what = f"an allowed global used in an unexpected way ({exc})"
        raise UnsafePickleError(_unsafe_message(source, what)) from None
    except Exception as exc:  # EOFError, UnpicklingError, ValueError, RuntimeError, ...
        raise _corrupt(source, f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, dict):
        raise ModelFileError(f"{source}: top level: expected a dict of arrays, found {type(obj).__name__}. "
                             f"Fix: pass the official model file (e.g. NIMBLE_DICT_9.pkl or paradict.npy).")
    return obj


def _numpy_to_tensor(a: np.ndarray | np.generic) -> Any:
    arr = np.asarray(a)
    if arr.dtype.hasobject:
        if arr.shape == ():
            return to_tensor_dict(arr.item())
        return [to_tensor_dict(x) for x in arr.tolist()]
    if arr.dtype.kind not in "biufc":
        return arr  # strings, datetimes: no torch equivalent, kept as numpy
    native = np.array(arr, dtype=arr.dtype.newbyteorder("="), order="C", copy=True)
    return torch.from_numpy(native)


def to_tensor_dict(obj: Any) -> Any:
    """Return ``obj`` with every numpy array or numpy scalar turned into a torch tensor.

    Dicts (the result of :func:`load_official_pickle`), lists and tuples are converted
    recursively; torch tensors, Python scalars and strings are returned unchanged.
    Arrays are copied (writable, native byte order) and keep their dtype.
    """
    if isinstance(obj, (np.ndarray, np.generic)):
        return _numpy_to_tensor(obj)
    if isinstance(obj, dict):
        return type(obj)((k, to_tensor_dict(v)) for k, v in obj.items()) if isinstance(obj, OrderedDict) \
            else {k: to_tensor_dict(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_tensor_dict(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_tensor_dict(v) for v in obj)
    return obj

