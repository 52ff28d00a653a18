"""The ``anatomy`` command.

Units everywhere are millimetres and radians; meshes are written in the model's
frame (right-handed, rotation matrices act on column vectors). Every sub-command
exits with status 0 on success and 2 with a one-line reason on bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..core.errors import AnatomyError
from . import fit, head, learn, models, phantom, register, render, segment
from .common import EPILOG

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anatomy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (models, head, segment, phantom, register, learn, render, fit):
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "samples", 1) < 1:
        parser.error("--samples must be at least 1")
    try:
        return int(args.func(args))
    except (AnatomyError, OSError) as exc:
        print(f"anatomy {args.command}: error: {exc}", file=sys.stderr)
        return 2

