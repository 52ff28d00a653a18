"""Generate a small phantom dataset: MRI-Hand-like hand MRIs and LUCY-like head CTs with known answers.

:func:`anatomy.scans.make_hand_dataset` poses random hands (shape ~ N(0, 1), joint angles inside the
limits), turns each into a label map with partial volume and a T1-weighted MRI (bias field, Rician
noise); :func:`anatomy.scans.make_head_dataset` draws random heads, applies a planned orthognathic
surgery and writes a CT before and after it (with amalgam streaks for some subjects). Every sample
keeps its ground truth: the meshes (PLY, mm), the parameters and keypoints (JSON), and the manifest
lists it all (``datasets/README.md``). Printed: what was written, then for each sample the grid,
the spacing and the mean intensity per tissue label read back from the files; one slice picture
per dataset (labels over the image, with the true surfaces).
Run: ``python examples/06_phantom_dataset.py [--subjects 2] [--poses 3] [--spacing 1.0] [--out DIR]``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from _common import base_parser, out_folder

from anatomy.io import read_mesh
from anatomy.scans import make_hand_dataset, make_head_dataset, read_volume
from anatomy.vis import render_slices


def summarise(root: Path, image_key: str, surfaces: bool) -> None:
    """Read the dataset back: per sample the grid, spacing and mean intensity per label; one picture
    (with the true surfaces in a 3D panel when ``surfaces``)."""
    manifest = json.loads((root / "manifest.json").read_text())
    codes = {v: k for k, v in manifest["label_codes"].items()}
    print(f"  {manifest['name']}: {manifest['num_samples']} samples, {manifest['modality']}, "
          f"spacing {manifest['spacing_mm']} mm")
    for sample in manifest["samples"]:
        files = sample["files"]
        image, labels = read_volume(root / files[image_key]), read_volume(root / files["labels"])
        means = {codes[int(c)]: float(np.asarray(image.data)[np.asarray(labels.data) == c].mean())
                 for c in np.unique(np.asarray(labels.data))}
        cells = ", ".join(f"{k} {v:.0f}" for k, v in means.items())
        print(f"    {sample['subject']}/{sample['session']}: grid {tuple(image.data.shape)}, mean {cells}")
    first = manifest["samples"][0]["files"]
    names = ("skin", "bones", "skull", "mandible") if surfaces else ()
    meshes = {k: read_mesh(root / first[k]) for k in names if k in first}
    picture = render_slices(read_volume(root / first[image_key]), read_volume(root / first["labels"]),
                            root / "slices.png",
                            surfaces={k: (m.vertices, m.faces) for k, m in meshes.items()} or None)
    print(f"    picture: {picture}")


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=2, help="subjects per dataset (default 2)")
    parser.add_argument("--poses", type=int, default=3, help="hand poses per subject (default 3)")
    parser.add_argument("--spacing", type=float, default=1.0, help="voxel size in mm (default 1.0)")
    args = parser.parse_args()
    out = out_folder(args)
    torch.set_num_threads(1)
    if args.smoke:  # coarse grids, one subject each
        args.subjects, args.poses, args.spacing = 1, 1, 3.0
    hand = make_hand_dataset(out / "hand_mri", args.subjects, poses=args.poses, spacing=args.spacing,
                             seed=args.seed, soft_tissue="skinning", supersample=1 if args.smoke else 2)
    print(f"hand MRIs: {hand.num_samples} samples, {hand.bytes / 1e6:.1f} MB in {hand.seconds:.1f} s")
    summarise(hand.root, "mri", not args.smoke)
    head = make_head_dataset(out / "head_ct", args.subjects, spacing=args.spacing, seed=args.seed,
                             supersample=1 if args.smoke else 2)
    print(f"head CTs: {head.num_samples} samples, {head.bytes / 1e6:.1f} MB in {head.seconds:.1f} s")
    summarise(head.root, "ct", not args.smoke)
    print(f"outputs in {out}")


if __name__ == "__main__":
    main()
