"""Scan slices with a label map overlaid, and optionally the extracted surfaces, in one PNG.

The three panels are the axial, coronal and sagittal planes through the centre of the labelled
region, drawn in world orientation (RAS+: the patient's right on the left of axial and coronal
views as radiologists show them, superior up) with the voxel spacing as aspect ratio.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ParameterError, ShapeError
from .quick import draw_meshes, pyplot, save_figure

__all__ = ["render_slices"]

# label code -> overlay colour (segmentation codes: skin 1, bone 3, mandible 4; phantom codes 2 muscle, 5 teeth)
_OVERLAY = {1: "#f2b27c", 2: "#c2413b", 3: "#ffe14d", 4: "#3fa9f5", 5: "#ffffff"}
_SOFT = (1, 2)  # soft-tissue codes are tinted lightly so that the scan stays readable under them
_ACROSS = {"axial": 2, "coronal": 1, "sagittal": 0}  # plane -> world axis across it


def _world_axes(affine: np.ndarray) -> list[int]:
    """For world axes x, y, z: the voxel axis that runs most along it."""
    rot = np.abs(affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0))
    order = [-1, -1, -1]
    for world in np.argsort(-rot.max(axis=1)):  # most clear-cut first
        free = [v for v in range(3) if v not in order]
        order[world] = max(free, key=lambda v: rot[world, v])
    return order


def _plane(data: np.ndarray, axes: list[int], flips: list[bool], across: int, index: int) -> np.ndarray:
    """The slice across world axis ``across`` as an image, rows = the higher world axis (flipped so
    it points up), columns = the lower one (R..L for axial/coronal, P..A for sagittal)."""
    cut = np.take(data, index, axis=axes[across])
    rest = [w for w in range(3) if w != across]  # world axes left, ascending
    kept = [axes[w] for w in rest]  # their voxel axes, in the order np.take left them
    img = cut if kept[0] < kept[1] else cut.T  # now img[a, b] with a along rest[0], b along rest[1]
    for k, w in enumerate(rest):
        if flips[w]:
            img = np.flip(img, axis=k)
    img = img.T[::-1]  # rows: rest[1] pointing up; columns: rest[0] increasing (to the patient's left)
    return np.asarray(img)


def render_slices(
    image: Any,
    labels: Any,
    path: str | Path,
    *,
    surfaces: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    window: tuple[float, float] | None = None,
    alpha: float = 0.6,
    planes: Sequence[str] = ("axial", "coronal", "sagittal"),
    plain: bool = False,
    titles: Sequence[str] | None = None,
    size: float = 4.0,
) -> Path:
    """Axial, coronal and sagittal slices of ``image`` with ``labels`` overlaid, and a 3D panel of
    ``surfaces`` (``{tissue: (vertices, faces)}`` in world mm) when given; written atomically as PNG.

    Args:
        image, labels: :class:`~anatomy.scans.Volume` s on the same grid (labels: integer codes, 0 = none).
        window: grey-level range shown (default: the 1st to 99.5th percentile).
        alpha: opacity of the label colours (soft tissue: a third of it).
        planes: which planes, in order (``"axial"``, ``"coronal"``, ``"sagittal"``).
        plain: start with the first plane without the overlay.
    """
    data = np.asarray(image.data, dtype=np.float32)
    lab = np.asarray(labels.data)
    if data.shape != lab.shape or not np.allclose(image.affine, labels.affine, atol=1e-4):
        raise ShapeError(f"render_slices: image {data.shape} and labels {lab.shape} must share one voxel grid.")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ParameterError(f"path must end in .png, got {str(path)!r}.")
    plt = pyplot("render_slices()")
    from matplotlib.colors import to_rgb

    axes = _world_axes(image.affine)
    flips = [bool(image.affine[w, axes[w]] < 0) for w in range(3)]
    inside = np.nonzero(lab)
    centre = [int(np.median(i)) if len(i) else s // 2 for i, s in zip(inside, lab.shape)]
    lo, hi = window if window is not None else np.percentile(data[::4, ::4, ::4], [1.0, 99.5])
    spacing = np.linalg.norm(image.affine[:3, :3], axis=0)
    unknown = [p for p in planes if p not in _ACROSS]
    if unknown or not planes:
        raise ParameterError(f"planes must name some of {list(_ACROSS)}; got {list(planes)}.")
    shown = [(planes[0], False)] * bool(plain) + [(p, True) for p in planes]
    panels = len(shown) + (1 if surfaces else 0)
    fig = plt.figure(figsize=(size * panels, size))
    for col, (name, overlay) in enumerate(shown):
        across = _ACROSS[name]
        index = centre[axes[across]]
        grey = np.clip((_plane(data, axes, flips, across, index) - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
        codes = _plane(lab, axes, flips, across, index)
        rgb = np.repeat(grey[..., None], 3, axis=2)
        for code, colour in _OVERLAY.items() if overlay else ():
            hit = codes == code
            a = alpha / 3 if code in _SOFT else alpha
            rgb[hit] = (1 - a) * rgb[hit] + a * np.asarray(to_rgb(colour))
        rest = [w for w in range(3) if w != across]
        ax = fig.add_subplot(1, panels, col + 1)
        ax.imshow(rgb, aspect=float(spacing[axes[rest[1]]] / spacing[axes[rest[0]]]), interpolation="nearest")
        default = f"{name} (voxel {index})" + ("" if overlay else ", scan")
        ax.set_title(titles[col] if titles is not None and col < len(titles) else default)
        ax.set_axis_off()
    if surfaces:
        ax = fig.add_subplot(1, panels, panels, projection="3d")
        meshes = [(n, np.asarray(v, dtype=np.float64), np.asarray(f)) for n, (v, f) in surfaces.items()]
        pts = np.concatenate([m[1] for m in meshes])
        draw_meshes(ax, meshes, {"skin"}, float((pts.max(0) - pts.min(0)).max()) / 2)
        ax.view_init(10.0, 60.0)
        ax.set_axis_off()
        ax.set_title(titles[panels - 1] if titles is not None and len(titles) >= panels else "surfaces")
    return save_figure(fig, path)
