"""Orthognathic surgery simulation: the face after a planned jaw movement.

A patient's skull (a random head of the embedded default head, in a random "scanner" frame, read
back from an OBJ) is fitted with ``predict_face``; ``simulate_surgery`` then applies a 5 mm
mandibular advancement (and, without --smoke, a 2 mm maxillary impaction on top) and reports how
far the bony and soft-tissue landmarks move, the soft-to-hard tissue ratio at the chin against the
ratio the model was built with (``meta["trait_components"]``), and the largest and mean face change.
The pre- and post-operative faces are written as OBJ, the post-operative face with the change
along the surface normal as vertex colours (red outwards, blue inwards) as PLY.
Run: ``python examples/03_surgery_simulation.py [--out DIR]``.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from _common import F64, move_points, parse_args, random_heads, scanner_frame

from anatomy import Sculptor, predict_face, simulate_surgery
from anatomy.fitting.targets import tissue_faces
from anatomy.io import write_obj, write_ply


def main() -> None:
    args = parse_args(__doc__.splitlines()[1], heads=1)
    torch.set_num_threads(1)
    head = Sculptor(dtype=F64)
    truth = random_heads(head, 1, args.seed)
    rot, transl = scanner_frame(1, args.seed)
    with torch.no_grad():
        out = head(**truth)
    bones = move_points(torch.cat([out.skull, out.mandible], 1), rot, transl)[0]
    path = write_obj(args.out / "patient_bones.obj", bones, tissue_faces(head, ("skull", "mandible")))
    fit = predict_face(path, head)
    print(f"patient fitted in {fit.seconds:.2f} s (bone rms {float(fit.rms_mm[0]):.3f} mm)")

    plans = [{"mandibular_advancement": 5.0}]
    if not args.smoke:
        plans.append({"mandibular_advancement": 5.0, "maxillary_impaction": 2.0})
    meta = {c["name"]: c for c in head.data_meta["trait_components"]}
    for plan in plans:
        start = time.perf_counter()
        result = simulate_surgery(fit.params, plan, head)
        seconds = time.perf_counter() - start
        print(f"plan {plan} ({seconds * 1000:.0f} ms):")
        for name in ("pogonion", "prosthion", "soft_pogonion", "labrale_inferius", "labrale_superius", "subnasale"):
            print(f"  {name:18s} moves {float(result.landmark_change_mm(name)[0]):6.3f} mm")
        ratio = float(result.landmark_change_mm("soft_pogonion")[0] / result.landmark_change_mm("pogonion")[0])
        built = meta["mandibular_advancement"]["soft_tissue_ratio_realised"]["soft_pogonion"]
        print(f"  soft/hard pogonion ratio {ratio:.3f} (model built with {built:.3f} at its control vertex); face "
              f"change max {float(result.change_mm.max()):.2f} mm, mean {float(result.change_mm.mean()):.2f} mm")
    faces = head.layout[2].faces
    write_obj(args.out / "face_pre.obj", result.pre.face[0], faces)
    write_obj(args.out / "face_post.obj", result.post.face[0], faces)
    normal = result.change_normal_mm[0].numpy()
    u = np.clip(normal / max(float(np.abs(normal).max()), 1e-9), -1.0, 1.0)[:, None]
    colours = np.where(u >= 0, 1.0 - u * [0.0, 1.0, 1.0], 1.0 + u * [1.0, 1.0, 0.0])
    write_ply(args.out / "face_post_change.ply", result.post.face[0], faces, vertex_colors=colours)
    print(f"outputs in {args.out}")


if __name__ == "__main__":
    main()
