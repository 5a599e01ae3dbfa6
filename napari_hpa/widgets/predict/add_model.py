"""The Predict dock's "Add model…": a bioimage.io package, a model folder or a state dict.

The file or folder is imported in a napari thread worker by
:func:`~napari_hpa.core.model.adding.add_model`, the function ``napari-hpa import-model``
and ``import-weights`` share the work with: it is saved as a new version in the user's
models folder, nothing is unpickled, and a refused input is one error notification with
the reason. The picker then lists the new model and selects it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from qtpy.QtWidgets import QFileDialog, QLabel, QMenu, QToolButton, QWidget

from ...core.model.checkpoint import ModelSpec
from ...core.model.registry import ModelEntry
from .._shared.background import run_in_background
from .._shared.wording import naming_the_file

#: The button's text (short: the dock fits a laptop screen); its menu says "Add model from…".
ADD_TEXT = "Add…"
ADD_TIP = (
    "Add model…: a bioimage.io package (.zip or folder), a napari-hpa model "
    "folder, or a PyTorch state dict (.pt/.pth) of the chosen model's architecture and task "
    "(read without unpickling code). It is saved as a new version in your user folder."
)
FILE_FILTER = "Models (*.zip *.pt *.pth);;bioimage.io package (*.zip);;State dict (*.pt *.pth)"


class ModelPicker(Protocol):
    """What the button needs of the dock: the chosen model, a status line, selecting one."""

    status: QLabel

    @property
    def entry(self) -> ModelEntry | None:
        """The chosen model (a state dict is read as one of its kind)."""

    def select_model(self, model: ModelEntry | str) -> bool:
        """Select a model (the picker lists new ones first); False if it is not listed."""


def _add(source: Path, like: ModelSpec | None) -> Any:
    """Import ``source`` (in the worker); return the added model, or one line of refusal."""
    from ...core.model.adding import add_model
    from ...core.model.folders import CheckpointError

    try:
        return add_model(source, like=like)
    except (CheckpointError, OSError) as exc:  # BioimageioError is a CheckpointError
        return naming_the_file(exc, source, f"{source}: ")
    except Exception as exc:  # noqa: BLE001 - napari shows it with its traceback; name the file
        raise RuntimeError(f"{source}: could not add it ({type(exc).__name__}: {exc})") from exc


class AddModelButton(QToolButton):
    """The "Add…" button beside the model picker, with a menu: add a model from a file or folder.

    Parameters
    ----------
    dock
        The Predict dock whose picker gets the model.
    parent
        The Qt parent.
    """

    def __init__(self, dock: ModelPicker, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.dock = dock
        self.worker: Any = None
        self.setText(ADD_TEXT)
        self.setToolTip(ADD_TIP)
        self.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self)
        menu.addAction("Add model from a file (.zip, .pt, .pth)…", self.choose_file)
        menu.addAction("Add model from a folder (napari-hpa or bioimage.io)…", self.choose_folder)
        self.setMenu(menu)

    @property
    def running(self) -> bool:
        """True while a model is being imported."""
        return self.worker is not None

    def choose_file(self) -> None:
        """Ask for a ``.zip``/``.pt``/``.pth`` file and add it."""
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Add model",
            str(Path.home()),
            FILE_FILTER,
            options=QFileDialog.Option.DontUseNativeDialog,
        )
        if path:
            self.add(path)

    def choose_folder(self) -> None:
        """Ask for a napari-hpa model folder or an unpacked bioimage.io package and add it."""
        path = QFileDialog.getExistingDirectory(
            self,
            "Add model folder",
            str(Path.home()),
            QFileDialog.Option.DontUseNativeDialog | QFileDialog.Option.ShowDirsOnly,
        )
        if path:
            self.add(path)

    def add(self, path: str | Path) -> bool:
        """Start importing ``path`` in the background; False if an import is running.

        Parameters
        ----------
        path
            A bioimage.io zip or folder, a napari-hpa model folder, or a ``.pt``/``.pth`` file.
        """
        if self.running:
            return False
        source = Path(path).expanduser()
        chosen = self.dock.entry
        self.setEnabled(False)
        self.dock.status.setText(f"Adding the model in {source.name}…")
        self.worker = run_in_background(
            _add,
            source,
            None if chosen is None else chosen.spec,
            done=self._done,
            errored=self._errored,
        )
        return True

    def _done(self, outcome: Any) -> None:
        from napari.utils.notifications import show_error, show_info

        self.worker = None
        self.setEnabled(True)
        if isinstance(outcome, str):
            self.dock.status.setText(outcome)
            show_error(outcome)
            return
        listed = self.dock.select_model(str(outcome.path))
        notes = "".join(f"\nnote: {n}" for n in outcome.notes)
        where = "" if listed else " (not listed: see the models folder)"
        text = f"Added {outcome.spec.id}: {outcome.path}{where}{notes}"
        self.dock.status.setText(text)
        show_info(text)

    def _errored(self, exc: BaseException) -> None:
        """Say in the status line what napari has shown as an error, and allow another try."""
        self.worker = None
        self.setEnabled(True)
        self.dock.status.setText(str(exc))
