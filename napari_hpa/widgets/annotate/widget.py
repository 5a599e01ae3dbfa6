"""The Annotate dock widget: correct predictions, image by image and cell by cell.

Checkboxes show the *effective* labels of the image (or of the selected cell): the user's
value where there is one, else the model's. Every toggle is written at once to the image
folder's annotations database (``core.annotations``), so nothing is lost when napari closes
or crashes. Number keys 1-9 toggle the most probable classes, Ctrl+Z / Ctrl+Shift+Z undo and
redo, a click on a cell selects it (Esc goes back to the whole image), and Next / Previous
image walk the folder, in file order or in the review queue's order (``queue.py``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QFont
from qtpy.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ... import layers as L
from ...core.labels.store import AnnotationStore
from ...core.model import preferences as settings
from ...core.tasks import Task, get_task
from .._shared import results as R
from .._shared.canvas_text import show_text
from .._shared.scrolling import scroll_body
from .._shared.session import PredictionResult, connect_while_alive, session_for
from .._shared.tooltips import tip
from .._shared.wording import counted
from .._shared.workers import read_source
from .canvas_input import (
    NUMBER_KEYS,
    NumberKeys,
    add_shortcuts,
    bind_keys,
    click_callback,
    remove_input,
)
from .checklist import fill_checklist
from .database import (
    STORE_ERRORS,
    db_path_for,
    not_saved,
    open_store,
    store_problem,
    store_result,
)
from .export import ExportButtons
from .folder import folder_images, next_in
from .queue import QueuePanel
from .unsaved import PendingLabel, Unsaved

if TYPE_CHECKING:
    import napari


class AnnotateWidget(QWidget):
    """Dock widget: image- and cell-level class checkboxes written to the annotations database.

    Parameters
    ----------
    napari_viewer
        The viewer (napari passes it).
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.store: AnnotationStore | None = None
        self.source: str | None = None
        self.image_id: str = ""
        self.task: Task = self._default_task()
        self._order: list[int] = []
        self._loader: Any = None
        self._writer: Any = None
        self._bound: list[weakref.ref] = []
        #: Corrections the database could not take yet (a full disk): shown, retried.
        self._unsaved = Unsaved()
        #: The canvas's mouse-drag callback: a click on a cell selects it.
        self._on_click = click_callback(self.select_at)
        self._build()
        self._bind_keys(self.viewer)
        for layer in self.viewer.layers:
            self._on_layer_inserted(layer)
        self.viewer.mouse_drag_callbacks.append(self._on_click)
        self.session.add_dock(self)
        connect_while_alive(
            self,
            [
                (self.viewer.layers.events.inserted, self._on_inserted_event),
                (self.viewer.layers.events.removed, self._on_removed_event),
                (self.session.prediction_changed, self._on_prediction),
                (self.session.cell_selected, self._on_cell_selected),
                (self.session.image_changed, self._on_image_changed),
            ],
            cleanup=partial(remove_input, self._bound, self.viewer, self._on_click, self),
        )
        self._on_prediction(self.session.result)  # None: refresh

    # -- layout -----------------------------------------------------------------------
    def _build(self) -> None:
        self.image_label = QLabel("No image")
        font = QFont(self.image_label.font())
        font.setBold(True)
        self.image_label.setFont(font)
        self.prev_button = QPushButton("◀ Previous image")
        self.prev_button.setToolTip(tip("previous"))
        self.prev_button.clicked.connect(lambda: self.step(-1))
        self.next_button = QPushButton("Next image ▶")
        self.next_button.setToolTip(tip("next"))
        self.next_button.clicked.connect(lambda: self.step(1))
        self.auto_predict = QCheckBox("auto-predict")
        self.auto_predict.setChecked(True)
        self.auto_predict.setToolTip(tip("auto_predict"))
        nav = QHBoxLayout()
        nav.addWidget(self.prev_button)
        nav.addWidget(self.next_button)
        nav.addWidget(self.auto_predict)
        self.queue = QueuePanel(self)  # the order Next walks the folder in

        self.scope_label = QLabel("")
        self.scope_label.setWordWrap(True)
        self.list = QListWidget()
        self.list.setToolTip(tip("labels"))
        self.list.setMinimumHeight(260)
        self.list.itemChanged.connect(self._on_item_changed)

        self.accept_button = QPushButton("Accept prediction")
        self.accept_button.setToolTip(tip("accept"))
        self.accept_button.clicked.connect(self.accept_prediction)
        self.undo_button = QPushButton("Undo")
        self.undo_button.setToolTip(tip("undo"))
        self.undo_button.clicked.connect(self.undo)
        self.redo_button = QPushButton("Redo")
        self.redo_button.setToolTip(tip("redo"))
        self.redo_button.clicked.connect(self.redo)
        edit = QHBoxLayout()
        edit.addWidget(self.accept_button, 1)
        edit.addWidget(self.undo_button)
        edit.addWidget(self.redo_button)

        self.db_label = QLabel("")
        self.db_label.setWordWrap(True)
        self.db_label.setToolTip(tip("database"))
        self.db_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.exports = ExportButtons(lambda: self.store, lambda: self.task, lambda: self.source)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        layout = QVBoxLayout(scroll_body(self))  # a short screen scrolls it
        layout.addWidget(self.image_label)
        layout.addLayout(nav)
        layout.addWidget(self.queue)
        layout.addWidget(self.scope_label)
        layout.addWidget(self.list, 1)
        layout.addLayout(edit)
        layout.addWidget(self.status)
        layout.addWidget(self.db_label)
        layout.addWidget(self.exports)
        add_shortcuts(self, self.toggle_rank, self.undo, self.redo)
        self._list_keys = NumberKeys(self.list, self.toggle_rank)  # 1-9 with the list focused

    # -- keys and clicks on the canvas ------------------------------------------------------
    def _bind_keys(self, target: Any) -> None:
        """Bind 1-9, Ctrl+Z, Ctrl+Shift+Z and Esc on the viewer or one of our layers."""
        actions: dict[str, Callable[[], Any]] = {
            key: partial(self.toggle_rank, int(key) - 1) for key in NUMBER_KEYS
        }
        actions.update(
            {
                "Control-Z": self.undo,
                "Control-Shift-Z": self.redo,
                "Escape": partial(self.session.select_cell, None),
            }
        )
        bind_keys(target, actions)
        self._bound.append(weakref.ref(target))

    def _on_inserted_event(self, event: Any) -> None:
        self._on_layer_inserted(event.value)

    def _on_removed_event(self, event: Any) -> None:
        """Annotate the newest image still shown when the image's layers are all deleted."""
        if L.meta(event.value).get("kind") != "channel" or not self.source:
            return
        shown = [L.meta(lyr) for lyr in self.viewer.layers if L.meta(lyr).get("kind") == "channel"]
        if any(m.get("source") == self.source for m in shown):
            return
        if shown:
            self._set_image(str(shown[-1]["source"]), str(shown[-1].get("image_id", "")))
        else:
            self.source, self.image_id = None, ""
            self.refresh()

    def _on_cell_selected(self, _cell: Any) -> None:
        self.refresh()

    def _on_image_changed(self, source: str) -> None:
        """Follow an image another dock showed in the same layers (Batch's double-click)."""
        if source == self.source:
            return
        layer = L.channel_layer_of(self.viewer, source)
        self._set_image(source, str(L.meta(layer).get("image_id", "")))

    def _on_layer_inserted(self, layer: Any) -> None:
        m = L.meta(layer)
        if m:  # our layers get the keys too: a layer's own keys win over the viewer's
            self._bind_keys(layer)
        if m.get("kind") == "channel" and m.get("source") != self.source:
            self._set_image(str(m["source"]), str(m.get("image_id", "")))

    def select_at(self, position: Any) -> int | None:
        """Select the cell under ``position`` (world coordinates); background deselects."""
        layer = R.find_layer(self.viewer, "cells")
        if layer is None or not layer.visible or layer.mode not in ("pan_zoom", "pick"):
            return None
        cell = R.cell_of(layer, layer.get_value(position, world=True))  # inside or outline
        self.session.select_cell(cell)
        return cell

    # -- image, store, prediction -----------------------------------------------------------
    @staticmethod
    def _default_task() -> Task:
        try:
            return settings.model_to_use().spec.task
        except LookupError:
            return get_task("hpa28")

    def _set_image(self, source: str, image_id: str) -> None:
        self.source, self.image_id = source, image_id or Path(source).name
        self._open_store(source)
        self.refresh()

    def db_path_for(self, source: str) -> Path:
        """Return the annotations database of an image (``database.db_path_for``)."""
        return db_path_for(source)

    def _open_store(self, source: str) -> None:
        from napari.utils.notifications import show_error

        path = self.db_path_for(source)
        if self.store is not None and self.store.path == path:
            return
        if self.store is not None:
            self.store.close()
        self.store, problem = open_store(path)
        self.db_label.setText(f"Database: {path if problem is None else f'none ({problem})'}")
        if problem is not None:
            show_error(f"Cannot open the annotations database: {problem}")

    def _on_prediction(self, result: PredictionResult | None) -> None:
        """Store a new prediction's labels (in a worker: the mask is big), then show them."""
        if result is None:
            self.refresh()
            return
        from napari.qt.threading import create_worker

        self.task = result.entry.spec.task
        self._set_image(result.source, result.image.image_id)
        if self.store is None:
            return
        worker = create_worker(store_result, self.store, result, _start_thread=False)
        worker.returned.connect(partial(self._on_stored, worker))
        self._writer = worker
        worker.start()

    def _on_stored(self, worker: Any, problem: str | None = None) -> None:
        # A result is published twice (image, then cells): only the last writer's end counts.
        if worker is self._writer:
            self._writer = None
        self.refresh()
        if problem:
            self.status.setText(f"The prediction was not saved: {problem}")

    # -- the checklist ---------------------------------------------------------------------
    @property
    def cell(self) -> int:
        """The level being edited: the selected cell, or 0 (the whole image)."""
        return int(self.session.selected_cell or 0)

    def _probabilities(self) -> np.ndarray | None:
        result = self.session.result
        if result is None or result.source != self.source:
            return None
        if self.cell:
            pred = result.cells.get(self.cell)
            return None if pred is None else pred.probabilities
        return result.prediction.probabilities

    def refresh(self) -> None:
        """Rebuild the checklist from the database (effective labels of the current level)."""
        classes = self.task.classes
        probs = self._probabilities()
        effective: set[int] = set()
        model: set[int] = set()
        user: dict[int, bool] = {}
        try:
            if probs is None and self.store is not None and self.source:
                scores = self.store.model_scores(self.source, self.task.name, self.cell)
                if scores:
                    probs = np.array([scores.get(i, -1.0) for i in range(len(classes))])
            if self.store is not None and self.source:
                effective = self.store.effective_labels(self.source, self.task.name, self.cell)
                user = self.store.user_labels(self.source, self.task.name, self.cell)
                model = self.store.model_labels(self.source, self.task.name, self.cell)
        except STORE_ERRORS as exc:
            self._store_failed(exc)
        level = (self.source, self.task.name, self.cell)
        effective, waiting = self._unsaved.overlay(*level, effective)
        self._order = (
            list(np.argsort(-probs, kind="stable"))
            if probs is not None
            else list(range(len(classes)))
        )
        fill_checklist(self.list, classes, self._order, probs, effective, user, model, waiting)
        self._update_labels()

    def _update_labels(self) -> None:
        has_image = bool(self.source)
        self.image_label.setText(f"Image: {self.image_id}" if has_image else "No image")
        if self.cell:
            self.scope_label.setText(
                f"Editing cell {self.cell} — Esc or a click on the "
                "background goes back to the whole image."
            )
        else:
            self.scope_label.setText("Editing the whole image — click a cell to edit its labels.")
        can = self.store is not None
        self.undo_button.setEnabled(can and self.store.can_undo())
        self.redo_button.setEnabled(can and self.store.can_redo())
        for button in (self.prev_button, self.next_button):
            button.setEnabled(has_image and can)
        self.accept_button.setEnabled(self.has_prediction())
        self.queue.follow()
        self._show_selected()

    def _show_selected(self) -> None:
        """Outline the selected cell (a small layer; the cells layer is not redrawn)."""
        result = self.session.result
        if result is None or result.labels is None or result.cells_display is None:
            return
        box = result.cells_display.boxes.get(self.cell) if self.cell else None
        ref = L.channel_layer_of(self.viewer, result.source)
        R.show_selected(self.viewer, result.labels, box, self.cell or None, result.source, ref)

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        self.set_label(int(item.data(Qt.UserRole)), item.checkState() == Qt.Checked)

    # -- editing -----------------------------------------------------------------------------
    def set_label(self, class_index: int, value: bool) -> None:
        """Set one class of the current image or cell (written to the database at once)."""
        if self.store is None or not self.source:
            return
        # written at once below, or kept (shown as not saved) and retried with the next one
        self._unsaved.add(PendingLabel(self.source, self.task.name, self.cell, class_index, value))
        try:
            self._unsaved.flush(self.store)
        except STORE_ERRORS as exc:
            self.refresh()
            self._store_failed(exc)
            return
        self.status.setText(
            f"{'Set' if value else 'Cleared'} {self.task.classes[class_index]}"
            + (f" for cell {self.cell}" if self.cell else "")
        )
        self.refresh()

    def _store_failed(self, exc: BaseException) -> None:
        """Say in one line that the database failed (after it was opened); nothing raises."""
        problem = store_problem(exc, None if self.store is None else self.store.path)
        self.status.setText(not_saved(problem, len(self._unsaved)))

    def toggle(self, class_index: int) -> None:
        """Flip one class of the current image or cell."""
        if self.store is None or not self.source:
            return
        try:
            now = self.store.effective_labels(self.source, self.task.name, self.cell)
        except STORE_ERRORS as exc:
            self._store_failed(exc)
            return
        now, _ = self._unsaved.overlay(self.source, self.task.name, self.cell, now)
        self.set_label(class_index, class_index not in now)

    def toggle_rank(self, rank: int) -> None:
        """Flip the class shown at ``rank`` (0 = the most probable): number keys 1-9."""
        if 0 <= rank < len(self._order):
            self.toggle(int(self._order[rank]))

    def has_prediction(self) -> bool:
        """Tell whether the image (or the selected cell) has a stored prediction to accept."""
        if self.store is None or not self.source:
            return False
        try:
            return self.store.model_id(self.source, self.task.name, self.cell) is not None
        except STORE_ERRORS:
            return False

    def accept_prediction(self) -> None:
        """Make the model's prediction the user's labels for the image or the selected cell."""
        if self.store is None or not self.source:
            return
        if not self.has_prediction():  # nothing to accept: say so, write nothing
            where = f"cell {self.cell}" if self.cell else "this image"
            self.status.setText(f"There is no prediction to accept for {where}: Predict first.")
            return
        try:
            self._unsaved.flush(self.store)
            edits = self.store.accept_model(self.source, self.task.name, cell=self.cell)
        except STORE_ERRORS as exc:
            self._store_failed(exc)
            return
        self.status.setText(
            f"Accepted the prediction ({counted(len(edits), 'class', 'classes')} confirmed)."
        )
        self.refresh()

    def undo(self) -> None:
        """Undo the last change (of any image of this database)."""
        self._replay(self.store.undo if self.store else None, "Undid")

    def redo(self) -> None:
        """Redo the last undone change."""
        self._replay(self.store.redo if self.store else None, "Redid")

    def _replay(self, action: Callable[[], Any] | None, verb: str) -> None:
        try:
            edits = action() if action is not None else None
        except STORE_ERRORS as exc:
            self._store_failed(exc)
            return
        if not edits:
            self.status.setText("Nothing to undo." if verb == "Undid" else "Nothing to redo.")
            return
        e = edits[0]
        where = "" if e.source == self.source else f" on {Path(e.source).name}"
        self.status.setText(f"{verb} {counted(len(edits), 'change')}{where}.")
        self.refresh()

    # -- walking the folder ----------------------------------------------------------------
    def neighbours(self) -> list[str]:
        """List the images of the current image's folder, sorted (what Next/Previous walk)."""
        return folder_images(self.source)

    def step(self, offset: int) -> str | None:
        """Open the image ``offset`` places away in the folder or the queue (in a worker)."""
        from napari.qt.threading import create_worker

        sources = self.neighbours()
        if self.source not in sources:
            return None
        queue = self.queue.active  # Next: the queue's first image not reviewed yet
        target = self.queue.target(offset) if queue else next_in(sources, self.source, offset)
        if target is None:
            return None
        self.status.setText(f"Opening {Path(target).name}…")
        self._loader = create_worker(read_source, target, _start_thread=False)
        self._loader.returned.connect(self._show_image)
        self._loader.start()
        return target

    def _show_image(self, outcome: Any) -> None:
        from napari.utils.notifications import show_error

        self._loader = None
        if isinstance(outcome, str):
            show_error(outcome)
            self.status.setText(outcome)
            return
        self.session.set_result(None)
        show_text(self.viewer, None)
        L.replace_image(self.viewer, outcome)
        self._set_image(outcome.source, outcome.image_id)
        self.session.image_changed.emit(outcome.source)
        self.status.setText(f"Opened {outcome.image_id}.")
        if self.auto_predict.isChecked():
            if not len(self.session.predict_requested):
                self.viewer.window.add_plugin_dock_widget("napari-hpa", "Predict")
            self.session.predict_requested.emit()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        """Close the database when the dock closes (every change is written already)."""
        if self.store is not None:
            self.store.close()
            self.store = None
        super().closeEvent(event)
