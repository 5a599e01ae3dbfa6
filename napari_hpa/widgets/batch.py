"""The Batch dock widget: classify a folder into a table without leaving napari.

The work is :func:`napari_hpa.core.batch.run.run_batch` in a napari ``thread_worker``
(the GUI never blocks). The core's progress callback runs on that thread, so it
only stores the latest numbers; a 10 Hz timer on the GUI thread shows them. That
keeps the GUI smooth at any image rate, and nothing Qt is touched off its thread.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .. import layers as L
from ..core.batch.output import read_table
from ..core.batch.run import BatchProgress, BatchSummary, run_batch
from ..core.model import preferences as settings
from ..core.model.registry import list_models
from ._shared.backend_box import backend_box
from ._shared.canvas_text import show_text
from ._shared.scrolling import narrow_combo, scroll_body
from ._shared.session import session_for

if TYPE_CHECKING:
    import napari

#: Rows of the results table loaded after a run (the file itself holds them all).
MAX_RESULT_ROWS = 5000
#: Lines of the canvas text of an opened result at most (the table row holds it all).
CANVAS_LINES = 3


def format_seconds(seconds: float | None) -> str:
    """``h:mm:ss`` (or ``m:ss``) for a label; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class BatchWidget(QWidget):
    """Choose a folder, a model and an output table; Run, watch, Cancel; browse the results.

    Emits ``finished(BatchSummary)`` when a run ends (also when cancelled) and
    ``failed(str)`` when it could not run at all.
    """

    finished = Signal(object)
    failed = Signal(str)

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker = None
        self.summary: BatchSummary | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._latest: BatchProgress | None = None
        self._new_errors: list[str] = []
        self._results: list[dict] = []
        self._classes: list[str] = []
        self._root: Path | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._poll)
        self._build()
        self.refresh_models()
        # a closed dock must not leave a batch running unseen
        self.destroyed.connect(self._stop.set)

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        form = QFormLayout()
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("folder of images (searched recursively)")
        form.addRow("Folder", self._with_button(self.folder_edit, self._browse_folder))
        self.model_combo = QComboBox()
        narrow_combo(self.model_combo, 16)
        form.addRow("Model", self.model_combo)
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("results.csv or results.parquet")
        form.addRow("Output", self._with_button(self.out_edit, self._browse_output))
        self.glob_edit = QLineEdit()
        self.glob_edit.setPlaceholderText("optional file pattern, e.g. *.tif")
        form.addRow("Only files", self.glob_edit)
        options = QHBoxLayout()
        self.cells_check = QCheckBox("per cell")
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.backend_combo = backend_box()
        self.workers_spin = QSpinBox()
        self.workers_spin.setRange(-1, 64)
        self.workers_spin.setSpecialValueText("auto")
        self.workers_spin.setValue(-1)
        self.workers_spin.setToolTip("decode processes (0: decode in napari's process)")
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(0, 1024)
        self.batch_spin.setSpecialValueText("auto")
        self.batch_spin.setValue(0)
        self.batch_spin.setToolTip("tiles per forward pass (auto: 4 on the CPU, 32 on a GPU)")
        # Two short rows, not one long one: the dock must fit beside the canvas.
        options.addWidget(self.device_combo)
        options.addWidget(self.cells_check)
        options.addStretch(1)
        form.addRow("Device", options)
        form.addRow("Backend", self.backend_combo)
        sizes = QHBoxLayout()
        for label, widget in (("workers", self.workers_spin), ("batch", self.batch_spin)):
            sizes.addWidget(QLabel(label))
            sizes.addWidget(widget)
        sizes.addStretch(1)
        form.addRow("Options", sizes)

        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status_label = QLabel("Ready.")
        self.status_label.setWordWrap(True)
        self.error_list = QListWidget()
        self.error_list.setMaximumHeight(90)
        self.error_list.setToolTip(
            "images that could not be read or classified, and blank or saturated ones (warning)"
        )

        self.summary_table = QTableWidget(0, 3)
        self.summary_table.setHorizontalHeaderLabels(["class", "images", ""])
        self.summary_table.verticalHeader().setVisible(False)
        self.summary_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.summary_table.horizontalHeader().setSectionResizeMode(2, QHeaderView.Stretch)

        self.results_table = QTableWidget(0, 4)
        self.results_table.setHorizontalHeaderLabels(["image", "status", "predicted", "top"])
        self.results_table.verticalHeader().setVisible(False)
        self.results_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.results_table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.results_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.Stretch)
        self.results_table.setToolTip("double-click a row to open the image")
        self.results_table.cellDoubleClicked.connect(self.open_result)

        layout = QVBoxLayout(scroll_body(self))  # a short screen scrolls it
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addWidget(QLabel("Problems"))
        layout.addWidget(self.error_list)
        layout.addWidget(QLabel("Predicted classes"))
        layout.addWidget(self.summary_table)
        layout.addWidget(QLabel("Results (double-click to open)"))
        layout.addWidget(self.results_table)

    def _with_button(self, edit: QLineEdit, slot) -> QWidget:
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit)
        button = QPushButton("…")
        button.setMaximumWidth(30)
        button.clicked.connect(slot)
        row.addWidget(button)
        return box

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of images", self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)
            if not self.out_edit.text():
                self.out_edit.setText(str(Path(folder) / "napari-hpa-results.csv"))

    def _browse_output(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Results table", self.out_edit.text(), "CSV (*.csv);;Parquet (*.parquet)"
        )
        if path:
            self.out_edit.setText(path)

    def refresh_models(self) -> None:
        """Fill the model list from the registry, the default model selected."""
        self.model_combo.clear()
        try:
            default = settings.model_to_use().path
        except LookupError:
            default = None
        for entry in list_models():
            self.model_combo.addItem(f"{entry.id} ({entry.source})", str(entry.path))
            if default is not None and entry.path == default:
                self.model_combo.setCurrentIndex(self.model_combo.count() - 1)
        self.run_button.setEnabled(self.model_combo.count() > 0)
        if self.model_combo.count() == 0:
            self.status_label.setText("No models found: train or import one first.")

    # ------------------------------------------------------------------ running
    def start(self) -> None:
        """Run the batch in a worker thread with the chosen settings."""
        from napari.qt.threading import create_worker

        folder, out = self.folder_edit.text().strip(), self.out_edit.text().strip()
        self._root = Path(folder).expanduser().resolve() if folder else None
        if not folder or not out or self.model_combo.currentData() is None:
            self.status_label.setText("Choose a folder, a model and an output file.")
            return
        self._stop.clear()
        self._latest = None
        self._new_errors = []
        self.summary = None
        self.error_list.clear()
        self.progress_bar.setRange(0, 0)  # busy until the first numbers arrive
        self.status_label.setText("Starting…")
        workers = self.workers_spin.value()
        self.worker = create_worker(
            run_batch,
            folder,
            out,
            self.model_combo.currentData(),
            device=self.device_combo.currentText(),
            backend=self.backend_combo.currentText(),
            batch_size=self.batch_spin.value() or None,
            workers=None if workers < 0 else workers,
            cells=self.cells_check.isChecked(),
            glob=self.glob_edit.text().strip() or None,
            progress=self._on_progress,
            should_stop=self._stop.is_set,
            _start_thread=False,
        )
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(self._on_error)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._timer.start()
        self.worker.start()

    def cancel(self) -> None:
        """Ask the run to stop; it finishes the current batch and leaves a resumable table."""
        self._stop.set()
        self.cancel_button.setEnabled(False)
        self.status_label.setText("Cancelling…")

    def _on_progress(self, progress: BatchProgress) -> None:
        # worker thread: store only; the GUI timer shows it
        with self._lock:
            self._latest = progress
            self._new_errors.extend(progress.recent_errors)

    def _poll(self) -> None:
        with self._lock:
            p, errors, self._new_errors = self._latest, self._new_errors, []
        for message in errors:
            self.error_list.addItem(message)
        if p is None:
            return
        self.progress_bar.setRange(0, max(1, p.total))
        self.progress_bar.setValue(p.skipped + p.done)
        if not self._stop.is_set():
            self.status_label.setText(
                f"{p.skipped + p.done}/{p.total} images · {p.rate:.1f} img/s · "
                f"ETA {format_seconds(p.eta)} · {p.errors} error(s)"
                + (f" · {p.warnings} warning(s)" if p.warnings else "")
                + (f" · {p.skipped} already done" if p.skipped else "")
            )

    def _finish(self) -> None:
        self._timer.stop()
        self._poll()
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _on_done(self, summary: BatchSummary) -> None:
        self._finish()
        self.summary = summary
        state = "Cancelled" if summary.cancelled else "Done"
        self.status_label.setText(
            f"{state}: {summary.ok} ok, {summary.warnings} warning(s), {summary.errors} "
            f"error(s), {summary.skipped} already in the table; {summary.rate:.1f} img/s. "
            f"Results: {summary.path}"
        )
        for message in summary.warning_messages:  # blank or saturated images: no class
            self.error_list.addItem(f"warning: {message}")
        self.show_summary(summary.per_class_counts)
        self.load_results(summary.path)
        self.finished.emit(summary)

    def _on_error(self, exc: BaseException) -> None:
        self._finish()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        message = str(exc) or type(exc).__name__
        self.status_label.setText(f"Could not run: {message}")
        self.failed.emit(message)

    # ------------------------------------------------------------------ results
    def show_summary(self, counts: dict[str, int]) -> None:
        """Show the counts per predicted class, largest first, each with a bar."""
        items = sorted(counts.items(), key=lambda kv: -kv[1])
        top = max((c for _, c in items), default=1)
        self.summary_table.setRowCount(len(items))
        for row, (name, count) in enumerate(items):
            self.summary_table.setItem(row, 0, QTableWidgetItem(name))
            number = QTableWidgetItem(str(count))
            number.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
            self.summary_table.setItem(row, 1, number)
            bar = QProgressBar()
            bar.setRange(0, top)
            bar.setValue(count)
            bar.setTextVisible(False)
            self.summary_table.setCellWidget(row, 2, bar)

    def load_results(self, path: str | Path) -> None:
        """Load the table's first rows; class names come from its probability columns."""
        try:
            columns, rows = read_table(path, MAX_RESULT_ROWS)
        except (OSError, ValueError) as exc:
            self.status_label.setText(f"Cannot read {path}: {exc}")
            return
        fixed = {"image", "cell", "model", "predicted", "status", "error"}
        self._classes = [c for c in columns if c not in fixed]
        self._results = rows
        self.results_table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            image = self._short(str(r["image"]))
            if r.get("cell") not in (None, ""):
                image += f" #{r['cell']}"
            predicted = self._predicted_names(r)
            top = ", ".join(f"{n} {p:.2f}" for n, p in self._top(r, 2))
            status = str(r["status"])
            values = [image, status, ", ".join(predicted) or str(r.get("error", "")), top]
            for col, text in enumerate(values):
                item = QTableWidgetItem(text)
                tip = str(r["image"]) if col == 0 else text
                item.setToolTip(f"{tip}\n{r.get('error', '')}" if status != "ok" else tip)
                self.results_table.setItem(i, col, item)

    def _short(self, image: str) -> str:
        """Shorten an image to its path in the chosen folder: a screen's full paths are alike."""
        if self._root is not None:
            with contextlib.suppress(ValueError):
                return Path(image).relative_to(self._root).as_posix()
        return image

    def _predicted_names(self, r: dict) -> list[str]:
        out = []
        for token in str(r.get("predicted") or "").split():
            k = int(token)
            out.append(self._classes[k] if 0 <= k < len(self._classes) else token)
        return out

    def _top(self, r: dict, k: int) -> list[tuple[str, float]]:
        probs = []
        for name in self._classes:
            value = r.get(name)
            if value not in (None, ""):
                probs.append((name, float(value)))
        probs = [(n, p) for n, p in probs if p == p]  # Parquet error rows hold NaN
        return sorted(probs, key=lambda t: -t[1])[:k]

    def open_result(self, row: int, column: int = 0) -> None:
        """Show a result's image in place of the image shown, with its prediction.

        As Annotate's Next image does: the previous image's results go (the session's
        prediction, its heat map and cells) and the channel layers show the new image,
        refilled in place where the channels are the same (they keep the user's contrast
        and visibility), one additive layer per channel as the reader makes them. The
        session's ``image_changed`` tells the other docks: Annotate follows it, so the
        corrections go to the image shown. A warning row (a blank or saturated image)
        is said to be one, with its reason, not called an error.
        """
        from ..core.image.io import ImageReadError, read_image

        if not 0 <= row < len(self._results):
            return
        r = self._results[row]
        try:
            image = read_image(str(r["image"]))
        except ImageReadError as exc:
            self.status_label.setText(f"Cannot open: {exc}")
            return
        session = session_for(self.viewer)
        session.set_result(None)
        show_text(self.viewer, None)
        L.replace_image(self.viewer, image)
        session.image_changed.emit(image.source)
        predicted = ", ".join(self._predicted_names(r)) or "-"
        top = ", ".join(f"{n} {p:.2f}" for n, p in self._top(r, 3))
        cell = f" cell {r['cell']}" if r.get("cell") not in (None, "") else ""
        text = f"{image.image_id}{cell}: {predicted}" + (f"  (top: {top})" if top else "")
        status = str(r.get("status", ""))
        # the row's message names the file; on the canvas the image's id leads instead
        reason = str(r.get("error", "")).removeprefix(f"{r['image']}: ")
        if status == "warning":  # its probabilities, no class: the image has no signal
            text = f"{image.image_id}{cell}: warning: {reason}"
        elif status != "ok":
            text = f"{image.image_id}{cell}: error: {reason}"
        show_text(self.viewer, text, max_lines=CANVAS_LINES)
