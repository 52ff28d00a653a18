"""Off-screen renders with pyvista (the ``vis`` extra), falling back to matplotlib.

* :func:`render_meshes`: named meshes in one picture, some translucent, some coloured by a
  per-vertex scalar with a colour bar (e.g. registration error in mm).
* :func:`render_model`: a model output: the hand's bones and muscles under a translucent skin,
  the skull and mandible inside a translucent face; several samples side by side.
* :func:`render_errors`: per-vertex error heat maps (NaN, e.g. inner tet nodes, drawn grey).
* :func:`render_before_after`: two states of the same meshes (e.g. before / after surgery) side
  by side or overlaid, the second coloured by how far each vertex moved.

pyvista renders through VTK without a display: this module sets ``VTK_DEFAULT_OPENGL_WINDOW=
vtkEGLRenderWindow`` (unless already set) before VTK is first imported and uses
``pv.Plotter(off_screen=True)``. When pyvista is missing or cannot render here, the picture is
drawn with matplotlib (:mod:`anatomy.vis.quick`) instead and a :class:`RenderFallbackWarning`
says why; ``backend="pyvista"`` makes that an error instead, ``backend="matplotlib"`` skips
pyvista altogether.

Views: a name from :data:`VIEWS` (model frames: the head is RAS+, the hand +x radial, +y distal,
+z palmar) or ``(elevation, azimuth)`` in degrees as in matplotlib (camera at
``(cos e cos a, cos e sin a, sin e)`` from the centre, +z up).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import OptionalDependencyError, ParameterError, ShapeError
from ..io.mesh_export import as_index_array, as_numpy, as_vertex_array
from .quick import _COLOURS, _FALLBACK, draw_meshes, pyplot, save_figure

__all__ = ["VIEWS", "Layer", "RenderFallbackWarning", "pyvista_problem", "render_before_after", "render_errors",
           "render_layers", "render_meshes", "render_model"]

Vec = tuple[float, float, float]
#: named views: (direction from the scene centre to the camera, camera up), in the model's frame
VIEWS: dict[str, tuple[Vec, Vec]] = {
    "front": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),        # head: face on (+y anterior)
    "back": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    "right": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),        # head: the patient's right side (+x)
    "left": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "top": ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
    "bottom": ((0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),
    "oblique": ((0.47, 0.81, 0.34), (0.0, 0.0, 1.0)),   # head: three-quarter front view from the right
    "dorsal": ((0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),      # hand: back of the hand, fingers up (+z is palmar)
    "palmar": ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
    "dorsal-oblique": ((0.35, -0.25, -0.9), (0.0, 1.0, 0.0)),  # hand: back of the hand, turned a little
}
DEFAULT_VIEW = {"hand": "dorsal-oblique", "head": "oblique"}
_EXTRA_COLOURS = {"teeth": "#f4f1e6", "bone": "#e8dcc0"}


class RenderFallbackWarning(UserWarning):
    """pyvista could not be used; the picture was drawn with matplotlib instead (the message says why)."""


@dataclass(frozen=True)
class Layer:
    """One mesh of a picture: ``vertices (V, 3)`` mm, triangles ``faces (F, 3)``, drawn with
    ``opacity`` in ``colour`` (default: by tissue name), or coloured by ``scalars (V,)`` (NaN grey)."""

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    opacity: float = 1.0
    colour: str | None = None
    scalars: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------

def make_layer(name: str, vertices: Any, faces: Any, *, opacity: float = 1.0, colour: str | None = None,
               scalars: Any = None) -> Layer:
    """A checked :class:`Layer` from arrays or tensors (typed errors name the mesh)."""
    verts = as_vertex_array(vertices, f"vertices of {name!r}").astype(np.float64)
    tri = as_index_array(faces, f"faces of {name!r}", 3, len(verts))
    if not 0.0 <= opacity <= 1.0:
        raise ParameterError(f"opacity of {name!r} must be in [0, 1], got {opacity}.")
    values = None
    if scalars is not None:
        values = np.asarray(as_numpy(scalars, f"scalars of {name!r}"), dtype=np.float64).reshape(-1)
        if len(values) != len(verts):
            raise ShapeError(f"scalars of {name!r} must have one value per vertex ({len(verts)}), got {len(values)}; "
                             f"residuals.npz holds one array per tissue in the mesh's vertex order.")
    return Layer(name, verts, tri, float(opacity), colour, values)


def _named_meshes(meshes: Any) -> dict[str, tuple[Any, Any]]:
    if not isinstance(meshes, Mapping) or not meshes:
        raise ParameterError("meshes must be a non-empty mapping name -> (vertices (V, 3), faces (F, 3)).")
    out = {}
    for name, mesh in meshes.items():
        if not isinstance(mesh, Sequence) or len(mesh) < 2:
            raise ParameterError(f"mesh {name!r} must be a (vertices, faces) pair, got {type(mesh).__name__}.")
        out[str(name)] = (mesh[0], mesh[1])
    return out


def resolve_view(view: str | tuple[float, float] | None, kind: str | None = None) -> tuple[Vec, Vec]:
    """``(camera direction, up)`` of a view name, an ``(elevation, azimuth)`` pair in degrees, or the
    default view of ``kind`` ("hand", "head"; else a general oblique view)."""
    if view is None:
        view = DEFAULT_VIEW.get(kind or "", (20.0, -60.0))
    if isinstance(view, str):
        if view not in VIEWS:
            raise ParameterError(f"unknown view {view!r}; use one of {sorted(VIEWS)} or (elevation, azimuth) "
                                 f"in degrees.")
        return VIEWS[view]
    try:
        elev, azim = (math.radians(float(a)) for a in view)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"view must be a name or (elevation, azimuth) in degrees, got {view!r}.") from exc
    direction = (math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim), math.sin(elev))
    up = (0.0, 1.0, 0.0) if abs(direction[2]) > 0.99 else (0.0, 0.0, 1.0)
    return direction, up


def _colour(layer: Layer, index: int) -> str:
    return layer.colour or _COLOURS.get(layer.name, _EXTRA_COLOURS.get(layer.name, _FALLBACK[index % len(_FALLBACK)]))


def _bounds(panels: Sequence[Sequence[Layer]]) -> tuple[np.ndarray, float]:
    pts = np.concatenate([layer.vertices for panel in panels for layer in panel])
    lo, hi = pts.min(0), pts.max(0)
    return (lo + hi) / 2, float(np.linalg.norm(hi - lo)) / 2


_VIEW_ANGLE = 30.0  # degrees, vertical


def _framing(panels: Sequence[Sequence[Layer]], view: tuple[Vec, Vec], aspect: float,
             bar: bool = False) -> tuple[np.ndarray, float]:
    """Focal point and camera distance that fit every panel's meshes into the picture, with a margin
    (with a colour ``bar``: into the left 75 % of it, the bar at 80-88 %)."""
    pts = np.concatenate([layer.vertices for panel in panels for layer in panel])
    d = np.asarray(view[0], dtype=np.float64) / np.linalg.norm(view[0])
    up = np.asarray(view[1], dtype=np.float64)
    up = up - (up @ d) * d
    up /= np.linalg.norm(up)
    right = np.cross(up, d)
    lo, hi = pts.min(0), pts.max(0)
    centre = (lo + hi) / 2
    rel = pts - centre
    half_h = max(float(np.abs(rel @ up).max()), 1e-6)
    width = 0.75 if bar else 1.0
    half_h = max(half_h, float(np.abs(rel @ right).max()) / (aspect * width))
    tan = math.tan(math.radians(_VIEW_ANGLE / 2))
    distance = 1.12 * half_h / tan + float((rel @ d).max())
    if bar:  # move the view right by an eighth of the picture's width: the meshes sit left of the bar
        centre = centre + right * 0.25 * distance * tan * aspect
    return centre, distance


def _scalar_range(panels: Sequence[Sequence[Layer]], clim: tuple[float, float] | None) -> tuple[float, float]:
    if clim is not None:
        lo, hi = float(clim[0]), float(clim[1])
        if not hi > lo:
            raise ParameterError(f"clim must be (low, high) with high > low, got {clim}.")
        return lo, hi
    values = [layer.scalars[np.isfinite(layer.scalars)] for panel in panels for layer in panel
              if layer.scalars is not None]
    finite = np.concatenate(values) if values else np.zeros(0)
    if not finite.size:
        return 0.0, 1.0
    lo = min(0.0, float(finite.min()))
    hi = float(np.percentile(finite, 99.0))  # a few outliers do not wash the map out
    if lo < 0.0:  # signed values: symmetric about zero
        hi = max(hi, -float(np.percentile(finite, 1.0)))
        lo = -hi
    return lo, hi if hi > lo else lo + 1.0


# ---------------------------------------------------------------------------------------------
# pyvista
# ---------------------------------------------------------------------------------------------

_PYVISTA_PROBLEM: list[str | None] = []


def pyvista_problem() -> str | None:
    """Why pyvista cannot render off-screen here (``None`` when it can); checked once per process
    with a one-triangle render."""
    if _PYVISTA_PROBLEM:
        return _PYVISTA_PROBLEM[0]
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    problem: str | None = None
    try:
        import pyvista as pv
    except ImportError:
        problem = "pyvista is not installed (pip install 'anatomy[vis]')"
    else:
        try:
            plotter = pv.Plotter(off_screen=True, window_size=[8, 8])
            plotter.add_mesh(pv.PolyData(np.eye(3), np.array([3, 0, 1, 2])))
            image = plotter.screenshot(return_img=True)
            plotter.close()
            if image is None or image.size == 0:
                problem = "pyvista rendered an empty image off-screen"
        except Exception as exc:  # VTK raises plain RuntimeErrors (or worse) without EGL/OSMesa
            problem = f"pyvista cannot render off-screen here ({type(exc).__name__}: {exc}); " \
                      f"it needs EGL (VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow) or OSMesa"
    _PYVISTA_PROBLEM.append(problem)
    return problem


def _polydata(layer: Layer) -> Any:
    import pyvista as pv

    cells = np.hstack([np.full((len(layer.faces), 1), 3, dtype=np.int64), layer.faces]).ravel()
    mesh = pv.PolyData(layer.vertices, cells)
    if layer.scalars is not None:
        mesh.point_data["scalars"] = layer.scalars
    return mesh


def _render_pyvista(panels: Sequence[Sequence[Layer]], path: Path, titles: Sequence[str] | None,
                    view: tuple[Vec, Vec], size: tuple[int, int], scalar_title: str, clim: tuple[float, float],
                    cmap: str) -> Path:
    import pyvista as pv

    bar = any(layer.scalars is not None for panel in panels for layer in panel)
    centre, distance = _framing(panels, view, size[0] / size[1], bar)
    direction = np.asarray(view[0], dtype=np.float64)
    direction /= np.linalg.norm(direction)
    plotter = pv.Plotter(off_screen=True, shape=(1, len(panels)), window_size=[size[0] * len(panels), size[1]],
                         border=False)
    try:
        plotter.set_background("white")  # type: ignore[arg-type]
        for col, panel in enumerate(panels):
            plotter.subplot(0, col)
            has_bar = False
            for i, layer in enumerate(panel):
                options: dict[str, Any] = {"opacity": layer.opacity, "smooth_shading": True}
                if layer.scalars is not None:
                    options.update(scalars="scalars", cmap=cmap, clim=clim, nan_color="lightgrey", specular=0.0,
                                   ambient=0.3, diffuse=0.7,
                                   show_scalar_bar=not has_bar,
                                   scalar_bar_args={"title": scalar_title, "color": "black", "vertical": True,
                                                    "position_x": 0.8, "position_y": 0.1, "height": 0.8,
                                                    "width": 0.08, "fmt": "%.2f"})
                    has_bar = True
                else:
                    options["color"] = _colour(layer, i)
                plotter.add_mesh(_polydata(layer), **options)
            if titles is not None and col < len(titles):
                plotter.add_text(titles[col], font_size=12, color="black")
            # one camera for every panel, so that sizes and positions compare across them
            plotter.camera.focal_point = tuple(centre)
            plotter.camera.position = tuple(centre + direction * distance)
            plotter.camera.up = view[1]
            plotter.camera.view_angle = _VIEW_ANGLE
            plotter.reset_camera_clipping_range()
        image = plotter.screenshot(return_img=True)
    finally:
        plotter.close()
    return _write_png(np.asarray(image), path)


def _write_png(image: np.ndarray, path: Path) -> Path:
    plt = pyplot("writing a rendered image")
    fig = plt.figure(figsize=(image.shape[1] / 100, image.shape[0] / 100), dpi=100)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(image)
    ax.set_axis_off()
    return save_figure(fig, path, tight=False)


# ---------------------------------------------------------------------------------------------
# matplotlib fallback
# ---------------------------------------------------------------------------------------------

def _render_matplotlib(panels: Sequence[Sequence[Layer]], path: Path, titles: Sequence[str] | None,
                       view: tuple[Vec, Vec], size: tuple[int, int], scalar_title: str,
                       clim: tuple[float, float], cmap: str) -> Path:
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    plt = pyplot("rendering meshes")
    centre, radius = _bounds(panels)
    d = np.asarray(view[0], dtype=np.float64) / np.linalg.norm(view[0])
    elev, azim = math.degrees(math.asin(float(np.clip(d[2], -1, 1)))), math.degrees(math.atan2(d[1], d[0]))
    norm = Normalize(*clim)
    colour_map = colormaps[cmap]
    fig = plt.figure(figsize=(size[0] / 100 * len(panels), size[1] / 100))
    for col, panel in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), col + 1, projection="3d")
        plain = [(layer.name, layer.vertices, layer.faces) for layer in panel if layer.scalars is None]
        see_through = {layer.name for layer in panel if layer.scalars is None and layer.opacity < 1.0}
        coloured = [layer for layer in panel if layer.scalars is not None]
        if plain:
            draw_meshes(ax, plain, see_through, radius / 1.6)
        for layer in coloured:
            tri = layer.vertices[layer.faces]
            corner = np.asarray(layer.scalars)[layer.faces]
            measured = np.isfinite(corner).all(1)
            rgba = np.asarray(colour_map(norm(np.where(measured, corner.mean(1), 0.0))))
            rgba[~measured] = (0.83, 0.83, 0.83, 1.0)  # a face touching an unmeasured vertex: grey
            rgba[:, 3] = layer.opacity
            ax.add_collection3d(Poly3DCollection(tri, facecolors=rgba, linewidths=0))
        for setter, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre):
            setter(c - radius / 1.6, c + radius / 1.6)
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev, azim)
        ax.set_axis_off()
        if titles is not None and col < len(titles):
            ax.set_title(titles[col])
        if coloured:
            fig.colorbar(ScalarMappable(norm=norm, cmap=colour_map), ax=ax, shrink=0.7, label=scalar_title)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# public renders
# ---------------------------------------------------------------------------------------------

def render_layers(
    panels: Sequence[Sequence[Layer]],
    path: str | Path,
    *,
    titles: Sequence[str] | None = None,
    view: str | tuple[float, float] | None = None,
    kind: str | None = None,
    size: tuple[int, int] = (700, 700),
    scalar_title: str = "error (mm)",
    clim: tuple[float, float] | None = None,
    cmap: str = "viridis",
    backend: str = "auto",
) -> Path:
    """Panels of :class:`Layer` side by side into the PNG ``path`` (atomically; returns the path).

    Every panel shares one camera (``view``, or the default of ``kind``) and one colour range
    (``clim``, default: 0 or the 1st percentile to the 99th percentile of the finite scalars).
    ``backend``: ``"auto"`` (pyvista, else matplotlib with a :class:`RenderFallbackWarning`),
    ``"pyvista"`` (an :class:`~anatomy.core.errors.OptionalDependencyError` when it cannot
    render) or ``"matplotlib"``.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ParameterError(f"path must end in .png, got {str(path)!r}.")
    if backend not in ("auto", "pyvista", "matplotlib"):
        raise ParameterError(f"backend must be 'auto', 'pyvista' or 'matplotlib', got {backend!r}.")
    if not panels or not all(panels):
        raise ParameterError("nothing to render: pass at least one panel of at least one mesh.")
    camera = resolve_view(view, kind)
    scalar_range = _scalar_range(panels, clim)
    if backend != "matplotlib":
        problem = pyvista_problem()
        if problem is None:
            return _render_pyvista(panels, path, titles, camera, size, scalar_title, scalar_range, cmap)
        if backend == "pyvista":
            raise OptionalDependencyError(f"backend='pyvista': {problem}.")
        warnings.warn(f"{problem}; drawing {path.name} with matplotlib instead (flat shading, translucency "
                      f"approximate).", RenderFallbackWarning, stacklevel=2)
    return _render_matplotlib(panels, path, titles, camera, size, scalar_title, scalar_range, cmap)


def render_meshes(
    meshes: Mapping[str, tuple[Any, Any]],
    path: str | Path,
    *,
    translucent: Sequence[str] = (),
    scalars: Mapping[str, Any] | None = None,
    title: str | None = None,
    **options: Any,
) -> Path:
    """Named meshes ``{name: (vertices (V, 3), faces (F, 3))}`` in one picture; ``translucent`` names
    those drawn see-through (opacity 0.3), ``scalars`` gives per-vertex values ``(V,)`` for some of
    them (colour bar titled ``scalar_title``). ``options`` go to :func:`render_layers`."""
    named = _named_meshes(meshes)
    scalars = dict(scalars or {})
    unknown = sorted(set(scalars) - set(named)) + sorted(set(translucent) - set(named))
    if unknown:
        raise ParameterError(f"no mesh named {unknown}; the meshes are {sorted(named)}.")
    layers = [make_layer(name, v, f, opacity=0.3 if name in translucent else 1.0, scalars=scalars.get(name))
              for name, (v, f) in named.items()]
    return render_layers([layers], path, titles=None if title is None else [title], **options)


def _output_kind(output: Any) -> str | None:
    names = set(output.tissue_names)
    if {"skull", "face"} <= names:
        return "head"
    if {"bones", "skin"} <= names:
        return "hand"
    return None


def render_model(
    output: Any,
    path: str | Path,
    *,
    samples: Sequence[int] | None = None,
    titles: Sequence[str] | None = None,
    translucent: Sequence[str] | None = None,
    tissues: Sequence[str] | None = None,
    **options: Any,
) -> Path:
    """A :class:`~anatomy.models.ModelOutput`: ``samples`` (default all) side by side, ``tissues``
    (default all) with ``translucent`` ones see-through (default the outermost tissue: the hand's
    skin, the head's face). Without pyvista this is :func:`anatomy.vis.render_output` (with a
    :class:`RenderFallbackWarning`)."""
    from .quick import render_output

    names = list(output.tissue_names if tissues is None else tissues)
    unknown = [n for n in names if n not in output.tissue_names]
    if unknown:
        raise ParameterError(f"no tissue named {unknown}; this model has {list(output.tissue_names)}.")
    outer = output.tissue_names[-1:]
    see_through = [n for n in outer if n in names] if translucent is None else list(translucent)
    samples = list(range(output.batch_size)) if samples is None else list(samples)
    if any(not 0 <= b < output.batch_size for b in samples):
        raise ParameterError(f"samples must lie in [0, {output.batch_size - 1}], got {samples}.")
    kind = options.pop("kind", _output_kind(output))
    backend = options.get("backend", "auto")
    if backend == "auto" and pyvista_problem() is not None and tissues is None:
        warnings.warn(f"{pyvista_problem()}; drawing {Path(path).name} with matplotlib instead.",
                      RenderFallbackWarning, stacklevel=2)
        view = resolve_view(options.get("view"), kind)[0]
        elev = math.degrees(math.asin(float(np.clip(view[2], -1, 1))))
        return render_output(output, path, samples=samples, titles=titles, translucent=see_through,
                             view=(elev, math.degrees(math.atan2(view[1], view[0]))))
    panels = [[make_layer(n, output.tissue(n)[b].detach().cpu().double(), output.faces(n).cpu(),
                          opacity=0.3 if n in see_through else 1.0) for n in names] for b in samples]
    return render_layers(panels, path, titles=titles, kind=kind, **options)


def render_errors(
    meshes: Mapping[str, tuple[Any, Any]],
    errors: Mapping[str, Any],
    path: str | Path,
    *,
    context: Sequence[str] = (),
    scalar_title: str = "error (mm)",
    **options: Any,
) -> Path:
    """Registration error heat map: each mesh named in ``errors`` coloured by its per-vertex error
    ``(V,)`` in mm (NaN, e.g. inner tetrahedral nodes, grey), one colour bar; meshes without errors
    are drawn plain, those in ``context`` translucent (e.g. the skin around coloured bones)."""
    # a tissue without any finite error (e.g. only inner nodes were measured) is drawn as context
    errors = {k: v for k, v in errors.items() if np.isfinite(np.asarray(as_numpy(v, f"errors of {k!r}"))).any()}
    if not errors:
        raise ParameterError("errors holds no finite value: pass {tissue: per-vertex error (V,)} for at least one "
                             "mesh (NaN marks vertices without a measurement).")
    return render_meshes(meshes, path, translucent=context, scalars=errors, scalar_title=scalar_title, **options)


def _as_meshes(state: Any, what: str) -> dict[str, tuple[Any, Any]]:
    if hasattr(state, "tissue_names") and hasattr(state, "tissue"):  # a ModelOutput: its first sample
        return {n: (state.tissue(n)[0].detach().cpu().double(), state.faces(n).cpu()) for n in state.tissue_names}
    if isinstance(state, Mapping):
        return _named_meshes(state)
    raise ParameterError(f"{what} must be a model output or a mapping name -> (vertices, faces), "
                         f"got {type(state).__name__}.")


def render_before_after(
    before: Any,
    after: Any,
    path: str | Path,
    *,
    mode: str = "side",
    show: Sequence[str] | None = None,
    titles: Sequence[str] = ("before", "after"),
    scalar_title: str = "change (mm)",
    **options: Any,
) -> Path:
    """Two states of the same meshes (model outputs or ``{name: (vertices, faces)}``), e.g. a face
    before and after surgery. ``mode="side"``: two panels, the second coloured by each vertex's
    displacement (mm); ``mode="overlay"``: one panel, the "before" state translucent grey over the
    coloured "after" state. ``show`` picks the meshes (default: those in both states)."""
    if mode not in ("side", "overlay"):
        raise ParameterError(f"mode must be 'side' or 'overlay', got {mode!r}.")
    first, second = _as_meshes(before, "before"), _as_meshes(after, "after")
    names = [n for n in first if n in second] if show is None else list(show)
    missing = [n for n in names if n not in first or n not in second]
    if missing or not names:
        raise ParameterError(f"mesh(es) {missing or names} are not in both states; before has {sorted(first)}, "
                             f"after has {sorted(second)}.")
    pre = [make_layer(n, *first[n]) for n in names]
    post = []
    for layer in pre:
        v, f = second[layer.name]
        moved = make_layer(layer.name, v, f)
        if moved.vertices.shape != layer.vertices.shape:
            raise ShapeError(f"mesh {layer.name!r} has {len(layer.vertices)} vertices before and "
                             f"{len(moved.vertices)} after; the states must share the topology.")
        change = np.linalg.norm(moved.vertices - layer.vertices, axis=1)
        post.append(make_layer(layer.name, moved.vertices, moved.faces, scalars=change))
    options.setdefault("cmap", "YlOrRd")
    if mode == "side":
        return render_layers([pre, post], path, titles=list(titles), scalar_title=scalar_title, **options)
    ghosts = [Layer(f"{p.name} (before)", p.vertices, p.faces, 0.25, "#9a9a9a") for p in pre]
    return render_layers([post + ghosts], path, titles=[f"{titles[0]} (grey) / {titles[1]}"],
                         scalar_title=scalar_title, **options)

