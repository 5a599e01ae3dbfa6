"""Annotate's small defects (issue 17, 8 and 11): keys on the list, Accept, export dialogs, counts.

The docks are added as the Plugins menu adds them and napari picks the reader
(the user's remembered choice, as in test_real_session). The one stand-in is
Qt's modal file dialog, which cannot be clicked under Xvfb: its static call is
replaced by one that records where it was opened and answers a path.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import GUI_TEST
from helpers import prefer_napari_hpa, write_tiny_model
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAction, QApplication, QFileDialog, QPushButton

from napari_hpa.core.image.synth import make_field
from napari_hpa.core.image.writers import write_hpa_set, write_image
from napari_hpa.core.labels.store import AnnotationStore, default_db_path
from napari_hpa.core.model.registry import user_models_dir
from napari_hpa.core.tasks import get_task

pytestmark = GUI_TEST
TASK = "hpa28"
WAIT_MS = 60_000
#: The reader a user picks in napari's "Choose reader" dialog, choice remembered.
PATTERNS = [f"*_{c}.png" for c in ("red", "green", "blue", "yellow")] + ["*.jpg"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An image folder: a plain JPEG named like the issue's, and a one-cell HPA set."""
    out = tmp_path / "field"
    out.mkdir()
    gray = np.random.default_rng(0).random((1, 96, 96)).astype(np.float32)
    write_image(out / "0-2-a.jpg", gray)
    write_hpa_set(out, "one", make_field(192, n_cells=1, seed=0).image)
    return out


def _viewer(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer(show=True)
    prefer_napari_hpa(monkeypatch, PATTERNS)
    return viewer


def _dock(viewer, name: str):
    return viewer.window.add_plugin_dock_widget("napari-hpa", name)[1]


def _effective(annotate) -> set[int]:
    return annotate.store.effective_labels(annotate.source, TASK)


def test_number_keys_work_with_the_list_focused(make_napari_viewer, monkeypatch, qtbot, folder):
    """1-9 toggle the ranked classes from the list, also without an active window or with
    another binding of the key in napari's window."""
    viewer = _viewer(make_napari_viewer, monkeypatch)
    annotate = _dock(viewer, "Annotate")
    viewer.open(str(folder / "0-2-a.jpg"), plugin=None)
    assert annotate.source == str(folder / "0-2-a.jpg")
    qtbot.waitUntil(annotate.list.isVisible, timeout=5000)
    window = viewer.window._qt_window

    # napari's window not active (no window manager, as under Xvfb or some remote desktops)
    QApplication.setActiveWindow(None)
    annotate.list.setFocus()
    assert window.focusWidget() is annotate.list
    qtbot.keyClick(annotate.list, Qt.Key_1)
    assert _effective(annotate) == {annotate._order[0]}
    assert "Set" in annotate.status.text()

    # active, with "3" bound elsewhere in the window (another plugin's action, say)
    other: list[bool] = []
    action = QAction("another plugin's 3", window)
    action.setShortcut("3")
    action.triggered.connect(lambda: other.append(True))
    window.addAction(action)
    window.activateWindow()
    QApplication.setActiveWindow(window)
    annotate.list.setFocus()
    qtbot.waitUntil(annotate.list.hasFocus, timeout=5000)
    third = annotate._order[2]
    qtbot.keyClick(annotate.list, Qt.Key_3)
    assert _effective(annotate) == {annotate._order[0], third}  # toggled once, not twice
    qtbot.keyClick(annotate.list, Qt.Key_3, Qt.KeypadModifier)  # the keypad's 3 too
    assert third not in _effective(annotate)
    assert not other  # the list had the focus: the key was the list's
    qtbot.keyClick(annotate.list, Qt.Key_1, Qt.ControlModifier)  # not a number key
    assert _effective(annotate) == {annotate._order[0]}


def test_accept_needs_a_prediction_and_counts_read_right(
    make_napari_viewer, monkeypatch, qtbot, folder
):
    """Accept is off and says why until there is a prediction; '1 cell', '1 change'. The
    cell TIFFs, exported to the image folder, go to a subfolder (issue 18: never beside)."""
    dialogs = Dialogs(monkeypatch)
    model = write_tiny_model(user_models_dir(), name="tiny-hpa")
    viewer = _viewer(make_napari_viewer, monkeypatch)
    predict = _dock(viewer, "Predict")
    annotate = _dock(viewer, "Annotate")
    viewer.open(str(folder / "one_red.png"), plugin=None)
    source = str(folder / "one")
    assert annotate.source == source
    assert not annotate.accept_button.isEnabled()
    annotate.accept_prediction()  # what a click would do, were the button on
    assert annotate.status.text().startswith("There is no prediction to accept for this image")
    assert annotate.store.user_labels(source, TASK) == {}  # nothing written

    assert predict.select_model(str(model))
    predict.predict_button.click()
    qtbot.waitUntil(
        lambda: (
            predict.session.result is not None
            and predict.session.result.labels is not None
            and not predict.state.running
        ),
        timeout=WAIT_MS,
    )
    qtbot.waitUntil(  # stored, with the cells (the second publication's writer is done)
        lambda: (
            annotate.accept_button.isEnabled()
            and annotate._writer is None
            and annotate.store.cell_mask(source) is not None
        ),
        timeout=WAIT_MS,
    )
    assert len(predict.session.result.cells) == 1
    assert " · 1 cell · " in predict.status.text()  # was "1 cells"

    annotate.accept_button.click()  # one row per class of the model
    n = len(get_task(TASK).classes)
    assert annotate.status.text() == f"Accepted the prediction ({n} classes confirmed)."
    annotate.toggle_rank(0)
    annotate.undo_button.click()
    assert annotate.status.text() == "Undid 1 change."

    raw = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    dialogs.answers = [str(folder)]  # the folder the dialog opens in: the natural pick
    assert annotate.exports.export_tiff() == folder / "cell_labels"
    assert dialogs.calls == [("folder", ("Export cell label TIFFs to a folder", str(folder)))]
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == raw
    assert sorted(p.name for p in (folder / "cell_labels").iterdir()) == [
        "cell_labels.csv",
        "one.tif",
    ]


class Dialogs:
    """Qt's static file dialogs, replaced: each call is recorded, and answered from a queue."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, tuple]] = []
        self.answers: list[str] = []
        monkeypatch.setattr(QFileDialog, "getSaveFileName", self._save)
        monkeypatch.setattr(QFileDialog, "getExistingDirectory", self._folder)

    def _save(self, parent, title, start, file_filter, *rest):
        self.calls.append(("save", (title, start, file_filter)))
        return self.answers.pop(0), file_filter

    def _folder(self, parent, title, start, *rest):
        self.calls.append(("folder", (title, start)))
        return self.answers.pop(0)


def test_export_dialogs_open_where_the_images_are(
    make_napari_viewer, monkeypatch, qtbot, folder, tmp_path
):
    """The image's folder and ``<folder>_labels.csv`` first, then the last export's folder;
    the CSV names the JPEG by its bare Kaggle id."""
    dialogs = Dialogs(monkeypatch)
    viewer = _viewer(make_napari_viewer, monkeypatch)
    annotate = _dock(viewer, "Annotate")
    viewer.open(str(folder / "0-2-a.jpg"), plugin=None)
    annotate.toggle_rank(0)
    first = annotate._order[0]

    out = tmp_path / "exports"
    out.mkdir()
    dialogs.answers = [str(out / "mine.csv"), str(out / "mine"), str(out / "tiffs")]
    buttons = {b.text(): b for b in annotate.exports.findChildren(QPushButton)}
    buttons["Export CSV…"].click()
    proposed = str(folder / "field_labels.csv")  # the image's folder, named after it
    assert dialogs.calls[0] == ("save", ("Export Kaggle CSV", proposed, "CSV (*.csv)"))
    with (out / "mine.csv").open(encoding="utf-8") as fh:
        assert list(csv.DictReader(fh)) == [{"Id": "0-2-a", "Target": str(first)}]

    buttons["Export JSON…"].click()  # typed without a suffix: the filter's is added
    assert dialogs.calls[1][1][1] == str(out / "field_labels.json")  # the last export's folder
    assert (out / "mine.json").is_file()
    buttons["Cell TIFFs…"].click()
    assert dialogs.calls[2] == ("folder", ("Export cell label TIFFs to a folder", str(out)))
    assert (out / "tiffs" / "cell_labels.csv").is_file()
    with AnnotationStore(default_db_path(annotate.source)) as store:  # the labels are intact
        assert store.effective_labels(str(folder / "0-2-a.jpg"), TASK) == {first}
