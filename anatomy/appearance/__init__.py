"""anatomy.appearance: UV layouts, an interpretable skin albedo model and texture maps.

* :func:`appearance` (``appearance(model).maps(params)``): the appearance space of a model, the
  melanin / blood albedo model for the embedded default hand and head, or the official NIMBLE
  texture PCA.
* :func:`unwrap` / :class:`UVLayout`: deterministic, flip-free UV layouts (LSCM charts, packed).
* :func:`skin_albedo` and friends: melanin, blood and oxygenation -> reflectance spectrum -> linear
  sRGB (two-layer Kubelka-Munk on published skin optics).
* :func:`write_textured`: meshes with their maps as glTF 2.0 (``.glb``) or OBJ + MTL + PNG.

Layering: this package sits beside :mod:`anatomy.models` (it imports core, io and models);
only the command line imports it.
"""

from .albedo import (
    ita_angle,
    linear_srgb_to_lab,
    linear_to_srgb,
    skin_albedo,
    skin_reflectance,
    spectrum_to_linear_srgb,
    srgb_to_linear,
)
from .export import FORMATS, base_colour_image, write_textured
from .maps import SKIN_TYPES, NimbleTextureAppearance, SkinAppearance, appearance, tissue_colour
from .raster import UVRaster, rasterize
from .uv import UVLayout, area_distortion, signed_uv_areas, unwrap

__all__ = [
    "FORMATS",
    "SKIN_TYPES",
    "NimbleTextureAppearance",
    "SkinAppearance",
    "UVLayout",
    "UVRaster",
    "appearance",
    "area_distortion",
    "base_colour_image",
    "ita_angle",
    "linear_srgb_to_lab",
    "linear_to_srgb",
    "rasterize",
    "signed_uv_areas",
    "skin_albedo",
    "skin_reflectance",
    "spectrum_to_linear_srgb",
    "srgb_to_linear",
    "tissue_colour",
    "unwrap",
    "write_textured",
]
