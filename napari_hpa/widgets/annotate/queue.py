"""The Annotate dock's review queue: the order Next walks the folder in, and why.

A correction teaches the model most where it was unsure, so Next can open the
folder's images least certain first (or lowest confidence first, or only those of one
predicted class) instead of in file order. The ranking is
:func:`~napari_hpa.core.labels.review.rank_images` over the predictions stored in the
annotations database; images without one are predicted in the background with the
batch path (:mod:`.folder_predict`), with progress and a Cancel. Next opens the first
item not reviewed yet and marks the image it leaves reviewed; Previous goes back
through the images Next came from. The order is stored per task in the database, so
the folder opens again in it. File order leaves Next and Previous as they always were.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ...core.batch.run import BatchProgress
from ...core.labels import review
from ...core.model import preferences as settings
from .._shared.background import run_in_background
from .._shared.scrolling import narrow_combo
from .._shared.tooltips import tip
from .cell_queue import CellQueue
from .database import STORE_ERRORS, store_problem
from .folder import folder_images
from .folder_predict import FolderPrediction, predict_into_store, rank_folder

if TYPE_CHECKING:
    from ...core.model.registry import ModelEntry
    from .widget import AnnotateWidget

#: The orders' keys, in the order box's order (its first is the default).
ORDER_KEYS: list[str] = list(review.ORDERS)


class QueuePanel(QWidget):
    """The order box, the queue's counts and reason, and "Predict the folder".

    Parameters
    ----------
    dock
        The Annotate dock: its image, database and task are the queue's.
    """

    def __init__(self, dock: AnnotateWidget) -> None:
        super().__init__()
        self.dock = dock
        #: The folder's images in the queue's order, as last ranked.
        self.ranked: list[review.ReviewItem] = []
        #: The folder's images in file order, and those with no stored prediction.
        self.sources: list[str] = []
        self.missing: list[str] = []
        #: The images Next came from, for Previous.
        self.history: list[str] = []
        self.worker: Any = None
        #: The ranking in flight (a thread worker), its generation, and a predict to follow.
        self.ranker: Any = None
        self._generation = 0
        self._predict_after = False
        self._key: tuple[str, str, str] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._latest: BatchProgress | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._poll)
        self._build()
        self.destroyed.connect(self._stop.set)  # a closed dock leaves no run behind

    def _build(self) -> None:
        self.order_combo = QComboBox()
        self.order_combo.addItems([review.ORDERS[k] for k in ORDER_KEYS])
        self.order_combo.setToolTip(tip("queue_order"))
        narrow_combo(self.order_combo, 14)
        self.order_combo.activated.connect(self._on_order_chosen)
        self.class_combo = QComboBox()
        self.class_combo.setToolTip(tip("queue_class"))
        narrow_combo(self.class_combo, 12)
        self.class_combo.setVisible(False)
        self.class_combo.activated.connect(self._on_order_chosen)
        row = QHBoxLayout()
        row.addWidget(QLabel("Queue"))
        row.addWidget(self.order_combo, 1)
        row.addWidget(self.class_combo, 1)

        self.counts_label = QLabel("")
        self.counts_label.setWordWrap(True)
        self.counts_label.setToolTip(tip("queue_counts"))
        self.reason_label = QLabel("")
        self.reason_label.setWordWrap(True)
        self.predict_button = QPushButton("Predict the folder")
        self.predict_button.setToolTip(tip("queue_predict"))
        self.predict_button.clicked.connect(self.predict_folder)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip(tip("queue_cancel"))
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.predict_button, 1)
        buttons.addWidget(self.progress, 1)
        buttons.addWidget(self.cancel_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.counts_label)
        layout.addWidget(self.reason_label)
        layout.addLayout(buttons)
        self.cells = CellQueue(self.dock, lambda: self.order)  # within the image: its cells
        layout.addWidget(self.cells)
        self._show_busy(False)

    # -- the order -------------------------------------------------------------------------
    @property
    def order(self) -> str:
        """The chosen order's key (``review.ORDERS``)."""
        return ORDER_KEYS[max(0, self.order_combo.currentIndex())]

    @property
    def class_index(self) -> int | None:
        """The class of the order "one predicted class" (None for the other orders)."""
        i = self.class_combo.currentIndex()
        return i if self.order == "class" and i >= 0 else None

    @property
    def active(self) -> bool:
        """Whether Next and Previous follow the queue (every order but file order)."""
        return self.order != "file" and bool(self.sources)

    @property
    def ranking(self) -> bool:
        """Whether the folder is being ranked."""
        return self.ranker is not None

    @property
    def running(self) -> bool:
        """Whether the folder is being predicted."""
        return self.worker is not None

    def _on_order_chosen(self, *_: Any) -> None:
        """Store the user's choice, rank anew, and predict the images that need it."""
        self.class_combo.setVisible(self.order == "class")
        store, task = self.dock.store, self.dock.task
        if store is not None:
            try:
                store.set_review_order(task.name, self.order, self.class_index)
            except STORE_ERRORS as exc:
                _error(f"The queue's order was not saved: {store_problem(exc, store.path)}")
        self._predict_after = self.order != "file"  # once ranked: what is not predicted
        self.rerank()

    def _restore(self) -> None:
        """Show the order stored for this task (the default where none is)."""
        classes = self.dock.task.classes
        stored = None
        if self.dock.store is not None:
            try:
                stored = self.dock.store.review_order(self.dock.task.name)
            except STORE_ERRORS:
                stored = None  # the dock says what the database has; the default here
        key, cls = stored if stored is not None and stored[0] in ORDER_KEYS else (ORDER_KEYS[0], 0)
        if key == "class" and (cls is None or not 0 <= cls < len(classes)):
            key, cls = ORDER_KEYS[0], 0
        self.class_combo.clear()  # set here, not chosen: only a user's choice is stored
        self.class_combo.addItems(list(classes))
        self.class_combo.setCurrentIndex(cls or 0)
        self.order_combo.setCurrentIndex(ORDER_KEYS.index(key))
        self.class_combo.setVisible(key == "class")

    # -- following the dock ------------------------------------------------------------------
    def follow(self) -> None:
        """Follow the dock's image: a new folder, database or task ranks anew."""
        store, source = self.dock.store, self.dock.source
        folder = str(Path(source).parent) if source and not source.startswith("layer:") else ""
        key = (str(store.path) if store is not None else "", self.dock.task.name, folder)
        if key != self._key:
            self._key = key
            self.history.clear()
            self._restore()
            self.rerank()
            return
        if source in self.missing and self._has_prediction(source):
            self.rerank()  # Predict stored this one: it takes its place in the queue
        else:
            self.update_text()

    def _has_prediction(self, source: str) -> bool:
        store = self.dock.store
        try:
            return store is not None and bool(store.model_scores(source, self.dock.task.name))
        except STORE_ERRORS:
            return False

    def rerank(self, now: bool = False) -> None:
        """Rank the folder's images by their stored predictions, in the chosen order.

        In a thread worker (the queries of a big folder take a while); ``now`` ranks
        here, for a Next that cannot wait.
        """
        store, task = self.dock.store, self.dock.task
        self.sources = folder_images(self.dock.source)
        self._generation += 1
        self.ranker = None
        if store is None or not self.sources:
            self.ranked, self.missing = [], []
            self.update_text()
            return
        args = (store, task.name, task.classes, self.sources, self.order, self.class_index)
        if now:
            self._on_ranked((self._generation, rank_folder(*args)))
            return
        self.ranker = run_in_background(_numbered, self._generation, *args, done=self._on_ranked)
        self.update_text()

    def _on_ranked(self, numbered: tuple[int, Any]) -> None:
        generation, outcome = numbered
        if generation != self._generation:
            return  # an older ranking: a newer one is in flight or done
        self.ranker = None
        if isinstance(outcome, str):
            self.ranked, self.missing = [], []
            _error(outcome)
        else:
            self.ranked, self.missing = outcome
        self.update_text()
        if self._predict_after and self.missing and not self.running:
            self.predict_folder()
        self._predict_after = False

    def _reviewed(self) -> set[str]:
        store = self.dock.store
        if store is None:
            return set()
        try:
            return {source for source, _cell in store.reviewed(self.dock.task.name)}
        except STORE_ERRORS:
            return set()

    def update_text(self) -> None:
        """Say where the queue stands, and why the image shown is where it is."""
        if not self.sources:
            self.counts_label.setText("Queue: open an image of a folder.")
            self.reason_label.setVisible(False)
            self._show_busy(self.running)
            return
        if self.ranking and not self.ranked:
            self.counts_label.setText("Queue: ranking the folder's images…")
            self.reason_label.setVisible(False)
            self._show_busy(self.running)
            return
        done = self._reviewed()
        queue = [item.source for item in self.ranked]
        n, n_done = len(queue), len(done.intersection(queue))
        text = f"Queue: {n_done} of {n} reviewed, {n - n_done} left"
        if self.dock.source in queue:
            text += f" (this image: {queue.index(self.dock.source) + 1} of {n})"
        if self.missing:
            text += f"; {len(self.missing)} not predicted yet"
        self.counts_label.setText(text + ".")
        why = next((i.reason for i in self.ranked if i.source == self.dock.source), None)
        if self.order == "file":
            why = None
        elif why is None and self.dock.source:
            why = "not in this queue (its top class is another)"
        self.reason_label.setText(f"Why this image: {why}" if why else "")
        self.reason_label.setVisible(bool(why))
        self._show_busy(self.running)

    # -- Next and Previous ---------------------------------------------------------------------
    def target(self, offset: int) -> str | None:
        """Return the image Next (``offset`` > 0) or Previous opens in the queue's order.

        Next marks the image shown reviewed and gives the first image of the queue not
        reviewed yet; those not predicted yet come after the image shown in file order
        first. Previous gives the image Next came from, else the previous in the folder.
        None (said in a notification) when there is none.
        """
        from napari.utils.notifications import show_info

        current, store = self.dock.source, self.dock.store
        if offset < 0:
            while self.history:
                back = self.history.pop()
                if back != current and back in self.sources:
                    return back
            i = self.sources.index(current) - 1 if current in self.sources else -1
            if i < 0:
                show_info("This is the first image of the queue.")
                return None
            return self.sources[i]
        if self.ranking:
            self.rerank(now=True)
        if current and store is not None:
            try:
                store.mark_reviewed(current, self.dock.task.name)
            except STORE_ERRORS as exc:
                _error(f"Not marked reviewed: {store_problem(exc, store.path)}")
        done = self._reviewed() | {current}
        scored = [i.source for i in self.ranked if i.score != float("-inf")]
        position = {s: n for n, s in enumerate(self.sources)}  # not index() per image: O(n)
        here = position.get(current, -1)
        later = sorted(
            (i.source for i in self.ranked if i.score == float("-inf")),
            key=lambda s: (position[s] <= here, position[s]),
        )
        target = next((s for s in scored + later if s not in done), None)
        if target is None:
            show_info("Every image of the queue is reviewed.")
        elif current:
            self.history.append(current)
        self.update_text()
        return target

    # -- predicting the folder -------------------------------------------------------------------
    def _model(self) -> tuple[ModelEntry | None, str, str]:
        """Return the Predict dock's model, device and runtime, else the preferred model."""
        for predict in self.dock.session.docks("PredictWidget"):
            if predict.entry is not None:
                return predict.entry, predict.state.device, predict.state.backend
        try:
            return settings.model_to_use(), "auto", "auto"
        except LookupError:
            return None, "auto", "auto"

    def predict_folder(self) -> None:
        """Predict the folder's images that have no stored prediction, in the background."""
        store = self.dock.store
        if self.running or store is None or not self.missing:
            return
        entry, device, backend = self._model()
        if entry is None:
            _error("No model to predict the folder with: install or train one.")
            return
        if entry.spec.task.name != self.dock.task.name:  # its labels would be another task's
            _error(
                f"The model {entry.id} is for the task {entry.spec.task.name}, the queue for "
                f"{self.dock.task.name}: Predict this image with it first."
            )
            return
        self._stop.clear()
        self._latest = None
        self.progress.setRange(0, 0)  # busy until the first numbers arrive
        self.worker = run_in_background(
            predict_into_store,
            store,
            list(self.missing),
            entry,
            device,
            backend,
            self._on_progress,
            self._stop.is_set,
            done=self._on_predicted,
            errored=self._on_failed,
        )
        self._timer.start()
        self._show_busy(True)

    def cancel(self) -> None:
        """Stop predicting the folder (after the images in flight; they are kept)."""
        self._stop.set()
        self.cancel_button.setEnabled(False)

    def _on_progress(self, progress: BatchProgress) -> None:
        with self._lock:  # the worker's thread: kept for the timer, nothing Qt here
            self._latest = progress

    def _poll(self) -> None:
        with self._lock:
            p = self._latest
        if p is not None:
            self.progress.setRange(0, max(1, p.total))
            self.progress.setValue(p.skipped + p.done)
            self.progress.setFormat(f"%v of %m · {p.rate:.1f} img/s")

    def _on_predicted(self, outcome: FolderPrediction) -> None:
        from napari.utils.notifications import show_info

        self._finish()
        if outcome.problem is not None:
            _error(outcome.summary())
        else:
            show_info(outcome.summary())
        self.dock.refresh()  # the image shown may be one just predicted: its probabilities
        self.rerank()

    def _on_failed(self, exc: BaseException) -> None:
        self._finish()
        self.rerank()

    def _finish(self) -> None:
        self._timer.stop()
        self.worker = None
        self._show_busy(False)

    def _show_busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self.cancel_button.setEnabled(busy and not self._stop.is_set())
        n = len(self.missing)
        self.predict_button.setVisible(not busy and n > 0)
        self.predict_button.setText(f"Predict the folder ({n} not predicted)")


def _error(message: str) -> None:
    """Say a failure in one line (a napari notification)."""
    from napari.utils.notifications import show_error

    show_error(" ".join(message.split()))


def _numbered(generation: int, *args: Any) -> tuple[int, Any]:
    """Worker: :func:`rank_folder`, its outcome numbered, so that a stale one is dropped."""
    return generation, rank_folder(*args)
