"""The Annotate widget: corrections saved at once, keys, cells, next image, export."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
from conftest import GUI_TEST
from helpers import write_tiny_model

from napari_hpa import layers as L
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.labels.store import AnnotationStore, default_db_path
from napari_hpa.core.model.registry import user_models_dir
from napari_hpa.widgets._shared import results as R
from napari_hpa.widgets.annotate import AnnotateWidget
from napari_hpa.widgets.predict import PredictWidget

pytestmark = GUI_TEST
WAIT_MS = 60_000
TASK = "hpa28"


@pytest.fixture
def hpa_dir(tmp_path: Path) -> Path:
    """A fresh folder per test: each test gets its own annotations database."""
    return write_samples(tmp_path / "images", n=3, size=256, seed=2)


@pytest.fixture
def setup(make_napari_viewer, qtbot, hpa_dir):
    """A viewer with synth_0000 predicted by a tiny model, Predict and Annotate docked."""
    model = write_tiny_model(user_models_dir(), name="tiny-hpa")
    viewer = make_napari_viewer()
    viewer.open(str(hpa_dir / "synth_0000_red.png"), plugin="napari-hpa")
    predict = viewer.window.add_plugin_dock_widget("napari-hpa", "Predict")[1]
    assert predict.select_model(str(model))
    annotate = viewer.window.add_plugin_dock_widget("napari-hpa", "Annotate")[1]
    predict.predict()
    _wait_prediction(qtbot, predict, annotate, str(hpa_dir / "synth_0000"))
    return viewer, predict, annotate


def _wait_prediction(qtbot, predict: PredictWidget, annotate: AnnotateWidget, source: str):
    """Until the prediction is finished *and then* stored. The order matters: the result
    is published twice (image level, then with the cells), and each starts a writer; the
    store is only complete once the writer started by the last one is done."""
    qtbot.waitUntil(
        lambda: predict.session.result is not None and predict.session.result.source == source,
        timeout=WAIT_MS,
    )
    qtbot.waitUntil(
        lambda: not predict.state.running and predict.cam_worker is None, timeout=WAIT_MS
    )
    qtbot.waitUntil(
        lambda: (
            annotate.store is not None
            and annotate._writer is None
            and annotate.store.model_id(source, TASK) is not None
        ),
        timeout=WAIT_MS,
    )


def _checked(annotate: AnnotateWidget) -> set[int]:
    from qtpy.QtCore import Qt

    items = [annotate.list.item(i) for i in range(annotate.list.count())]
    return {int(it.data(Qt.UserRole)) for it in items if it.checkState() == Qt.Checked}


def test_prefilled_toggle_and_reopen(setup, hpa_dir):
    viewer, predict, annotate = setup
    source = str(hpa_dir / "synth_0000")
    result = predict.session.result
    db = default_db_path(source)
    assert annotate.store.path == db and db.is_file()
    assert _checked(annotate) == set(result.prediction.predicted)  # pre-filled by the model

    top = result.order()[0]
    annotate.toggle_rank(0)  # number key 1 = the most probable class
    assert top not in _checked(annotate)
    # a click on a checkbox goes through the same path
    from qtpy.QtCore import Qt

    items = [annotate.list.item(i) for i in range(annotate.list.count())]
    item = next(
        it for it in items if it.checkState() == Qt.Unchecked and int(it.data(Qt.UserRole)) != top
    )
    fifth = int(item.data(Qt.UserRole))
    item.setCheckState(Qt.Checked)

    with AnnotationStore(db) as fresh:  # as after a crash: a new connection sees everything
        assert fresh.user_labels(source, TASK) == {top: False, fifth: True}
        assert fresh.model_labels(source, TASK) == set(result.prediction.predicted)
        assert fresh.model_id(source, TASK) == "tiny-hpa@1"
        assert fresh.effective_labels(source, TASK) == (
            set(result.prediction.predicted) - {top}
        ) | {fifth}


def test_keys_undo_redo_accept(setup, hpa_dir):
    viewer, predict, annotate = setup
    source = str(hpa_dir / "synth_0000")
    result = predict.session.result
    second = result.order()[1]
    handler = viewer.window._qt_viewer._key_map_handler
    viewer.layers.selection.active = R.find_layer(viewer, "cells")  # its own '2' = paint mode
    before = annotate.store.effective_labels(source, TASK)
    handler.press_key("2")
    handler.release_key("2")
    assert R.find_layer(viewer, "cells").mode == "pan_zoom"
    assert annotate.store.effective_labels(source, TASK) == before ^ {second}
    handler.press_key("Control-Z")
    assert annotate.store.effective_labels(source, TASK) == before
    handler.press_key("Control-Shift-Z")
    assert annotate.store.effective_labels(source, TASK) == before ^ {second}
    annotate.accept_button.click()  # back to exactly the model's prediction, as user labels
    user = annotate.store.user_labels(source, TASK)
    assert {c for c, v in user.items() if v} == set(result.prediction.predicted)

    # a closed Annotate panel leaves no keys behind (the layer's own '2' works again)
    from qtpy.QtWidgets import QApplication

    viewer.window.remove_dock_widget(annotate.parentWidget())
    annotate.deleteLater()
    QApplication.processEvents()
    from qtpy.QtCore import QEvent

    QApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    handler.press_key("2")
    handler.release_key("2")
    assert R.find_layer(viewer, "cells").mode == "paint"
    assert annotate._on_click not in viewer.mouse_drag_callbacks


def test_cell_click_and_cell_labels(setup, hpa_dir):
    viewer, predict, annotate = setup
    source = str(hpa_dir / "synth_0000")
    result = predict.session.result
    cells = R.find_layer(viewer, "cells")
    cell = int(cells.features["index"][0])
    y, x = np.argwhere(cells.data == cell).mean(axis=0).round().astype(int)
    if cells.data[y, x] != cell:
        y, x = np.argwhere(cells.data == cell)[0]
    # a click (press + release, no move) through the viewer's mouse callback
    event = SimpleNamespace(
        type="mouse_press", button=1, modifiers=(), pos=(10, 10), position=(float(y), float(x))
    )
    gen = annotate._on_click(viewer, event)
    next(gen)
    event.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(gen)
    assert annotate.session.selected_cell == cell and annotate.cell == cell
    assert "cell" in annotate.scope_label.text()
    assert _checked(annotate) == set(result.cells[cell].predicted)
    outline = R.find_layer(viewer, "selected-cell")  # the cell outlined in white
    # the whole cell (the cells layer holds its inside, its outline is the id + offset)
    whole = (result.labels == cell).sum()
    edge = cell + L.meta(cells)["offset"]
    assert whole == (cells.data == cell).sum() + (cells.data == edge).sum()
    assert outline.visible and outline.data.sum() == whole
    r0, c0 = np.argwhere(result.labels == cell).min(axis=0)
    np.testing.assert_allclose(outline.translate, (r0, c0))
    assert viewer.layers.selection.active is not outline

    top = int(np.argsort(-result.cells[cell].probabilities)[0])
    annotate.toggle_rank(0)
    assert annotate.store.user_labels(source, TASK, cell=cell) == {top: False}
    assert annotate.store.user_labels(source, TASK) == {}  # the image level is untouched
    handler = viewer.window._qt_viewer._key_map_handler
    handler.press_key("Escape")
    assert annotate.cell == 0 and not outline.visible


def test_next_image_autopredicts_and_export(setup, hpa_dir, qtbot, tmp_path, monkeypatch):
    viewer, predict, annotate = setup
    first = str(hpa_dir / "synth_0000")
    annotate.toggle_rank(0)
    target = annotate.step(1)
    assert target == str(hpa_dir / "synth_0001")
    _wait_prediction(qtbot, predict, annotate, target)
    assert annotate.image_id == "synth_0001" and len(viewer.layers.selection) >= 0
    assert [
        L.meta(lyr)["source"] for lyr in viewer.layers if L.meta(lyr).get("kind") == "channel"
    ] == [target] * 4
    assert annotate.store.user_labels(target, TASK) == {}
    annotate.toggle_rank(1)

    from qtpy.QtWidgets import QFileDialog  # modal: answered here, as a user would

    out = tmp_path / "labels.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *_: (str(out), ""))
    annotate.exports.export_csv()
    rows = {r["Id"]: r["Target"] for r in csv.DictReader(out.open())}
    with AnnotationStore(default_db_path(first)) as store:
        for src, image_id in ((first, "synth_0000"), (target, "synth_0001")):
            expected = " ".join(str(c) for c in sorted(store.effective_labels(src, TASK)))
            assert rows[image_id] == expected

    annotate.exports.export_json(str(tmp_path / "labels.json"))
    items = json.loads((tmp_path / "labels.json").read_text())
    assert {i["image"] for i in items} == {"synth_0000", "synth_0001"}
    assert all(item["cells"] for item in items)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *_: str(tmp_path / "tiffs"))
    annotate.exports.export_tiff()
    stack = tifffile.imread(tmp_path / "tiffs" / "synth_0001.tif")
    assert stack.shape == (29, 256, 256)

    annotate.step(-1)
    _wait_prediction(qtbot, predict, annotate, first)
    assert annotate.image_id == "synth_0000"


def test_unreadable_next_image_notifies(setup, hpa_dir, qtbot, notes):
    viewer, predict, annotate = setup
    (hpa_dir / "synth_0001_green.png").write_bytes(b"not a png")
    annotate.step(1)
    qtbot.waitUntil(lambda: annotate._loader is None, timeout=WAIT_MS)
    assert any(k == "show_error" and "synth_0001_green.png" in m for k, m in notes)
    assert annotate.image_id == "synth_0000"  # still on the same image, still usable
    annotate.toggle_rank(0)
    assert annotate.store.user_labels(str(hpa_dir / "synth_0000"), TASK)
