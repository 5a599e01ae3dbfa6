"""``napari-hpa export-model``: write a model as a bioimage.io model package (a zip).

The package (bioimage.io format 0.5, built with bioimageio.spec) holds the weights as a
``pytorch_state_dict`` with a torch-only architecture file and as ONNX, test tensors the
model computed on one tile of a real image, the model card, a cover, and the class names
and thresholds in ``config``. It needs the ``bioimageio`` extra:
``pip install 'napari-hpa[bioimageio]'``. Check it with ``bioimageio test FILE.zip``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import UserError, shown


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``export-model`` subcommand to the CLI's parser."""
    p = sub.add_parser(
        "export-model",
        help="export a model as a bioimage.io model package (.zip)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="the model: NAME, NAME@VERSION or a model folder")
    p.add_argument("--format", choices=["bioimageio"], default="bioimageio", help="package format")
    p.add_argument("--out", type=Path, required=True, help="the package to write (FILE.zip)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--image", type=Path, help="the image the test tile is cut from")
    p.add_argument("--author", action="append", help="an author's name (repeat for more)")
    p.add_argument(
        "--license",
        help="SPDX licence (default: the data licence the card names, else BSD-3-Clause)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``napari-hpa export-model``; return the exit code."""
    from ..core.model.bioimage_io import BioimageioError, export_package, require_bioimageio
    from ..core.model.bioimage_io.export import check_target
    from ..core.model.registry import resolve_model
    from .outputs import check_output_file

    try:
        check_target(args.out, args.overwrite)  # the target first: nothing is loaded before
        check_output_file(args.out, (".zip",), create=False)
        require_bioimageio()
        entry = resolve_model(args.model)
        result = export_package(
            entry,
            args.out,
            overwrite=args.overwrite,
            image=args.image,
            authors=args.author,
            licence=args.license,
        )
    except (BioimageioError, LookupError) as exc:
        raise UserError(str(exc.args[0]) if exc.args else str(exc)) from None
    print(f"exported {shown(result.model_id)} -> {shown(result.path)}")
    return 0
