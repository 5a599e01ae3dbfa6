"""The Predict dock widget: run a model on the image layers, show what it found.

All the work (model loading, preprocessing, inference, activation maps, cell
segmentation and per-cell classification) runs in a napari ``thread_worker``;
the main thread only reads the widgets and adds the result layers, so the
viewer stays responsive. The widget is a view of :class:`~._state.PredictState`
and the viewer's :class:`~._state.Session`.
"""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ... import layers as L
from ...core.model import preferences as settings
from ...core.model.registry import ModelEntry, list_models
from .._shared import results as R
from .._shared.backend_box import backend_box, device_box
from .._shared.canvas_text import show_text
from .._shared.scrolling import narrow_combo, scroll_body
from .._shared.session import (
    PredictionResult,
    PredictState,
    connect_while_alive,
    session_for,
    still_shown,
)
from .._shared.tooltips import tip
from .._shared.workers import compute_cam, run_prediction
from .add_model import AddModelButton
from .channels import ChannelBox
from .model_card import ModelCardDialog
from .summary import StatusLine, overlay_text
from .table import ProbabilityTable

if TYPE_CHECKING:
    import napari


class PredictWidget(QWidget):
    """Dock widget: pick a model and channels, press Predict, read the table and maps.

    Parameters
    ----------
    napari_viewer
        The viewer (napari passes it).
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.state = PredictState()
        self.worker: Any = None
        self.cam_worker: Any = None
        self._entries: list[ModelEntry] = []
        self.status_line = StatusLine()  # warns once per result of a blank image
        self._build()
        self.refresh_models()
        layers = self.viewer.layers.events
        self.session.add_dock(self)
        connect_while_alive(
            self,
            [
                (layers.inserted, self._on_layers_changed),
                (layers.removed, self._on_layers_changed),
                (self.session.predict_requested, self.predict),
                (self.session.prediction_changed, self._on_session_result),
            ],
            cleanup=partial(_closed, self.state, self.session, self),
        )

    # -- layout ---------------------------------------------------------------------
    def _build(self) -> None:
        self.model_combo = QComboBox()
        self.model_combo.setToolTip(tip("model"))
        narrow_combo(self.model_combo, 16)  # the full name is in the tooltip
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        self.refresh_button = QToolButton()
        self.refresh_button.setText("↻")
        self.refresh_button.setToolTip(tip("refresh"))
        self.refresh_button.clicked.connect(self.refresh_models)
        self.card_button = QToolButton()
        self.card_button.setText("Card")
        self.card_button.setToolTip(tip("card"))
        self.card_button.clicked.connect(self.show_card)
        self.card_dialog: ModelCardDialog | None = None
        self.add_button = AddModelButton(self)
        self.device_combo = device_box()
        self.device_combo.currentTextChanged.connect(self._on_device_changed)
        self.backend_combo = backend_box()
        self.backend_combo.currentTextChanged.connect(self._on_backend_changed)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.refresh_button)
        model_row.addWidget(self.card_button)
        model_row.addWidget(self.add_button)
        form = QFormLayout()
        form.addRow("Model", model_row)
        run_on = QHBoxLayout()
        run_on.addWidget(self.device_combo, 1)
        run_on.addWidget(QLabel("Backend"))
        run_on.addWidget(self.backend_combo, 1)
        form.addRow("Device", run_on)

        self.channel_box = ChannelBox(self.state)
        self.cells_check = QCheckBox("Find and classify cells")
        self._want_cells = self.state.find_cells  # the user's choice, kept across models
        self.cells_check.setChecked(self.state.find_cells)
        self.cells_check.setToolTip(tip("cells"))
        self.cells_check.toggled.connect(self._on_cells_toggled)

        self.predict_button = QPushButton("Predict")
        self.predict_button.setToolTip(tip("predict"))
        self.predict_button.clicked.connect(self.predict)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip(tip("cancel"))
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.predict_button, 1)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("Ready")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.table = ProbabilityTable()
        self.table.setMinimumHeight(260)
        self.table.class_selected.connect(self.show_class)

        layout = QVBoxLayout(scroll_body(self))  # a short screen scrolls it
        layout.addLayout(form)
        layout.addWidget(self.channel_box)
        layout.addWidget(self.cells_check)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)

    # -- models and channels ----------------------------------------------------------
    @property
    def entry(self) -> ModelEntry | None:
        """The chosen model (None when no model is installed)."""
        i = self.model_combo.currentIndex()
        return self._entries[i] if 0 <= i < len(self._entries) else None

    def refresh_models(self) -> None:
        """List the models again (new versions appear); keeps the current choice."""
        current = self.state.model_path
        self._entries = list_models()
        if current is None and self._entries:
            try:
                current = str(settings.model_to_use().path)
            except LookupError:
                current = None
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for e in self._entries:
            task = e.spec.task
            self.model_combo.addItem(f"{e.id}  ·  {task.name}")
            self.model_combo.setItemData(
                self.model_combo.count() - 1,
                f"{e.id} ({e.source}): task {task.name}, {task.kind}, {task.num_classes} "
                f"classes; channels {', '.join(e.spec.input.channels)}\n{e.spec.description}",
                3,  # Qt.ToolTipRole
            )
        paths = [str(e.path) for e in self._entries]
        self.model_combo.setCurrentIndex(paths.index(current) if current in paths else 0)
        self.model_combo.blockSignals(False)
        if not self._entries:
            self.status.setText("No models found: train one or install a bundled model.")
        self._on_model_changed()

    def show_card(self) -> None:
        """Open (or bring forward) the chosen model's card in its own window."""
        entry = self.entry
        if entry is None:
            return
        if self.card_dialog is None or self.card_dialog.entry.path != entry.path:
            if self.card_dialog is not None:
                self.card_dialog.close()
            self.card_dialog = ModelCardDialog(entry, self)
        self.card_dialog.show()
        self.card_dialog.raise_()

    def select_model(self, model: ModelEntry | str) -> bool:
        """Select a model by entry, path, ``name@version`` or id; False if it is not listed."""
        if isinstance(model, str):
            from ...core.model.registry import resolve_model

            try:
                model = resolve_model(model)
            except LookupError:
                return False
        paths = [str(e.path) for e in self._entries]
        if str(model.path) not in paths:
            self.refresh_models()
            paths = [str(e.path) for e in self._entries]
        if str(model.path) not in paths:
            return False
        self.model_combo.setCurrentIndex(paths.index(str(model.path)))
        return True

    def _on_model_changed(self, *_: Any) -> None:
        entry = self.entry
        self.state.model_path = None if entry is None else str(entry.path)
        self.card_button.setEnabled(entry is not None)
        self.state.manual.clear()
        self._update_cells_option(entry)
        self._rebuild_channels()

    def _update_cells_option(self, entry: ModelEntry | None) -> None:
        """Offer to find cells only to models that read a nucleus channel.

        Cells grow from nuclei: a plankton or histology model would get one
        meaningless "cell" per image.
        """
        usable = entry is None or "nucleus" in entry.spec.input.channels
        self.cells_check.blockSignals(True)
        self.cells_check.setEnabled(usable)
        self.cells_check.setChecked(usable and self._want_cells)
        self.cells_check.blockSignals(False)
        self.cells_check.setToolTip(
            tip("cells") if usable else "This model has no nucleus channel, so no cells to find."
        )
        self.state.find_cells = usable and self._want_cells

    def _on_device_changed(self, device: str) -> None:
        self.state.device = device

    def _on_backend_changed(self, backend: str) -> None:
        self.state.backend = backend

    def _on_cells_toggled(self, on: bool) -> None:
        self._want_cells = self.state.find_cells = bool(on)

    def _on_layers_changed(self, event: Any = None) -> None:
        layer = getattr(event, "value", None)
        kind = L.meta(layer).get("kind")
        if event is not None and event.type == "inserted" and kind == "channel":
            self.state.manual.clear()  # a new image arrived: match its channels afresh
        if event is not None and kind not in (None, "channel"):
            return  # our own result layers do not change the channel choices
        self._cancel_if_stale()
        self._rebuild_channels()

    def _rebuild_channels(self) -> None:
        self.channel_box.rebuild(self.entry, list(self.viewer.layers))

    # -- running ---------------------------------------------------------------------
    def predict(self) -> None:
        """Start a prediction in the background (returns at once)."""
        from napari.qt.threading import create_worker
        from napari.utils.notifications import show_warning

        if self.state.running:  # one at a time; the newest request runs next
            self.state.queued = True
            self._cancel_if_stale()
            return
        collected = self.channel_box.collect(self.entry, list(self.viewer.layers))
        if isinstance(collected, str):
            show_warning(collected)
            self.status.setText(collected)
            return
        planes, used, average = collected
        source, image_id = L.image_source(used)
        # Cells grow from nuclei: an image without one (a Kaggle _green.png) has none to find.
        self.state.no_nucleus = self.state.find_cells and "nucleus" not in planes
        self.state.clicked_at = time.perf_counter()
        self.state.shown_after = None
        self.state.cancel.clear()
        self.state.running = True
        self.state.ref_layer = used[0].layer if used else None
        self.state.used_layers = [c.layer for c in used]
        self.state.used_source = source
        self.state.used_id = image_id
        self.state.stale = False
        self.state.queued = False
        self._set_busy(True, "Starting")
        self.worker = create_worker(
            run_prediction,
            self.session,
            self.entry,
            self.state.device,
            self.state.backend,
            planes,
            source,
            image_id,
            average,
            self.state.find_cells and not self.state.no_nucleus,
            self.state.cancel.is_set,
            _start_thread=False,
        )
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_result)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def cancel(self) -> None:
        """Ask the running prediction to stop (at its next step)."""
        if self.worker is not None and self.state.running:
            self.state.cancel.set()
            self._set_progress(None, "Cancelling…")

    def _set_busy(self, busy: bool, text: str = "") -> None:
        self.predict_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.model_combo.setEnabled(not busy)
        self.device_combo.setEnabled(not busy)
        self.backend_combo.setEnabled(not busy)
        if busy:
            self._set_progress(0, f"%p%  {text}")

    def _set_progress(self, value: float | None, text: str) -> None:
        """Update the progress bar without a synchronous repaint.

        ``QProgressBar.setValue`` repaints at once, and with napari's OpenGL canvas in
        the same window every repaint redraws the whole window (a frame: 10-200 ms).
        With updates off the change is drawn with the next frame instead.
        """
        bar = self.progress
        bar.setUpdatesEnabled(False)
        if value is not None:
            bar.setValue(int(value))
        bar.setFormat(text)
        bar.setUpdatesEnabled(True)

    def _on_progress(self, step: tuple) -> None:
        stage, fraction = step[0], step[1]
        self._set_progress(100 * fraction, f"%p%  {stage}")
        if len(step) > 2 and self._still_shown(step[2]):  # the image-level result, before cells
            self.show_result(step[2])

    def _on_finished(self) -> None:
        self.state.running = False
        self._set_busy(False)
        self.worker = None
        if self.state.queued:
            self.state.queued = False
            self.predict()

    def _still_shown(self, result: PredictionResult) -> bool:
        """Tell whether the layers the prediction read still show its image."""
        return still_shown(self.state.used_layers, self.viewer.layers, result.source)

    def _cancel_if_stale(self) -> None:
        """Stop a running prediction whose image is gone: its result would be dropped."""
        used, source = self.state.used_layers, self.state.used_source
        if self.state.running and not still_shown(used, self.viewer.layers, source):
            self.cancel()
            self.state.stale = True

    def _dropped(self, image_id: str) -> None:
        """Say that a prediction ended for an image no longer shown (it is not shown either)."""
        self._set_progress(0, "Ready")
        self.status.setText(f"Prediction of {image_id} stopped: its image is no longer shown.")

    def _on_result(self, outcome: PredictionResult | str | None) -> None:
        from napari.utils.notifications import show_error

        if outcome is None and self.state.stale:
            self._dropped(self.state.used_id)
            return
        if outcome is None:
            self._set_progress(None, "Cancelled")
            self.status.setText("Prediction cancelled.")
            return
        if isinstance(outcome, str):
            self._set_progress(None, "Failed")
            self.status.setText(outcome)
            show_error(outcome)
            return
        if not self._still_shown(outcome):
            self._dropped(outcome.image.image_id)
            return
        if self.session.result is not outcome:
            self.show_result(outcome)
        self.show_cells(outcome)
        self._set_progress(100, "Done")

    # -- showing -------------------------------------------------------------------------
    def show_result(self, result: PredictionResult) -> None:
        """Show the image-level result: overlay, table, the top class's map."""
        pred = result.prediction
        # The old image's layers go first: removing them must not clear the new result.
        L.clear_results(self.viewer, keep_source=result.source)
        self.session.set_result(result, self.state.used_layers)
        self._update_overlay(result)
        self.state.shown_after = time.perf_counter() - self.state.clicked_at
        self.table.set_probabilities(pred.classes, pred.probabilities, pred.predicted)
        self._set_status(result)
        order = result.order()
        if order:
            self.table.select_class(order[0])

    def show_cells(self, result: PredictionResult) -> None:
        """Show the cells layer (each cell outlined in its top class's colour)."""
        if result.cells_display is None:
            for kind in ("cells", "selected-cell"):
                layer = R.find_layer(self.viewer, kind)
                if layer is not None:
                    self.viewer.layers.remove(layer)
            return
        R.show_cells(self.viewer, result.cells_display, result.source, self.state.ref_layer)
        self.viewer.tooltip.visible = True  # hovering a cell shows its classes
        self.table.set_colors(result.cells_display.top_colors)
        self._set_status(result)
        self.session.set_result(result)

    def _set_status(self, result: PredictionResult) -> None:
        self.status.setText(self.status_line.text(result, self.state.no_nucleus))

    def _on_session_result(self, result: PredictionResult | None) -> None:
        if result is not None:
            return
        # The image changed (another one opened, its layers deleted, Next image): the old
        # results no longer apply. Its result layers go after this event (not inside a
        # layer-list event of napari's).
        self.table.setRowCount(0)
        show_text(self.viewer, None)
        self._set_progress(0, "Ready")
        self.status.setText("")
        self._cancel_if_stale()
        QTimer.singleShot(0, self._clear_stale_layers)

    def _clear_stale_layers(self) -> None:
        """Remove the result layers of any image but the current result's."""
        result = self.session.result
        L.clear_results(self.viewer, keep_source=None if result is None else result.source)

    def _update_overlay(self, result: PredictionResult) -> None:
        show_text(self.viewer, overlay_text(result))

    def show_class(self, class_index: int) -> None:
        """Show the activation map of ``class_index`` (made in a worker if not yet made)."""
        from napari.qt.threading import create_worker

        result = self.session.result
        if result is None:
            return
        self.state.selected_class = class_index
        if class_index in result.cams:
            R.show_cam(
                self.viewer,
                result.cams[class_index],
                result.cam_factor,
                result.classes[class_index],
                result.source,
                self.state.ref_layer,
            )
            return
        if self.state.cam_running is not None or result.prediction.activations is None:
            return  # the running one shows the latest choice when it ends
        self.state.cam_running = class_index
        self.cam_worker = create_worker(compute_cam, result, class_index, _start_thread=False)
        self.cam_worker.returned.connect(partial(self._on_cam, result))
        self.cam_worker.start()

    def _on_cam(self, result: PredictionResult, outcome: tuple[int, Any]) -> None:
        class_index, cam = outcome
        self.state.cam_running = None
        self.cam_worker = None
        result.cams[class_index] = cam  # the result it was made for, even if a newer one is shown
        if self.state.selected_class is not None and self.session.result is not None:
            self.show_class(self.state.selected_class)


def _closed(state: PredictState, session: Any, widget: QWidget) -> None:
    """Stop a closed Predict dock's prediction and take it off the session's docks."""
    state.cancel.set()
    session.remove_dock(widget)
