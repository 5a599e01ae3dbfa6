"""The Predict dock warns about a blank image instead of presenting a confident answer
(issue 18, item 20): a real viewer, the dock from the Plugins menu, napari's reader."""

from __future__ import annotations

import numpy as np
from conftest import GUI_TEST
from PIL import Image

pytestmark = GUI_TEST


def test_a_blank_image_is_warned_about(make_napari_viewer, monkeypatch, qtbot, tmp_path, notes):
    """An all-black protein image (a Kaggle-style ``_green.png``) is predicted, with a
    notification and a status line that say it is blank, once per result."""
    from napari.settings import get_settings

    path = tmp_path / "dark1_green.png"
    Image.fromarray(np.zeros((96, 96), np.uint8)).save(path)
    viewer = make_napari_viewer()
    monkeypatch.setitem(get_settings().plugins.extension2reader, "*_green.png", "napari-hpa")
    _dock, predict = viewer.window.add_plugin_dock_widget("napari-hpa", "Predict")
    viewer.open(str(path), plugin=None)
    predict.predict_button.click()
    qtbot.waitUntil(lambda: predict.session.result is not None, timeout=120_000)
    qtbot.waitUntil(lambda: not predict.state.running, timeout=120_000)
    warnings = [m for kind, m in notes if kind == "show_warning" and "blank" in m]
    assert warnings == [
        "dark1: blank image (every pixel is 0): nothing to classify, the probabilities mean nothing"
    ], notes
    assert predict.status.text().startswith("Warning: dark1: blank image (every pixel is 0)")
