"""The models folder on disk: can a model be written there, and what killed writers left.

A model version is written to a temporary folder beside its final place and
renamed into place (:func:`~napari_hpa.core.model.checkpoint.save_model`). A
SIGKILL leaves the temporary folder behind; its name says who wrote it
(``.tmp-<name>-v<N>~<host>~<pid>~<start ticks>~<random>``), so that
:func:`clean_partial_versions` can remove what a dead writer left while never
touching a save another live process is making.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path

from ..atomic import TMP_PREFIX
from ..process import pid_alive, start_stamp

#: A leftover whose writer cannot be checked (another machine on a shared folder, an
#: older napari-hpa, an atomic temporary file) is removed once it is this old: a model
#: save takes seconds, a slow network share minutes.
STALE_AFTER_S = 3600.0
#: Even a writer that looks alive is presumed gone after a day (its pid was reused).
LIVE_LIMIT_S = 86400.0
_SEP = "~"


class CheckpointError(ValueError):
    """A model folder that cannot be used; the message names the file and the problem."""


class VersionExistsError(CheckpointError):
    """The version folder is already there (another writer may have just claimed it)."""


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:40] or "host"


def writer_tag() -> str:
    """Return ``<host>~<pid>~<start stamp>``: who writes a temporary folder, for the cleaner."""
    pid = os.getpid()
    return _SEP.join((_host(), str(pid), str(start_stamp(pid) or 0)))


def _writer_alive(pid: int, stamp: int) -> bool:
    """Tell whether process ``pid`` (started at ``stamp``, 0 if unknown) still runs.

    Never reaps (``reap=False``): the cleaner must not take the exit status of a child
    that its own caller is about to wait for.
    """
    return pid_alive(pid, stamp or None, reap=False)


def _is_leftover(entry: Path, now: float, stale_after_s: float) -> bool:
    try:
        age = now - entry.lstat().st_mtime
    except OSError:
        return False
    parts = entry.name.rsplit(_SEP, 4)
    if len(parts) == 5 and parts[1] == _host() and parts[2].isdigit() and parts[3].isdigit():
        if _writer_alive(int(parts[2]), int(parts[3])):
            return age > LIVE_LIMIT_S
        return True
    return age > stale_after_s


def clean_partial_versions(root: str | Path, stale_after_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the temporary folders and files that killed writers left in ``root``.

    Only leftovers of a writer on this machine that is dead, or leftovers older
    than ``stale_after_s`` whose writer cannot be checked; never a save that a
    live process is making. Returns what was removed; what cannot be removed (a
    read-only share) is left, never an error.
    """
    root = Path(root)
    removed: list[Path] = []
    try:
        entries = [p for p in root.iterdir() if p.name.startswith(TMP_PREFIX)]
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if _is_leftover(entry, now, stale_after_s):
            remove_tree(entry)
            if not os.path.lexists(entry):
                removed.append(entry)
    return removed


def remove_tree(path: Path) -> None:
    """Delete a file, a symlink (never what it points to) or a folder; errors are ignored."""
    with contextlib.suppress(OSError):
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable where the platform allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def prepare_models_dir(root: str | Path) -> Path:
    """Make ``root`` and check that a model can be written into it; return it.

    Called before a training run starts, so that a read-only or full folder, or a
    path through a file, is said at once in one line instead of after the run.

    Raises
    ------
    CheckpointError
        Naming the folder and the problem.
    """
    root = Path(root).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (root, *root.parents) if p.exists() and not p.is_dir()), root)
        raise CheckpointError(
            f"{root}: cannot make the models folder: {blocker} is a file, not a folder"
        ) from None
    except OSError as exc:
        raise CheckpointError(
            f"{root}: cannot make the models folder ({exc.strerror or exc})"
        ) from None
    if not root.is_dir():
        raise CheckpointError(f"{root}: the models folder is a file, not a folder")
    probe = root / f"{TMP_PREFIX}probe{_SEP}{writer_tag()}{_SEP}{uuid.uuid4().hex[:8]}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise CheckpointError(f"{root}: cannot write models here ({exc.strerror or exc})") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return root


def check_free_space(root: Path, needed: int) -> None:
    """Raise CheckpointError when ``root`` has less than ``needed`` bytes free."""
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        return  # cannot tell: the save itself will say
    if free < needed:
        raise CheckpointError(
            f"{root}: {free / 2**20:.2f} MiB free, the model needs about "
            f"{needed / 2**20:.2f} MiB; free some space or choose another folder"
        )
