"""The appearance space of a model: parameters -> texture maps in the model's UV layout.

``appearance(model)`` picks what the model has:

* :class:`SkinAppearance` for the embedded default hand (skin) and head (face): the albedo model
  of :mod:`anatomy.appearance.albedo` driven by a global melanin fraction, blood fraction and
  oxygen saturation, modulated by fixed spatial fields (:mod:`anatomy.appearance.regions`), baked
  into an ``albedo`` map (linear sRGB) in a UV layout computed at load time (:func:`unwrap`).
* :class:`NimbleTextureAppearance` for a hand built from the official NIMBLE texture file: its
  ``diffuse``/``normal``/``spec`` PCA (``Nimble.texture_maps``). The official UV layout is not in the
  files we read; pass ``uv=`` to :func:`appearance` to export those maps with meshes.

Both have ``maps(params) -> {name: (B, R, R, 3)}`` in [0, 1], differentiable in ``params``,
``default_params(batch)``, ``tissue`` and ``layout`` (``None`` where unknown).
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.errors import ParameterError, ShapeError
from ..models import ArticulatedModel, Nimble, Sculptor
from .albedo import skin_albedo
from .raster import UVRaster, rasterize
from .regions import face_fields, hand_fields, hand_sides
from .uv import UVLayout, unwrap

__all__ = ["TISSUE_COLOURS", "NimbleTextureAppearance", "SkinAppearance", "appearance"]

#: flat linear-sRGB base colours of tissues without a texture (bone: ivory; muscle: dark red)
TISSUE_COLOURS = {"bones": (0.78, 0.72, 0.60), "skull": (0.78, 0.72, 0.60), "mandible": (0.78, 0.72, 0.60),
                  "bone": (0.78, 0.72, 0.60), "muscles": (0.40, 0.06, 0.05), "muscle": (0.40, 0.06, 0.05),
                  "skin": (0.65, 0.45, 0.36), "face": (0.65, 0.45, 0.36)}
_DEFAULT_COLOUR = (0.6, 0.6, 0.6)

#: published melanosome fractions (mid-range, skin_optics.MELANIN_RANGES) used by ``default_params``
SKIN_TYPES = {"light": 0.03, "moderate": 0.13, "dark": 0.30}


def tissue_colour(name: str) -> tuple[float, float, float]:
    """The flat base colour (linear sRGB) used for a tissue without a texture."""
    return TISSUE_COLOURS.get(name, _DEFAULT_COLOUR)


class SkinAppearance:
    """Skin albedo of one tissue: ``params`` ``(B, 3)`` = (melanin, blood, oxygenation) or a dict
    with those keys (``(B,)`` each; missing keys take the defaults of :meth:`default_params`).

    ``fields``: per tissue vertex multipliers ``melanin`` and ``blood`` (``(V,)``); the local
    fractions are the global ones times the field, capped at 1.
    """

    param_names = ("melanin", "blood", "oxygenation")

    def __init__(self, tissue: str, layout: UVLayout, fields: dict[str, np.ndarray], num_vertices: int, *,
                 resolution: int = 512) -> None:
        for key in ("melanin", "blood"):
            if key not in fields or np.shape(fields[key]) != (num_vertices,):
                raise ShapeError(f"fields[{key!r}] must have shape ({num_vertices},) (one value per vertex of "
                                 f"{tissue!r}), got {None if key not in fields else np.shape(fields[key])}.")
        self.tissue = tissue
        self.layout = layout
        self.fields = {k: np.asarray(v, dtype=np.float64) for k, v in fields.items()}
        self.resolution = resolution
        self._rasters: dict[int, UVRaster] = {}
        self._texel_fields: dict[int, torch.Tensor] = {}

    def raster(self, resolution: int | None = None) -> UVRaster:
        r = self.resolution if resolution is None else resolution
        if r not in self._rasters:
            self._rasters[r] = rasterize(self.layout, r)
        return self._rasters[r]

    def default_params(self, batch: int = 1, skin_type: str = "light", dtype: torch.dtype = torch.float32
                       ) -> torch.Tensor:
        """``(batch, 3)``: melanin of a published skin type (``light`` 0.03, ``moderate`` 0.13, ``dark``
        0.30), blood 0.02, oxygenation 0.75."""
        if skin_type not in SKIN_TYPES:
            raise ParameterError(f"skin_type must be one of {sorted(SKIN_TYPES)}, got {skin_type!r}.")
        return torch.tensor([[SKIN_TYPES[skin_type], 0.02, 0.75]], dtype=dtype).repeat(batch, 1)

    def _split(self, params: torch.Tensor | dict[str, torch.Tensor]) -> list[torch.Tensor]:
        if isinstance(params, dict):
            unknown = sorted(set(params) - set(self.param_names))
            if unknown:
                raise ParameterError(f"unknown appearance parameters {unknown}; use {list(self.param_names)}.")
            ref = next(iter(params.values()), None)
            batch = 1 if ref is None or ref.dim() == 0 else ref.shape[0]
            dtype = torch.float32 if ref is None else ref.dtype
            full = self.default_params(batch, dtype=dtype)
            if ref is not None:
                full = full.to(ref.device)
            return [params[n].reshape(-1).expand(batch) if n in params else full[:, i]
                    for i, n in enumerate(self.param_names)]
        if not torch.is_tensor(params) or params.dim() != 2 or params.shape[1] != 3:
            raise ShapeError(f"params must be a (B, 3) tensor (melanin, blood, oxygenation) or a dict, got "
                             f"{tuple(params.shape) if torch.is_tensor(params) else type(params).__name__}.")
        return [params[:, i] for i in range(3)]

    def _local(self, params: torch.Tensor | dict[str, torch.Tensor], melanin_field: torch.Tensor,
               blood_field: torch.Tensor) -> torch.Tensor:
        m, b, s = self._split(params)
        mel = (m[:, None] * melanin_field).clamp(max=1.0)
        blood = (b[:, None] * blood_field).clamp(max=1.0)
        return skin_albedo(mel, blood, s[:, None].expand_as(mel))

    def vertex_albedo(self, params: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """Linear sRGB albedo per tissue vertex ``(B, V, 3)``."""
        ref = self._split(params)[0]
        fm = torch.as_tensor(self.fields["melanin"], dtype=ref.dtype, device=ref.device)
        fb = torch.as_tensor(self.fields["blood"], dtype=ref.dtype, device=ref.device)
        return self._local(params, fm, fb)

    def maps(self, params: torch.Tensor | dict[str, torch.Tensor], resolution: int | None = None
             ) -> dict[str, torch.Tensor]:
        """``{"albedo": (B, R, R, 3)}``: linear sRGB albedo texture (row 0 at ``v = 1``)."""
        ref = self._split(params)[0]
        r = self.resolution if resolution is None else resolution
        if r not in self._texel_fields:
            fields = torch.as_tensor(np.stack([self.fields["melanin"], self.fields["blood"]], 1))[None]
            self._texel_fields[r] = self.raster(r).bake(fields)[0].reshape(r * r, 2)
        tf = self._texel_fields[r].to(dtype=ref.dtype, device=ref.device)
        return {"albedo": self._local(params, tf[:, 0], tf[:, 1]).reshape(-1, r, r, 3)}


class NimbleTextureAppearance:
    """The official NIMBLE texture PCA: ``params`` = ``alpha (B, k)``; maps ``diffuse``, ``normal``,
    ``spec`` ``(B, R, R, 3)`` from ``Nimble.texture_maps``."""

    tissue = "skin"

    def __init__(self, model: Nimble, layout: UVLayout | None = None) -> None:
        if not model.tex:
            raise ParameterError("this hand has no texture model; build it with Nimble.from_official(..., tex_dict).")
        self.model = model
        self.layout = layout
        self.num_params = min(model.tex.values())

    def default_params(self, batch: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``(batch, K)`` zeros: the mean texture."""
        return torch.zeros(batch, self.num_params, dtype=dtype)

    def maps(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.texture_maps(params)


def _hand(model: Nimble, resolution: int) -> SkinAppearance:
    layout = {t.name: t for t in model.layout}
    if "skin" not in layout:
        raise ParameterError("this hand model has no 'skin' tissue; the albedo model needs one.")
    skin = layout["skin"]
    with torch.no_grad():
        rest = model()
        verts = rest.tissue("skin")[0].double().cpu().numpy()
        joints = rest.joints[0].double().cpu().numpy()
        dense = model.weights.to_dense() if model.weights.is_sparse else model.weights
        weights = dense[skin.start:skin.stop].double().cpu().numpy()
        # the palmar side is where a flexed finger goes: flex the middle finger's proximal joint
        tip_rest = joints[14]
        tip_flexed = tip_rest
        if model.has_joint_limits:
            limits = model.joint_limits()
            angles = torch.zeros(1, 20, 3, dtype=limits.upper.dtype, device=limits.upper.device)
            angles[0, 9, 0] = 0.8 * limits.upper[9, 0]
            flexed = model(limits.rotations(angles).to(model.template))
            tip_flexed = flexed.joints[0, 14].double().cpu().numpy()
    faces = skin.faces.cpu().numpy()
    group, dist = hand_sides(verts, weights, joints, tip_flexed, tip_rest)
    # chart label per face: its corners' majority group, then the side of its centroid
    face_group = np.asarray([np.bincount(row, minlength=6).argmax() for row in group[faces]])
    face_side = (dist[faces].mean(1) > 0).astype(np.int64)
    layout_uv = unwrap(verts, faces, face_group * 2 + face_side)
    return SkinAppearance("skin", layout_uv, hand_fields(group, dist), skin.stop - skin.start, resolution=resolution)


def _head(model: Sculptor, resolution: int) -> SkinAppearance:
    layout = {t.name: t for t in model.layout}
    if "face" not in layout:
        raise ParameterError("this head model has no 'face' tissue; the albedo model needs one.")
    face = layout["face"]
    with torch.no_grad():
        rest = model()
        verts = rest.tissue("face")[0].double().cpu().numpy()
        landmarks = {n: rest.landmarks[0, i].double().cpu().numpy() for i, n in enumerate(rest.landmark_names)} \
            if rest.landmarks is not None else {}
    # one chart: a seam across the face would show; its area distortion stays bounded (reported in tests)
    layout_uv = unwrap(verts, face.faces.cpu().numpy(), max_distortion=4.0)
    return SkinAppearance("face", layout_uv, face_fields(verts, landmarks), face.stop - face.start,
                          resolution=resolution)


def appearance(model: ArticulatedModel, *, resolution: int = 512, uv: UVLayout | None = None
               ) -> SkinAppearance | NimbleTextureAppearance:
    """The appearance space of ``model`` (see the module docs). ``resolution``: texture size of the
    albedo model's maps; ``uv``: the UV layout of an official NIMBLE texture (optional)."""
    if isinstance(model, Nimble) and model.tex:
        return NimbleTextureAppearance(model, uv)
    if isinstance(model, Nimble):
        return _hand(model, resolution)
    if isinstance(model, Sculptor):
        return _head(model, resolution)
    raise ParameterError(f"no appearance model for {type(model).__name__}; appearance() knows Nimble (the albedo "
                         f"model, or the official texture PCA) and Sculptor.")
