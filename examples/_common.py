"""Helpers shared by the numbered examples (not an example itself): random heads from the
embedded default head, a random "scanner" frame, the command line and the output folder."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from anatomy import Sculptor
from anatomy.fitting.synthetic import hidden_traits, move_points, random_rigid

F64 = torch.float64
__all__ = ["F64", "base_parser", "errors", "heads_in_scanner", "move_points", "out_folder", "parse_args",
           "random_heads", "scanner_frame"]


def base_parser(description: str) -> argparse.ArgumentParser:
    """The options every example has: --smoke, --out, --seed (add the example's own to it)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="one small, fast run (for the test suite)")
    parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def out_folder(args: argparse.Namespace) -> Path:
    """``args.out`` as a created folder (a new temporary one when not given); also stored back in ``args.out``."""
    args.out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="anatomy_example_"))
    args.out.mkdir(parents=True, exist_ok=True)
    return Path(args.out)


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


def random_heads(head: Sculptor, count: int, seed: int, *, expression: bool = False,
                 hidden: bool = True) -> dict[str, torch.Tensor]:
    """Random heads (``Sculptor.sample``: shape, trait, jaw inside its limits; expression only if
    asked); without ``hidden`` the trait directions no bone shows are removed."""
    spaces = tuple(n for n in head.space_sizes if expression or n != "expression")
    params = head.sample(count, generator=torch.Generator().manual_seed(seed), spaces=spaces)
    if not hidden:
        null = hidden_traits(head)
        params["trait"] = params["trait"] - (params["trait"] @ null) @ null.T
    return params


def scanner_frame(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rotations (any axis, up to 3.1 rad) and translations (~300 mm)."""
    return random_rigid(count, generator=torch.Generator().manual_seed(seed + 1000))


def heads_in_scanner(head: Sculptor, args: argparse.Namespace, **options: bool) -> tuple[
        dict[str, torch.Tensor], object, torch.Tensor, torch.Tensor]:
    """``args.heads`` random heads (``random_heads`` options), posed, and a random scanner frame:
    ``(parameters, output, rotations, translations)``."""
    truth = random_heads(head, args.heads, args.seed, **options)
    rot, transl = scanner_frame(args.heads, args.seed)
    with torch.no_grad():
        out = head(**truth)
    return truth, out, rot, transl


def errors(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean and max per-vertex distance (mm) between two ``(B, V, 3)`` vertex sets."""
    d = (a - b).norm(dim=-1)
    return float(d.mean()), float(d.max())
