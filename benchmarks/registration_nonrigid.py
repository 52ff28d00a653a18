"""Non-rigid registration (embedded deformation) of the model templates onto sampled target surfaces.

For each case the template is the mean shape and the target is a random shape of the same model,
re-sampled as points uniformly on its surface (not in correspondence with the vertices); the error
is the mean distance of each registered vertex to the same vertex of the target shape (ground
truth), in mm. Corrupted targets: 30 % of the surface cut away as one region, 2 mm RMS noise and
10 % outliers in the bounding box, normals estimated from the points. References in the same run:
the error before registration, the template projected onto its nearest target points, and (on
corrupted targets) the same registration without the robust terms (no normal test, plain least
squares, no noise stiffening). The corrupted column also prints the target noise the registration
estimated and the factor its regularisers were stiffened by.

Run: ``OMP_NUM_THREADS=1 nice -n 10 python benchmarks/registration_nonrigid.py`` (about 3-5 min on one core).
"""

from __future__ import annotations

import torch
from scipy.spatial import cKDTree

import anatomy
from anatomy.registration.nonrigid import (
    NonRigidWeights,
    corrupt_target,
    nonrigid_register,
    sample_surface,
)


def _surface_only(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The vertices used by ``faces`` (a tet mesh's surface), the faces re-indexed, and the kept ids."""
    used = torch.unique(faces)
    remap = torch.full((vertices.shape[-2],), -1, dtype=torch.long)
    remap[used] = torch.arange(len(used))
    return vertices[..., used, :], remap[faces], used


def _cases() -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, int]]:
    """(name, template (V, 3), truth (V, 3), faces, target points) in float64."""
    head = anatomy.Sculptor()
    mean = head()
    full = head(**head.sample(1, generator=torch.Generator().manual_seed(1)))
    smooth = head(**head.sample(1, generator=torch.Generator().manual_seed(1), spaces=("shape", "trait"), jaw=False))
    lay = {t.name: t for t in mean.layout}
    hand = anatomy.Nimble()
    hand_mean = hand()
    shape = torch.randn(1, hand.num_coeffs if isinstance(hand.num_coeffs, int) else 11,
                        generator=torch.Generator().manual_seed(1))
    hand_shaped = hand(shape=shape)
    skin_faces = {t.name: t for t in hand_mean.layout}["skin"].faces.long()
    skin0, skin_f, used = _surface_only(hand_mean.tissue("skin")[0], skin_faces)
    skin1 = hand_shaped.tissue("skin")[0][used]
    return [
        ("skull", mean.skull[0].double(), full.skull[0].double(), lay["skull"].faces.long(), 20000),
        ("face (shape, trait)", mean.face[0].double(), smooth.face[0].double(), lay["face"].faces.long(), 30000),
        ("face (+expression, jaw)", mean.face[0].double(), full.face[0].double(), lay["face"].faces.long(), 30000),
        ("hand skin (shape)", skin0.double(), skin1.double(), skin_f, 30000),
    ]


def main() -> None:
    torch.set_num_threads(1)
    robust_off = NonRigidWeights(robust_scale=None, max_normal_angle=180.0, noise_reference=None)
    print("case | V | before | nearest-point | clean: error, s | clean, normals estimated | "
          "corrupted: error, s (x clean estimated) [seen / over the cut] {noise mm, stiffening} | "
          "corrupted, no robust terms (x robust)")
    for name, template, truth, faces, n_points in _cases():
        gen = torch.Generator().manual_seed(0)
        points, normals = sample_surface(truth, faces, n_points, gen)
        before = (template - truth).norm(dim=-1).mean()
        _, nearest = cKDTree(points.numpy()).query(template.numpy())
        projected = (points[torch.from_numpy(nearest)] - truth).norm(dim=-1).mean()
        clean = nonrigid_register(template, faces, points, normals)
        e_clean = (clean.vertices - truth).norm(dim=-1).mean()
        e_est = (nonrigid_register(template, faces, points).vertices - truth).norm(dim=-1).mean()
        damaged, kept = corrupt_target(points, missing=0.3, outliers=0.1, noise=2.0, generator=gen)
        bad = nonrigid_register(template, faces, damaged)
        err = (bad.vertices - truth).norm(dim=-1)
        e_bad = err.mean()
        _, nearest_sample = cKDTree(points.numpy()).query(truth.numpy())
        seen = torch.isin(torch.from_numpy(nearest_sample), kept)
        plain = nonrigid_register(template, faces, damaged, weights=robust_off)
        e_plain = (plain.vertices - truth).norm(dim=-1).mean()
        print(f"{name} | {template.shape[0]} | {before:.2f} | {projected:.2f} | {e_clean:.3f}, {clean.seconds:.1f} | "
              f"{e_est:.3f} | {e_bad:.3f}, {bad.seconds:.1f} ({e_bad / e_est:.2f}x) "
              f"[{err[seen].mean():.3f} / {err[~seen].mean():.3f}] {{{bad.noise:.2f}, {bad.stiffening:.1f}}} | "
              f"{e_plain:.3f} ({e_plain / e_bad:.2f}x)",
              flush=True)


if __name__ == "__main__":
    main()
