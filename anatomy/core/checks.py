"""Small typed checks on user input, shared by the core and the layers.

They raise the errors of :mod:`anatomy.core.errors` with a message naming the
argument, what was expected, what came and the fix. Sizes given as ``None`` or as a
string letter (``"B"``) are free; a letter used twice must match.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import DeviceError, DtypeError, ParameterError, ShapeError

Dim = int | str | None


def check_tensor(x: object, name: str) -> torch.Tensor:
    """Return ``x`` if it is a tensor, else raise a ``DtypeError`` naming ``name``."""
    if not isinstance(x, torch.Tensor):
        raise DtypeError(
            f"{name} must be a torch.Tensor, got {type(x).__name__}; "
            f"wrap it with torch.as_tensor(...)."
        )
    return x


def check_shape(
    x: torch.Tensor, name: str, shape: Sequence[Dim], sizes: dict[str, int] | None = None
) -> dict[str, int]:
    """Check ``x.shape`` against ``shape``; letters bind sizes in ``sizes`` (returned).

    ``shape`` may start with ``...`` given as the string ``"..."`` to allow any
    leading dimensions.
    """
    check_tensor(x, name)
    sizes = {} if sizes is None else sizes
    pattern = list(shape)
    leading = bool(pattern) and pattern[0] == "..."
    if leading:
        pattern = pattern[1:]
    ok = x.dim() >= len(pattern) if leading else x.dim() == len(pattern)
    actual = tuple(x.shape)
    if ok:
        tail = actual[len(actual) - len(pattern):]
        for want, got in zip(pattern, tail):
            if want is None:
                continue
            if isinstance(want, str):
                bound = sizes.setdefault(want, got)
                if bound != got:
                    ok = False
                    break
            elif want != got:
                ok = False
                break
    if not ok:
        expected = "(" + ", ".join("..." if p == "..." else ("*" if p is None else str(p))
                                   for p in list(shape)) + ")"
        bound_txt = "" if not sizes else f" with {', '.join(f'{k}={v}' for k, v in sizes.items())}"
        raise ShapeError(
            f"{name} must have shape {expected}{bound_txt}, got {actual}; "
            f"reshape or slice it to match."
        )
    return sizes


def check_floating(x: torch.Tensor, name: str) -> None:
    """Require a floating dtype."""
    if not x.is_floating_point():
        raise DtypeError(
            f"{name} must be a floating tensor (float32 or float64), got {x.dtype}; "
            f"convert it with .float() or .double()."
        )


def value_checks_off() -> bool:
    """True while tracing/compiling or capturing a CUDA graph: checks that read tensor values (and so wait
    for the device) are skipped then; shapes and dtypes are still checked."""
    return torch.compiler.is_compiling() or (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


def check_finite(x: torch.Tensor, name: str) -> None:
    """Reject NaN and Inf values (skipped while tracing/compiling or capturing a CUDA graph)."""
    if value_checks_off():
        return
    if x.numel() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ParameterError(
            f"{name} contains {bad} NaN or Inf value(s); pass finite numbers "
            f"(check the upstream computation that produced it)."
        )


def check_batch(x: torch.Tensor, name: str) -> None:
    """Reject an empty batch (leading dimension 0)."""
    if x.dim() > 0 and x.shape[0] == 0:
        raise ParameterError(f"{name} has an empty batch (shape {tuple(x.shape)}); pass at least one sample.")


def check_like(x: torch.Tensor, name: str, ref: torch.Tensor, ref_name: str) -> None:
    """Require ``x`` to share device and dtype with ``ref``; never move silently."""
    if x.device != ref.device:
        raise DeviceError(
            f"{name} is on {x.device} but {ref_name} is on {ref.device}; "
            f"move one of them with .to({str(ref.device)!r})."
        )
    if x.dtype != ref.dtype:
        raise DtypeError(
            f"{name} has dtype {x.dtype} but {ref_name} has dtype {ref.dtype}; "
            f"convert with .to({ref.dtype})."
        )


def check_index_range(idx: torch.Tensor, name: str, upper: int) -> None:
    """Require integer indices in ``[0, upper)``."""
    if idx.is_floating_point() or idx.dtype == torch.bool:
        raise DtypeError(f"{name} must hold integer indices, got {idx.dtype}.")
    if idx.numel() == 0:
        return
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= upper:
        raise ParameterError(
            f"{name} has indices in [{lo}, {hi}] but they must lie in [0, {upper - 1}]; "
            f"fix the indices or the array they refer to."
        )
