"""``napari-hpa import-model``: turn a bioimage.io model package into a napari-hpa model folder.

It reads packages napari-hpa exported, and classifiers from elsewhere whose weights are a
``pytorch_state_dict`` of one of napari-hpa's architectures. Nothing in the package runs:
the zip is unpacked with every entry checked (inside its folder, sizes bounded), the
architecture's source file is never imported, and the weights are read with
``torch.load(weights_only=True)``. An unsupported package is one line saying why. Needs the
``bioimageio`` extra: ``pip install 'napari-hpa[bioimageio]'``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import UserError, shown


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``import-model`` subcommand to the CLI's parser."""
    p = sub.add_parser(
        "import-model",
        help="import a bioimage.io model package (.zip or folder) as a model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("package", type=Path, help="the package: FILE.zip or a folder with rdf.yaml")
    p.add_argument("--name", help="the model's name (default: the package's)")
    p.add_argument("--out", type=Path, help="models folder (default: your user models folder)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``napari-hpa import-model``; return the exit code."""
    from ..core.model.bioimage_io import BioimageioError, import_package
    from ..core.model.checkpoint import CheckpointError
    from ..core.model.registry import writable_models_dir

    try:
        root = writable_models_dir(args.out)
        result = import_package(args.package, args.name, root)
    except (BioimageioError, CheckpointError) as exc:
        raise UserError(str(exc)) from None
    for note in result.notes:
        print(f"note: {shown(note)}", file=sys.stderr)
    print(f"imported {shown(result.spec.id)} -> {shown(result.path)}")
    return 0
