"""All-or-nothing output of a set of files: staged in a temporary folder, moved in together.

The cell-TIFF export writes one stack per image and ``cell_labels.csv``, which
names them. Written file by file, a full disk part way left some stacks new and
the table old. :func:`staged_set` writes every file into a temporary folder
inside the target folder (the same file system, so a move is a rename and needs
no space), then moves them in only once all were written, the ``last`` ones
(the table) after the others. A failure while writing leaves the target folder
as it was; a failure while moving puts back what was moved (each replaced file
was kept, hard-linked, until the end).

A kill during the moves (a few renames) can still leave a mixed set, every file
whole; its temporary folder is removed by the next export into that folder once
it is an hour old.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..atomic import TMP_PREFIX

#: Temporary folders of a set start with this (a hidden ``.tmp-`` name, as every
#: temporary file napari-hpa writes).
STAGE_PREFIX = f"{TMP_PREFIX}set-"
#: A staging folder this old is a killed export's: no export takes an hour to move files.
STALE_AFTER_S = 3600.0
_REPLACED = "replaced"


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _clean_stale(folder: Path) -> None:
    """Remove the staging folders that killed exports left in ``folder`` (an hour old)."""
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if not entry.name.startswith(STAGE_PREFIX) or entry.is_symlink():
                continue
            with contextlib.suppress(OSError):
                if entry.is_dir() and now - entry.stat().st_mtime > STALE_AFTER_S:
                    shutil.rmtree(entry, ignore_errors=True)


def _keep(target: Path, backup: Path) -> bool:
    """Keep the file ``target`` at ``backup`` (a hard link); False when it is not there."""
    if not os.path.lexists(target):
        return False
    try:
        os.link(target, backup, follow_symlinks=False)
    except OSError:  # no hard links here (some shares): move it aside instead
        os.rename(target, backup)
    return True


def publish(stage: Path, folder: Path, last: Sequence[str] = ()) -> list[Path]:
    """Move every file of ``stage`` into ``folder``, ``last`` after the others; all or none.

    Returns the files now in ``folder``. A folder where a file goes is refused before
    anything moves. On an error, what was moved is moved back and every replaced file
    restored before the error is raised.
    """
    files = sorted(p for p in stage.iterdir() if p.is_file() and not p.is_symlink())
    files.sort(key=lambda p: p.name in last)
    for path in files:  # a folder is never replaced (nor moved aside and lost)
        target = folder / path.name
        if target.is_dir() and not target.is_symlink():
            raise IsADirectoryError(errno.EISDIR, "a folder has this file's name", str(target))
    for path in files:
        _fsync(path)
    backups = stage / _REPLACED
    backups.mkdir()
    done: list[tuple[Path, Path, bool]] = []  # (staged, target, a previous file was kept)
    try:
        for path in files:
            target = folder / path.name
            kept = _keep(target, backups / path.name)
            done.append((path, target, kept))
            os.replace(path, target)
    except BaseException:
        for path, target, kept in reversed(done):
            with contextlib.suppress(OSError):
                if os.path.lexists(target) and not os.path.lexists(path):
                    os.rename(target, path)  # the new file leaves
                if kept:
                    os.replace(backups / path.name, target)  # the previous one comes back
        raise
    _fsync(folder)
    return [target for _path, target, _kept in done]


@contextlib.contextmanager
def staged_set(folder: str | os.PathLike[str], last: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a temporary folder inside ``folder``; on success its files move into ``folder``.

    The files are moved with :func:`publish` (``last`` after the others); on any
    error, in the block or while moving, ``folder`` keeps what it held before. The
    temporary folder is removed either way.
    """
    folder = Path(folder)
    _clean_stale(folder)
    stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=folder))
    try:
        yield stage
        publish(stage, folder, last)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
