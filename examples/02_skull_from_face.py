"""The bones under a face: predict the skull and mandible from a face surface.

Random heads of the embedded default head, with a random expression and an opened jaw, are moved
into a random "scanner" frame; their faces (model topology) are written to a PLY, read back by
``predict_skull`` (shape, trait, expression, jaw and the rigid pose are fitted) and the predicted
bones are compared with the true ones: recovery with a negligible prior, then 0.5 mm Gaussian noise
per coordinate with the default prior, and the fit time per head.
Run: ``python examples/02_skull_from_face.py [--heads 10] [--out DIR]``.
"""

from __future__ import annotations

import time

import torch
from _common import F64, errors, heads_in_scanner, move_points, parse_args

from anatomy import Sculptor, predict_skull
from anatomy.io import write_obj, write_ply


def main() -> None:
    args = parse_args(__doc__.splitlines()[1], heads=10)
    torch.set_num_threads(1)
    head = Sculptor(dtype=F64)
    truth, out, rot, transl = heads_in_scanner(head, args, expression=True)
    face = move_points(out.face, rot, transl)
    true_bones = move_points(torch.cat([out.skull, out.mandible], 1), rot, transl)
    paths = [write_ply(args.out / f"face_scanner_{i}.ply", face[i], out.faces("face")) for i in range(args.heads)]

    start = time.perf_counter()
    fits = [predict_skull(p, head, prior_weight=1e-6) for p in paths]
    seconds = (time.perf_counter() - start) / args.heads
    bones = torch.cat([torch.cat([f.skull, f.mandible], 1) for f in fits])
    mean, worst = errors(bones, true_bones)
    expr = max(float((f.params["expression"] - truth["expression"][i]).abs().max()) for i, f in enumerate(fits))
    print(f"recovery (no noise, prior 1e-6): bone error mean {mean:.2e} mm, max {worst:.2e} mm; expression "
          f"coefficients within {expr:.1e}; {seconds:.2f} s per head ({args.heads} heads)")
    write_obj(args.out / "skull_predicted_0.obj", fits[0].skull[0], out.faces("skull"))
    write_obj(args.out / "mandible_predicted_0.obj", fits[0].mandible[0], out.faces("mandible"))

    noise = 0.5 * torch.randn(face.shape, generator=torch.Generator().manual_seed(args.seed + 7), dtype=F64)
    start = time.perf_counter()
    fit = predict_skull(face + noise, head)
    seconds = (time.perf_counter() - start) / args.heads
    mean, worst = errors(torch.cat([fit.skull, fit.mandible], 1), true_bones)
    print(f"0.5 mm noise, default prior: bone error mean {mean:.3f} mm, max {worst:.3f} mm; residual rms "
          f"{float(fit.rms_mm.mean()):.3f} mm; {seconds:.2f} s per head")
    print(f"outputs in {args.out}")


if __name__ == "__main__":
    main()
