"""A small PNG writer and reader (stdlib ``zlib``; no Pillow needed).

:func:`write_png` writes 8-bit greyscale, RGB or RGBA images atomically; :func:`encode_png` returns
the bytes (embedded in ``.glb`` files). :func:`read_png` reads what :func:`encode_png` writes
(8-bit, non-interlaced, any of the five PNG row filters), enough to check our own files.
Format: ISO/IEC 15948:2004 (PNG).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import DtypeError, ModelFileError, ShapeError
from ._atomic import write_atomic

__all__ = ["encode_png", "read_png", "to_uint8", "write_png"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type
_CHANNELS = {0: 1, 2: 3, 6: 4}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def to_uint8(image: Any) -> np.ndarray:
    """An image ``(H, W)`` or ``(H, W, 1|3|4)`` as uint8: uint8 kept, floats in [0, 1] scaled and rounded."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[2] not in _COLOUR_TYPES or img.shape[0] < 1 or img.shape[1] < 1:
        raise ShapeError(f"image must have shape (H, W) or (H, W, 1|3|4), got {img.shape}.")
    if img.dtype == np.uint8:
        return img
    if img.dtype.kind != "f":
        raise DtypeError(f"image must be uint8 or floats in [0, 1], got dtype {img.dtype}.")
    return np.rint(np.clip(np.nan_to_num(img), 0.0, 1.0) * 255.0).astype(np.uint8)


def encode_png(image: Any) -> bytes:
    """PNG bytes of an image (see :func:`to_uint8`); rows use the 'up' filter, zlib level 6."""
    img = to_uint8(image)
    h, w, c = img.shape
    rows = img.reshape(h, w * c).astype(np.int16)
    up = np.vstack([rows[:1], rows[1:] - rows[:-1]]).astype(np.uint8)  # filter 2 (up); row 0: up of zeros
    raw = np.hstack([np.full((h, 1), 2, dtype=np.uint8), up]).tobytes()
    header = struct.pack(">IIBBBBB", w, h, 8, _COLOUR_TYPES[c], 0, 0, 0)
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b"")


def write_png(path: str | os.PathLike[str], image: Any) -> Path:
    """Write ``image`` as a PNG file atomically; returns the path."""
    return write_atomic(path, encode_png(image))


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a.astype(np.int16) + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c)).astype(np.uint8)


def read_png(source: str | os.PathLike[str] | bytes) -> np.ndarray:
    """Read an 8-bit non-interlaced greyscale / RGB / RGBA PNG into ``(H, W, C)`` uint8."""
    data = source if isinstance(source, bytes) else Path(os.fspath(source)).read_bytes()
    name = "PNG data" if isinstance(source, bytes) else str(source)
    if data[:8] != _SIGNATURE:
        raise ModelFileError(f"{name}: not a PNG file (bad signature). Fix: pass a PNG image.")
    pos, idat, header = 8, b"", None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None or header[2] != 8 or header[3] not in _CHANNELS or header[6] != 0:
        raise ModelFileError(f"{name}: only 8-bit non-interlaced grey/RGB/RGBA PNGs are read here, found header "
                             f"{header}. Fix: read it with Pillow.")
    w, h, c = header[0], header[1], _CHANNELS[header[3]]
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, 1 + w * c)
    out = np.zeros((h, w * c), dtype=np.uint8)
    prev = np.zeros(w * c, dtype=np.uint8)
    for y in range(h):
        kind, line = raw[y, 0], raw[y, 1:]
        if kind == 0:
            cur = line.copy()
        elif kind == 2:
            cur = line + prev
        elif kind in (1, 3, 4):
            cur = np.zeros(w * c, dtype=np.uint8)
            for x in range(w * c):
                left = int(cur[x - c]) if x >= c else 0
                up_left = int(prev[x - c]) if x >= c else 0
                if kind == 1:
                    pred = left
                elif kind == 3:
                    pred = (left + int(prev[x])) // 2
                else:
                    pred = int(_paeth(np.array([left]), np.array([int(prev[x])]), np.array([up_left]))[0])
                cur[x] = (int(line[x]) + pred) & 0xFF
        else:
            raise ModelFileError(f"{name}: unknown PNG row filter {kind}. Fix: re-save the image.")
        out[y] = cur
        prev = cur
    return out.reshape(h, w, c)
