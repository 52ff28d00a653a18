"""Off-screen renders (pyvista, matplotlib fallback) and plots: colours, framing, errors, log formats, variances."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from anatomy.core.errors import OptionalDependencyError, ParameterError, ShapeError  # noqa: E402
from anatomy.io import make_toy_model_data  # noqa: E402
from anatomy.models import ArticulatedModel  # noqa: E402
from anatomy.vis import plots, render  # noqa: E402


def _png(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(imread(path))[..., :3]


def _square(n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """A 100 x 100 mm grid in the x-z plane (facing +y, the "front" camera), x from -50 to 50."""
    u = np.linspace(-50.0, 50.0, n)
    x, z = np.meshgrid(u, u, indexing="ij")
    verts = np.stack([x.ravel(), np.zeros(n * n), z.ravel()], 1)
    ids = np.arange(n * n).reshape(n, n)
    a, b, c, d = ids[:-1, :-1].ravel(), ids[1:, :-1].ravel(), ids[1:, 1:].ravel(), ids[:-1, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return verts, faces


def _drawn(image: np.ndarray) -> np.ndarray:
    return (np.abs(image - 1.0).sum(-1) > 0.05)  # not the white background


@pytest.fixture()
def pyvista_ok() -> None:
    pytest.importorskip("pyvista")
    problem = render.pyvista_problem()
    if problem is not None:
        pytest.skip(problem)


def test_views_follow_matplotlib_convention() -> None:
    d, up = render.resolve_view((0.0, 0.0))
    np.testing.assert_allclose(d, (1.0, 0.0, 0.0), atol=1e-12)
    d, _ = render.resolve_view((30.0, 90.0))
    np.testing.assert_allclose(d, (0.0, math.cos(math.pi / 6), 0.5), atol=1e-12)
    d, up = render.resolve_view((90.0, 0.0))
    assert up == (0.0, 1.0, 0.0)  # looking straight down: +y up
    assert render.resolve_view(None, "hand") == render.VIEWS["dorsal-oblique"]
    assert render.resolve_view("front") == ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    with pytest.raises(ParameterError, match="unknown view"):
        render.resolve_view("sideways")


def test_scalar_range_percentile_and_symmetric() -> None:
    v, f = _square(4)
    values = np.arange(16.0)
    values[0] = np.nan
    layer = render.make_layer("skin", v, f, scalars=values)
    lo, hi = render._scalar_range([[layer]], None)
    assert lo == 0.0 and hi == pytest.approx(np.percentile(np.arange(1.0, 16.0), 99))
    signed = render.make_layer("skin", v, f, scalars=np.linspace(-4.0, 2.0, 16))
    lo, hi = render._scalar_range([[signed]], None)
    assert lo == -hi and hi == pytest.approx(-np.percentile(np.linspace(-4.0, 2.0, 16), 1))
    assert render._scalar_range([[layer]], (1.0, 3.0)) == (1.0, 3.0)
    with pytest.raises(ParameterError, match="high > low"):
        render._scalar_range([[layer]], (3.0, 1.0))


def test_bad_inputs_raise_typed_errors(tmp_path: Path) -> None:
    v, f = _square(4)
    with pytest.raises(ShapeError, match="one value per vertex"):
        render.render_errors({"skin": (v, f)}, {"skin": np.zeros(3)}, tmp_path / "e.png", backend="matplotlib")
    with pytest.raises(ShapeError, match=r"\(V, 3\)"):
        render.render_meshes({"skin": (v[:, :2], f)}, tmp_path / "e.png", backend="matplotlib")
    with pytest.raises(ParameterError, match="indices"):
        render.render_meshes({"skin": (v, f + 100)}, tmp_path / "e.png", backend="matplotlib")
    with pytest.raises(ParameterError, match="no mesh named"):
        render.render_meshes({"skin": (v, f)}, tmp_path / "e.png", translucent=["face"])
    with pytest.raises(ParameterError, match=".png"):
        render.render_meshes({"skin": (v, f)}, tmp_path / "e.jpg")
    with pytest.raises(ParameterError, match="no finite value"):
        render.render_errors({"skin": (v, f)}, {"skin": np.full(16, np.nan)}, tmp_path / "e.png")
    with pytest.raises(ParameterError, match="backend"):
        render.render_meshes({"skin": (v, f)}, tmp_path / "e.png", backend="opengl")
    assert not any(tmp_path.iterdir())


def test_heat_map_colours_follow_the_scalar(tmp_path: Path, pyvista_ok: None) -> None:
    from matplotlib import colormaps

    v, f = _square(30)
    path = render.render_errors({"plate": (v, f)}, {"plate": v[:, 0] + 50.0}, tmp_path / "heat.png",
                                view="front", clim=(0.0, 100.0), size=(300, 300), cmap="viridis")
    image = _png(path)
    assert image.shape == (300, 300, 3)
    cols = np.nonzero(_drawn(image[150, :232]))[0]  # the middle row, left of the colour bar (at 240)
    assert cols.max() - cols.min() > 150
    left, right = image[150, cols.min() + 3], image[150, cols.max() - 3]
    lo, hi = np.asarray(colormaps["viridis"](0.0))[:3], np.asarray(colormaps["viridis"](1.0))[:3]
    # seen from +y (the front) with +z up, +x (the high values) is on the image's left; lighting scales the
    # colour, so compare hues (unit RGB vectors)
    def hue(c: np.ndarray) -> np.ndarray:
        return np.asarray(c, dtype=np.float64) / np.linalg.norm(c)

    assert np.abs(hue(left) - hue(hi)).max() < 0.05 and np.abs(hue(right) - hue(lo)).max() < 0.05
    # the unlit colour bar holds the whole map: both ends appear to the right of the plate
    bar = image[:, 235:].reshape(-1, 3)
    assert np.abs(bar - lo).max(1).min() < 0.05 and np.abs(bar - hi).max(1).min() < 0.05


def test_framing_fits_every_panel(tmp_path: Path, pyvista_ok: None) -> None:
    v, f = _square(6)
    moved = v + np.array([0.0, 0.0, 30.0])
    path = render.render_layers([[render.make_layer("bone", v, f)], [render.make_layer("bone", moved, f)]],
                                tmp_path / "two.png", view="front", size=(200, 200))
    image = _png(path)
    assert image.shape == (200, 400, 3)
    for panel in (image[:, :200], image[:, 200:]):
        rows, cols = np.nonzero(_drawn(panel))
        assert rows.min() > 0 and rows.max() < 199 and cols.min() > 0 and cols.max() < 199  # nothing cut off
        assert (rows.max() - rows.min()) > 90  # and not lost in the middle
    # one camera for both panels: the raised plate sits higher in the second one
    assert np.nonzero(_drawn(image[:, 200:]))[0].min() < np.nonzero(_drawn(image[:, :200]))[0].min()


def test_translucent_skin_shows_the_bone(tmp_path: Path, pyvista_ok: None) -> None:
    v, f = _square(6)
    behind = v * 0.5 - np.array([0.0, 20.0, 0.0])  # a smaller plate behind the skin plate
    meshes = {"bone": (behind, f), "skin": (v, f)}
    opaque = _png(render.render_meshes(meshes, tmp_path / "a.png", view="front", size=(200, 200)))
    seen = _png(render.render_meshes(meshes, tmp_path / "b.png", view="front", size=(200, 200),
                                     translucent=["skin"]))
    centre, edge = (100, 100), (100, 100 + 70)  # over the bone / skin only
    assert np.abs(opaque[centre] - opaque[edge]).max() < 0.08  # the opaque skin hides the bone
    assert np.abs(seen[centre] - seen[edge]).max() > 0.08  # the bone shows through


def test_fallback_to_matplotlib_with_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "_PYVISTA_PROBLEM", ["pyvista is not installed (test)"])
    model = ArticulatedModel(make_toy_model_data())
    with torch.no_grad():
        out = model(torch.zeros(2, model.num_joints, 3))
    with pytest.warns(render.RenderFallbackWarning, match="not installed"):
        path = render.render_model(out, tmp_path / "toy.png")
    assert _drawn(_png(path)).mean() > 0.01
    v, f = _square(5)
    with pytest.warns(render.RenderFallbackWarning):
        heat = render.render_errors({"plate": (v, f)}, {"plate": np.where(v[:, 0] > 0, np.nan, 1.0)},
                                    tmp_path / "heat.png")
    assert _drawn(_png(heat)).mean() > 0.01
    with pytest.raises(OptionalDependencyError, match="backend='pyvista'"):
        render.render_meshes({"plate": (v, f)}, tmp_path / "x.png", backend="pyvista")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit matplotlib backend needs no note
        render.render_meshes({"plate": (v, f)}, tmp_path / "m.png", backend="matplotlib")


def test_model_render_toy(tmp_path: Path) -> None:
    model = ArticulatedModel(make_toy_model_data())
    with torch.no_grad():
        out = model(torch.zeros(3, model.num_joints, 3))
    path = render.render_model(out, tmp_path / "toy.png", samples=[0, 2], titles=["a", "b"], size=(160, 160))
    image = _png(path)
    assert image.shape[1] in (320, 2 * 160)  # two panels (pyvista) or the matplotlib figure
    with pytest.raises(ParameterError, match="samples"):
        render.render_model(out, tmp_path / "bad.png", samples=[3])
    with pytest.raises(ParameterError, match="no tissue"):
        render.render_model(out, tmp_path / "bad.png", tissues=["liver"])


def test_before_after_colours_by_displacement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v, f = _square(5)
    shift = np.zeros_like(v)
    shift[v[:, 0] > 0, 1] = 3.0  # half the plate moves 3 mm forward
    shift[v[:, 0] > 30, 2] = 4.0  # and part of it 4 mm up as well: 5 mm
    captured = {}

    def fake(panels, path, **options):
        captured["panels"], captured["options"] = panels, options
        return Path(path)

    monkeypatch.setattr(render, "render_layers", fake)
    render.render_before_after({"face": (v, f)}, {"face": (v + shift, f)}, tmp_path / "s.png")
    pre, post = captured["panels"]
    assert pre[0].scalars is None
    np.testing.assert_allclose(post[0].scalars, np.linalg.norm(shift, axis=1), atol=1e-12)
    assert set(np.round(post[0].scalars, 9)) == {0.0, 3.0, 5.0}
    assert captured["options"]["scalar_title"] == "change (mm)"
    render.render_before_after({"face": (v, f)}, {"face": (v + shift, f)}, tmp_path / "o.png", mode="overlay")
    (layers,) = captured["panels"]
    assert [layer.opacity for layer in layers] == [1.0, 0.25]
    monkeypatch.undo()
    with pytest.raises(ShapeError, match="topology"):
        render.render_before_after({"face": (v, f)}, {"face": (v[:-1], f[:10])}, tmp_path / "x.png")
    with pytest.raises(ParameterError, match="mode"):
        render.render_before_after({"face": (v, f)}, {"face": (v, f)}, tmp_path / "x.png", mode="blend")


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------

def test_read_fit_log_formats(tmp_path: Path) -> None:
    numbers = plots.read_fit_log([3.0, 2.0, 1.5])
    np.testing.assert_array_equal(numbers.series["loss"], [3.0, 2.0, 1.5])
    rows = plots.read_fit_log([{"iter": 10, "loss": 4.0, "stage": "rigid"}, {"iter": 20, "loss": 2.0, "error_mm": 1.0,
                                                                              "stage": "shape"}])
    np.testing.assert_array_equal(rows.x, [10.0, 20.0])
    np.testing.assert_array_equal(rows.series["error_mm"], [np.nan, 1.0])
    assert rows.stages == [(0, "rigid"), (1, "shape")]
    report = {"model_fit_log": [["rigid", 5.0], ["rigid", 3.0], ["all", 1.0]]}
    (tmp_path / "report.json").write_text(json.dumps(report))
    staged = plots.read_fit_log(tmp_path / "report.json")
    np.testing.assert_array_equal(staged.series["value"], [5.0, 3.0, 1.0])
    assert staged.stages == [(0, "rigid"), (2, "all")]
    columns = plots.read_fit_log({"step": [0, 5], "loss": [2.0, 1.0]})
    np.testing.assert_array_equal(columns.x, [0.0, 5.0])
    assert list(columns.series) == ["loss"]
    (tmp_path / "log.csv").write_text("iteration,loss\n0,1.0\n1,0.5\n")
    csv_log = plots.read_fit_log(tmp_path / "log.csv")
    np.testing.assert_array_equal(csv_log.series["loss"], [1.0, 0.5])
    with pytest.raises(ParameterError, match="unreadable"):
        plots.read_fit_log(["a", "b"])
    with pytest.raises(ParameterError, match="does not exist"):
        plots.read_fit_log(tmp_path / "missing.json")
    path = plots.plot_fit_log(rows, tmp_path / "fit.png")
    assert _drawn(_png(path)).mean() > 0.01


def test_space_variances_are_squared_norms_of_the_normalised_basis(tmp_path: Path) -> None:
    data = make_toy_model_data()
    basis = data.spaces["shape"].double()
    expected = (basis.reshape(basis.shape[0], -1) ** 2).sum(1).numpy()
    np.testing.assert_allclose(plots.space_variances(data)["shape"], expected, rtol=1e-12)
    # an orthogonal basis of known standard deviations gives exactly their squares
    sds = torch.tensor([3.0, 2.0, 0.5])
    eye = torch.zeros(3, data.num_vertices, 3)
    for k in range(3):
        eye[k, k, k] = sds[k]
    data.spaces["shape"] = eye
    var = plots.space_variances(data)["shape"]
    np.testing.assert_allclose(var, [9.0, 4.0, 0.25], rtol=1e-6)
    data.extras["pose_pca_basis"] = torch.eye(4)[:2] * 2.0
    data.extras["pose_pca_pm_std"] = torch.tensor([0.5, 0.1])
    np.testing.assert_allclose(plots.space_variances(data)["pose"], [1.0, 0.04], rtol=1e-6)
    path = plots.plot_variance(data, tmp_path / "var.png")
    assert _drawn(_png(path)).mean() > 0.01
    with pytest.raises(ParameterError, match="ModelData"):
        plots.space_variances(42)
