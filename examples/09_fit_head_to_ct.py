"""Fit the head to a CT: a LUCY-like phantom CT in, skull, mandible and face in the model's topology out.

One subject of :func:`anatomy.scans.make_head_dataset` (a random head of the embedded default head before a
planned orthognathic surgery, with amalgam fillings in some subjects) is written as a NIfTI CT with its true
meshes. ``anatomy.fit("head", "ct.nii.gz")`` segments the CT (skin, skull, mandible), extracts the surfaces
and fits the layer's shape, trait, jaw and pose to them (``fit_model_to_surfaces``). Printed: the mean
distance of each fitted tissue's vertices to their true positions (mm; sliding along the surface counts)
and the seconds. Written: the fitted meshes (PLY) and parameters (JSON).
The same runs from the command line: ``anatomy fit --model head --target ct.nii.gz --out DIR``.
Run: ``python examples/09_fit_head_to_ct.py [--spacing 1.0] [--out DIR]``.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from _common import base_parser, out_folder

import anatomy
from anatomy.io import read_mesh, write_ply
from anatomy.scans import make_head_dataset


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--spacing", type=float, default=1.0, help="CT voxel size in mm (default 1.0)")
    args = parser.parse_args()
    out = out_folder(args)
    torch.set_num_threads(1)
    spacing = 3.0 if args.smoke else args.spacing
    make_head_dataset(out / "ct", 1, spacing=spacing, seed=args.seed)
    scan = out / "ct" / "sub-000" / "ses-pre"
    print(f"phantom CT at {spacing} mm: {scan / 'ct.nii.gz'}")
    options = {"outer": 2, "inner": 15, "max_points": 1500} if args.smoke else {}
    res = anatomy.fit("head", scan / "ct.nii.gz", **options)
    for tissue in res.output.tissue_names:
        fitted = res.output.tissue(tissue)[0].detach().double().numpy()
        true = np.asarray(read_mesh(scan / f"{tissue}.ply")[0], dtype=np.float64)
        print(f"  {tissue:<9} mean vertex error {np.linalg.norm(fitted - true, axis=1).mean():.2f} mm")
        write_ply(out / f"fitted_{tissue}.ply", fitted, res.output.faces(tissue))
    (out / "params.json").write_text(json.dumps({k: v[0].tolist() for k, v in res.params.items()}, indent=1))
    print(f"fitted in {res.report['seconds']:.0f} s")
    print(f"outputs in {out}")


if __name__ == "__main__":
    main()
