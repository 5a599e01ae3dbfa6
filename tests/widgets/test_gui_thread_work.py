"""What reads every pixel runs in the worker, never in a dock's handler on napari's thread.

``benchmarks/gui_latency.py --trace`` named ``show_cells`` (116 ms) and ``show_result``
(70 ms): napari found the cells' outlines itself (``Labels.contour``, twice per update)
and the heat map's colour limits were percentiles taken on the main thread. Now the
worker outlines the cells and stretches the map; the handlers only hand arrays to
napari. The docks are added as the Plugins menu adds them and napari picks the reader.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from conftest import GUI_TEST
from helpers import write_tiny_model

from napari_hpa import layers as L
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.model.registry import user_models_dir
from napari_hpa.widgets._shared import results as R

pytestmark = GUI_TEST
WAIT_MS = 60_000
HPA_PATTERNS = [f"*_{c}.png" for c in ("red", "green", "blue", "yellow")]


def _on_main_thread(monkeypatch, owner, name: str, calls: list[str]) -> None:
    """Record each call of ``owner.name`` made on the main thread."""
    original = getattr(owner, name)

    def spy(*args, **kwargs):
        if threading.current_thread() is threading.main_thread():
            calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)


def test_predict_handlers_only_hand_ready_arrays_to_napari(
    make_napari_viewer, monkeypatch, qtbot, tmp_path: Path
) -> None:
    from napari.layers.labels import labels as napari_labels
    from napari.settings import get_settings
    from scipy import ndimage

    folder = write_samples(tmp_path / "hpa", n=1, size=256, seed=2)
    write_tiny_model(user_models_dir(), name="tiny-hpa")
    viewer = make_napari_viewer()
    readers = get_settings().plugins.extension2reader  # the user's remembered choice
    for pattern in HPA_PATTERNS:
        monkeypatch.setitem(readers, pattern, "napari-hpa")
    _dock, predict = viewer.window.add_plugin_dock_widget("napari-hpa", "Predict")
    _dock, annotate = viewer.window.add_plugin_dock_widget("napari-hpa", "Annotate")
    viewer.open(str(folder / "synth_0000_red.png"), plugin=None)  # napari picks the reader
    assert len(viewer.layers) == 4
    assert predict.select_model("tiny-hpa@1")

    calls: list[str] = []
    _on_main_thread(monkeypatch, napari_labels, "get_contours", calls)  # Labels.contour
    _on_main_thread(monkeypatch, np, "percentile", calls)  # the heat map's limits
    _on_main_thread(monkeypatch, ndimage, "grey_dilation", calls)  # our own outlines
    predict.predict_button.click()
    qtbot.waitUntil(lambda: R.find_layer(viewer, "cells") is not None, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not predict.state.running, timeout=WAIT_MS)
    result = predict.session.result
    other = result.order()[-1]  # a map made later, in the background, then shown
    predict.table.select_class(other)
    qtbot.waitUntil(
        lambda: R.find_layer(viewer, "cam").name.endswith(result.classes[other]), timeout=WAIT_MS
    )
    assert calls == [], calls

    cells, cam = R.find_layer(viewer, "cells"), R.find_layer(viewer, "cam")
    assert cells.contour == 0 and L.meta(cells)["offset"] == int(result.labels.max())
    assert tuple(cam.contrast_limits) == R.HEAT_LIMITS
    assert cam.data.min() >= 0.0 and cam.data.max() <= 1.0
    lo, hi = L.meta(cam)["limits"]
    assert lo < hi
    # a click inside a cell or on its outline selects that cell (Annotate reads the layer)
    cell = int(cells.features["index"][0])
    edge = np.argwhere(cells.data == cell + L.meta(cells)["offset"])[0]
    assert annotate.select_at(tuple(float(v) for v in edge)) == cell
    inside = np.argwhere(cells.data == cell)[0]
    assert annotate.select_at(tuple(float(v) for v in inside)) == cell
