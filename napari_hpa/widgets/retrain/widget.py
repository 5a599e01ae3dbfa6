"""The Retrain dock widget: one click retrains a model on the corrections, in the background.

The training runs in its own process (:mod:`napari_hpa.jobs`), so napari stays
responsive and the user goes on correcting images while the model learns; a
timer polls the job every 200 ms and never blocks. Starting, cancelling and
reading the database happen in napari thread workers. When the run is done, a second
background job scores the parent and the new version on held-out corrected
images, and the table shows what improved and what got worse.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ...core.model import preferences as settings
from ...core.model import registry
from ...jobs.retrain import (
    PRESETS,
    DataSummary,
    RetrainRequest,
    result_entry,
    start_retrain,
    summarize,
)
from ...jobs.runner import Job, JobManager
from .._shared.scrolling import scroll_body
from .._shared.tooltips import TOOLTIPS, tip
from .compare_panel import ComparePanel
from .counts_panel import CountsPanel
from .follow import UI_INTERVAL_S, JobFollowerMixin, one_paint
from .log import show_log_dialog
from .lookup import find_db, find_widgets, image_sources, model_for_tasks
from .plot import TrainingPlot
from .state import RetrainState, format_eta, progress_text

if TYPE_CHECKING:
    import napari

__all__ = [
    "POLL_MS",
    "TOOLTIPS",
    "UI_INTERVAL_S",
    "RetrainState",
    "RetrainWidget",
    "find_db",
    "format_eta",
    "image_sources",
    "progress_text",
    "tip",
]

POLL_MS = 200


# ----------------------------------------------------------------------------- widget
class RetrainWidget(JobFollowerMixin, QWidget):
    """Dock widget: counts of corrections, Retrain/Cancel, live plot, comparison, versions.

    Parameters
    ----------
    napari_viewer
        The viewer (napari passes it).
    manager
        The job manager (default: the user's jobs folder); tests may pass their own.
    """

    def __init__(self, napari_viewer: napari.Viewer, manager: JobManager | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.manager = manager or JobManager()
        self.state = RetrainState()
        # closed, or deleted by Qt with no closeEvent: a plain Event outlives the wrapper
        self._gone = threading.Event()
        self.destroyed.connect(self._gone.set)
        self._entries: list[registry.ModelEntry] = []
        self._final_shown: str | None = None
        self._unshown = 0
        self._last_ui = 0.0
        self._build()
        self.refresh_models()
        self.refresh_db()
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self._tick)
        self.timer.start()
        self.viewer.layers.events.inserted.connect(self._on_layers_changed)
        self._submit(self.manager.recover, self._on_recovered)

    # -- layout ---------------------------------------------------------------------------
    def _build(self) -> None:
        self.counts_panel = CountsPanel()
        self.counts_panel.browse_button.clicked.connect(self.choose_db)
        self.db_label = self.counts_panel.db_label
        self.counts_table = self.counts_panel.counts_table
        self.totals_label = self.counts_panel.totals_label
        self.warning_label = self.counts_panel.warning_label

        self.base_combo = QComboBox()
        self.base_combo.setToolTip(tip("base"))
        for combo in (self.base_combo,):
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(14)
        self.base_combo.currentIndexChanged.connect(self._on_base_changed)
        self.base_combo.activated.connect(self._on_base_picked)
        self.preset_combo = QComboBox()
        self.preset_combo.setToolTip(tip("preset"))
        for preset in PRESETS.values():
            self.preset_combo.addItem(preset.label, preset.key)
            self.preset_combo.setItemData(
                self.preset_combo.count() - 1, preset.description, Qt.ToolTipRole
            )
        self.preset_combo.currentIndexChanged.connect(self._on_preset_changed)
        self.holdout_spin = QDoubleSpinBox()
        self.holdout_spin.setRange(0.1, 0.5)
        self.holdout_spin.setSingleStep(0.05)
        self.holdout_spin.setDecimals(2)
        self.holdout_spin.setValue(self.state.holdout_fraction)
        self.holdout_spin.setToolTip(tip("holdout"))
        self.holdout_spin.valueChanged.connect(self._on_holdout_changed)
        form = QFormLayout()
        form.addRow("Base model", self.base_combo)
        form.addRow("Preset", self.preset_combo)
        form.addRow("Held out", self.holdout_spin)

        self.retrain_button = QPushButton("Retrain")
        self.retrain_button.setToolTip(tip("retrain"))
        self.retrain_button.clicked.connect(self.retrain)
        self.stop_button = QPushButton("Finish now")
        self.stop_button.setToolTip(tip("stop"))
        self.stop_button.clicked.connect(self.stop_early)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip(tip("cancel_training"))
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.retrain_button, 1)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setFormat("Ready")
        self.progress.setTextVisible(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        # Fixed heights: texts that change every 200 ms must not re-layout the dock (a
        # re-layout can resize napari's canvas, and redrawing it is what the user would feel).
        self.status.setFixedHeight(3 * self.status.fontMetrics().lineSpacing() + 4)
        self.status.setAlignment(Qt.AlignLeft | Qt.AlignTop)
        self.plot = TrainingPlot(self)
        self.plot.clear("loss and validation F1 per epoch appear here")

        self.result_box = ComparePanel()
        self.headline = self.result_box.headline
        self.compare_table = self.result_box.compare_table
        self.use_button = QPushButton("Use this model")
        self.use_button.setToolTip(tip("use"))
        self.use_button.clicked.connect(self.use_new_model)
        self.rollback_button = QPushButton("Roll back")
        self.rollback_button.setToolTip(tip("rollback"))
        self.rollback_button.clicked.connect(self.roll_back)
        self.log_button = QPushButton("Log…")
        self.log_button.setToolTip(tip("log"))
        self.log_button.clicked.connect(self.show_log)
        result_buttons = QHBoxLayout()
        result_buttons.addWidget(self.use_button, 1)
        result_buttons.addWidget(self.rollback_button, 1)
        result_buttons.addWidget(self.log_button)

        layout = QVBoxLayout(scroll_body(self))  # a short screen scrolls it
        layout.addWidget(self.counts_panel)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.result_box)
        layout.addLayout(result_buttons)
        self._clear_result()
        self._update_buttons()

    # -- models ---------------------------------------------------------------------------
    @property
    def base_entry(self) -> registry.ModelEntry | None:
        """The parent model chosen (None when no model is installed)."""
        i = self.base_combo.currentIndex()
        return self._entries[i] if 0 <= i < len(self._entries) else None

    def refresh_models(self, entries: list[registry.ModelEntry] | None = None) -> None:
        """List the models again (a new version appears); keeps the current choice.

        ``entries`` (listed on a worker thread) spares the GUI thread the disk scan.
        """
        self._entries = registry.list_models() if entries is None else list(entries)
        current = self.state.base_path or self._default_base_path()
        self.base_combo.blockSignals(True)
        self.base_combo.clear()
        for e in self._entries:
            label = f"{e.id}  ·  {e.spec.task.name}"
            if e.spec.parent:
                label += f"  (from {e.spec.parent})"
            self.base_combo.addItem(label)
        paths = [str(e.path) for e in self._entries]
        self.base_combo.setCurrentIndex(paths.index(current) if current in paths else 0)
        self.base_combo.blockSignals(False)
        self._on_base_changed()

    def refresh_models_async(self) -> None:
        """:meth:`refresh_models` with the disk scan in a worker thread."""
        self._submit(registry.list_models, self._on_models_listed, latest="models")

    def _on_models_listed(self, entries: list[registry.ModelEntry] | BaseException) -> None:
        if not isinstance(entries, BaseException):
            self.refresh_models(entries)

    def _default_base_path(self) -> str | None:
        """Return the preferred model, else Predict's model, else the default model."""
        by_id = {e.id: e for e in self._entries}
        preferred = settings.preferred_model()
        if preferred in by_id:
            return str(by_id[preferred].path)
        for widget in find_widgets(self.viewer, "PredictWidget"):
            path = getattr(getattr(widget, "state", None), "model_path", None)
            if path:
                return str(path)
        for name in registry.DEFAULT_MODEL_NAMES:
            named = [e for e in self._entries if e.name == name]
            if named:
                return str(max(named, key=lambda e: e.version).path)
        return str(self._entries[0].path) if self._entries else None

    def select_base(self, ref: str | Path) -> bool:
        """Pick the parent model by name, ``name@version`` or folder; False if unknown."""
        try:
            entry = registry.resolve_model(ref)
        except (LookupError, ValueError):
            return False
        paths = [str(e.path) for e in self._entries]
        if str(entry.path) not in paths:
            return False
        self.state.base_chosen = True
        self.base_combo.setCurrentIndex(paths.index(str(entry.path)))
        return True

    def _on_base_changed(self, *_: Any) -> None:
        entry = self.base_entry
        new = None if entry is None else str(entry.path)
        changed = new != self.state.base_path
        self.state.base_path = new
        if changed and hasattr(self, "timer"):
            self.refresh_counts()

    def _on_base_picked(self, *_: Any) -> None:
        self.state.base_chosen = True

    def _on_preset_changed(self, *_: Any) -> None:
        self.state.preset = str(self.preset_combo.currentData())

    def _on_holdout_changed(self, value: float) -> None:
        self.state.holdout_fraction = float(value)

    # -- data -----------------------------------------------------------------------------
    def _on_layers_changed(self, *_: Any) -> None:
        if not self.state.db_chosen:
            self.refresh_db()

    def refresh_db(self) -> None:
        """Find the database again (unless the user chose one) and recount."""
        if not self.state.db_chosen:
            self.state.db = find_db(self.viewer)
        self.counts_panel.show_db(self.state.db)
        self.refresh_counts()

    def set_db(self, path: str | Path) -> None:
        """Use this database (as if chosen with the … button)."""
        self.state.db = Path(path)
        self.state.db_chosen = True
        self.refresh_db()

    def choose_db(self, *_: Any) -> None:
        """Ask for another annotations database (the … button)."""
        start = str(self.state.db.parent) if self.state.db else str(Path.home())
        path, _ = QFileDialog.getOpenFileName(
            self, "Annotations database", start, "SQLite (*.sqlite *.db);;All files (*)"
        )
        if path:
            self.set_db(path)

    def refresh_counts(self) -> None:
        """Count corrected images and cells per class (in a worker thread)."""
        entry = self.base_entry
        if self.state.db is None or entry is None:
            self.state.summary = None
            self._show_summary()
            return
        self._submit(summarize, self._on_summary, self.state.db, entry.spec.task, latest="counts")

    def _on_summary(self, summary: DataSummary | BaseException) -> None:
        self.state.summary = None if isinstance(summary, BaseException) else summary
        if isinstance(summary, BaseException):
            self.counts_panel.show_warning(f"Cannot read the database: {summary}")
        elif not self.state.base_chosen and summary.n_images == 0 and summary.corrected_tasks:
            # The corrections are for another task: start from a model of that task.
            match = model_for_tasks(self._entries, summary.corrected_tasks)
            if match is not None and str(match.path) != self.state.base_path:
                self.state.summary = None
                self.base_combo.setCurrentIndex(self._entries.index(match))
                return
        self._show_summary()

    def _show_summary(self) -> None:
        self.counts_panel.show_summary(self.state.summary)
        self._update_buttons()

    # -- running --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether a training runs now."""
        job = self.state.job
        return job is not None and not job.is_final

    def retrain(self, *_: Any) -> None:
        """Start a retrain with the current choices (returns at once)."""
        with one_paint(self):
            self._retrain()

    def _retrain(self) -> None:
        entry = self.base_entry
        if self.running or entry is None:
            return
        if self.state.db is None:
            self.status.setText("No annotations database: correct some images first.")
            return
        request = RetrainRequest(
            base=str(entry.path),
            db=self.state.db,
            preset=self.state.preset,
            holdout_fraction=self.state.holdout_fraction,
        )
        self.state.history = []
        self.state.job = None  # the new one arrives in _on_started
        self.state.starting = True
        self.state.comparison = None
        self.state.compare_job = None
        self._clear_result()
        self.plot.clear("starting…")
        self.progress.setValue(0)
        self.progress.setFormat("Starting…")
        self.status.setText(f"Copying the corrections and starting the training of {entry.id}…")
        self.retrain_button.setEnabled(False)
        self._submit(start_retrain, self._on_started, request, self.manager)

    def _on_started(self, job: Job | BaseException) -> None:
        self.state.starting = False
        if isinstance(job, BaseException):
            self.progress.setFormat("Not started")
            self.status.setText(f"Could not start: {job}")
            self._update_buttons()
            return
        self.state.job = job
        self.status.setText(
            f"Training {job.record.meta.get('parent')} on "
            f"{job.record.meta.get('n_train_images')} images "
            f"({job.record.meta.get('n_holdout_images')} held out) in process {job.pid}…"
        )
        self._update_buttons()

    def stop_early(self, *_: Any) -> None:
        """Finish after the current batch, keeping the best epoch so far (Finish now)."""
        job = self.state.job
        if job is not None and not job.is_final:
            job.stop_early()
            self.status.setText("Finishing after this batch; the best epoch so far is kept…")

    def cancel(self, *_: Any) -> None:
        """Stop the running job and keep nothing (in a worker thread: up to 2 s)."""
        cjob = self.state.compare_job
        job = cjob if cjob is not None and not cjob.is_final else self.state.job
        if job is None or job.is_final:
            return
        self.status.setText("Cancelling…")
        self.cancel_button.setEnabled(False)
        # Urgent: a cancel must never wait behind other work for a free thread.
        self._submit(job.cancel, self._on_cancelled, urgent=True)

    def _on_cancelled(self, result: str | BaseException) -> None:
        if isinstance(result, BaseException):
            self.status.setText(f"Cancel failed: {result}")
            self._update_buttons()

    # -- versions -------------------------------------------------------------------------
    def _refresh_predict_widgets(self, select: registry.ModelEntry | None = None) -> list[Any]:
        """List the new version in every Predict widget, and select ``select`` there."""
        widgets = find_widgets(self.viewer, "PredictWidget")
        for widget in widgets:
            if hasattr(widget, "refresh_models"):
                widget.refresh_models()
            if select is not None and hasattr(widget, "select_model"):
                widget.select_model(select)
        return widgets

    def _select_model(self, entry: registry.ModelEntry, done: str) -> None:
        """Select ``entry`` in Predict and remember it; say ``done``, or why it is not kept.

        The settings file may be impossible to write (``SettingsError``: its folder is
        a file, read-only, full): the model is still used in this session, and the
        status says in one line that napari and the CLI will not remember it (the
        file's path is in the status's tooltip: the line must fit three lines).
        """
        where = ""
        try:
            settings.set_preferred_model(entry.id, entry.spec.task.name)
        except settings.SettingsError as exc:
            where, reason = str(exc), str(exc).rsplit(": ", 1)[-1]
            done = f"Using {entry.id} in this session only; not remembered: {reason}."
        self._refresh_predict_widgets(select=entry)
        self.state.base_path = str(entry.path)
        self.refresh_models()
        self.status.setText(done)
        self.status.setToolTip(where)

    def use_new_model(self, *_: Any) -> None:
        """Select the new version in Predict and remember it as the preferred model."""
        job = self.state.job
        child = result_entry(job) if job is not None else None
        if child is None:
            return
        self._select_model(child, f"Using {child.id}. Roll back to {child.spec.parent} any time.")

    def roll_back(self, *_: Any) -> None:
        """Select the parent again in Predict and remember it as the preferred model."""
        job = self.state.job
        if job is None:
            return
        ref = job.record.meta.get("parent_path") or job.record.meta.get("parent")
        try:
            parent = registry.resolve_model(ref)
        except (LookupError, ValueError) as exc:
            self.status.setText(f"Cannot roll back: {exc}")
            return
        self._select_model(parent, f"Rolled back to {parent.id}.")

    def show_log(self, *_: Any) -> QDialog:
        """Open the log of the current (or last) job in a dialog and return the dialog."""
        jobs = [j for j in (self.state.job, self.state.compare_job) if j is not None]
        self.log_dialog = show_log_dialog(self, jobs)
        return self.log_dialog

    # -- misc -----------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        running = self.running
        comparing = self.state.compare_job is not None and not self.state.compare_job.is_final
        summary = self.state.summary
        ready = summary is not None and summary.can_train and self.base_entry is not None
        busy = running or comparing or self.state.starting
        self.retrain_button.setEnabled(ready and not busy)
        self.stop_button.setEnabled(running)
        self.cancel_button.setEnabled(running or comparing)
        done = self.state.job is not None and self.state.job.state == "done"
        self.use_button.setEnabled(done and not comparing)
        self.rollback_button.setEnabled(done and not comparing)
        self.log_button.setEnabled(self.state.job is not None)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        """Stop polling; a running training goes on and is picked up at the next start."""
        self.timer.stop()
        self.plot.shutdown()
        self._gone.set()  # workers still in flight end unseen
        super().closeEvent(event)
