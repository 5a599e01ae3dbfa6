"""Which annotations database an image's corrections go to, and what a failing one says.

A database that opened can still fail later (the disk fills up, the share goes
away): every read and write of the Annotate dock catches :data:`STORE_ERRORS`
and says so in one line (:func:`store_problem`); nothing raises into napari.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ...core.labels.store import AnnotationStore, AnnotationStoreError, default_db_path
from ...core.model.registry import sample_data_dir, user_home
from .._shared.session import PredictionResult
from .._shared.workers import store_prediction

#: What a database that was open may raise on a read or a write.
STORE_ERRORS = (AnnotationStoreError, sqlite3.Error, OSError)


def db_path_for(source: str) -> Path:
    """Return the annotations database of an image.

    It is in the image's folder, else (layers not from a file, the bundled
    samples, read-only folders) in the user folder.
    """
    samples = sample_data_dir().resolve()
    if not source.startswith("layer:") and samples not in Path(source).resolve().parents:
        path = default_db_path(source)
        folder = path.parent if path.parent.exists() else path.parent.parent
        if folder.is_dir() and os.access(folder, os.W_OK):
            return path
    return user_home() / "annotations.sqlite"


def store_problem(exc: BaseException, path: Path | str | None) -> str:
    """Say in one short line why the database at ``path`` failed.

    The file is left out (the dock names its database just below the status), and
    so is the store's "the last change was not saved": the dock says what it keeps.
    """
    text = str(exc).strip()
    reason = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    if path is not None and reason.startswith(f"{path}: "):
        reason = reason[len(f"{path}: ") :]
    return reason.removesuffix("; the last change was not saved")


def open_store(path: Path) -> tuple[AnnotationStore | None, str | None]:
    """Open the database at ``path``: the store and None, or None and why not (one line)."""
    try:
        return AnnotationStore(path), None
    except STORE_ERRORS as exc:  # the file is named: nothing else names it then
        reason = store_problem(exc, path)
        return None, reason if str(path) in reason else f"{path}: {reason}"


def not_saved(problem: str, waiting: int) -> str:
    """Say in one line that a read or write failed, and which corrections are kept."""
    if not waiting:
        return f"Not saved: {problem}."
    kept = "correction is" if waiting == 1 else f"{waiting} corrections are"
    return (
        f"Not saved: {problem}. Your {kept} kept here (✎ not saved) and written with "
        "your next change once the database can take it."
    )


def store_result(store: AnnotationStore, result: PredictionResult) -> str | None:
    """Worker: store a prediction (see ``store_prediction``); the problem in one line, or None."""
    try:
        store_prediction(store, result)
    except STORE_ERRORS as exc:
        return store_problem(exc, store.path)
    return None
