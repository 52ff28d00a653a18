"""Appearance maps of the default models, the official NIMBLE texture behind the same API, textured export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import anatomy
from anatomy.appearance import NimbleTextureAppearance, appearance, rasterize, skin_albedo, write_textured
from anatomy.cli import main
from anatomy.core.errors import ParameterError, ShapeError
from anatomy.io import read_glb, read_png
from anatomy.io.gltf import glb_accessor


def test_maps_follow_the_fields(hand_app, head_app) -> None:
    app = hand_app.app
    params = app.default_params(2)
    params[1, 0] = 0.25  # darker second sample
    albedo = app.maps(params, resolution=64)["albedo"]
    assert albedo.shape == (2, 64, 64, 3) and albedo.min() > 0 and albedo.max() < 1
    covered = torch.as_tensor(app.raster(64).covered)
    assert (albedo[1][covered] < albedo[0][covered]).all()  # more melanin: darker everywhere
    # per vertex: the albedo equals the model at the local fractions (global x field)
    per_vertex = app.vertex_albedo(params.double())
    fm, fb = (torch.as_tensor(app.fields[k]) for k in ("melanin", "blood"))
    expect = skin_albedo(params[:, :1].double() * fm, params[:, 1:2].double() * fb,
                         params[:, 2:].double().expand(-1, len(fm)))
    torch.testing.assert_close(per_vertex, expect)
    # palmar skin (lower melanin) is lighter than dorsal skin
    used = np.unique(hand_app.faces)
    mel = app.fields["melanin"][used]
    light = per_vertex[0, used].sum(-1).numpy()
    assert light[mel < 0.4].mean() > light[mel > 0.9].mean() + 0.1
    # the head: lips redder than the rest of the face
    face = head_app.app
    rgb = face.vertex_albedo(face.default_params(1).double())[0].numpy()
    blood = face.fields["blood"]
    lips, rest = blood > 2.0, blood < 1.05
    assert lips.sum() > 20
    assert (rgb[lips, 0] / rgb[lips, 1]).mean() > (rgb[rest, 0] / rgb[rest, 1]).mean() + 0.05


def test_maps_are_differentiable(head_app) -> None:
    app = head_app.app
    params = torch.tensor([[0.05, 0.02, 0.7]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: app.maps(p, resolution=8)["albedo"], (params,))
    # dict parameters: missing ones take the defaults
    one = app.maps({"melanin": torch.tensor([0.2])}, resolution=8)["albedo"]
    full = app.maps(torch.tensor([[0.2, 0.02, 0.75]]), resolution=8)["albedo"]
    torch.testing.assert_close(one, full)
    with pytest.raises(ParameterError, match="unknown appearance parameters"):
        app.maps({"melanine": torch.tensor([0.2])})
    with pytest.raises(ShapeError, match=r"\(B, 3\)"):
        app.maps(torch.zeros(2))
    with pytest.raises(ParameterError, match="skin_type"):
        app.default_params(1, skin_type="olive")


def test_raster_bakes_vertex_values(hand_app) -> None:
    """A linear field of the 3D position, baked, matches the position interpolated at texel centres."""
    layout = hand_app.app.layout
    raster = rasterize(layout, 128)
    baked = raster.bake(torch.as_tensor(hand_app.vertices)[None])[0].reshape(-1, 3).numpy()
    inside = raster.face >= 0
    f = raster.face[inside]
    tri = hand_app.vertices[hand_app.faces[f]]
    np.testing.assert_allclose(baked[inside], (raster.bary[inside][..., None] * tri).sum(1), atol=1e-9)
    assert (raster.bary[inside] > 0).all() and np.allclose(raster.bary.sum(1), 1.0)


def _tex_dict(res: int = 8, k: int = 4) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    return {name: {"basis": torch.randn(3 * res * res, k, generator=g, dtype=torch.float64) * 0.1,
                   "mean": torch.rand(3 * res * res, generator=g, dtype=torch.float64),
                   "std": torch.rand(k, generator=g, dtype=torch.float64) + 0.5}
            for name in ("diffuse", "normal", "spec")}


def test_official_texture_behind_the_same_api(hand_app, tmp_path) -> None:
    tex = _tex_dict()
    model = anatomy.Nimble(tex_dict=tex, dtype=torch.float64)
    app = appearance(model)
    assert isinstance(app, NimbleTextureAppearance) and app.layout is None and app.num_params == 4
    alpha = torch.randn(2, 4, dtype=torch.float64)
    maps = app.maps(alpha)
    for name, entry in tex.items():  # the official formula, written out
        flat = entry["basis"] @ (alpha * entry["std"]).t() + entry["mean"][:, None]
        torch.testing.assert_close(maps[name], flat.t().reshape(2, 8, 8, 3).clamp(0, 1))
    with torch.no_grad():
        out = model()
    with pytest.raises(ParameterError, match="no UV layout"):
        write_textured(out, tmp_path, app=app)
    # with a layout given (here the albedo model's), the diffuse map goes into the file as it is
    app = appearance(model, uv=hand_app.app.layout)
    written = write_textured(out, tmp_path, app=app, params=alpha, fmt="obj", stem="official")
    png = read_png(tmp_path / "official_skin_albedo.png")
    np.testing.assert_array_equal(png, np.rint(maps["diffuse"][0].numpy() * 255).astype(np.uint8))
    assert {p.name for p in written} >= {"official_skin.obj", "official.mtl"}
    with pytest.raises(ParameterError, match="no appearance model"):
        appearance(anatomy.ArticulatedModel(anatomy.make_toy_model_data()))


def test_cli_export_glb_and_obj(tmp_path) -> None:
    assert main(["export", "head", "--out", str(tmp_path / "g"), "--format", "glb", "--texture",
                 "--skin-type", "moderate"]) == 0
    doc, body = read_glb(tmp_path / "g" / "model.glb")
    assert [m["name"] for m in doc["meshes"]] == ["skull", "mandible", "face"]
    face = doc["meshes"][2]["primitives"][0]
    assert "TEXCOORD_0" in face["attributes"] and "baseColorTexture" in doc["materials"][2]["pbrMetallicRoughness"]
    assert "baseColorTexture" not in doc["materials"][0]["pbrMetallicRoughness"]
    uv = glb_accessor(doc, body, face["attributes"]["TEXCOORD_0"])
    assert uv.min() >= 0 and uv.max() <= 1
    assert main(["export", "hand", "--out", str(tmp_path / "o"), "--format", "obj", "--texture"]) == 0
    mtl = (tmp_path / "o" / "model.mtl").read_text()
    assert "map_Kd model_skin_albedo.png" in mtl and "newmtl bones" in mtl
    assert read_png(tmp_path / "o" / "model_skin_albedo.png").shape == (512, 512, 3)
    assert main(["export", "toy", "--out", str(tmp_path / "t"), "--format", "glb"]) == 0  # flat colours
    assert main(["export", "hand", "--out", str(tmp_path / "x"), "--texture"]) == 2  # needs --format glb|obj
    assert main(["demo", "--model", "toy", "--out", str(tmp_path / "d"), "--samples", "2", "--format", "glb",
                 "--no-picture"]) == 0
    for b in range(2):
        doc, _ = read_glb(tmp_path / "d" / f"sample{b}.glb")
        assert len(doc["meshes"]) >= 1 and "images" not in doc  # the toy has no appearance space: flat colours
