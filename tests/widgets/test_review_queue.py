"""Annotate's review queue (issue 22): Next in the order chosen, its counts and reasons, kept.

The docks are added as the Plugins menu adds them and napari picks the reader (the
user's remembered choice, as in test_real_session). The folder's images are predicted
by the queue itself, in the background, with a tiny real model chosen in Predict.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import GUI_TEST
from helpers import prefer_napari_hpa, write_tiny_model

from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.labels.review import rank_images, stored_predictions
from napari_hpa.core.model.registry import user_models_dir
from napari_hpa.core.tasks import get_task
from napari_hpa.widgets.annotate.queue import ORDER_KEYS

pytestmark = GUI_TEST
TASK = get_task("hpa28")
WAIT_MS = 60_000
N_IMAGES = 5
PATTERNS = [f"*_{c}.png" for c in ("red", "green", "blue", "yellow")]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Five small HPA sets (a labels.csv beside them, which is no image)."""
    return write_samples(tmp_path / "field", n=N_IMAGES, size=64, seed=4)


def _viewer(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer(show=True)
    prefer_napari_hpa(monkeypatch, PATTERNS)
    return viewer


def _dock(viewer, name: str):
    return viewer.window.add_plugin_dock_widget("napari-hpa", name)


def _choose(combo, text: str) -> None:
    """Pick an entry as a click in the box's list does (``activated``, also for the same)."""
    i = combo.findText(text)
    assert i >= 0, text
    combo.setCurrentIndex(i)
    combo.activated.emit(i)


def _ranked(qtbot, queue) -> None:
    """Wait for the queue's ranking (a thread worker, as predicting the folder is)."""
    qtbot.waitUntil(lambda: not queue.ranking and not queue.running, timeout=WAIT_MS)


def _next(qtbot, annotate, offset: int = 1) -> str | None:
    target = annotate.step(offset)
    if target is not None:
        qtbot.waitUntil(
            lambda: annotate.source == target and annotate._loader is None, timeout=WAIT_MS
        )
    return target


def test_next_walks_the_least_certain_first_and_the_queue_is_kept(
    make_napari_viewer, monkeypatch, qtbot, folder, notes
):
    model = write_tiny_model(user_models_dir(), name="tiny-hpa")
    viewer = _viewer(make_napari_viewer, monkeypatch)
    predict = _dock(viewer, "Predict")[1]
    assert predict.select_model(str(model))
    predict.backend_combo.setCurrentText("torch")  # no runtime export and timing here
    dock, annotate = _dock(viewer, "Annotate")
    annotate.auto_predict.setChecked(False)  # the queue predicts; Predict is not needed here
    queue = annotate.queue
    viewer.open(str(folder / "synth_0000_red.png"), plugin=None)
    first = str(folder / "synth_0000")
    assert annotate.source == first
    _ranked(qtbot, queue)
    assert [queue.order_combo.itemText(i) for i in range(queue.order_combo.count())] == [
        "least certain first",
        "lowest confidence first",
        "one predicted class",
        "file order",
    ]
    assert queue.order == "least_certain" and not queue.class_combo.isVisible()
    assert len(queue.missing) == N_IMAGES and queue.predict_button.isVisible()

    _choose(queue.order_combo, "least certain first")  # predicts the folder in the background
    qtbot.waitUntil(lambda: queue.running, timeout=WAIT_MS)  # once ranked: 5 not predicted
    assert queue.running and queue.progress.isVisible() and queue.cancel_button.isVisible()
    _ranked(qtbot, queue)
    assert not queue.missing and not queue.predict_button.isVisible()
    # the image shown was predicted with the folder: its checklist shows the probabilities
    assert any(ch.isdigit() for ch in annotate.list.item(0).text().split("]")[-1])
    assert any(k == "show_info" and "Predicted 5 images" in m for k, m in notes), notes
    sources = sorted(str(folder / f"synth_{i:04d}") for i in range(N_IMAGES))
    ranked = rank_images(
        stored_predictions(annotate.store, TASK.name, sources, len(TASK.classes)),
        TASK.classes,
        "least_certain",
    )
    expected = [item.source for item in ranked]
    assert sorted(expected) == sources and expected != sources  # not the file order
    position = expected.index(first) + 1
    assert queue.counts_label.text() == (
        f"Queue: 0 of 5 reviewed, 5 left (this image: {position} of 5)."
    )
    reason = next(i.reason for i in ranked if i.source == first)
    assert queue.reason_label.text() == f"Why this image: {reason}"
    assert reason.startswith("margin 0.")

    visited = [first] + [_next(qtbot, annotate) for _ in range(N_IMAGES - 1)]
    assert visited == [first] + [s for s in expected if s != first]  # the ranked order
    assert queue.counts_label.text().startswith("Queue: 4 of 5 reviewed, 1 left")
    assert queue.reason_label.text().startswith("Why this image: margin ")
    assert annotate.step(1) is None  # the last image is left: marked, and nothing is left
    assert any("Every image of the queue is reviewed." in m for _k, m in notes)
    assert queue.counts_label.text().startswith("Queue: 5 of 5 reviewed, 0 left")
    assert _next(qtbot, annotate, -1) == visited[-2]  # Previous: back where Next came from
    assert _next(qtbot, annotate, -1) == visited[-3]

    _choose(queue.order_combo, "one predicted class")  # the class box appears
    assert queue.class_combo.isVisible()
    _ranked(qtbot, queue)
    top = annotate.store.model_scores(annotate.source, TASK.name)
    best = max(top, key=top.get)
    _choose(queue.class_combo, TASK.classes[best])
    _ranked(qtbot, queue)
    assert annotate.source in [i.source for i in queue.ranked]
    assert queue.reason_label.text().startswith(f"Why this image: predicted {TASK.classes[best]}")
    _choose(queue.order_combo, "lowest confidence first")
    _ranked(qtbot, queue)
    assert not queue.class_combo.isVisible()
    assert not [m for k, m in notes if k == "show_error"], notes

    # Closed and opened again (the dock, the database): the order and the counts are kept.
    viewer.window.remove_dock_widget(dock)
    qtbot.wait(50)
    annotate = _dock(viewer, "Annotate")[1]
    shown = annotate.source
    _ranked(qtbot, annotate.queue)
    assert shown in sources
    assert annotate.queue.order == "lowest_confidence"
    assert annotate.queue.order_combo.currentText() == "lowest confidence first"
    assert annotate.queue.counts_label.text().startswith("Queue: 5 of 5 reviewed, 0 left")
    assert annotate.queue.reason_label.text().startswith("Why this image: confidence ")
    assert ORDER_KEYS.index(annotate.queue.order) == 1


def test_file_order_walks_the_folder_as_before(make_napari_viewer, monkeypatch, qtbot, folder):
    viewer = _viewer(make_napari_viewer, monkeypatch)
    annotate = _dock(viewer, "Annotate")[1]
    annotate.auto_predict.setChecked(False)
    viewer.open(str(folder / "synth_0002_red.png"), plugin=None)
    _choose(annotate.queue.order_combo, "file order")  # nothing to predict for it
    _ranked(qtbot, annotate.queue)
    assert not annotate.queue.running and not annotate.queue.active
    assert not annotate.queue.reason_label.isVisible()
    assert _next(qtbot, annotate) == str(folder / "synth_0003")
    assert _next(qtbot, annotate, -1) == str(folder / "synth_0002")
    assert _next(qtbot, annotate, -1) == str(folder / "synth_0001")
    assert annotate.store.reviewed(TASK.name) == set()  # file order marks nothing
    assert annotate.store.review_order(TASK.name) == ("file", None)


def test_next_cell_walks_the_cells_least_certain_first(
    make_napari_viewer, monkeypatch, qtbot, tmp_path
):
    """After Predict, "Next cell" selects the image's cells in rank_cells' order, each once."""
    from napari_hpa.core.labels.review import Scored, rank_cells

    fields = write_samples(tmp_path / "cells", n=1, size=160, seed=7)
    model = write_tiny_model(user_models_dir(), name="tiny-cells")
    viewer = _viewer(make_napari_viewer, monkeypatch)
    predict = _dock(viewer, "Predict")[1]
    assert predict.select_model(str(model))
    predict.backend_combo.setCurrentText("torch")
    annotate = _dock(viewer, "Annotate")[1]
    cells = annotate.queue.cells
    viewer.open(str(fields / "synth_0000_red.png"), plugin=None)
    assert cells.next_cell() is None and "Predict this image first" in cells.reason_label.text()
    predict.predict_button.click()
    qtbot.waitUntil(lambda: predict.session.result is not None, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: bool(predict.session.result.cells), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not predict.state.running, timeout=WAIT_MS)
    result = predict.session.result
    scored = Scored(
        result.source,
        result.prediction.probabilities,
        {c: p.probabilities for c, p in result.cells.items()},
    )
    expected = [i.cell for i in rank_cells(scored, TASK.classes, "least_certain")]
    assert len(expected) >= 2
    walked = [cells.next_cell() for _ in expected]
    assert walked == expected
    assert annotate.cell == expected[-1]  # the checklist edits the selected cell
    assert cells.reason_label.text().startswith(f"Cell {expected[-1]} ({len(expected)} of ")
    assert cells.next_cell() is None and "were visited" in cells.reason_label.text()
    reviewed = annotate.store.reviewed(TASK.name)
    assert {(result.source, c) for c in expected} <= reviewed
