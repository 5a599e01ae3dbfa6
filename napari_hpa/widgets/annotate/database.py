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
    """Say in one line that the database at ``path`` failed, and why."""
    text = str(exc).strip()
    reason = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    where = str(path) if path is not None else "the annotations database"
    return reason if where in reason else f"{where}: {reason}"


def open_store(path: Path) -> tuple[AnnotationStore | None, str | None]:
    """Open the database at ``path``: the store and None, or None and why not (one line)."""
    try:
        return AnnotationStore(path), None
    except STORE_ERRORS as exc:
        return None, store_problem(exc, path)


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
