"""Export buttons of the Annotate panel: Kaggle CSV, JSON and per-cell label TIFFs.

Each button asks where to write with Qt's file dialog, opened where the user
wants it: in the folder of the last export, else in the image's folder (else
the home folder), with a name proposed from the image folder the database
belongs to (``<folder>_labels.csv``). The cell TIFFs never go beside the images
(their names are the images' own): a folder that holds them gets a
``cell_labels`` subfolder for the TIFFs. What an export may replace is the
core's to check (``core/labels/targets``); a refusal is an error toast.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QPushButton, QWidget

from ...core.labels import export as exporting
from ...core.labels.store import AnnotationStore
from ...core.labels.targets import image_folders
from ...core.tasks import Task
from .._shared.tooltips import tip
from .._shared.wording import counted

#: The folder the annotations database lives in, beside the images it labels.
DB_FOLDER = ".napari-hpa"
#: The subfolder the cell TIFFs go to when the folder chosen holds the images.
TIFF_SUBFOLDER = "cell_labels"


class ExportButtons(QWidget):
    """Three buttons that export the open annotations database.

    Parameters
    ----------
    store
        Returns the open store (or None).
    task
        Returns the task whose labels are exported.
    source
        Returns the source of the image shown (or None): its folder is where the
        dialogs open until the user has exported somewhere.
    """

    def __init__(
        self,
        store: Callable[[], AnnotationStore | None],
        task: Callable[[], Task],
        source: Callable[[], str | None],
    ) -> None:
        super().__init__()
        self._store, self._task, self._source = store, task, source
        #: Where the last export went (a file's folder, or the TIFFs' folder).
        self.last_folder: Path | None = None
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for key, text, slot in (
            ("export_csv", "Export CSV…", self.export_csv),
            ("export_json", "Export JSON…", self.export_json),
            ("export_tiff", "Cell TIFFs…", self.export_tiff),
        ):
            button = QPushButton(text)
            button.setToolTip(tip(key))
            button.clicked.connect(lambda _=False, s=slot: s())
            layout.addWidget(button)

    # -- where the dialogs open ---------------------------------------------------------------
    def start_folder(self) -> Path:
        """Return the folder a dialog opens in: the last export's, the image's, or home."""
        if self.last_folder is not None and self.last_folder.is_dir():
            return self.last_folder
        source = self._source()
        if source and not source.startswith("layer:"):
            folder = Path(source).parent
            if folder.is_dir() and os.access(folder, os.W_OK):  # not the bundled samples
                return folder
        return Path.home()

    def proposed_name(self, suffix: str) -> str:
        """Name an export after the image folder of its database: ``<folder>_labels.csv``."""
        store = self._store()
        db = store.path if store is not None else None
        if db is not None and db.parent.name == DB_FOLDER and db.parent.parent.name:
            return f"{db.parent.parent.name}_labels{suffix}"
        return f"annotations{suffix}"

    def _ask_file(self, title: str, file_filter: str, suffix: str) -> Path | None:
        start = self.start_folder() / self.proposed_name(suffix)
        chosen = QFileDialog.getSaveFileName(self, title, str(start), file_filter)[0]
        if not chosen:
            return None
        path = Path(chosen)
        return path if path.suffix else path.with_suffix(suffix)  # typed without one

    def _ask_folder(self, title: str) -> Path | None:
        chosen = QFileDialog.getExistingDirectory(self, title, str(self.start_folder()))
        return Path(chosen) if chosen else None

    # -- the exports --------------------------------------------------------------------------
    def _export(
        self,
        path: Path | None,
        ask: Callable[[], Path | None],
        write: Callable[[AnnotationStore, Path, Task], tuple[Path, str]],
    ) -> Path | None:
        """Export to ``path`` (else where ``ask`` says); return where it was written.

        ``write`` returns where it wrote and what ("3 images").
        """
        from napari.utils.notifications import show_error, show_info

        store = self._store()
        if store is None:
            show_error("No annotations database is open: open an image first.")
            return None
        path = Path(path) if path else ask()
        if path is None:
            return None
        try:
            written, what = write(store, path, self._task())
        except (OSError, ValueError) as exc:  # ValueError: core.labels.targets.ExportError
            show_error(f"Export failed: {exc}")
            return None
        self.last_folder = path if path.is_dir() else path.parent
        show_info(f"Wrote {what} to {written}")
        return written

    def export_csv(self, path: str | os.PathLike[str] | None = None) -> Path | None:
        """Kaggle CSV ``Id,Target`` of every image in the database."""
        return self._export(
            Path(path) if path else None,
            lambda: self._ask_file("Export Kaggle CSV", "CSV (*.csv)", ".csv"),
            lambda s, p, t: (p, counted(exporting.export_kaggle_csv(s, t.name, p), "image")),
        )

    def export_json(self, path: str | os.PathLike[str] | None = None) -> Path | None:
        """JSON with every image's and cell's classes."""
        return self._export(
            Path(path) if path else None,
            lambda: self._ask_file("Export JSON", "JSON (*.json)", ".json"),
            lambda s, p, t: (p, counted(exporting.export_json(s, t.name, t, p), "image")),
        )

    def export_tiff(self, path: str | os.PathLike[str] | None = None) -> Path | None:
        """Per-cell label TIFFs (one per image with cells) into a folder."""

        def write(store: AnnotationStore, folder: Path, task: Task) -> tuple[Path, str]:
            if folder.is_dir() and folder.resolve() in image_folders(store.image_ids()):
                folder = folder / TIFF_SUBFOLDER  # beside the images, they would pass for some
            files = exporting.export_cell_tiff(store, task.name, folder, task)
            return folder, f"{counted(len(files), 'cell label TIFF')} and {exporting.CELL_CSV}"

        return self._export(
            Path(path) if path else None,
            lambda: self._ask_folder("Export cell label TIFFs to a folder"),
            write,
        )
