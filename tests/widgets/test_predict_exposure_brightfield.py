"""The Predict dock does not call a bright-field image saturated (issue 18, item 20): a real
viewer, the dock from the Plugins menu, napari's reader, the bundled plankton model on a
real plankton image (white around a dark object is its normal background)."""

from __future__ import annotations

import shutil

from conftest import GUI_TEST, shared_data

pytestmark = GUI_TEST


def test_plankton_image_gets_an_answer_not_a_warning(
    make_napari_viewer, monkeypatch, qtbot, tmp_path, notes
):
    """Most of a plankton image is at 1.0; with the plankton model (``invert``) that is no
    saturation: no warning notification, no warning in the status line, a predicted class."""
    from napari.settings import get_settings

    root = shared_data("plankton_ndsb2015") / "images" / "ctenophore_lobate"
    source = min(sorted(root.glob("*.jpg")), key=lambda f: f.stat().st_size)
    shutil.copy(source, tmp_path / source.name)  # its folder gets no annotations file
    viewer = make_napari_viewer()
    monkeypatch.setitem(get_settings().plugins.extension2reader, "*.jpg", "napari-hpa")
    _dock, predict = viewer.window.add_plugin_dock_widget("napari-hpa", "Predict")
    viewer.open(str(tmp_path / source.name), plugin=None)
    assert predict.select_model("plankton121-efficientnet_lite0")
    predict.predict_button.click()
    qtbot.waitUntil(lambda: predict.session.result is not None, timeout=120_000)
    qtbot.waitUntil(lambda: not predict.state.running, timeout=120_000)
    result = predict.session.result
    assert result.image.data.mean() > 0.5  # a bright field, as the fluorescence rule sees it
    assert [m for kind, m in notes if kind == "show_warning"] == [], notes
    assert not predict.status.text().startswith("Warning"), predict.status.text()
    assert result.prediction.predicted, "no class for a real plankton image"
