"""The Batch widget in a real viewer: run, summary, double-click to open, cancel.

Run under a display::

    xvfb-run -a -s "-screen 0 1600x1000x24" python -m pytest tests/test_widget_batch.py
"""

from __future__ import annotations

import csv
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import write_tiny_model

from napari_hpa import layers as L
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.model.registry import user_models_dir
from napari_hpa.widgets._shared import results as R

pytestmark = pytest.mark.gui

qtpy = pytest.importorskip("qtpy")


def _widget(make_napari_viewer, folder: Path, out: Path):
    write_tiny_model(user_models_dir(), fit=64)  # found by the registry, listed in the widget
    viewer = make_napari_viewer(show=True)  # a visible table, so a real double-click lands
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-hpa", "Batch")
    ids = [widget.model_combo.itemText(i) for i in range(widget.model_combo.count())]
    widget.model_combo.setCurrentIndex(next(i for i, t in enumerate(ids) if t.startswith("tiny@1")))
    widget.folder_edit.setText(str(folder))
    widget.out_edit.setText(str(out))
    widget.device_combo.setCurrentText("cpu")
    widget.workers_spin.setValue(0)  # decode in-process: no worker start-up
    return viewer, widget


def test_run_summary_and_open(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    folder = tmp_path / "screen"
    write_samples(folder, n=5, size=64, seed=2)
    (folder / "corrupt.png").write_bytes(b"")
    out = tmp_path / "results.csv"
    viewer, widget = _widget(make_napari_viewer, folder, out)
    widget.workers_spin.setValue(1)  # the real process pool, started from a napari thread
    with qtbot.waitSignal(widget.finished, timeout=120_000) as blocker:
        widget.run_button.click()
        assert not widget.run_button.isEnabled()  # running in a thread: the GUI is free
    summary = blocker.args[0]
    assert summary.done == 6 and summary.errors == 1 and not summary.cancelled
    # summary: counts per class with bars; problems listed; results table filled
    assert widget.summary_table.rowCount() == len(summary.per_class_counts) > 0
    shown = {
        widget.summary_table.item(r, 0).text(): int(widget.summary_table.item(r, 1).text())
        for r in range(widget.summary_table.rowCount())
    }
    assert shown == summary.per_class_counts
    assert widget.summary_table.cellWidget(0, 2).value() == max(shown.values())
    assert widget.error_list.count() == 1 and "corrupt.png" in widget.error_list.item(0).text()
    assert widget.results_table.rowCount() == 6
    assert widget.progress_bar.value() == widget.progress_bar.maximum() == 6
    assert "Done" in widget.status_label.text()
    # double-click an ok row: its image opens as 4 additive layers, the prediction is shown
    row = next(r for r in range(6) if widget.results_table.item(r, 1).text() == "ok")
    _double_click(qtbot, widget, row)
    qtbot.waitUntil(lambda: len(viewer.layers) == 4, timeout=5_000)
    assert {layer.blending for layer in viewer.layers} == {"additive"}
    assert [layer.colormap.name for layer in viewer.layers] == ["red", "green", "blue", "yellow"]
    image_id = Path(widget._results[row]["image"]).name
    overlay = viewer.canvas.overlays.text
    assert overlay.visible and image_id in overlay.text
    assert widget.results_table.item(row, 2).text().split(", ")[0] in overlay.text


def _double_click(qtbot, widget, row: int) -> None:
    """Double-click the row's image cell as a user does (Qt needs the press first)."""
    rect = widget.results_table.visualItemRect(widget.results_table.item(row, 0))
    view = widget.results_table.viewport()
    qtbot.mouseClick(view, qtpy.QtCore.Qt.LeftButton, pos=rect.center())
    qtbot.mouseDClick(view, qtpy.QtCore.Qt.LeftButton, pos=rect.center())


def _text_width(viewer) -> float:
    """Width in canvas pixels of the text napari draws (its vispy overlay, as measured by
    napari to place it)."""
    canvas = viewer.window._qt_viewer.canvas
    overlay = viewer.canvas.overlays.text
    (visual,) = canvas._viewer_overlay_to_visual[overlay]
    return float(visual.node.get_width_height()[0])


def test_second_double_click_replaces_the_image(make_napari_viewer, qtbot, tmp_path) -> None:
    """Issue 17, defect 9: a second double-click added four more layers over the first
    image (two images blended), its heat map and cells stayed, the canvas text ran off the
    canvas; and nothing may warn (a deprecation or private-attribute warning is a toast)."""
    folder = tmp_path / "screen"
    write_samples(folder, n=3, size=64, seed=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        viewer, widget = _widget(make_napari_viewer, folder, tmp_path / "results.csv")
        _dock, predict = viewer.window.add_plugin_dock_widget("napari-hpa", "Predict")
        _dock, annotate = viewer.window.add_plugin_dock_widget("napari-hpa", "Annotate")
        with qtbot.waitSignal(widget.finished, timeout=120_000):
            widget.run_button.click()
        first, second = (Path(widget._results[r]["image"]).as_posix() for r in (0, 1))

        _double_click(qtbot, widget, 0)
        qtbot.waitUntil(lambda: len(viewer.layers) == 4, timeout=5_000)
        assert predict.select_model("tiny@1")
        predict.predict_button.click()  # the first image's results: heat map and cells
        qtbot.waitUntil(lambda: R.find_layer(viewer, "cells") is not None, timeout=60_000)
        qtbot.waitUntil(
            lambda: not predict.state.running and predict.cam_worker is None, timeout=60_000
        )
        assert predict.session.result.source == first and R.find_layer(viewer, "cam")

        channels = [lyr for lyr in viewer.layers if L.meta(lyr).get("kind") == "channel"]
        channels[0].contrast_limits = (0.1, 0.9)  # the user's own contrast
        channels[3].visible = False
        _double_click(qtbot, widget, 1)
        shown = lambda: {L.meta(layer).get("source") for layer in viewer.layers}  # noqa: E731
        qtbot.waitUntil(lambda: second in shown(), timeout=5_000)
        qtbot.wait(200)  # Predict drops the old results after the layer events
    names = [layer.name for layer in viewer.layers]
    assert names == ["microtubules", "protein", "nucleus", "ER"], names  # one image, not two
    assert {L.meta(layer)["source"] for layer in viewer.layers} == {second}
    # refilled in place: the same layers, the user's visibility kept (issue 17, item 3)
    assert all(a is b for a, b in zip(viewer.layers, channels, strict=True))
    assert not viewer.layers[3].visible
    assert predict.session.result is None and predict.table.rowCount() == 0
    # Annotate follows the session's image_changed: its corrections go to the image shown
    assert annotate.source == second and annotate.image_id == Path(second).name
    assert Path(second).name in annotate.image_label.text()
    overlay = viewer.canvas.overlays.text
    assert overlay.visible and Path(second).name in overlay.text
    # The row's predicted classes are long (a random tiny model predicts many): wrapped
    # to the canvas, at most three lines, and every line inside the canvas.
    qtbot.waitUntil(lambda: _text_width(viewer) > 0, timeout=5_000)
    assert 1 < len(overlay.text.splitlines()) <= 3
    assert _text_width(viewer) < viewer.canvas.size[1], (overlay.text, viewer.canvas.size)
    viewer.window._qt_window.resize(900, 700)  # a narrower canvas: wrapped again
    qtbot.waitUntil(lambda: _text_width(viewer) < viewer.canvas.size[1], timeout=5_000)
    bad = [
        f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
        for w in caught
        if issubclass(w.category, (DeprecationWarning, FutureWarning))
        and ("napari" in w.filename or "Private attribute" in str(w.message))
    ]
    assert not bad, bad


def test_cancel(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    write_samples(folder, n=4, size=64, seed=4)
    for i in range(4, 200):
        for c in ("red", "green", "blue", "yellow"):
            shutil.copy(folder / f"synth_{i % 4:04d}_{c}.png", folder / f"synth_{i:04d}_{c}.png")
    out = tmp_path / "results.csv"
    viewer, widget = _widget(make_napari_viewer, folder, out)
    widget.batch_spin.setValue(1)
    widget.run_button.click()
    qtbot.waitUntil(lambda: widget.progress_bar.value() >= 3, timeout=60_000)
    with qtbot.waitSignal(widget.finished, timeout=5_000) as blocker:
        widget.cancel_button.click()
    summary = blocker.args[0]
    assert summary.cancelled and summary.done < 200
    assert "Cancelled" in widget.status_label.text() and widget.run_button.isEnabled()
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == summary.done == len({r["image"] for r in rows})


def test_warning_rows_are_counted_and_not_called_errors(
    make_napari_viewer, qtbot, tmp_path: Path
) -> None:
    """A blank image is a 'warning' row (its probabilities, no class): the end line counts
    it, the problems list names it, and opening it says warning, not error."""
    from PIL import Image

    folder = tmp_path / "screen"
    write_samples(folder, n=2, size=64, seed=2)
    for colour in ("red", "green", "blue", "yellow"):  # a blank set: one value everywhere
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(folder / f"blank_{colour}.png")
    viewer, widget = _widget(make_napari_viewer, folder, tmp_path / "results.csv")
    with qtbot.waitSignal(widget.finished, timeout=120_000) as blocker:
        widget.run_button.click()
    summary = blocker.args[0]
    assert summary.warnings == 1 and summary.errors == 0 and summary.ok == 2
    line = widget.status_label.text()
    assert "2 ok, 1 warning(s), 0 error(s)" in line, line
    problems = [widget.error_list.item(i).text() for i in range(widget.error_list.count())]
    assert len(problems) == 1 and problems[0].startswith("warning: ") and "blank" in problems[0]
    row = next(r for r in range(3) if widget.results_table.item(r, 1).text() == "warning")
    _double_click(qtbot, widget, row)
    qtbot.waitUntil(lambda: len(viewer.layers) == 4, timeout=5_000)
    text = viewer.canvas.overlays.text.text
    assert text.startswith("blank: warning: blank image") and "error" not in text, text
