"""Export buttons of the Annotate panel: Kaggle CSV, JSON and per-cell label TIFFs.

The path comes from a file dialog, through :attr:`ExportButtons.ask_path`, which
tests replace with a function returning a path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QPushButton, QWidget

from ...core.labels import export as exporting
from ...core.labels.store import AnnotationStore
from ...core.tasks import Task
from .._shared.tooltips import tip

#: ``ask_path(title, file_filter, folder) -> path or None``.
AskPath = Callable[[str, str, bool], "str | None"]


def ask_path_dialog(title: str, file_filter: str, folder: bool) -> str | None:
    """Ask for a file to write (or a folder, with ``folder``) with a Qt dialog."""
    if folder:
        return QFileDialog.getExistingDirectory(None, title) or None
    return QFileDialog.getSaveFileName(None, title, "", file_filter)[0] or None


class ExportButtons(QWidget):
    """Three buttons that export the open annotations database.

    Parameters
    ----------
    store
        Returns the open store (or None).
    task
        Returns the task whose labels are exported.
    """

    def __init__(
        self, store: Callable[[], AnnotationStore | None], task: Callable[[], Task]
    ) -> None:
        super().__init__()
        self._store, self._task = store, task
        #: How the buttons ask where to write; tests replace it.
        self.ask_path: AskPath = ask_path_dialog
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

    def _export(
        self,
        title: str,
        file_filter: str,
        folder: bool,
        path: str | None,
        write: Callable[[AnnotationStore, str, Task], Any],
    ) -> Path | None:
        from napari.utils.notifications import show_error, show_info

        store = self._store()
        if store is None:
            show_error("No annotations database is open: open an image first.")
            return None
        path = path or self.ask_path(title, file_filter, folder)
        if not path:
            return None
        try:
            n = write(store, path, self._task())
        except (OSError, ValueError) as exc:
            show_error(f"Export failed: {exc}")
            return None
        count = len(n) if isinstance(n, list) else n
        show_info(f"Wrote {count} {'file(s)' if folder else 'image(s)'} to {path}")
        return Path(path)

    def export_csv(self, path: str | None = None) -> Path | None:
        """Kaggle CSV ``Id,Target`` of every image in the database."""
        return self._export(
            "Export Kaggle CSV",
            "CSV (*.csv)",
            False,
            path,
            lambda s, p, t: exporting.export_kaggle_csv(s, t.name, p),
        )

    def export_json(self, path: str | None = None) -> Path | None:
        """JSON with every image's and cell's classes."""
        return self._export(
            "Export JSON",
            "JSON (*.json)",
            False,
            path,
            lambda s, p, t: exporting.export_json(s, t.name, t, p),
        )

    def export_tiff(self, path: str | None = None) -> Path | None:
        """Per-cell label TIFFs (one per image with cells) into a folder."""
        return self._export(
            "Export cell label TIFFs to a folder",
            "",
            True,
            path,
            lambda s, p, t: exporting.export_cell_tiff(s, t.name, p, t),
        )
