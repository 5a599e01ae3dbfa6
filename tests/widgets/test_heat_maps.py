"""Heat maps in napari: transparent outside the cells or the foreground, seen on white too.

The Predict dock is added as the Plugins menu adds it and napari picks the reader
(the user's remembered choice). What the canvas shows is read back from napari's
own screenshots, with the heat map shown and hidden (issue 17, defect 7).
"""

from __future__ import annotations

import shutil

import numpy as np
from conftest import GUI_TEST, shared_data
from scipy import ndimage as ndi

from napari_hpa.core.model.registry import sample_data_dir
from napari_hpa.layers import meta
from napari_hpa.widgets._shared import results as R

pytestmark = GUI_TEST
WAIT_MS = 240_000
#: What a user ticks in napari's "Choose reader" dialog ("remember this choice").
PATTERNS = [f"*_{c}.png" for c in ("red", "green", "blue", "yellow")] + ["*.jpg"]


def _viewer(make_napari_viewer, monkeypatch):
    from napari.settings import get_settings

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1200, 900)
    readers = get_settings().plugins.extension2reader  # in place: nothing is saved to disk
    for pattern in PATTERNS:
        monkeypatch.setitem(readers, pattern, "napari-hpa")
    return viewer


def _predict(viewer, qtbot, model: str):
    _, predict = viewer.window.add_plugin_dock_widget("napari-hpa", "Predict")
    assert predict.select_model(model)
    predict.predict_button.click()
    qtbot.waitUntil(lambda: not predict.state.running, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: predict.cam_worker is None, timeout=WAIT_MS)
    result = predict.session.result
    assert result is not None, predict.status.text()
    return result


def _canvas(viewer, qtbot, heat_visible: bool) -> np.ndarray:
    """The canvas as drawn (RGB), with the heat map shown or hidden."""
    R.find_layer(viewer, "cam").visible = heat_visible
    qtbot.wait(200)
    return np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].astype(int)


def _image_pixel(viewer, shape: tuple[int, int], image_shape: tuple[int, int]):
    """For each canvas pixel, the image pixel (row, col) under it, and whether there is one."""
    h, w = shape
    center = np.asarray(viewer.scene.camera.center)[-2:]
    zoom = viewer.scene.camera.zoom
    rows = np.rint(center[0] + (np.arange(h) + 0.5 - h / 2) / zoom).astype(int)
    cols = np.rint(center[1] + (np.arange(w) + 0.5 - w / 2) / zoom).astype(int)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    inside = (rr >= 0) & (rr < image_shape[0]) & (cc >= 0) & (cc < image_shape[1])
    return np.clip(rr, 0, image_shape[0] - 1), np.clip(cc, 0, image_shape[1] - 1), inside


def _drawn(cam) -> np.ndarray:
    """Opacity the heat layer gives each of its pixels (its colormap over its limits)."""
    lo, hi = cam.contrast_limits
    alpha = cam.colormap.map(np.clip((cam.data - lo) / (hi - lo), 0, 1).ravel())[:, 3]
    return alpha.reshape(cam.data.shape) * cam.opacity


def _check(viewer, qtbot, outside: np.ndarray, inside: np.ndarray) -> None:
    """Where ``outside`` the canvas is unchanged by the heat map; over ``inside`` it shows."""
    cam = R.find_layer(viewer, "cam")
    cells = R.find_layer(viewer, "cells")
    if cells is not None:
        cells.visible = False
    viewer.reset_view()
    shown, hidden = _canvas(viewer, qtbot, True), _canvas(viewer, qtbot, False)
    rr, cc, on_image = _image_pixel(viewer, shown.shape[:2], outside.shape)
    changed = np.abs(shown - hidden).max(axis=-1)
    out = on_image & outside[rr, cc]
    within = on_image & inside[rr, cc]
    assert out.sum() > 1000 and within.sum() > 1000
    assert changed[out].max() == 0, f"{np.mean(changed[out] > 0):.1%} of the masked area drawn"
    assert np.mean(changed[within] > 30) > 0.02  # clearly seen over part of the object
    assert cam.blending == "translucent"  # added light would not show on white
    # the layer itself: nothing drawn far from the objects, strongly drawn somewhere on them
    f = int(meta(cam)["factor"])
    far = outside[f // 2 :: f, f // 2 :: f][: cam.data.shape[0], : cam.data.shape[1]]
    assert _drawn(cam)[far].max() == 0 and _drawn(cam).max() > 0.5


def test_heat_map_shows_only_on_the_cells(make_napari_viewer, monkeypatch, qtbot, tmp_path):
    """The bundled RGBY field with cells: nothing drawn over the dark between the cells."""
    for path in sample_data_dir().glob("hpa_57_F11_1_*.png"):
        shutil.copy(path, tmp_path / path.name)
    viewer = _viewer(make_napari_viewer, monkeypatch)
    viewer.open(str(tmp_path / "hpa_57_F11_1_red.png"), plugin=None)  # napari picks the reader
    result = _predict(viewer, qtbot, "hpa28-efficientnet_lite0")
    assert result.labels is not None and result.labels.max() > 1
    cells = result.labels > 0
    # a margin of two heat-map pixels: the map is drawn with linear interpolation
    margin = 2 * result.cam_factor + 1
    outside = ~ndi.binary_dilation(cells, iterations=margin)
    inside = ndi.binary_erosion(cells, iterations=margin)
    _check(viewer, qtbot, outside, inside)


def test_heat_map_shows_on_plankton_white_background(
    make_napari_viewer, monkeypatch, qtbot, tmp_path
):
    """No cells (no nucleus): the map shows on the dark object, not on the white around it."""
    source = shared_data("plankton_ndsb2015") / "images" / "ctenophore_lobate" / "74176.jpg"
    shutil.copy(source, tmp_path / source.name)
    viewer = _viewer(make_napari_viewer, monkeypatch)
    viewer.open(str(tmp_path / source.name), plugin=None)
    result = _predict(viewer, qtbot, "plankton121-efficientnet_lite0")
    assert not result.cells and result.labels is None
    gray = result.image.data.mean(axis=0)
    dark = gray < 0.85  # the object, its faint grey parts too
    outside = ~ndi.binary_dilation(dark, iterations=12)  # white, well away from the object
    inside = ndi.binary_fill_holes(ndi.binary_closing(gray < 0.7, iterations=4))
    _check(viewer, qtbot, outside, inside)
