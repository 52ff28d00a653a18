"""anatomy.vis: pictures of model outputs (optional dependencies, imported lazily)."""

from .quick import render_output

__all__ = ["render_output"]
