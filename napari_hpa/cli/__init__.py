"""The ``napari-hpa`` command.

Each subcommand is a module in this package with ``add_parser(subparsers)`` and
``run(args) -> int``. Errors a user can cause (a bad path, a bad image, an
unknown model) print one line and exit 2; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.model.preferences import ModelChoice

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS = (
    "models",
    "predict",
    "batch",
    "sample",
    "train",
    "evaluate",
    "export",
    "import_weights",
    "open",
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class UserError(Exception):
    """An error caused by the user's input; printed as one line, exit code 2."""


def chosen_model(ref: str | Path | None) -> ModelChoice:
    """Return the model a command uses, by the rule the napari docks follow.

    ``--model`` wins; without it, the model chosen in napari ("Use this model" /
    "Roll back"), else the default model. An unknown or broken model is a
    :class:`UserError`. The command prints it with :func:`announce_model` once its
    own checks have passed, so that a user error stays one line.
    """
    from ..core.model.checkpoint import CheckpointError
    from ..core.model.preferences import current_model

    try:
        return current_model(ref)
    except (LookupError, CheckpointError) as exc:
        raise UserError(str(exc.args[0]) if exc.args else str(exc)) from None


def announce_model(choice: ModelChoice) -> None:
    """Print ``using <name@version> (<why>)`` on stderr, so the terminal visibly follows napari.

    It also says why napari's choice was not used, when it was not.

    Silent for a model given with ``--model``: the user named it, and scripts that
    name their model keep a quiet stderr (where a user error is one line).
    """
    if choice.reason == "given with --model":
        return
    if choice.note:
        print(f"note: {choice.note}", file=sys.stderr)
    print(choice.describe(), file=sys.stderr)


def _load_commands() -> list:
    modules = []
    for name in COMMANDS:
        try:
            modules.append(importlib.import_module(f"{__name__}.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    """Build the ``napari-hpa`` parser from the command modules in ``COMMANDS``."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="napari-hpa",
        description="Classify protein subcellular locations in microscopy images.",
    )
    parser.add_argument("--version", action="version", version=f"napari-hpa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _load_commands():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.run(args) or 0)
    except UserError as exc:
        print(f"napari-hpa {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"napari-hpa {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
