"""Closed tissue surfaces from voxel masks: marching cubes, cleaning, decimation, Taubin smoothing.

:func:`extract_surface` turns a mask (a boolean :class:`~anatomy.scans.Volume`, or a label map and the
label(s) to take) into a :class:`Surface`: vertices in world millimetres (the volume's affine applied,
oblique or flipped affines included), triangles wound so that their normals point out of the tissue,
and the tissue's name.

Steps: enclosed cavities of the mask are filled (an inner surface per marrow cavity is not wanted),
the mask is cropped to its bounding box and padded with one empty voxel on every side (so the surface
is closed even where the tissue touches the volume's border), :func:`skimage.measure.marching_cubes`
runs at level 0.5, only the largest connected piece is kept, then optional decimation to a target
vertex count (quadric error collapses from ``fast_simplification`` when installed, else the vertex
clustering written here) and Taubin smoothing (Taubin 1995, "A signal processing approach to fair
surface design", SIGGRAPH: a shrinking step ``lambda`` then an inflating step ``mu < -lambda``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from ..core.errors import ParameterError, ShapeError, import_optional
from ..io.mesh_export import Mesh
from .morphology import fill_enclosed
from .volume import Volume

__all__ = ["Surface", "decimate", "extract_surface", "keep_largest_component", "mesh_volume", "taubin_smooth"]


@dataclass(frozen=True, eq=False)
class Surface:
    """A closed triangle surface of one tissue.

    Attributes:
        vertices: ``(V, 3)`` float64 world points (mm, RAS+).
        faces: ``(F, 3)`` int64 triangles, counter-clockwise seen from outside (normals point out).
        tissue: the tissue's name (``"skin"``, ``"bone"``, ...).
        label: the label code the surface was taken from, or ``None`` for a plain mask.
    """

    vertices: np.ndarray
    faces: np.ndarray
    tissue: str
    label: int | None = None

    @property
    def enclosed_volume(self) -> float:
        """Signed enclosed volume in mm^3 (positive for an outward-wound closed surface)."""
        return mesh_volume(self.vertices, self.faces)

    def to_mesh(self) -> Mesh:
        """The surface as an :class:`anatomy.io.Mesh` (for :func:`anatomy.io.write_ply` and friends)."""
        return Mesh(self.vertices, self.faces)


def mesh_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Signed volume enclosed by a closed triangle mesh (divergence theorem: sum of signed tetrahedra)."""
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def _mask_from(volume: Volume, label: int | Iterable[int] | None) -> np.ndarray:
    data = volume.data
    if label is None:
        return np.asarray(data != 0)
    labels = [int(label)] if isinstance(label, (int, np.integer)) else [int(v) for v in label]
    if not labels:
        raise ParameterError("extract_surface: label is an empty list; give one label code or several.")
    return np.isin(data, labels)


def _tissue_name(label: int | Iterable[int] | None, tissue: str | None) -> str:
    if tissue is not None:
        return tissue
    if isinstance(label, (int, np.integer)):
        from .segment import Tissue

        try:
            return Tissue(int(label)).name.lower()
        except ValueError:
            return f"label_{int(label)}"
    return "mask" if label is None else "labels_" + "_".join(str(int(v)) for v in label)


def extract_surface(
    volume: Volume,
    *,
    label: int | Iterable[int] | None = None,
    tissue: str | None = None,
    target_vertices: int | None = None,
    smooth_iterations: int = 10,
    fill_holes: bool = True,
    largest_only: bool = True,
    decimation: str = "auto",
) -> Surface:
    """The closed surface of a tissue mask, in world millimetres.

    Args:
        volume: a mask (any non-zero voxel is inside) or, with ``label``, a label map.
        label: the label code (or codes, united) that make the tissue; ``None``: every non-zero voxel.
        tissue: the surface's tissue name; default: the :class:`~anatomy.scans.segment.Tissue` name of
            ``label`` (``"skin"``, ``"bone"``, ``"mandible"``), else ``"label_<n>"`` / ``"mask"``.
        target_vertices: decimate to about this many vertices (``None``: keep the marching-cubes count).
        smooth_iterations: Taubin smoothing passes (0: none).
        fill_holes: fill cavities fully enclosed by the tissue before meshing (no inner surfaces).
        largest_only: keep only the largest connected piece of the surface.
        decimation: ``"auto"`` (quadric via ``fast_simplification`` when installed, else clustering),
            ``"quadric"`` or ``"cluster"``.

    Raises:
        ParameterError: an empty mask (message gives the labels present), bad options.
    """
    measure = import_optional("skimage.measure", "scans", "extract_surface (marching cubes)", "scikit-image")
    if smooth_iterations < 0:
        raise ParameterError(f"smooth_iterations must be >= 0; got {smooth_iterations}.")
    if target_vertices is not None and target_vertices < 4:
        raise ParameterError(f"target_vertices must be at least 4 (a tetrahedron); got {target_vertices}.")
    mask = _mask_from(volume, label)
    if not mask.any():
        present = np.unique(volume.data)[:20].tolist()
        raise ParameterError(
            f"extract_surface: the mask is empty (label={label!r}); the volume holds the values {present}. "
            f"Pick a label that is present, or check the segmentation's thresholds."
        )
    lo = np.array([int(np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0][0]) for ax in range(3)])
    hi = np.array([int(np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0][-1]) + 1 for ax in range(3)])
    padded = np.pad(mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], 1)
    if fill_holes:  # on the padded crop: its empty border is outside, as the volume's outside would be
        padded = fill_enclosed(padded)
    padded = padded.astype(np.float32)
    verts = faces = None
    if target_vertices is not None and 2.0 * max(volume.spacing) <= _COARSE_MM:
        # when that alone still gives more vertices than asked for, marching cubes on 2x2x2 block means
        # (the mask's partial volume at twice the spacing, so the level-0.5 surface stays unbiased): a
        # quarter of the triangles to make and to decimate. Only for fine scans: on a coarser grid the
        # steps of the voxel surface show through the smoothing as terraces.
        verts, faces, _normals, _values = measure.marching_cubes(_block_mean(padded), level=0.5,
                                                                 allow_degenerate=False)
        verts = verts * 2.0 - 1.5  # block i holds padded voxels 2i - 2 and 2i - 1 (see _block_mean)
        if len(verts) < target_vertices:
            verts = faces = None
    if verts is None or faces is None:
        verts, faces, _normals, _values = measure.marching_cubes(padded, level=0.5, allow_degenerate=False)
    ijk = verts.astype(np.float64) - 1.0 + lo
    world = ijk @ volume.affine[:3, :3].T + volume.affine[:3, 3]
    faces = faces.astype(np.int64)
    # skimage's triangles, read counter-clockwise in voxel-index space, face into the mask (measured: a
    # ball's signed volume comes out negative); reverse them, unless the affine mirrors (det < 0) and so
    # reverses them once more
    if np.linalg.det(volume.affine[:3, :3]) > 0:
        faces = faces[:, ::-1].copy()
    if largest_only:
        world, faces = keep_largest_component(world, faces)
    if target_vertices is not None and target_vertices < len(world):
        world, faces = decimate(world, faces, target_vertices, method=decimation)
    if smooth_iterations:
        world = taubin_smooth(world, faces, iterations=smooth_iterations)
    code = int(label) if isinstance(label, (int, np.integer)) else None
    return Surface(world, faces, _tissue_name(label, tissue), code)


_COARSE_MM = 1.6  # block means only when they are this fine (0.8 mm voxels or finer)


def _block_mean(mask: np.ndarray) -> np.ndarray:
    """Means over 2 x 2 x 2 blocks of a float mask (padded with zeros to even sizes, plus one more
    empty block on each side so that the coarse surface is closed)."""
    x = np.pad(mask.astype(np.float32, copy=False), [(2, 2 + s % 2) for s in mask.shape])
    x = x[0::2] + x[1::2]  # pairwise sums along each axis: contiguous, unlike a mean over reshaped axes
    x = x[:, 0::2] + x[:, 1::2]
    x = x[:, :, 0::2] + x[:, :, 1::2]
    x *= 0.125
    return x


def _compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop unused vertices, keeping the order of those left."""
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.ravel()] = True
    new_index = np.cumsum(used) - 1
    return vertices[used], new_index[faces]


def keep_largest_component(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The connected piece of a triangle mesh with the most faces (vertices re-indexed in their old order)."""
    if len(faces) == 0:
        raise ShapeError("keep_largest_component: the mesh has no faces.")
    n = len(vertices)
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = sparse.coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n)).tocsr()
    count, comp = csgraph.connected_components(graph, directed=False)
    if count == 1:
        return _compact(vertices, faces)
    face_comp = comp[faces[:, 0]]
    biggest = int(np.argmax(np.bincount(face_comp, minlength=count)))
    return _compact(vertices, faces[face_comp == biggest])


def _umbrella(num_vertices: int, faces: np.ndarray) -> sparse.csr_matrix:
    """Uniform umbrella operator ``L = D^-1 A - I`` (A: vertex adjacency)."""
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 1], faces[:, 2], faces[:, 0]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0], faces[:, 0], faces[:, 1], faces[:, 2]])
    adj = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(num_vertices, num_vertices)).tocsr()
    adj.data[:] = 1.0  # an edge shared by two faces counts once
    degree = np.asarray(adj.sum(axis=1)).ravel()
    inv = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
    return sparse.diags(inv) @ adj - sparse.identity(num_vertices, format="csr")


def taubin_smooth(
    vertices: np.ndarray, faces: np.ndarray, *, iterations: int = 10, lam: float = 0.5, mu: float = -0.53
) -> np.ndarray:
    """Taubin lambda|mu smoothing (uniform weights): removes the marching-cubes staircase while keeping
    the enclosed volume nearly unchanged (a pure Laplacian would shrink it). Returns new vertices."""
    if not (0.0 < lam < -mu):
        raise ParameterError(f"taubin_smooth needs 0 < lam < -mu (Taubin's pass band); got lam={lam}, mu={mu}.")
    op = _umbrella(len(vertices), np.asarray(faces, dtype=np.int64))
    v = np.array(vertices, dtype=np.float64)
    for _ in range(iterations):
        v = v + lam * (op @ v)
        v = v + mu * (op @ v)
    return v


def decimate(
    vertices: np.ndarray, faces: np.ndarray, target_vertices: int, *, method: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce a closed mesh to about ``target_vertices`` vertices.

    ``method``: ``"quadric"`` (``fast_simplification``'s quadric error collapses, asked for
    ``2 * target - 4`` triangles, the count a closed genus-0 mesh with ``target`` vertices has),
    ``"cluster"`` (vertex clustering on a grid whose cell size is searched so the count lands within
    a few % of the target) or ``"auto"`` (quadric when installed).
    """
    if method not in ("auto", "quadric", "cluster"):
        raise ParameterError(f"decimate: method must be 'auto', 'quadric' or 'cluster'; got {method!r}.")
    if method == "auto":
        method = "quadric" if importlib.util.find_spec("fast_simplification") is not None else "cluster"
    if method == "quadric":
        fs = import_optional("fast_simplification", "scans", "quadric decimation", "fast-simplification")
        out = fs.simplify(
            np.ascontiguousarray(vertices, dtype=np.float64),
            np.ascontiguousarray(faces, dtype=np.int32),
            target_count=max(2 * target_vertices - 4, 4),
        )
        v, f = np.asarray(out[0], dtype=np.float64), np.asarray(out[1], dtype=np.int64)
        return _compact(v, f)
    return _cluster_decimate(np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64), target_vertices)


def _cluster_once(vertices: np.ndarray, faces: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    keys = np.floor((vertices - vertices.min(axis=0)) / cell).astype(np.int64)
    _, cluster = np.unique(keys, axis=0, return_inverse=True)
    cluster = cluster.ravel()
    count = int(cluster.max()) + 1
    sums = np.zeros((count, 3))
    np.add.at(sums, cluster, vertices)
    new_v = sums / np.bincount(cluster, minlength=count)[:, None]
    f = cluster[faces]
    keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])
    f = f[keep]
    _, first = np.unique(np.sort(f, axis=1), axis=0, return_index=True)  # a triangle kept once
    return _compact(new_v, f[np.sort(first)])


def _cluster_decimate(vertices: np.ndarray, faces: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertex clustering: bisect the grid cell size (on a log scale) until the count is within 3 %."""
    extent = float(np.ptp(vertices, axis=0).max())
    edge = np.linalg.norm(vertices[faces[:, 0]] - vertices[faces[:, 1]], axis=1).mean()
    lo, hi = float(edge) * 0.5, extent
    best = (vertices, faces)
    for _ in range(30):
        cell = float(np.sqrt(lo * hi))
        v, f = _cluster_once(vertices, faces, cell)
        best = (v, f)
        if abs(len(v) - target) <= 0.03 * target:
            break
        if len(v) > target:
            lo = cell
        else:
            hi = cell
    return best

