"""The review queue's work off the GUI thread: ranking the folder, predicting what it needs.

The queue ranks the images by their stored predictions (:func:`rank_folder`: hundreds of
images with their cells are hundreds of milliseconds of queries), so the ones without any
are predicted with the batch path (:func:`~napari_hpa.core.batch.run.run_batch`: the
prediction Predict and ``napari-hpa batch`` give) into a table in a temporary folder,
and its rows are stored as the model's labels, image level, in one transaction. It runs
in a napari thread worker (no Qt here) and never raises: the outcome says what went wrong.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...core.batch.output import read_table
from ...core.batch.records import decode_image
from ...core.batch.run import BatchProgress, run_batch
from ...core.labels import review
from ...core.labels.store import AnnotationStore
from ...core.model.registry import ModelEntry
from .database import STORE_ERRORS, store_problem

#: Below this many images the decoding stays in napari's process: starting worker
#: processes (each imports torch) costs more than it saves.
INLINE_BELOW = 16


@dataclass
class FolderPrediction:
    """What one run stored: images predicted, images that failed (their lines), a stop."""

    stored: int = 0
    errors: list[str] = field(default_factory=list)
    cancelled: bool = False
    problem: str | None = None

    def summary(self) -> str:
        """Say the outcome in one line, for a notification."""
        if self.problem is not None:
            return f"Could not predict the folder: {self.problem}"
        text = f"Predicted {self.stored} image{'s' if self.stored != 1 else ''} for the queue"
        if self.errors:
            text += f"; {len(self.errors)} could not be read: {self.errors[0]}"
        return text + (" (cancelled)" if self.cancelled else ".")


def predict_into_store(
    store: AnnotationStore,
    sources: Sequence[str],
    entry: ModelEntry,
    device: str = "auto",
    backend: str = "auto",
    progress: Callable[[BatchProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FolderPrediction:
    """Predict ``sources`` with ``entry`` and store the image-level predictions.

    A cancelled run stores what it finished. Every failure (a model that will not load,
    the database) is the outcome's ``problem`` line, never an exception: the worker's
    end is then one notification, not a traceback.
    """
    outcome = FolderPrediction()
    if not sources:
        return outcome
    task = entry.spec.task
    exact = {os.path.abspath(s): s for s in sources}  # the table holds absolute names
    try:
        with tempfile.TemporaryDirectory(prefix="napari-hpa-queue-") as tmp:
            out = Path(tmp) / "predictions.csv"
            summary = run_batch(
                list(sources),
                out,
                str(entry.path),
                device=device,
                backend=backend,
                workers=0 if len(sources) < INLINE_BELOW else None,
                recursive=False,
                progress=progress,
                should_stop=should_stop,
            )
            outcome.cancelled = summary.cancelled
            _columns, rows = read_table(out) if out.exists() else ([], [])
        with store.transaction():
            for row in rows:
                source = decode_image(str(row["image"]))
                source = exact.get(os.path.abspath(source), source)
                if row.get("status") not in ("ok", "warning"):
                    outcome.errors.append(str(row.get("error") or source))
                    continue
                probs = [float(row[name]) for name in task.classes]
                predicted = [int(t) for t in str(row.get("predicted") or "").split()]
                store.set_model_labels(source, task.name, probs, predicted, str(row["model"]))
                outcome.stored += 1
    except Exception as exc:  # noqa: BLE001 - the worker's end: one line, never a traceback
        text = " ".join(str(exc).split()) or type(exc).__name__
        outcome.problem = text[:300]
    return outcome


def rank_folder(
    store: AnnotationStore,
    task: str,
    classes: Sequence[str],
    sources: Sequence[str],
    order: str,
    class_index: int | None = None,
) -> tuple[list[review.ReviewItem], list[str]] | str:
    """Rank ``sources`` by their stored predictions: the queue and the sources with none.

    The problem in one line instead when the database fails.
    """
    try:
        scored = review.stored_predictions(store, task, sources, len(classes))
        ranked = review.rank_images(scored, classes, order, class_index)
    except (*STORE_ERRORS, ValueError) as exc:
        return f"Cannot rank the folder: {store_problem(exc, store.path)}"
    return ranked, [s.source for s in scored if s.image is None]
