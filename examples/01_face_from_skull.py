"""Forensic facial reconstruction: predict a face from a skull.

Random heads from the embedded default head are moved into a random "scanner" frame; their bones
(skull + mandible, model topology) are written to an OBJ, read back by ``predict_face`` and the
predicted face is compared with the true one. Three figures:

1. recovery: noise-free bones, a negligible prior (1e-6) -> the face to < 1e-3 mm (the traits are
   drawn without the one direction no bone shows, mandibular advancement against setback);
2. the default prior (1 mm^2) on noise-free bones: the bias of the prior (skipped with --smoke);
3. 0.5 mm Gaussian noise per coordinate on the bones, default prior;

and the fit time per head. Run: ``python examples/01_face_from_skull.py [--heads 10] [--out DIR]``.
"""

from __future__ import annotations

import time

import torch
from _common import F64, errors, heads_in_scanner, move_points, parse_args

from anatomy import Sculptor, predict_face
from anatomy.fitting.targets import tissue_faces
from anatomy.io import write_obj


def main() -> None:
    args = parse_args(__doc__.splitlines()[1], heads=10)
    torch.set_num_threads(1)
    head = Sculptor(dtype=F64)
    truth, out, rot, transl = heads_in_scanner(head, args, hidden=False)
    bones = move_points(torch.cat([out.skull, out.mandible], 1), rot, transl)
    true_face = move_points(out.face, rot, transl)
    faces = tissue_faces(head, ("skull", "mandible"))
    paths = [write_obj(args.out / f"bones_scanner_{i}.obj", bones[i], faces) for i in range(args.heads)]

    start = time.perf_counter()
    fits = [predict_face(p, head, prior_weight=1e-6) for p in paths]  # read back from the files
    seconds = (time.perf_counter() - start) / args.heads
    face = torch.cat([f.face for f in fits])
    mean, worst = errors(face, true_face)
    rms = max(float(f.rms_mm.max()) for f in fits)
    print(f"recovery (no noise, prior 1e-6): face error mean {mean:.2e} mm, max {worst:.2e} mm; bone rms <= "
          f"{rms:.1e} mm; {seconds:.2f} s per head ({args.heads} heads)")
    write_obj(args.out / "face_predicted_0.obj", face[0], head.layout[2].faces)
    write_obj(args.out / "face_true_0.obj", true_face[0], head.layout[2].faces)

    if not args.smoke:
        fit = predict_face(bones, head)
        mean, worst = errors(fit.face, true_face)
        print(f"default prior (1 mm^2), no noise: face error mean {mean:.3f} mm, max {worst:.3f} mm")
    noise = 0.5 * torch.randn(bones.shape, generator=torch.Generator().manual_seed(args.seed + 7), dtype=F64)
    start = time.perf_counter()
    fit = predict_face(bones + noise, head)
    seconds = (time.perf_counter() - start) / args.heads
    mean, worst = errors(fit.face, true_face)
    print(f"0.5 mm noise, default prior: face error mean {mean:.3f} mm, max {worst:.3f} mm; residual rms "
          f"{float(fit.rms_mm.mean()):.3f} mm; {seconds:.2f} s per head")
    print(f"outputs in {args.out}")


if __name__ == "__main__":
    main()
