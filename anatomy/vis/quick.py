"""Quick off-screen pictures with matplotlib (the ``vis`` extra), no GPU or display needed.

Each tissue is drawn as a flat-shaded triangle collection; inner tissues opaque,
the outermost one (the last in the stack, e.g. skin) translucent.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ParameterError, missing_dependency

_COLOURS = {"bone": "#e8dcc0", "bones": "#e8dcc0", "skull": "#e8dcc0", "mandible": "#d9cba8",
            "muscle": "#b5524a", "muscles": "#b5524a", "skin": "#e0ac8a", "face": "#e0ac8a"}
_FALLBACK = ["#8fa8c8", "#c8a88f", "#9fc88f", "#c88fb8"]


def _shade(normals: np.ndarray, base: str, alpha: float) -> np.ndarray:
    from matplotlib.colors import to_rgb

    light = np.array([0.3, -0.5, 0.8])
    light = light / np.linalg.norm(light)
    lambert = 0.35 + 0.65 * np.clip(np.abs(normals @ light), 0.0, 1.0)
    rgb = np.clip(np.array(to_rgb(base))[None] * lambert[:, None], 0.0, 1.0)
    return np.concatenate([rgb, np.full((len(rgb), 1), alpha)], 1)


def pyplot(purpose: str) -> Any:
    """``matplotlib.pyplot`` on the off-screen Agg backend (the ``vis`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise missing_dependency("matplotlib", "vis", purpose) from exc
    return plt


def save_figure(fig: Any, path: Path, *, tight: bool = True) -> Path:
    """Save and close ``fig`` as a PNG at ``path``, atomically (``tight``: lay it out tightly first)."""
    import matplotlib.pyplot as plt

    if tight:
        fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(tmp, dpi=100, format="png")
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def draw_meshes(ax: Any, meshes: Sequence[tuple[str, np.ndarray, np.ndarray]], see_through: set[str],
                radius: float) -> None:
    """Flat-shaded triangle meshes ``(name, vertices, faces)`` on a 3D axis, centred, ``radius`` mm half-width."""
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    all_pts = []
    for i, (name, verts, faces) in enumerate(meshes):
        tri = verts[faces]
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
        colour = _COLOURS.get(name, _FALLBACK[i % len(_FALLBACK)])
        alpha = 0.25 if name in see_through else 1.0
        ax.add_collection3d(Poly3DCollection(tri, facecolors=_shade(normals, colour, alpha), linewidths=0))
        all_pts.append(verts)
    pts = np.concatenate(all_pts)
    centre = (pts.max(0) + pts.min(0)) / 2
    for setter, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre):
        setter(c - radius, c + radius)
    ax.set_box_aspect((1, 1, 1))


def render_output(
    output: Any,
    path: str | Path,
    *,
    samples: Sequence[int] | None = None,
    titles: Sequence[str] | None = None,
    view: tuple[float, float] = (20.0, -60.0),
    translucent: Sequence[str] | None = None,
    size: float = 4.0,
) -> Path:
    """Render ``samples`` of a :class:`~anatomy.models.ModelOutput` side by side into a PNG.

    ``translucent`` names the tissues drawn see-through (default: the last tissue).
    The file is written atomically; returns its path.
    """
    plt = pyplot("render_output()")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ParameterError(f"path must end in .png, got {str(path)!r}.")
    samples = list(range(output.batch_size)) if samples is None else list(samples)
    names = output.tissue_names
    see_through = set(names[-1:] if translucent is None else translucent)
    fig = plt.figure(figsize=(size * len(samples), size))
    every = output.vertices[samples].detach().cpu().double().numpy().reshape(-1, 3)
    radius = float((every.max(0) - every.min(0)).max()) / 2  # one scale for all panels
    for col, b in enumerate(samples):
        ax = fig.add_subplot(1, len(samples), col + 1, projection="3d")
        meshes = [(name, output.tissue(name)[b].detach().cpu().double().numpy(), output.faces(name).cpu().numpy())
                  for name in names]
        draw_meshes(ax, meshes, see_through, radius)
        ax.view_init(*view)
        ax.set_axis_off()
        if titles is not None and col < len(titles):
            ax.set_title(titles[col])
    return save_figure(fig, path)
