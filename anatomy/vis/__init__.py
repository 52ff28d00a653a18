"""anatomy.vis: pictures of model outputs (optional dependencies, imported lazily).

* :func:`render_output` (matplotlib) and :func:`render_slices`: quick pictures, no pyvista needed.
* :mod:`anatomy.vis.render` (pyvista off-screen, matplotlib fallback): :func:`render_model`,
  :func:`render_meshes`, :func:`render_errors` (heat maps with a colour bar in mm),
  :func:`render_before_after` (e.g. surgery).
* :mod:`anatomy.vis.plots` (matplotlib): :func:`plot_fit_log`, :func:`plot_variance`.
"""

from .plots import plot_fit_log, plot_variance, read_fit_log, space_variances
from .quick import render_output
from .render import RenderFallbackWarning, render_before_after, render_errors, render_meshes, render_model
from .slices import render_slices

__all__ = ["RenderFallbackWarning", "plot_fit_log", "plot_variance", "read_fit_log", "render_before_after",
           "render_errors", "render_meshes", "render_model", "render_output", "render_slices", "space_variances"]
