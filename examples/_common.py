"""Helpers shared by the numbered examples (not an example itself): random heads from the
embedded default head, a random "scanner" frame, the command line and the output folder."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from anatomy import Sculptor, load_model
from anatomy.core.rotations import axis_angle_to_matrix
from anatomy.models.sculptor import default_head_path

F64 = torch.float64


def parse_args(description: str, heads: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="one small, fast run (for the test suite)")
    parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    parser.add_argument("--heads", type=int, default=heads, help=f"number of random heads (default {heads})")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.smoke:
        args.heads = 1
    args.out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="anatomy_example_"))
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def bone_null_trait() -> torch.Tensor:
    """Trait-coefficient directions that move no bone, ``(n_trait, n_null)``: a skull cannot show
    them (in the default head: mandibular advancement against setback)."""
    data = load_model(default_head_path())
    nb = sum(t.stop - t.start for t in data.tissues if t.name != "face")
    basis = data.spaces["trait"][:, :nb].reshape(data.spaces["trait"].shape[0], -1).double()
    u, s, _ = torch.linalg.svd(basis, full_matrices=False)
    return u[:, s < 1e-6 * s[0]]


def random_heads(head: Sculptor, count: int, seed: int, *, expression: bool = False,
                 without: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Random shapes and traits (N(0, 1)), a jaw opened by up to 0.25 rad with a small condylar
    offset and, if asked, a random expression; trait directions in ``without`` are removed."""
    g = torch.Generator().manual_seed(seed)
    trait = torch.randn(count, head.space_sizes["trait"], generator=g, dtype=F64)
    if without is not None:
        trait = trait - (trait @ without) @ without.T
    params = {
        "shape": torch.randn(count, head.space_sizes["shape"], generator=g, dtype=F64),
        "trait": trait,
        "jaw_pose": torch.tensor([[-0.25, 0.02, -0.03]], dtype=F64) * torch.rand(count, 1, generator=g, dtype=F64),
        "jaw_offset": torch.randn(count, 3, generator=g, dtype=F64),
    }
    if expression:
        params["expression"] = torch.randn(count, head.space_sizes["expression"], generator=g, dtype=F64)
    return params


def scanner_frame(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rotations (any axis, up to 3.1 rad) and translations (~300 mm)."""
    g = torch.Generator().manual_seed(seed + 1000)
    axis = torch.nn.functional.normalize(torch.randn(count, 3, generator=g, dtype=F64), dim=-1)
    rot = axis_angle_to_matrix(axis * torch.rand(count, 1, generator=g, dtype=F64) * 3.1)
    return rot, torch.randn(count, 3, generator=g, dtype=F64) * 300.0


def to_frame(points: torch.Tensor, rot: torch.Tensor, transl: torch.Tensor) -> torch.Tensor:
    return points @ rot.transpose(-1, -2) + transl[:, None]


def errors(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean and max per-vertex distance (mm) between two ``(B, V, 3)`` vertex sets."""
    d = (a - b).norm(dim=-1)
    return float(d.mean()), float(d.max())
