"""``anatomy render`` (a picture of a model or of a mesh folder) and ``anatomy sample`` (random instances)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import ParameterError
from ..io import read_mesh, write_ply, write_vtu
from ..models import ArticulatedModel, Nimble, Sculptor
from .common import EPILOG, new_out_folder, resolve_model, write_json

UNITS = "mm, radians (axis-angle)"
_RANK = {"pose": 3, "scale": 1}  # every other parameter is (B, k)
_MAX_PANELS = 8


def _layer(spec: str) -> tuple[str, ArticulatedModel]:
    """``(kind, layer)``: the hand and head layers for their models, else a generic articulated model."""
    if spec == "hand":
        return "hand", Nimble()
    if spec == "head":
        return "head", Sculptor()
    data = resolve_model(spec)
    names = {t.name for t in data.tissues}
    if {"skull", "mandible", "face"} <= names:
        return "head", Sculptor(data)
    if {"bones", "skin"} <= names and len(data.joint_names) == 25:
        return "hand", Nimble(data)
    return "generic", ArticulatedModel(data)


def _accepted(kind: str, layer: ArticulatedModel) -> set[str]:
    common = {"global_orient", "transl", "scale"}
    if kind == "hand":
        return common | {"pose", "shape"}
    if kind == "head":
        return common | {"jaw_pose", "jaw_offset"} | set(layer.space_sizes)
    return common | {"pose", "joint_offsets"} | set(layer.space_sizes)


def load_params(path: str, kind: str, layer: ArticulatedModel) -> dict[str, torch.Tensor]:
    """Layer keyword arguments from a ``params.json`` (of ``anatomy register``/``sample``, a ``fit.json`` of
    the head commands, or a plain ``{name: values}`` table); a missing batch dimension is added."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        table = doc["params"] if isinstance(doc, dict) and isinstance(doc.get("params"), dict) else doc
        params = {str(k): torch.tensor(v, dtype=layer.template.dtype) for k, v in table.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ParameterError(f"--params {path!r}: expected a JSON table of layer parameters (a params.json of "
                             f"anatomy register/sample or a fit.json), could not read it ({exc}).") from exc
    unknown = sorted(set(params) - _accepted(kind, layer))
    if unknown:
        raise ParameterError(f"--params {path!r} has parameter(s) {unknown} that this {kind} model does not take; "
                             f"it takes {sorted(_accepted(kind, layer))}.")
    for name, value in params.items():
        if value.dim() == _RANK.get(name, 2) - 1:
            params[name] = value.unsqueeze(0)
    return params


def _forward(kind: str, layer: ArticulatedModel, params: dict[str, torch.Tensor]) -> Any:
    with torch.no_grad():
        if kind == "head":
            return layer(**params, jaw_range="ignore")
        return layer(**params)


def _mesh_folder(folder: Path, sample: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{tissue: (vertices, faces)}`` from ``<tissue>.ply`` (register/sample folders) or
    ``sample<i>_<tissue>.ply`` (``anatomy demo`` folders)."""
    if not folder.is_dir():
        raise ParameterError(f"--mesh-dir {str(folder)!r} is not a folder; pass the output folder of anatomy "
                             f"register, sample or demo.")
    prefix = f"sample{sample}_"
    files = sorted(folder.glob(f"{prefix}*.ply")) or sorted(p for p in folder.glob("*.ply")
                                                            if not p.name.startswith("sample"))
    if not files:
        raise ParameterError(f"--mesh-dir {str(folder)!r} holds no <tissue>.ply or {prefix}<tissue>.ply meshes.")
    meshes = {}
    for file in files:
        mesh = read_mesh(file)
        if mesh.faces.shape[1] != 3:
            raise ParameterError(f"{file} has {mesh.faces.shape[1]}-sided faces; only triangle meshes are drawn.")
        meshes[file.stem.removeprefix(prefix)] = (mesh.vertices, mesh.faces)
    return meshes


def _residuals(path: str, meshes: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            errors = {k: np.asarray(npz[k], dtype=np.float64) for k in npz.files}
    except (OSError, ValueError) as exc:
        raise ParameterError(f"--errors {path!r}: expected the residuals.npz of anatomy register (one array "
                             f"per tissue), could not read it ({exc}).") from exc
    errors = {k: v for k, v in errors.items() if k in meshes and np.isfinite(v).any()}
    if not errors:
        raise ParameterError(f"--errors {path!r} has no finite error for the meshes drawn ({sorted(meshes)}).")
    for name, values in errors.items():
        if values.shape != (len(meshes[name][0]),):
            raise ParameterError(f"--errors {path!r}: {name!r} has {values.shape} values but the mesh has "
                                 f"{len(meshes[name][0])} vertices; pass the residuals written with these meshes.")
    return errors


def _view(text: str | None) -> str | tuple[float, float] | None:
    if text is None or "," not in text:
        return text
    try:
        elev, azim = (float(x) for x in text.split(","))
    except ValueError as exc:
        raise ParameterError(f"--view {text!r}: expected a view name or ELEV,AZIM in degrees (e.g. 20,-60).") from exc
    return elev, azim


def _draw(render: Any, *args: Any, **kwargs: Any) -> Path:
    """Run a renderer, reporting a matplotlib fallback as a one-line note on stderr."""
    from ..vis.render import RenderFallbackWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RenderFallbackWarning)
        path: Path = render(*args, **kwargs)
    for w in caught:
        if issubclass(w.category, RenderFallbackWarning):
            print(f"anatomy: note: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return path


def cmd_render(args: argparse.Namespace) -> int:
    from ..vis.render import render_errors, render_meshes, render_model

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ParameterError(f"--out {args.out!r} must be a .png file.")
    if out.exists() and not args.overwrite:
        raise ParameterError(f"--out {args.out!r} exists; pass --overwrite to replace it or choose another name.")
    if args.mesh_dir is None and args.model is None:
        raise ParameterError("pass --model (hand, head or a model file) or --mesh-dir (a folder of meshes).")
    if args.mesh_dir is not None and args.params is not None:
        raise ParameterError("--params poses a --model; a --mesh-dir is drawn as it is: pass one of them.")
    view = _view(args.view)
    options: dict[str, Any] = {"view": view, "backend": args.backend, "size": (args.size, args.size)}
    translucent = args.translucent
    if args.mesh_dir is not None:
        meshes = _mesh_folder(Path(args.mesh_dir), args.sample)
        names = set(meshes)
        kind = "head" if {"skull", "face"} <= names else "hand" if {"bones", "skin"} <= names else None
        outer = [n for n in ("skin", "face") if n in meshes]
        translucent = outer if translucent is None else translucent
        title = Path(args.mesh_dir).name
    else:
        kind, layer = _layer(args.model)
        params = load_params(args.params, kind, layer) if args.params else {}
        output = _forward(kind, layer, params)
        if args.errors is None:
            picture = _draw(render_model, output, out, translucent=translucent, kind=kind, tissues=args.tissues,
                            samples=list(range(min(output.batch_size, _MAX_PANELS))), **options)
            print(f"wrote {picture} ({kind} model, {min(output.batch_size, _MAX_PANELS)} sample(s))")
            return 0
        meshes = {n: (output.tissue(n)[0].numpy(), output.faces(n).numpy()) for n in output.tissue_names}
        translucent = list(output.tissue_names[-1:]) if translucent is None else translucent
        title = args.model
    unknown = [n for n in list(translucent) + list(args.tissues or []) if n not in meshes]
    if unknown:
        raise ParameterError(f"--translucent/--tissues {unknown}: no such mesh; the meshes are {sorted(meshes)}.")
    if args.tissues:
        meshes = {n: meshes[n] for n in args.tissues}
        translucent = [n for n in translucent if n in meshes]
    options["kind"] = kind
    if args.errors is not None:
        errors = _residuals(args.errors, meshes)
        context = [n for n in translucent if n not in errors]
        picture = _draw(render_errors, meshes, errors, out, context=context, title=title, **options)
        finite = np.concatenate([v[np.isfinite(v)] for v in errors.values()])
        print(f"wrote {picture} (error of {', '.join(errors)}: mean {finite.mean():.3f} mm, "
              f"max {finite.max():.3f} mm over {finite.size} vertices)")
    else:
        picture = _draw(render_meshes, meshes, out, translucent=translucent, title=title, **options)
        print(f"wrote {picture} ({', '.join(meshes)})")
    return 0


def sample_params(layer: ArticulatedModel, count: int, seed: int, shape_sd: float) -> dict[str, torch.Tensor]:
    """Random layer inputs: the hand's joint angles uniform inside its limits, the head's
    :meth:`~anatomy.Sculptor.sample` (jaw inside its limits), linear spaces ``N(0, shape_sd^2)``
    (the head's trait U(-1, 1) and expression U(0, 1)); a generic model stays at rest pose."""
    g = torch.Generator().manual_seed(seed)
    if isinstance(layer, Sculptor):
        params = layer.sample(count, generator=g)
        if "shape" in params:
            params["shape"] = params["shape"] * shape_sd
        return params
    params = {}
    if isinstance(layer, Nimble) and layer.has_joint_limits:
        params["pose"] = layer.sample_pose(count, generator=g)
    for name, k in layer.space_sizes.items():
        params[name] = torch.randn(count, k, generator=g, dtype=torch.float64).to(layer.template.dtype) * shape_sd
    return params


def cmd_sample(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if not 1 <= args.count <= 10_000:
        raise ParameterError(f"--count must be in [1, 10000], got {args.count}.")
    if args.seed < 0:
        raise ParameterError(f"--seed must be >= 0, got {args.seed}.")
    if not args.shape_sd >= 0:
        raise ParameterError(f"--shape-sd must be >= 0, got {args.shape_sd}.")
    folder = new_out_folder(args.out, create=False)
    kind, layer = _layer(args.model)
    params = sample_params(layer, args.count, args.seed, args.shape_sd)
    note = "" if "pose" in params or kind == "head" else " (no joint limits: rest pose)"
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for b in range(args.count):
        one = {k: v[b:b + 1] for k, v in params.items()}
        out = _forward(kind, layer, one)
        sub = folder / f"sample{b:03d}"
        sub.mkdir()
        for t in out.layout:
            verts = out.tissue(t.name)[0]
            files.append(write_ply(sub / f"{t.name}.ply", verts, t.faces))
            if t.tets is not None:
                files.append(write_vtu(sub / f"{t.name}.vtu", verts, t.tets))
        files.append(write_json(sub / "params.json", {
            "model": args.model, "kind": kind, "units": UNITS, "seed": args.seed, "index": b,
            "params": {k: v.double().tolist() for k, v in one.items()}}))
    picture = None
    if args.picture:
        from ..vis.render import render_model

        shown = min(args.count, _MAX_PANELS)
        with torch.no_grad():
            out = _forward(kind, layer, {k: v[:shown] for k, v in params.items()})
        picture = _draw(render_model, out, folder / "samples.png", kind=None if kind == "generic" else kind,
                        titles=[f"sample{b:03d}" for b in range(shown)], backend=args.backend)
        files.append(picture)
    write_json(folder / "summary.json", {
        "model": args.model, "kind": kind, "count": args.count, "seed": args.seed, "shape_sd": args.shape_sd,
        "units": UNITS, "parameters": sorted(params), "files": [str(f.relative_to(folder)) for f in files],
        "seconds": round(time.perf_counter() - start, 3)})
    print(f"wrote {args.count} {kind} sample(s){note} to {folder} (params.json + meshes per tissue in "
          f"sample000..sample{args.count - 1:03d}); picture: {picture if picture else 'skipped'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``render`` and ``sample`` to the command's sub-parsers."""
    from ..vis.render import VIEWS

    views = ", ".join(sorted(VIEWS))
    r = sub.add_parser(
        "render", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="render a model (at given parameters) or a folder of meshes to a PNG, optionally coloured by errors",
        description="Render off-screen to a PNG (pyvista; matplotlib with a note when pyvista cannot render).\n"
                    "  --model M [--params params.json]   the model posed at the parameters (default: rest, mean)\n"
                    "  --mesh-dir DIR                      the <tissue>.ply of an anatomy register/sample folder,\n"
                    "                                      or sample<i>_<tissue>.ply of an anatomy demo folder\n"
                    "  --errors residuals.npz              colour each tissue by its per-vertex error (mm; NaN grey)\n"
                    "Parameters: axis-angle rotations in radians (pose rows, jaw_pose, global_orient), transl and\n"
                    "jaw_offset in mm, normalised space coefficients (shape ~ N(0, 1)). Coordinates in mm, in the\n"
                    "model's frame (head RAS+: +x right, +y anterior, +z superior; hand: +x radial, +y distal,\n"
                    "+z palmar).")
    r.add_argument("--model", default=None, help="'hand', 'head', 'toy' or a model file")
    r.add_argument("--params", default=None, help="params.json / fit.json with the layer's parameters")
    r.add_argument("--mesh-dir", default=None, help="folder of meshes written by anatomy register, sample or demo")
    r.add_argument("--sample", type=int, default=0, help="which sample of an anatomy demo folder (default 0)")
    r.add_argument("--errors", default=None, help="residuals.npz: per-vertex error per tissue (mm), colour bar in mm")
    r.add_argument("--out", required=True, help="the PNG to write (refused if it exists, unless --overwrite)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    r.add_argument("--view", default=None,
                   help=f"camera: one of {views}, or ELEV,AZIM in degrees (matplotlib's convention, +z up); "
                        f"default: dorsal-oblique for the hand, oblique for the head")
    r.add_argument("--translucent", nargs="*", default=None, metavar="TISSUE",
                   help="tissues drawn see-through (default: the outermost, skin or face)")
    r.add_argument("--tissues", nargs="+", default=None, metavar="TISSUE",
                   help="draw only these tissues (default: all), e.g. --tissues skull mandible")
    r.add_argument("--size", type=int, default=700, help="pixels per panel (default 700)")
    r.add_argument("--backend", choices=("auto", "pyvista", "matplotlib"), default="auto",
                   help="renderer (default auto: pyvista, else matplotlib with a note)")
    r.set_defaults(func=cmd_render)
    s = sub.add_parser(
        "sample", epilog=EPILOG,
        help="random plausible instances of a model: params.json + meshes per tissue per sample",
        description="Draw random instances inside the model's joint limits and spaces: the hand's joint angles "
                    "uniform inside its anatomical limits (radians; fingers may cross) with shape ~ N(0, sd^2); the "
                    "head's shape ~ N(0, sd^2), trait ~ U(-1, 1), expression ~ U(0, 1) and the jaw uniform inside "
                    "its limits. Writes DIR/sampleNNN/{params.json, <tissue>.ply (mm), <tissue>.vtu for "
                    "tetrahedral tissues} and DIR/summary.json; the same --seed gives the same samples.")
    s.add_argument("--model", default="hand", help="'hand', 'head', 'toy' or a model file (default hand)")
    s.add_argument("--count", type=int, default=10, help="number of samples (default 10)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--shape-sd", type=float, default=1.0,
                   help="standard deviation of the shape coefficients (normalised units; default 1)")
    s.add_argument("--out", required=True, help="output folder (new or empty; created)")
    s.add_argument("--picture", action="store_true", help=f"also render the first {_MAX_PANELS} samples to samples.png")
    s.add_argument("--backend", choices=("auto", "pyvista", "matplotlib"), default="auto",
                   help="renderer of --picture (default auto)")
    s.set_defaults(func=cmd_sample)


__all__ = ["cmd_render", "cmd_sample", "load_params", "register", "sample_params"]
