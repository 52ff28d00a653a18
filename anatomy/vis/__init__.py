"""anatomy.vis: pictures of model outputs (optional dependencies, imported lazily)."""

from .quick import render_output
from .slices import render_slices

__all__ = ["render_output", "render_slices"]
