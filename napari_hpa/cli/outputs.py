"""Where commands write: output locations checked before the work, write errors as one line.

``predict --out``, ``batch --out`` / ``--cam`` and ``evaluate --out`` call
:func:`check_output_file` or :func:`check_output_folder` before loading a model or
reading an image, so that a file where a folder is expected, a read-only folder or
an over-long name is one line and exit code 2 at once, not a traceback after the
run. A write that fails later (a disk that fills up meanwhile) becomes a
:class:`~napari_hpa.cli.UserError` through :func:`write_failed`; the files are
written atomically (``core/atomic``), so the previous file is kept.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..core.atomic import TMP_PREFIX
from ..core.image.files import kind_of, long_name
from . import UserError


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _existing_mode(path: Path) -> int | None:
    try:
        return os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # an ancestor is a file: the caller says
        return None
    except OSError as exc:
        raise UserError(f"{path}: cannot use this path ({_why(exc)})") from None


def _make_folder(folder: Path, what: str, create: bool = True) -> None:
    """Create ``folder`` (and its parents), or say which ancestor is in the way."""
    for parent in (folder, *folder.parents):
        mode = _existing_mode(parent)
        if mode is None:
            continue
        if not stat.S_ISDIR(mode):
            raise UserError(
                f"{parent}: is {kind_of(mode) if not stat.S_ISREG(mode) else 'a file'}, "
                f"not a folder, so {what} cannot be written there"
            )
        break
    if not create and not folder.is_dir():
        raise UserError(f"{folder}: the output folder does not exist")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{folder}: cannot create the folder ({_why(exc)})") from None


def _probe(folder: Path) -> None:
    """Create and remove a temporary file in ``folder``: a read-only folder fails now."""
    try:
        fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}probe-", dir=folder)
    except OSError as exc:
        raise UserError(f"{folder}: cannot write here ({_why(exc)})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)


def check_output_file(
    path: Path, suffixes: Sequence[str], option: str = "--out", create: bool = True
) -> None:
    """Check, before any work, that ``path`` can be written as a file ending in ``suffixes``.

    Creates its folder if needed (``create``; else a missing folder is refused).
    Refuses (:class:`UserError`, one line) a wrong suffix, an over-long name, a
    folder or a non-regular file (FIFO, device) at ``path``, a file where a folder
    is expected, and a folder that cannot be written.
    """
    too_long = long_name(path)
    if too_long:
        raise UserError(f"{path}: {too_long}")
    mode = _existing_mode(path)
    if mode is not None and stat.S_ISDIR(mode):
        raise UserError(
            f"{path}: is a folder; give {option} a file name ending in {' or '.join(suffixes)}"
        )
    if path.suffix.lower() not in suffixes:
        raise UserError(f"{path}: {option} must end in {' or '.join(suffixes)}")
    if mode is not None and not stat.S_ISREG(mode):
        raise UserError(f"{path}: is {kind_of(mode)}, not a file {option} can replace")
    folder = path.parent
    _make_folder(folder, path.name, create)
    _probe(folder)


def check_output_folder(folder: Path, option: str = "--out") -> None:
    """Check, before any work, that ``folder`` is (or can be made) a writable folder."""
    too_long = long_name(folder)
    if too_long:
        raise UserError(f"{folder}: {too_long}")
    mode = _existing_mode(folder)
    if mode is not None and not stat.S_ISDIR(mode):
        what = "a file" if stat.S_ISREG(mode) else kind_of(mode)
        raise UserError(f"{folder}: is {what}, not a folder; {option} takes a folder here")
    _make_folder(folder, "the results")
    _probe(folder)


def write_failed(path: str | os.PathLike, exc: OSError) -> UserError:
    """Make the one line for a write that failed (the previous file, if any, is intact)."""
    where = exc.filename if isinstance(exc.filename, str) and exc.filename else path
    if Path(str(where)).name.startswith(TMP_PREFIX):  # the temporary file: name the target
        where = path
    return UserError(f"{where}: cannot write ({_why(exc)}); nothing was overwritten")


@contextlib.contextmanager
def reporting_writes(path: str | os.PathLike) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into :func:`write_failed`'s one line."""
    try:
        yield
    except OSError as exc:
        raise write_failed(path, exc) from None
