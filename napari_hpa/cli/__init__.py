"""The ``napari-hpa`` command.

Each subcommand is a module in this package with ``add_parser(subparsers)`` and
``run(args) -> int``. Errors a user can cause (a bad path, a bad image, an
unknown model) print one line and exit 2; tracebacks are for bugs only. So does
an ``OSError`` that a command did not catch (a full disk, a read-only folder, a
closed pipe or a full disk behind stdout) and the project's other expected errors
(:data:`EXPECTED_ERRORS`): :func:`main` names the file and the problem. Text that
comes from a file (a model's class names, a path) is printed through :func:`shown`,
so that it can neither move the cursor nor forge a line.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    "export_model",
    "import_model",
    "open",
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


#: The project's errors whose message is one line naming the file and the problem:
#: (module, class). Only a module already imported can have raised one, so they are
#: looked up in ``sys.modules`` and importing the CLI stays light.
EXPECTED_ERRORS = (
    ("napari_hpa.core.model.folders", "CheckpointError"),
    ("napari_hpa.core.labels.schema", "AnnotationStoreError"),
    ("napari_hpa.core.labels.targets", "ExportError"),
    ("napari_hpa.core.image.data", "ImageReadError"),
    ("napari_hpa.core.image.channels", "ChannelMismatchError"),
    ("napari_hpa.core.image.channels", "ChannelMapError"),
    ("napari_hpa.core.train.label_csv", "DataError"),
    ("napari_hpa.core.batch.table", "BatchError"),
)
#: The longest a value from a file (a path, a message) is shown on one line.
SHOWN_LIMIT = 2000
#: Options that name what a command writes, for an ``OSError`` that names no file.
_OUTPUT_OPTIONS = ("out", "outdir", "out_root", "cam")


class UserError(Exception):
    """An error caused by the user's input; printed as one line, exit code 2."""


def shown(text: object, limit: int = SHOWN_LIMIT) -> str:
    """Return ``text`` safe to print on one line (:func:`~..core.model.names.printable`)."""
    from ..core.model.names import printable

    return printable(text, limit)


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
    if choice.note:  # it may quote settings.json
        print(f"note: {shown(choice.note)}", file=sys.stderr)
    print(shown(choice.describe()), file=sys.stderr)


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


def expected_error(exc: BaseException) -> bool:
    """Tell whether ``exc`` is one of :data:`EXPECTED_ERRORS` (a one-line message)."""
    for module, name in EXPECTED_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and isinstance(exc, cls):
            return True
    return False


class _WatchedStdout:
    """stdout, remembering the ``OSError`` a write to it raised (such an error names no file)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.error: OSError | None = None

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as exc:
            self.error = exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush cannot fail too."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # a test's capture
        pass


def os_error_line(exc: OSError, args: argparse.Namespace | None = None) -> str:
    """Say in one line which file an ``OSError`` concerns and what went wrong.

    An error that names no file was raised by a write on an open file, which is
    the command's output (its ``--out``) when it has one.
    """
    from ..core.atomic import TMP_PREFIX

    why = exc.strerror or str(exc) or type(exc).__name__
    where = exc.filename
    if where is None:
        out = next((getattr(args, k) for k in _OUTPUT_OPTIONS if getattr(args, k, None)), None)
        return f"{out}: {why} (while writing)" if out is not None else why
    name = os.fsdecode(where) if isinstance(where, str | bytes) else str(where)
    if os.path.basename(name).startswith(TMP_PREFIX):  # a temporary file: name its folder
        name = f"{os.path.dirname(name) or '.'} (a temporary file there)"
    if exc.filename2 is not None:
        name = f"{name} -> {os.fsdecode(exc.filename2)}"
    return f"{name}: {why}"


def _fail(command: str, message: str) -> int:
    print(f"napari-hpa {command}: error: {shown(message)}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script.

    A :class:`UserError`, an ``OSError`` and an expected error
    (:data:`EXPECTED_ERRORS`) that leave the command are one line and exit code 2;
    stdout is flushed here, so that a full disk or a closed pipe behind it is too
    (named as the standard output).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_USAGE
    stdout = sys.stdout = _WatchedStdout(sys.stdout)
    try:
        code = int(args.run(args) or 0)
        sys.stdout.flush()
        return code
    except UserError as exc:
        return _fail(args.command, str(exc))
    except KeyboardInterrupt:
        print(f"napari-hpa {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc is stdout.error:
            sys.stdout = stdout.stream
            _silence_stdout()
            return _fail(args.command, f"the standard output: {exc.strerror or exc}")
        return _fail(args.command, os_error_line(exc, args))
    except Exception as exc:
        if not expected_error(exc):
            raise
        return _fail(args.command, str(exc))
    finally:
        if sys.stdout is stdout:
            sys.stdout = stdout.stream


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
