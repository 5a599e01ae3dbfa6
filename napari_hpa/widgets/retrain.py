"""The Retrain dock widget: one click retrains a model on the corrections, in the background.

The training runs in its own process (:mod:`napari_hpa.jobs`), so napari stays
responsive and the user goes on correcting images while the model learns; a
timer polls the job every 200 ms and never blocks. Starting, cancelling and
reading the database happen on a worker thread. When the run is done, a second
background job scores the parent and the new version on held-out corrected
images, and the table shows what improved and what got worse.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..core import registry
from ..core.annotations import default_db_path
from ..jobs import settings
from ..jobs.compare import Comparison
from ..jobs.retrain import (
    MIN_IMAGES_PER_CLASS,
    PRESETS,
    DataSummary,
    RetrainRequest,
    read_comparison,
    result_entry,
    start_compare,
    start_retrain,
    summarize,
)
from ..jobs.runner import Job, JobManager, Progress
from . import _layers as L
from ._plot import TrainingPlot

POLL_MS = 200
#: The progress display is refreshed at most this often (seconds).
UI_INTERVAL_S = 0.5

# ----------------------------------------------------------------------------- tooltips
TOOLTIPS: dict[str, str] = {
    "db": "The annotations database whose corrected labels the model learns from (the one "
    "the Annotate widget writes to for the current image). A copy is taken when you press "
    "Retrain: corrections you make during the run go to the next run.",
    "browse": "Choose another annotations database (annotations.sqlite).",
    "counts": f"Corrected images and cells per class. Classes with fewer than "
    f"{MIN_IMAGES_PER_CLASS} corrected images are marked: the model cannot learn them well.",
    "base": "The model to start from (the parent). The new version gets the same name and "
    "the next version number, with the parent recorded in its model card.",
    "preset": "\n".join(f"{p.label}: {p.description}" for p in PRESETS.values()),
    "holdout": "Share of the corrected images kept out of training entirely. Both the parent "
    "and the new version are scored on them, so the comparison is fair.",
    "retrain": "Train in the background; you can keep annotating. napari stays responsive.",
    "stop": "Stop after the current batch and keep the best epoch so far.",
    "cancel": "Stop now and keep nothing (no new model version is written).",
    "use": "Use the new version: select it in Predict and remember it as your preferred model.",
    "rollback": "Go back to the parent model: select it in Predict and remember it as preferred.",
    "log": "Show the training log (errors, warnings, output).",
    "compare": "Parent and new version on the same held-out corrected images: F1 per class.",
}


def tip(key: str) -> str:
    return TOOLTIPS.get(key, "")


# ----------------------------------------------------------------------------- state
@dataclass
class RetrainState:
    """What the Retrain widget shows and does (no Qt).

    ``job`` is the training job shown, ``compare_job`` its comparison,
    ``comparison`` the finished table, ``pending`` a worker-thread call in flight
    with the function that handles its result on the GUI thread.
    """

    db: Path | None = None
    db_chosen: bool = False
    base_path: str | None = None
    base_chosen: bool = False
    preset: str = "quick"
    holdout_fraction: float = 0.2
    summary: DataSummary | None = None
    job: Job | None = None
    compare_job: Job | None = None
    comparison: Comparison | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    starting: bool = False
    pending: list[tuple[cf.Future, Callable[[Any], None]]] = field(default_factory=list)


def format_eta(seconds: float | None) -> str:
    """``~2 min 05 s left``-style text ('' when unknown)."""
    if seconds is None:
        return ""
    s = int(round(seconds))
    if s >= 60:
        return f"~{s // 60} min {s % 60:02d} s left"
    return f"~{s} s left"


def short_path(path: Path, parts: int = 3) -> str:
    """The last ``parts`` components of a path, ``…/`` in front if there are more."""
    tail = Path(*path.parts[-parts:])
    return str(tail) if len(path.parts) <= parts else f"…/{tail}"


def progress_text(p: Progress) -> str:
    """``Epoch 4 of 6 · val F1 0.512 · ~1 min 05 s left`` (what the status line says)."""
    if not p.epochs:
        return "Loading the images and the parent model…"
    parts = [f"Epoch {max(1, p.epoch, len(p.history))} of {p.epochs}"]
    f1 = p.last_metrics.get("val_macro_f1")
    if isinstance(f1, float):
        parts.append(f"val F1 {f1:.3f}")
    eta = format_eta(p.eta_s)
    if eta:
        parts.append(eta)
    return " · ".join(parts) + ". You can keep annotating."


def image_sources(viewer: Any) -> list[str]:
    """Image sources of the viewer's layers, the selected layer first."""
    layers = list(viewer.layers)
    active = viewer.layers.selection.active
    if active in layers:
        layers.remove(active)
        layers.insert(0, active)
    out: list[str] = []
    for layer in layers:
        source = L.meta(layer).get("source")
        if not source:
            path = getattr(getattr(layer, "source", None), "path", None)
            source = str(path) if path else None
        if source and not str(source).startswith("layer:") and source not in out:
            out.append(str(source))
    return out


def find_db(viewer: Any) -> Path | None:
    """The annotations database for the viewer's images: the Annotate widget's, else the
    one next to the current image, else the one in the user folder (None if none exists)."""
    for widget in _find_widgets(viewer, "AnnotateWidget"):
        store = getattr(widget, "store", None)
        if store is not None and getattr(store, "path", None):
            return Path(store.path)
    for source in image_sources(viewer):
        path = default_db_path(source)
        if path.is_file():
            return path
    fallback = registry.user_home() / "annotations.sqlite"
    return fallback if fallback.is_file() else None


def _find_widgets(viewer: Any, class_name: str) -> list[Any]:
    """Dock widgets of napari-hpa in the viewer's window with this class name."""
    window = getattr(viewer, "window", None)
    qt_window = getattr(window, "_qt_window", None)
    if qt_window is None:
        return []
    return [w for w in qt_window.findChildren(QWidget) if type(w).__name__ == class_name]


# ----------------------------------------------------------------------------- widget
class RetrainWidget(QWidget):
    """Dock widget: counts of corrections, Retrain/Cancel, live plot, comparison, versions.

    Parameters
    ----------
    napari_viewer
        The viewer (napari passes it).
    manager
        The job manager (default: the user's jobs folder); tests may pass their own.
    """

    def __init__(self, napari_viewer: Any, manager: JobManager | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.manager = manager or JobManager()
        self.state = RetrainState()
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="napari-hpa-retrain")
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
        self.db_label = QLabel("Database: none")
        self.db_label.setWordWrap(True)
        # A long path must not widen the dock: it is shortened, the tooltip has it all.
        self.db_label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.db_label.setMinimumWidth(60)
        self.db_label.setToolTip(tip("db"))
        self.db_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.browse_button = QToolButton()
        self.browse_button.setText("…")
        self.browse_button.setToolTip(tip("browse"))
        self.browse_button.clicked.connect(self.choose_db)
        db_row = QHBoxLayout()
        db_row.addWidget(self.db_label, 1)
        db_row.addWidget(self.browse_button)
        self.counts_table = QTableWidget(0, 3)
        self.counts_table.setHorizontalHeaderLabels(["Class", "Images", "Cells"])
        self.counts_table.setToolTip(tip("counts"))
        _compact_table(self.counts_table, 120)
        self.totals_label = QLabel("")
        self.warning_label = QLabel("")
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet("color: #f0b429;")
        data_box = QGroupBox("Corrected labels")
        data_layout = QVBoxLayout(data_box)
        data_layout.addLayout(db_row)
        data_layout.addWidget(self.totals_label)
        data_layout.addWidget(self.counts_table)
        data_layout.addWidget(self.warning_label)

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
            self.preset_combo.setItemData(self.preset_combo.count() - 1, preset.description,
                                          Qt.ToolTipRole)
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
        self.cancel_button.setToolTip(tip("cancel"))
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

        self.headline = QLabel("")
        self.headline.setWordWrap(True)
        self.headline.setFixedHeight(3 * self.headline.fontMetrics().lineSpacing() + 4)
        self.headline.setAlignment(Qt.AlignLeft | Qt.AlignTop)
        self.compare_table = QTableWidget(0, 4)
        self.compare_table.setHorizontalHeaderLabels(["Class", "Parent F1", "New F1", "Change"])
        self.compare_table.setToolTip(tip("compare"))
        _compact_table(self.compare_table, 140)
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
        self.result_box = QGroupBox("Result")
        result_layout = QVBoxLayout(self.result_box)
        result_layout.addWidget(self.headline)
        result_layout.addWidget(self.compare_table)

        layout = QVBoxLayout(self)
        layout.addWidget(data_box)
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
        """:meth:`refresh_models` with the disk scan on the worker thread."""
        self._submit(registry.list_models, self._on_models_listed)

    def _on_models_listed(self, entries: list[registry.ModelEntry] | BaseException) -> None:
        if not isinstance(entries, BaseException):
            self.refresh_models(entries)

    def _default_base_path(self) -> str | None:
        """The preferred model, else Predict's model, else the default model."""
        by_id = {e.id: e for e in self._entries}
        preferred = settings.preferred_model()
        if preferred in by_id:
            return str(by_id[preferred].path)
        for widget in _find_widgets(self.viewer, "PredictWidget"):
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
        if self.state.db:
            self.db_label.setToolTip(f"{self.state.db}\n\n{tip('db')}")
        self.db_label.setText(f"Database: {short_path(self.state.db)}" if self.state.db else
                              "Database: none yet (correct some images in Annotate, or choose one)")
        self.refresh_counts()

    def set_db(self, path: str | Path) -> None:
        """Use this database (as if chosen with the … button)."""
        self.state.db = Path(path)
        self.state.db_chosen = True
        self.refresh_db()

    def choose_db(self, *_: Any) -> None:
        start = str(self.state.db.parent) if self.state.db else str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self, "Annotations database", start,
                                              "SQLite (*.sqlite *.db);;All files (*)")
        if path:
            self.set_db(path)

    def refresh_counts(self) -> None:
        """Count corrected images and cells per class (on the worker thread)."""
        entry = self.base_entry
        if self.state.db is None or entry is None:
            self.state.summary = None
            self._show_summary()
            return
        self._submit(summarize, self._on_summary, self.state.db, entry.spec.task)

    def _on_summary(self, summary: DataSummary | BaseException) -> None:
        self.state.summary = None if isinstance(summary, BaseException) else summary
        if isinstance(summary, BaseException):
            self.warning_label.setText(f"Cannot read the database: {summary}")
        elif not self.state.base_chosen and summary.n_images == 0 and summary.corrected_tasks:
            # The corrections are for another task: start from a model of that task.
            match = _model_for_tasks(self._entries, summary.corrected_tasks)
            if match is not None and str(match.path) != self.state.base_path:
                self.state.summary = None
                self.base_combo.setCurrentIndex(self._entries.index(match))
                return
        self._show_summary()

    def _show_summary(self) -> None:
        summary = self.state.summary
        table = self.counts_table
        table.setRowCount(0)
        if summary is None:
            self.totals_label.setText("")
            self.warning_label.setText("")
            self._update_buttons()
            return
        self.totals_label.setText(
            f"{summary.n_images} corrected images, {summary.n_cells} corrected cells "
            f"(task {summary.task})"
        )
        table.setRowCount(len(summary.counts))
        warn = QColor(240, 180, 41)
        for row, count in enumerate(summary.counts):
            items = [QTableWidgetItem(count.name), _num_item(count.images), _num_item(count.cells)]
            for col, item in enumerate(items):
                if count.too_few:
                    item.setForeground(warn)
                    item.setToolTip(f"fewer than {MIN_IMAGES_PER_CLASS} corrected images")
                table.setItem(row, col, item)
        self.warning_label.setText("\n".join(f"⚠ {w}" for w in summary.warnings))
        self._update_buttons()

    # -- running --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        job = self.state.job
        return job is not None and not job.is_final

    def retrain(self, *_: Any) -> None:
        """Start a retrain with the current choices (returns at once)."""
        with _one_paint(self):
            self._retrain()

    def _retrain(self) -> None:
        entry = self.base_entry
        if self.running or entry is None:
            return
        if self.state.db is None:
            self.status.setText("No annotations database: correct some images first.")
            return
        request = RetrainRequest(
            base=str(entry.path), db=self.state.db, preset=self.state.preset,
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
        job = self.state.job
        if job is not None and not job.is_final:
            job.stop_early()
            self.status.setText("Finishing after this batch; the best epoch so far is kept…")

    def cancel(self, *_: Any) -> None:
        """Stop the running job and keep nothing (on the worker thread: up to 2 s)."""
        cjob = self.state.compare_job
        job = cjob if cjob is not None and not cjob.is_final else self.state.job
        if job is None or job.is_final:
            return
        self.status.setText("Cancelling…")
        self.cancel_button.setEnabled(False)
        # Its own thread: a cancel must never wait behind other work on the worker thread.
        future: cf.Future = cf.Future()

        def run() -> None:
            try:
                future.set_result(job.cancel())
            except BaseException as exc:  # noqa: BLE001 - delivered to the GUI thread
                future.set_exception(exc)

        threading.Thread(target=run, name="napari-hpa-cancel", daemon=True).start()
        self.state.pending.append((future, self._on_cancelled))

    def _on_cancelled(self, result: str | BaseException) -> None:
        if isinstance(result, BaseException):
            self.status.setText(f"Cancel failed: {result}")
            self._update_buttons()

    # -- polling --------------------------------------------------------------------------
    def _submit(self, fn: Callable[..., Any], done: Callable[[Any], None], *args: Any) -> cf.Future:
        future = self._pool.submit(fn, *args)
        self.state.pending.append((future, done))
        return future

    def _tick(self) -> None:
        """Every 200 ms: deliver finished worker calls, poll the jobs (never blocks).

        The display follows at most every :data:`UI_INTERVAL_S` (and at once when an
        epoch or the run ends), in one paint: with software OpenGL one paint of napari's
        window costs 50-70 ms, and QProgressBar.setValue would paint synchronously.
        """
        for item in [p for p in self.state.pending if p[0].done()]:
            self.state.pending.remove(item)
            future, done = item
            exc = future.exception()
            with _one_paint(self):
                done(exc if exc is not None else future.result())
        job = self.state.job
        if job is not None:
            if not job.is_final:
                self._unshown += len(job.poll())
            ended = job.is_final and self._final_shown != job.id
            epoch = len(job.progress.history) != len(self.state.history)
            due = self._unshown and time.monotonic() - self._last_ui >= UI_INTERVAL_S
            if ended or epoch or due:
                self._unshown = 0
                self._last_ui = time.monotonic()
                with _one_paint(self):
                    self._show_job(job)
        cjob = self.state.compare_job
        if cjob is not None and not cjob.is_final:
            cjob.poll()
            if cjob.is_final:
                with _one_paint(self):
                    self._on_compare_finished()
            elif time.monotonic() - self._last_ui >= UI_INTERVAL_S:
                self._last_ui = time.monotonic()
                with _one_paint(self):
                    self._show_compare_progress(cjob)

    def _show_job(self, job: Job) -> None:
        p = job.progress
        if len(p.history) != len(self.state.history):
            self.state.history = list(p.history)
            self.plot.set_history(self.state.history, p.epochs or None)
        if not job.is_final:
            self.progress.setValue(int(1000 * p.fraction))
            current = max(1, p.epoch, len(p.history))
            epoch = f"epoch {current}/{p.epochs}" if p.epochs else "preparing"
            self.progress.setFormat(f"{epoch} · {100 * p.fraction:.0f}%")
            self.status.setText(progress_text(p))
            return
        if self._final_shown != job.id:  # the end of a run is handled once
            self._final_shown = job.id
            self._on_job_finished(job)

    def _on_job_finished(self, job: Job) -> None:
        self._update_buttons()
        if job.state == "done":
            child = result_entry(job)
            self.progress.setValue(1000)
            self.progress.setFormat("Done")
            self.refresh_models_async()
            # Later, in its own event: Predict's refresh and this paint must not add up.
            QTimer.singleShot(300, self._refresh_predict_widgets)
            if child is None:
                self.status.setText(
                    f"Training ended without a new model: {job.record.error or 'no epoch finished'}"
                )
                return
            self.status.setText(f"New version {child.id} (from {child.spec.parent}). "
                                "Comparing it with its parent on the held-out images…")
            self._submit(start_compare, self._on_compare_started, job, self.manager)
        elif job.state == "cancelled":
            self.progress.setFormat("Cancelled")
            self.status.setText("Cancelled: no new model was written.")
        else:
            self.progress.setFormat("Failed")
            self.status.setText(f"Training failed: {job.record.error or 'unknown error'} "
                                "(see Log…)")

    def _on_compare_started(self, cjob: Job | BaseException) -> None:
        if isinstance(cjob, BaseException):
            self.status.setText(f"New version ready; no comparison: {cjob}")
            self._show_result()
            return
        self.state.compare_job = cjob
        self._update_buttons()

    def _show_compare_progress(self, cjob: Job) -> None:
        p = cjob.progress
        if p.batches:
            self.progress.setValue(int(1000 * p.batch / p.batches))
            self.progress.setFormat(f"comparing {p.batch}/{p.batches}")

    def _on_compare_finished(self) -> None:
        job, cjob = self.state.job, self.state.compare_job
        if job is None or cjob is None:
            return
        self.state.comparison = read_comparison(job)
        if cjob.state != "done" or self.state.comparison is None:
            self.status.setText(f"Comparison failed: {cjob.record.error or cjob.state} (see Log…)")
        self.manager.mark_seen(job)
        self.manager.mark_seen(cjob)
        self._show_result()
        self._update_buttons()

    RESULT_PLACEHOLDER = ("When a run ends, the new version and its parent are compared here on "
                          "the same held-out corrected images.")

    def _clear_result(self) -> None:
        # The box keeps its place: showing the result must not resize the dock (and the canvas).
        self.compare_table.setRowCount(0)
        self.headline.setText(self.RESULT_PLACEHOLDER)

    @property
    def has_result(self) -> bool:
        """True once a new version is shown (with or without its comparison)."""
        return self.headline.text() != self.RESULT_PLACEHOLDER

    def _show_result(self) -> None:
        job = self.state.job
        comp = self.state.comparison
        child = result_entry(job) if job is not None else None
        if child is None:
            self._clear_result()
            return
        self.progress.setValue(1000)
        self.progress.setFormat("Done")
        table = self.compare_table
        table.setRowCount(0)
        if comp is None:
            self.headline.setText(f"New version {child.id} (parent {child.spec.parent}).")
            return
        self.headline.setText(comp.headline())
        self.status.setText(f"Done: {child.id}. Use it, or roll back to {comp.parent}.")
        self.plot.set_history(self.state.history or job.progress.history, job.progress.epochs,
                              comp.parent_macro_f1, comp.child_macro_f1)
        rows = [("macro F1", comp.parent_macro_f1, comp.child_macro_f1, comp.delta, None)]
        # Classes absent from the held-out images and unchanged say nothing: left out.
        shown = [r for r in comp.rows if r.support or (r.delta or 0) != 0]
        order = sorted(shown, key=lambda r: (r.delta is None, -(abs(r.delta or 0))))
        rows += [(r.name, r.parent_f1, r.child_f1, r.delta, r.support) for r in order]
        table.setRowCount(len(rows))
        green, red = QColor(89, 161, 79), QColor(225, 87, 89)
        for i, (name, pf, cf_, delta, support) in enumerate(rows):
            label = name if support is None else f"{name} ({support})"
            cells = [QTableWidgetItem(label), _f1_item(pf), _f1_item(cf_), _delta_item(delta)]
            for col, item in enumerate(cells):
                if delta is not None and abs(delta) > 0.01 and col == 3:
                    item.setForeground(green if delta > 0 else red)
                table.setItem(i, col, item)
        table.item(0, 0).setToolTip("mean F1 over the classes (the project's macro F1)")

    # -- versions -------------------------------------------------------------------------
    def _refresh_predict_widgets(self, select: registry.ModelEntry | None = None) -> list[Any]:
        """List the new version in every Predict widget, and select ``select`` there."""
        widgets = _find_widgets(self.viewer, "PredictWidget")
        for widget in widgets:
            if hasattr(widget, "refresh_models"):
                widget.refresh_models()
            if select is not None and hasattr(widget, "select_model"):
                widget.select_model(select)
        return widgets

    def _select_model(self, entry: registry.ModelEntry) -> None:
        settings.set_preferred_model(entry.id, entry.spec.task.name)
        self._refresh_predict_widgets(select=entry)
        self.state.base_path = str(entry.path)
        self.refresh_models()

    def use_new_model(self, *_: Any) -> None:
        """Select the new version in Predict and remember it as the preferred model."""
        job = self.state.job
        child = result_entry(job) if job is not None else None
        if child is None:
            return
        self._select_model(child)
        self.status.setText(f"Using {child.id}. Roll back to {child.spec.parent} any time.")

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
        self._select_model(parent)
        self.status.setText(f"Rolled back to {parent.id}.")

    def show_log(self, *_: Any) -> QDialog:
        """Open the log of the current (or last) job in a dialog and return the dialog."""
        jobs = [j for j in (self.state.job, self.state.compare_job) if j is not None]
        text = "\n\n".join(
            f"=== {j.record.kind} job {j.id} ({j.state}) ===\n"
            + (f"error: {j.record.error}\n" if j.record.error else "")
            + f"command: {' '.join(j.record.command)}\n\n{j.log_text() or '(empty log)'}"
            for j in jobs
        ) or "No job has run yet."
        dialog = QDialog(self)
        dialog.setWindowTitle("Retrain log")
        view = QPlainTextEdit(text)
        view.setReadOnly(True)
        view.setLineWrapMode(QPlainTextEdit.NoWrap)
        lay = QVBoxLayout(dialog)
        lay.addWidget(view)
        dialog.resize(720, 420)
        dialog.show()
        self.log_dialog = dialog
        return dialog

    # -- recovery -------------------------------------------------------------------------
    def _on_recovered(self, jobs: list[Job] | BaseException) -> None:
        """Jobs that finished while napari was closed: show the newest, compare it if needed."""
        if isinstance(jobs, BaseException) or self.state.job is not None:
            return
        running = [j for j in self.manager.list_jobs()
                   if j.record.kind == "train" and not j.is_final]
        trained = [j for j in jobs if j.record.kind == "train"]
        if running:
            self.state.job = running[-1]
            self.status.setText(f"Following a training started earlier (job {running[-1].id}).")
            self._show_job(running[-1])
            self._update_buttons()
            return
        if not trained:
            return
        job = trained[-1]
        self.state.job = job
        self._final_shown = job.id
        if job.state == "failed":
            self.status.setText(f"A training started earlier failed: {job.record.error} (see Log…)")
            self.manager.mark_seen(job)
            self._update_buttons()
            return
        self.state.history = list(job.progress.history)
        self.plot.set_history(self.state.history, job.progress.epochs or None)
        self.refresh_models_async()
        comp = read_comparison(job)
        if comp is None:
            self.status.setText(f"While napari was closed, {job.record.result_model} finished "
                                "training. Comparing it with its parent…")
            self._submit(start_compare, self._on_compare_started, job, self.manager)
        else:
            self.state.comparison = comp
            self.manager.mark_seen(job)
            self._show_result()
        self._update_buttons()

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
        self._pool.shutdown(wait=False)
        super().closeEvent(event)


# ----------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _one_paint(widget: QWidget) -> Iterator[None]:
    """Apply several changes, then paint once, later (not synchronously)."""
    widget.setUpdatesEnabled(False)
    try:
        yield
    finally:
        widget.setUpdatesEnabled(True)


def _model_for_tasks(
    entries: list[registry.ModelEntry], tasks: list[str]
) -> registry.ModelEntry | None:
    """The newest user model (else bundled model) of one of ``tasks``."""
    fitting = [e for e in entries if e.spec.task.name in tasks]
    if not fitting:
        return None
    return max(fitting, key=lambda e: (e.source == "user", e.spec.created, e.version))


def _compact_table(table: QTableWidget, min_height: int) -> None:
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.NoEditTriggers)
    table.setSelectionMode(QAbstractItemView.NoSelection)
    header = table.horizontalHeader()
    header.setSectionResizeMode(0, QHeaderView.Stretch)
    for col in range(1, table.columnCount()):
        header.setSectionResizeMode(col, QHeaderView.ResizeToContents)
    table.verticalHeader().setDefaultSectionSize(20)
    table.setMinimumHeight(min_height)


def _num_item(value: int) -> QTableWidgetItem:
    item = QTableWidgetItem(str(value))
    item.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter))
    return item


def _f1_item(value: float | None) -> QTableWidgetItem:
    item = QTableWidgetItem("–" if value is None else f"{value:.3f}")
    item.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter))
    return item


def _delta_item(value: float | None) -> QTableWidgetItem:
    text = "–" if value is None else f"{value:+.3f}"
    item = QTableWidgetItem(text)
    item.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter))
    return item
