"""Typed errors raised by the toolkit.

Every error subclasses the built-in exception a user would expect to catch, so
``except ValueError`` keeps working, and carries a message that names the argument,
what was expected, what came, and how to fix it.
"""

from __future__ import annotations

import importlib
from typing import Any


class AnatomyError(Exception):
    """Base class of every error raised on purpose by ``anatomy``."""


class ShapeError(AnatomyError, ValueError):
    """A tensor or array has the wrong number of dimensions or the wrong sizes."""


class TopologyError(ShapeError):
    """A mesh does not have the model's topology (vertex count, vertex order or faces): register it first."""


class ParameterError(AnatomyError, ValueError):
    """A parameter has a bad value: NaN/Inf, out of range, empty batch, unknown option."""


class DeviceError(AnatomyError, RuntimeError):
    """Tensors that must live together are on different devices."""


class DtypeError(AnatomyError, TypeError):
    """A tensor has a dtype the operation does not accept or that mismatches the model."""


class ModelFileError(AnatomyError, ValueError):
    """A model file is missing, truncated, inconsistent or unsafe."""


class UnsafePickleError(ModelFileError):
    """A pickle asked to build or call something the restricted unpickler does not allow."""


class OptionalDependencyError(AnatomyError, ImportError):
    """An optional dependency is not installed; the message names the pip extra."""


class RangeWarning(UserWarning):
    """A value lies outside its documented anatomical range; the result is computed anyway
    (silence with ``warnings.filterwarnings("ignore", category=anatomy.RangeWarning)``)."""


def missing_dependency(module: str, extra: str, purpose: str) -> OptionalDependencyError:
    """Build the error raised when ``module`` (from pip extra ``extra``) is missing."""
    return OptionalDependencyError(
        f"{purpose} needs the optional package '{module}', which is not installed. "
        f"Install it with: pip install 'anatomy[{extra}]'"
    )


def import_optional(module: str, extra: str, purpose: str, pip_name: str | None = None) -> Any:
    """Import an optional ``module`` (e.g. ``"PIL.Image"``), or raise :func:`missing_dependency`
    naming ``pip_name`` (default: the module's top-level name) and the pip extra."""
    try:
        importlib.import_module(module.split(".")[0])  # the package itself must be importable
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_dependency(pip_name or module.split(".")[0], extra, purpose) from exc
