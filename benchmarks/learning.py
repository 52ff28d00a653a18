"""Shape spaces learned from phantom registrations: held-out error against the number of components.

Registrations: the embedded default head (skull, mandible, face; 14,751 vertices) and hand (bones,
muscles, skin; 25,047 vertices) with shape coefficients drawn N(0, 1), each moved by a random rigid
transform (as scans come in scanner frames). For N training subjects a shape space is learned
(``anatomy.learning.shape_space``: generalised Procrustes + PCA) and 20 held-out subjects are aligned to
its mean and reconstructed from K components. Printed: mean vertex error (mm) per K, with the ratio
to the mean-only model (K = 0) as the reference, and the seconds to learn from N registrations.
The default models' own shape spaces have 10 (head) and 11 (hand) components, so the error should
fall to about the alignment's nonlinearity (hundredths of a mm) at that K once N exceeds it.

Run: ``python benchmarks/learning.py [--subjects 10 30 100]``.
"""

from __future__ import annotations

import argparse
import time

import torch

import anatomy
from anatomy.core.rotations import axis_angle_to_matrix
from anatomy.learning import align_meshes, shape_space


def meshes(model: torch.nn.Module, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = torch.randn(n, model.space_sizes["shape"], generator=g, dtype=torch.float64)
    with torch.no_grad():
        x = model(shape=shape).vertices
    rot = axis_angle_to_matrix(0.5 * torch.randn(n, 3, generator=g, dtype=torch.float64))
    return x @ rot.transpose(1, 2) + 30.0 * torch.randn(n, 1, 3, generator=g, dtype=torch.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[10, 30, 100])
    args = parser.parse_args()
    for name, model in (("head", anatomy.Sculptor(dtype=torch.float64)), ("hand", anatomy.Nimble(dtype=torch.float64))):
        k_true = model.space_sizes["shape"]
        held = meshes(model, 20, 1)
        ks = sorted({0, 1, 2, 5, k_true // 2, k_true, k_true + 2})
        print(f"{name}: {model.template.shape[0]} vertices, {k_true} generating components")
        print(f"  {'N':>4} {'learn s':>8} " + " ".join(f"{'K=' + str(k):>14}" for k in ks))
        for n in args.subjects:
            train = meshes(model, n, 2)
            t0 = time.perf_counter()
            space = shape_space(train, components=min(max(ks), n - 1))
            seconds = time.perf_counter() - t0
            test = align_meshes(torch.cat([space.mean[None], held]))[0][1:]
            coeffs = space.coefficients(test)
            errors = {}
            for k in ks:
                kk = min(k, space.num_components)
                back = space.reconstruct(coeffs[:, :kk]) if kk else space.mean.expand_as(test)
                errors[k] = float((back - test).norm(dim=-1).mean())
            cells = " ".join(f"{errors[k]:7.3f} ({errors[k] / errors[0]:4.2f})" for k in ks)
            print(f"  {n:>4} {seconds:8.2f} {cells}")
    print("cells: mean held-out vertex error in mm (ratio to the mean-only model)")


if __name__ == "__main__":
    main()
