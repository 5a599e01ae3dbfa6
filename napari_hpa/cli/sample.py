"""``napari-hpa sample``: write generated HPA-style image sets with known labels."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.image.synth.fields import write_samples


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``sample`` subcommand to the CLI's parser."""
    p = sub.add_parser(
        "sample",
        help="write generated HPA-style images with known labels",
        description="Write N procedurally generated 4-channel HPA-style fields in HPA file "
        "layout (<id>_red.png, _green, _blue, _yellow) and a Kaggle-format labels.csv (Id,Target).",
    )
    p.add_argument("outdir", type=Path)
    p.add_argument("--n", type=int, default=4, help="number of image sets (default 4)")
    p.add_argument("--size", type=int, default=512, help="image size in pixels (default 512)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``napari-hpa sample``; return the exit code."""
    from . import UserError

    if args.n < 1 or args.size < 32:
        raise UserError("--n must be >= 1 and --size >= 32")
    write_samples(args.outdir, n=args.n, size=args.size, seed=args.seed)
    print(f"wrote {args.n} image set(s) of {args.size} px and labels.csv to {args.outdir}")
    return 0
