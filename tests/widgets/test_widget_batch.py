"""The Batch widget in a real viewer: run, summary, double-click to open, cancel.

Run under a display::

    xvfb-run -a -s "-screen 0 1600x1000x24" python -m pytest tests/test_widget_batch.py
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from helpers import write_tiny_model

from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.model.registry import user_models_dir

pytestmark = pytest.mark.gui

qtpy = pytest.importorskip("qtpy")


def _widget(make_napari_viewer, folder: Path, out: Path):
    from napari_hpa.widgets.batch import BatchWidget

    write_tiny_model(user_models_dir(), fit=64)  # found by the registry, listed in the widget
    viewer = make_napari_viewer(show=True)  # a visible table, so a real double-click lands
    widget = BatchWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Batch")
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
    rect = widget.results_table.visualItemRect(widget.results_table.item(row, 0))
    view = widget.results_table.viewport()
    qtbot.mouseClick(view, qtpy.QtCore.Qt.LeftButton, pos=rect.center())  # Qt needs the press
    qtbot.mouseDClick(view, qtpy.QtCore.Qt.LeftButton, pos=rect.center())
    qtbot.waitUntil(lambda: len(viewer.layers) == 4, timeout=5_000)
    assert {layer.blending for layer in viewer.layers} == {"additive"}
    assert [layer.colormap.name for layer in viewer.layers] == ["red", "green", "blue", "yellow"]
    image_id = Path(widget._results[row]["image"]).name
    assert viewer.text_overlay.visible and image_id in viewer.text_overlay.text
    assert widget.results_table.item(row, 2).text().split(", ")[0] in viewer.text_overlay.text


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
