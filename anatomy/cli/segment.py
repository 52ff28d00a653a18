"""``anatomy segment``: a CT/MRI scan (or a label map) to tissue labels, surfaces, a picture and a summary."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from ..core.errors import AnatomyError, OptionalDependencyError, ParameterError
from ..io import write_ply
from ..scans import read_volume, write_nifti
from ..scans.labelmap import Tissue
from ..scans.tissues import segment_scan, tissue_surfaces
from .common import EPILOG, new_out_folder, write_json


def _mapping(values: Sequence[str] | None) -> dict[int, str] | str | None:
    """``--labels``: ``phantom`` or VALUE=TISSUE pairs."""
    if not values:
        return None
    if list(values) == ["phantom"]:
        return "phantom"
    names = [t.name.lower() for t in Tissue]
    out: dict[int, str] = {}
    for text in values:
        value, sep, tissue = text.partition("=")
        if not sep or not value.strip().lstrip("-").isdigit() or tissue.lower() not in names:
            raise ParameterError(f"--labels {text!r}: expected 'phantom' or VALUE=TISSUE pairs with TISSUE one of "
                                 f"{names}, e.g. --labels 1=skin 2=bone 7=mandible.")
        out[int(value)] = tissue.lower()
    return out


def cmd_segment(args: argparse.Namespace) -> int:
    """Segment a scan; write labels.nii.gz, one PLY per tissue, segmentation.png and summary.json."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    if args.vertices is not None and args.vertices < 4:
        raise ParameterError(f"--vertices must be at least 4; got {args.vertices}.")
    mapping = _mapping(args.labels)
    new_out_folder(args.out, create=False)  # refuse a non-empty --out before any work
    scan = Path(args.scan)
    modality = "labels" if mapping is not None else args.modality
    volume = read_volume(scan, spacing=args.spacing, modality=modality)
    timings["read"] = time.perf_counter() - start
    t0 = time.perf_counter()
    seg = segment_scan(volume, args.modality, split_jaw=args.jaw != "none", jaw_method=args.jaw, label_mapping=mapping)
    timings["segment"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    surfaces, per_tissue = tissue_surfaces(seg, target_vertices=args.vertices)
    timings["surfaces"] = time.perf_counter() - t0
    if not surfaces:
        raise AnatomyError("segment: no tissue found, nothing to write.")
    folder = new_out_folder(args.out, create=True)
    t0 = time.perf_counter()
    files = [write_nifti(seg.labels, folder / "labels.nii.gz", labels=True).name]
    for name, surface in surfaces.items():
        files.append(write_ply(folder / f"{name}.ply", surface.vertices, surface.faces).name)
    picture = None
    if not args.no_picture:
        try:
            from ..vis import render_slices

            meshes = {name: (s.vertices, s.faces) for name, s in surfaces.items()}
            shown = seg.labels if mapping is not None else volume
            picture = render_slices(shown, seg.labels, folder / "segmentation.png", surfaces=meshes,
                                    planes=("sagittal", "coronal", "axial"), plain=True).name
            files.append(picture)
        except OptionalDependencyError as exc:
            seg.notes.append(f"picture skipped: {exc}")
    timings["write"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - start
    summary = {
        "scan": str(scan), "modality": args.modality, "units": "mm (world, RAS+)",
        "shape": list(volume.shape), "spacing_mm": [float(s) for s in volume.spacing],
        "orientation": volume.orientation, "label_codes": {t.name.lower(): int(t) for t in Tissue},
        "thresholds": seg.thresholds, "volumes_mm3": seg.volumes_mm3, "notes": seg.notes,
        "surfaces": {name: {"file": f"{name}.ply", "vertices": int(len(s.vertices)), "faces": int(len(s.faces)),
                            "enclosed_volume_mm3": float(s.enclosed_volume), "seconds": round(per_tissue[name], 3)}
                     for name, s in surfaces.items()},
        "files": files + ["summary.json"], "seconds": {k: round(v, 3) for k, v in timings.items()},
    }
    write_json(folder / "summary.json", summary)
    missing = [n for n in ("skin", "skull", "mandible") if n not in surfaces]
    print(f"segmented {scan.name} ({'x'.join(map(str, volume.shape))}) in {timings['total']:.1f} s: "
          + ", ".join(f"{n} {len(s.vertices)} v" for n, s in surfaces.items())
          + (f"; not found: {', '.join(missing)}" if missing else "") + f"; wrote {len(files) + 1} files to {folder}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``segment`` to the command's sub-parsers."""
    seg = sub.add_parser("segment", help="CT/MRI scan (or label map) to tissue labels, surfaces and a summary",
                         epilog=EPILOG)
    seg.add_argument("scan", help="a NIfTI/NRRD/MHA file, a DICOM file or series folder, or a folder of PNG/TIFF "
                                  "slices (then --spacing)")
    seg.add_argument("--modality", choices=["ct", "mri"], required=True,
                     help="ct: skin, skull, mandible (HU or windowed 8-bit); mri: skin")
    seg.add_argument("--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"), default=None,
                     help="voxel size in mm of a PNG/TIFF slice stack (e.g. 0.48 0.48 1)")
    seg.add_argument("--out", required=True, help="output folder (new or empty; created)")
    seg.add_argument("--labels", nargs="+", default=None, metavar="MAP",
                     help="SCAN is a label map: 'phantom' (codes of anatomy phantoms) or VALUE=TISSUE pairs "
                          "(tissues: skin, bone, mandible; other non-zero values become soft tissue)")
    seg.add_argument("--jaw", choices=["template", "opening", "none"], default="template",
                     help="how the mandible is split from the skull: 'template' (the default head aligned to the "
                          "bone), 'opening' (openings until the bone falls apart) or 'none' (kept in the skull)")
    seg.add_argument("--vertices", type=int, default=30_000,
                     help="about this many vertices per surface (default 30000)")
    seg.add_argument("--no-picture", action="store_true", help="skip segmentation.png (no matplotlib needed)")
    seg.set_defaults(func=cmd_segment)
