"""Model sub-commands: ``demo``, ``export``, ``convert``, ``info``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..core.errors import AnatomyError
from ..io import save_model, write_obj, write_ply, write_vtu
from ..io.official_nimble import mirror_hand_model_data, nimble_to_model_data, piano_to_model_data
from ..io.official_sculptor import sculptor_to_model_data
from ..models import ArticulatedModel, ModelOutput, Nimble, Sculptor
from .common import EPILOG, resolve_model, write_json


def _demo_poses(model: ArticulatedModel, count: int, seed: int) -> torch.Tensor:
    """Rest pose first, then smooth random bends that grow along each chain."""
    g = torch.Generator().manual_seed(seed)
    poses = torch.zeros(count, model.num_joints, 3)
    if count > 1:
        poses[1:, 1:] = (torch.rand(count - 1, model.num_joints - 1, 3, generator=g) - 0.5) * 0.2
        poses[1:, 1:, 0] = torch.linspace(0.3, 1.1, count - 1)[:, None]  # flexion about x
    return poses


def _write_meshes(out: ModelOutput, folder: Path, index: int) -> list[str]:
    written = []
    for layout in out.layout:
        verts = out.tissue(layout.name)[index].detach()
        obj = write_obj(folder / f"sample{index}_{layout.name}.obj", verts, layout.faces)
        ply = write_ply(folder / f"sample{index}_{layout.name}.ply", verts, layout.faces)
        written += [obj.name, ply.name]
        if layout.tets is not None:
            written.append(write_vtu(folder / f"sample{index}_{layout.name}.vtu", verts, layout.tets).name)
    return written


def _write_formatted(out: ModelOutput, model: ArticulatedModel, folder: Path, fmt: str, texture: bool,
                     skin_type: str, indices: range, stem: str) -> list[str]:
    """Meshes as glTF (.glb) or OBJ + MTL, with the model's albedo map when ``texture``."""
    from ..appearance import SkinAppearance, appearance, write_textured

    app = appearance(model) if texture else None
    params = None
    if isinstance(app, SkinAppearance):
        params = app.default_params(out.vertices.shape[0], skin_type=skin_type)
    written = []
    for b in indices:
        name = stem if len(indices) == 1 else f"{stem}{b}"
        written += [p.name for p in write_textured(out, folder, app=app, params=params, fmt=fmt, index=b,
                                                   stem=name)]
    return written


def _head_demo(samples: int, seed: int) -> ModelOutput:
    """The embedded default head: mean shape at rest, then random shapes, traits and expressions
    with the mouth opening to 30-90 % of the jaw's opening limit."""
    from ..core.rotations import matrix_to_axis_angle

    head = Sculptor()
    limits = head.jaw_limits()
    angles = torch.zeros(samples, 1, 3)
    if samples > 1:
        angles[1:, 0, 0] = torch.linspace(0.3, 0.9, samples - 1) * limits.upper[0, 0]
    jaw = matrix_to_axis_angle(limits.rotations(angles)[:, 0])
    g = torch.Generator().manual_seed(seed + 1)
    coeffs = {name: torch.randn(samples, k, generator=g) * 0.8 for name, k in head.space_sizes.items()}
    for value in coeffs.values():
        value[0] = 0.0
    with torch.no_grad():
        return head(**coeffs, jaw_pose=jaw)


def cmd_demo(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    model: ArticulatedModel
    if args.model == "head":
        out = _head_demo(args.samples, args.seed)
        model = Sculptor()
    else:
        if args.model == "hand":  # rest pose, then poses sampled within the hand's joint limits
            model = Nimble()
            sampled = model.sample_pose(args.samples, generator=torch.Generator().manual_seed(args.seed))
            poses = torch.cat([torch.zeros(1, 20, 3), sampled[1:]])
        else:
            model = ArticulatedModel(resolve_model(args.model))
            poses = _demo_poses(model, args.samples, args.seed)
        g = torch.Generator().manual_seed(args.seed + 1)
        coeffs = {name: torch.randn(args.samples, k, generator=g) * 0.8 for name, k in model.space_sizes.items()}
        with torch.no_grad():
            out = model(poses, **coeffs)
    files = []
    if args.format == "mesh":
        for b in range(args.samples):
            files += _write_meshes(out, folder, b)
    else:  # textured where the model has an appearance space (the hand, the head)
        texture = isinstance(model, (Nimble, Sculptor))
        files += _write_formatted(out, model, folder, args.format, texture, "light", range(args.samples), "sample")
    picture = None
    if not args.no_picture:
        from ..vis import render_output

        # the hand: dorsal view, fingers up; the head (RAS, face towards +y): three-quarter front view
        view = {"hand": (-55.0, 80.0), "head": (10.0, 60.0)}.get(args.model, (20.0, -60.0))
        picture = render_output(out, folder / "demo.png", titles=[f"sample {b}" for b in range(args.samples)],
                                view=view)
        files.append(picture.name)
    summary = {
        "model": args.model, "samples": args.samples, "units": "mm",
        "tissues": {t.name: t.stop - t.start for t in out.layout},
        "joints": list(out.joint_names), "files": files, "seconds": round(time.perf_counter() - start, 3),
    }
    write_json(folder / "summary.json", summary)
    print(f"wrote {len(files)} files to {folder} ({', '.join(summary['tissues'])}); "
          f"picture: {picture if picture else 'skipped'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Rest-pose (mean shape) meshes of every tissue: OBJ + PLY, and VTU for tetrahedral tissues;
    or one glTF (.glb) / OBJ + MTL set, with the skin's albedo map when ``--texture``."""
    if args.texture and args.format == "mesh":
        raise AnatomyError("--texture needs --format glb or --format obj (the plain mesh files carry no UVs).")
    model: ArticulatedModel
    if args.model == "hand":
        model = Nimble()
    elif args.model == "head":
        model = Sculptor()
    else:
        model = ArticulatedModel(resolve_model(args.model))
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        out = model()
    if args.format == "mesh":
        files = _write_meshes(out, folder, 0)
    else:
        files = _write_formatted(out, model, folder, args.format, args.texture, args.skin_type, range(1), "model")
    print(f"wrote {len(files)} files to {folder}: {', '.join(files)}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """An official NIMBLE / PIANO / SCULPTOR model file to our format (safetensors + JSON)."""
    source = Path(args.source)
    if not source.is_file():
        raise AnatomyError(f"official file {str(source)!r} does not exist; pass the path of the .pkl/.npy file.")
    if args.kind == "sculptor":
        if args.side == "left":
            raise AnatomyError("--side left is for the hand models; the head has no side.")
        data = sculptor_to_model_data(source, split_mandible=not args.no_split_mandible,
                                      length_scale=args.length_scale)
        if args.num_betas is not None:
            avail = int(data.spaces["shape"].shape[0])
            if not 0 <= args.num_betas <= avail:
                raise AnatomyError(f"--num-betas must be in [0, {avail}] (the file's shape components), "
                                   f"got {args.num_betas}.")
            data.spaces["shape"] = data.spaces["shape"][:args.num_betas]
    elif args.kind == "nimble":
        data = nimble_to_model_data(source, num_shape=20 if args.num_betas is None else args.num_betas)
    else:
        data = piano_to_model_data(source)
    if args.side == "left":
        data = mirror_hand_model_data(data)
    target = Path(args.out)
    if target.resolve() in (source.resolve(), source.with_suffix(".safetensors").resolve()):
        raise AnatomyError(f"--out {str(target)!r} would overwrite the input; choose another name.")
    data.meta.setdefault("provenance", {})["converted_from"] = source.name
    written = save_model(data, target, overwrite=args.overwrite)
    print(f"wrote {', '.join(str(w) for w in written)} ({data.num_vertices} vertices, {data.num_joints} joints)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    data = resolve_model(args.model)
    info = {
        "name": data.meta.get("name", args.model), "units": data.meta.get("units", "mm"),
        "vertices": data.num_vertices,
        "tissues": [{"name": t.name, "vertices": t.num_vertices, "faces": int(t.faces.shape[0]),
                     "tets": None if t.tets is None else int(t.tets.shape[0]), "parts": list(t.part_names)}
                    for t in data.tissues],
        "joints": [{"name": n, "parent": p} for n, p in zip(data.joint_names, data.parents)],
        "spaces": {k: int(v.shape[0]) for k, v in data.spaces.items()},
        "pose_correctives": 0 if data.pose_basis is None else int(data.pose_basis.shape[0]),
        "landmarks": list(data.landmark_names), "meta": data.meta,
    }
    print(json.dumps(info, indent=2, default=str))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``demo``, ``export``, ``convert`` and ``info`` to the command's sub-parsers."""
    demo = sub.add_parser("demo", help="pose a model, write meshes (OBJ/PLY/VTU) and a picture", epilog=EPILOG)
    demo.add_argument("--model", default="hand",
                      help="built-in model ('hand': the embedded default hand, 'toy': a 3-segment finger) or a file")
    demo.add_argument("--out", default="anatomy_demo", help="output folder (created; files replaced atomically)")
    demo.add_argument("--samples", type=int, default=3, help="number of posed samples (default 3)")
    demo.add_argument("--seed", type=int, default=0, help="random seed for poses and shapes")
    demo.add_argument("--no-picture", action="store_true", help="skip the PNG (no matplotlib needed)")
    demo.add_argument("--format", choices=["mesh", "glb", "obj"], default="mesh",
                      help="mesh: OBJ/PLY/VTU per tissue (default); glb: one glTF 2.0 file per sample; obj: OBJ + "
                           "MTL per sample (hand and head with their albedo texture)")
    demo.set_defaults(func=cmd_demo)
    export = sub.add_parser("export", help="write a model's rest meshes (OBJ/PLY/VTU per tissue, glTF, textured OBJ)",
                            epilog=EPILOG)
    export.add_argument("model", help="built-in model ('hand', 'toy') or a model file path")
    export.add_argument("--out", required=True, help="output folder (created; files replaced atomically)")
    export.add_argument("--format", choices=["mesh", "glb", "obj"], default="mesh",
                        help="mesh: OBJ/PLY (+VTU) per tissue (default); glb: one glTF 2.0 file, a node per tissue; "
                             "obj: OBJ per tissue + MTL")
    export.add_argument("--texture", action="store_true",
                        help="bake the skin (hand) / face (head) albedo map into its UV layout (--format glb|obj)")
    export.add_argument("--skin-type", choices=["light", "moderate", "dark"], default="light",
                        help="melanin of the albedo map: published mid-range fractions 0.03 / 0.13 / 0.30")
    export.set_defaults(func=cmd_export)
    convert = sub.add_parser("convert", help="convert an official NIMBLE/PIANO/SCULPTOR file to our model format",
                             epilog=EPILOG)
    convert.add_argument("source", help="official file, e.g. NIMBLE_DICT_9137.pkl or paradict.npy (read by a "
                                        "restricted unpickler)")
    convert.add_argument("--kind", choices=["nimble", "piano", "sculptor"], required=True,
                         help="which official model it is")
    convert.add_argument("--num-betas", type=int, default=None,
                         help="shape components to keep (NIMBLE: default 20, the released model's default; "
                              "SCULPTOR: default all 50)")
    convert.add_argument("--no-split-mandible", action="store_true",
                         help="SCULPTOR: keep the official [skull | face] stack (mandible as a skull part)")
    convert.add_argument("--length-scale", type=float, default=1.0,
                         help="SCULPTOR: multiply lengths by this (1 for a file in mm, 1000 for metres)")
    convert.add_argument("--side", choices=["right", "left"], default="right", help="left = mirrored model")
    convert.add_argument("--out", required=True, help="output model path (stem, .safetensors or .json)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing model at --out")
    convert.set_defaults(func=cmd_convert)
    info = sub.add_parser("info", help="print a model's layout, joints, spaces and metadata", epilog=EPILOG)
    info.add_argument("model", help="built-in model ('hand', 'toy') or a model file path")
    info.set_defaults(func=cmd_info)
