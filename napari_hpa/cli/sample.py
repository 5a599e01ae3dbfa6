"""``napari-hpa sample``: write generated HPA-style image sets with known labels."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.image.synth.fields import write_samples

#: Bounds of the generated fields: 4 float channels of 4096 px are 256 MB while drawing;
#: 60000 px would be 58 GB. Sizes are checked before anything is drawn.
MIN_SIZE, MAX_SIZE = 32, 4096
MAX_N = 10_000


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``sample`` subcommand to the CLI's parser."""
    p = sub.add_parser(
        "sample",
        help="write generated HPA-style images with known labels",
        description="Write N procedurally generated 4-channel HPA-style fields in HPA file "
        "layout (<id>_red.png, _green, _blue, _yellow) and a Kaggle-format labels.csv (Id,Target).",
    )
    p.add_argument("outdir", type=Path)
    p.add_argument(
        "--n", type=int, default=4, help=f"number of image sets (default 4, at most {MAX_N})"
    )
    p.add_argument(
        "--size",
        type=int,
        default=512,
        help=f"image size in pixels (default 512; {MIN_SIZE} to {MAX_SIZE})",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``napari-hpa sample``; return the exit code."""
    from . import UserError

    if not 1 <= args.n <= MAX_N:
        raise UserError(f"--n must be between 1 and {MAX_N}, not {args.n}")
    if not MIN_SIZE <= args.size <= MAX_SIZE:
        raise UserError(f"--size must be between {MIN_SIZE} and {MAX_SIZE} px, not {args.size}")
    outdir = Path(args.outdir).expanduser()
    if outdir.exists() and not outdir.is_dir():
        raise UserError(f"{outdir}: is a file, not a folder; give a folder for the images")
    try:  # an earlier sample set is never overwritten; a failure leaves the folder as it was
        write_samples(outdir, n=args.n, size=args.size, seed=args.seed)
    except FileExistsError as exc:
        raise UserError(f"{outdir}: {exc.strerror}") from None
    except OSError as exc:
        where = exc.filename or outdir
        raise UserError(
            f"{where}: cannot write the sample images ({exc.strerror or exc})"
        ) from None
    print(f"wrote {args.n} image set(s) of {args.size} px and labels.csv to {outdir}")
    return 0
