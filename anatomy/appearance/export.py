"""Meshes with their appearance: one ``.glb`` (glTF 2.0) or OBJ + MTL + PNG per sample.

The textured tissue (the hand's skin, the head's face) gets its UV layout and base-colour map;
every other tissue a flat material colour (:func:`tissue_colour`). Vertices not used by any face
(the skin volume's inner tetrahedron nodes) are dropped from the surface files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..core.errors import ParameterError
from ..io.gltf import GltfPart, write_glb
from ..io.obj_textured import write_mtl, write_textured_obj
from ..io.png import encode_png, write_png
from ..models import ModelOutput
from .albedo import linear_to_srgb
from .maps import NimbleTextureAppearance, SkinAppearance, tissue_colour

__all__ = ["FORMATS", "base_colour_image", "write_textured"]

FORMATS = ("glb", "obj")


def base_colour_image(app: SkinAppearance | NimbleTextureAppearance, params: torch.Tensor,
                      resolution: int | None = None) -> np.ndarray:
    """The first sample's base-colour map as sRGB-encoded uint8 ``(R, R, 3)``: the albedo model's
    linear albedo through the sRGB transfer function, or the official NIMBLE diffuse map as it is."""
    with torch.no_grad():
        if isinstance(app, NimbleTextureAppearance):
            image = app.maps(params)["diffuse"][0]
        else:
            image = linear_to_srgb(app.maps(params, resolution)["albedo"][0])
    return np.rint(image.double().cpu().numpy() * 255.0).astype(np.uint8)


def write_textured(out: ModelOutput, folder: str | Path, *, app: SkinAppearance | NimbleTextureAppearance | None,
                   params: torch.Tensor | None = None, fmt: str = "glb", index: int = 0, stem: str = "model",
                   resolution: int | None = None) -> list[Path]:
    """Write sample ``index`` of ``out`` to ``folder``: ``{stem}.glb``, or ``{stem}_{tissue}.obj`` per
    tissue + ``{stem}.mtl`` + ``{stem}_{tissue}_albedo.png``. ``app=None``: flat colours only."""
    if fmt not in FORMATS:
        raise ParameterError(f"fmt must be one of {FORMATS}, got {fmt!r}.")
    if not 0 <= index < out.vertices.shape[0]:
        raise ParameterError(f"index must be in [0, {out.vertices.shape[0] - 1}] (the batch), got {index}.")
    if app is not None and app.layout is None:
        raise ParameterError("this appearance has no UV layout (the official NIMBLE layout is not in the files "
                             "read); pass uv= to appearance(), or export without a texture.")
    folder = Path(folder)
    image = None
    if app is not None:
        image = base_colour_image(app, app.default_params(1) if params is None else params[index:index + 1],
                                  resolution)
    parts, written = [], []
    materials: dict[str, tuple[tuple[float, float, float], str | None]] = {}
    for layout in out.layout:
        verts = out.tissue(layout.name)[index].detach().cpu().double().numpy()
        faces = layout.faces.cpu().numpy()
        used, local = np.unique(faces, return_inverse=True)
        faces, verts = local.reshape(-1, 3), verts[used]
        textured = app is not None and image is not None and layout.name == app.tissue and app.layout is not None
        colour = tissue_colour(layout.name)
        uv = uv_faces = None
        if textured:
            assert app is not None and app.layout is not None
            uv, uv_faces = app.layout.uv, app.layout.uv_faces
        if fmt == "glb":
            parts.append(GltfPart(layout.name, verts, faces, colour=colour, uv=uv, uv_faces=uv_faces,
                                  texture_png=encode_png(image) if textured else None))
            continue
        texture = None
        if textured:
            texture = f"{stem}_{layout.name}_albedo.png"
            written.append(write_png(folder / texture, image))
        materials[layout.name] = ((1.0, 1.0, 1.0) if textured else colour, texture)
        written.append(write_textured_obj(folder / f"{stem}_{layout.name}.obj", verts, faces, uv=uv,
                                          uv_faces=uv_faces, material=layout.name, mtllib=f"{stem}.mtl"))
    if fmt == "glb":
        written.append(write_glb(folder / f"{stem}.glb", parts))
    else:
        written.append(write_mtl(folder / f"{stem}.mtl", materials))
    return written
