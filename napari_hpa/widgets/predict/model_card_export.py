"""The model card window's "Export to bioimage.io…": write a package, off the GUI thread.

The package is written by :func:`~napari_hpa.core.model.bioimage_io.export_package` (an ONNX
graph and test tensors: seconds) in a napari thread worker
(:func:`~napari_hpa.widgets._shared.background.run_in_background`); the window shows a
busy bar meanwhile. An existing file is replaced only after the user says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QWidget,
)

from ...core.model.registry import ModelEntry
from .._shared.background import run_in_background
from .._shared.wording import naming_the_file

#: What the export button says, and its tooltip when it can export.
EXPORT_TEXT = "Export to bioimage.io…"
EXPORT_TIP = (
    "Write this model as a bioimage.io model package (.zip): PyTorch and ONNX weights, test "
    "tensors, this card and a cover. Check it with 'bioimageio test FILE.zip'."
)


def export_refusal(entry: ModelEntry) -> str | None:
    """Return why ``entry`` cannot be exported from this window, or None when it can.

    Parameters
    ----------
    entry
        The model the card shows.
    """
    from ...core.model.bioimage_io import BioimageioError, require_bioimageio
    from ...core.model.bioimage_io.arch_source import ARCHITECTURES

    try:
        require_bioimageio()
    except BioimageioError as exc:
        return str(exc)
    if entry.spec.arch not in ARCHITECTURES:
        return (
            f"architecture {entry.spec.arch} cannot be exported to bioimage.io "
            f"(exportable: {', '.join(ARCHITECTURES)})"
        )
    return None


def _export(entry: ModelEntry, target: Path, overwrite: bool) -> str | Path:
    """Write the package (in the worker); return its path, or one line saying what failed."""
    from ...core.model.bioimage_io import export_package
    from ...core.model.folders import CheckpointError

    try:
        return export_package(entry, target, overwrite=overwrite).path
    except (CheckpointError, OSError) as exc:  # BioimageioError is a CheckpointError
        return naming_the_file(exc, target, f"Export to {target} failed: ")
    except Exception as exc:  # noqa: BLE001 - napari shows it with its traceback; name the file
        raise RuntimeError(f"Export to {target} failed: {type(exc).__name__}: {exc}") from exc


class ExportBar(QWidget):
    """The export button with a busy bar and a status line, under the card's tabs.

    Parameters
    ----------
    entry
        The model to export.
    parent
        The card window.
    """

    def __init__(self, entry: ModelEntry, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.entry = entry
        self.worker: Any = None
        self.button = QPushButton(EXPORT_TEXT)
        self.button.clicked.connect(self.choose)
        refusal = export_refusal(entry)
        self.button.setEnabled(refusal is None)
        self.button.setToolTip(EXPORT_TIP if refusal is None else refusal)
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)  # no steps to count: a busy bar
        self.busy.setMaximumWidth(160)
        self.busy.setVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.button)
        layout.addWidget(self.busy)
        layout.addWidget(self.status, 1)

    @property
    def running(self) -> bool:
        """True while a package is being written."""
        return self.worker is not None

    def choose(self) -> None:
        """Ask for the target file (asking again before replacing one), then export."""
        name = f"{self.entry.name}-v{self.entry.version}.zip"
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Export to bioimage.io",
            str(Path.home() / name),
            "bioimage.io model package (*.zip)",
            options=QFileDialog.Option.DontUseNativeDialog
            | QFileDialog.Option.DontConfirmOverwrite,
        )
        if not path:
            return
        target = _with_zip(Path(path))
        overwrite = False
        if target.exists():
            answer = QMessageBox.question(
                self,
                "Replace the file?",
                f"{target} already exists. Replace it with the package of {self.entry.id}?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                QMessageBox.StandardButton.No,
            )
            if answer != QMessageBox.StandardButton.Yes:
                return
            overwrite = True
        self.export_to(target, overwrite=overwrite)

    def export_to(self, path: str | Path, overwrite: bool = False) -> bool:
        """Start writing the package to ``path`` in the background; False if it did not start.

        Parameters
        ----------
        path
            The ``.zip`` to write (``.zip`` is added to a name without a suffix).
        overwrite
            Replace an existing file; without it an existing file is an error, never replaced.
        """
        from napari.utils.notifications import show_error

        from ...core.model.bioimage_io import BioimageioError
        from ...core.model.bioimage_io.export import check_target

        if self.running:
            return False
        target = _with_zip(Path(path).expanduser())
        try:
            check_target(target, overwrite)
        except BioimageioError as exc:
            text = str(exc).replace("give --overwrite to replace it", "nothing was replaced")
            self.status.setText(text)
            show_error(text)
            return False
        self._set_busy(True, f"Exporting {self.entry.id} to {target.name}…")
        self.worker = run_in_background(
            _export, self.entry, target, overwrite, done=self._done, errored=self._errored
        )
        return True

    def _set_busy(self, busy: bool, text: str) -> None:
        self.button.setEnabled(not busy)
        self.busy.setVisible(busy)
        self.status.setText(text)

    def _done(self, outcome: str | Path) -> None:
        from napari.utils.notifications import show_error, show_info

        self.worker = None
        if isinstance(outcome, Path):
            self._set_busy(False, f"Written: {outcome}")
            show_info(f"Exported {self.entry.id} to {outcome}")
        else:
            self._set_busy(False, outcome)
            show_error(outcome)

    def _errored(self, exc: BaseException) -> None:
        """Say here too what napari has shown as an error, and let the user try again."""
        self.worker = None
        self._set_busy(False, f"Export failed: {exc}")


def _with_zip(path: Path) -> Path:
    """``path`` with ``.zip`` added when it has no suffix (a file dialog may drop it)."""
    return path if path.suffix else path.with_name(path.name + ".zip")
