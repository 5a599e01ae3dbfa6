"""The Predict widget in a real napari viewer (run under xvfb-run)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from conftest import GUI_TEST
from helpers import write_tiny_model

from napari_hpa import layers as L
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.image.writers import write_image
from napari_hpa.core.model.registry import user_models_dir
from napari_hpa.widgets._shared import results as R
from napari_hpa.widgets.predict import PredictWidget

pytestmark = GUI_TEST
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def hpa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_samples(tmp_path_factory.mktemp("hpa"), n=2, size=256, seed=2)


@pytest.fixture
def tiny_model() -> Path:
    return write_tiny_model(user_models_dir(), name="tiny-hpa")


def _widget(viewer, model: Path) -> PredictWidget:
    widget = viewer.window.add_plugin_dock_widget("napari-hpa", "Predict")[1]
    assert widget.select_model(str(model))
    return widget


def _wait(qtbot, widget: PredictWidget) -> None:
    qtbot.waitUntil(lambda: not widget.state.running, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: widget.cam_worker is None, timeout=WAIT_MS)


def test_predict_shows_table_cam_and_cells(make_napari_viewer, qtbot, hpa_dir, tiny_model):
    viewer = make_napari_viewer()
    viewer.open(str(hpa_dir / "synth_0000_red.png"), plugin="napari-hpa")
    widget = _widget(viewer, tiny_model)
    picked = {c: getattr(v, "label", v) for c, v in widget.state.assignment.items()}
    assert picked == {
        "microtubules": "microtubules",
        "protein": "protein",
        "nucleus": "nucleus",
        "er": "ER",
    }

    start = time.perf_counter()
    widget.predict_button.click()
    click_s = time.perf_counter() - start
    assert widget.state.running and not widget.predict_button.isEnabled()
    assert click_s < 0.3, f"the Predict click blocked the main thread for {click_s:.2f} s"
    _wait(qtbot, widget)

    result = widget.session.result
    assert result is not None and result.source == str(hpa_dir / "synth_0000")
    # the Backend box says auto: the status line says what auto chose
    assert widget.backend_combo.currentText() == "auto"
    assert result.predictor is not None and result.predictor.backend != "auto"
    assert widget.status.text().endswith(f" s on {result.predictor.backend}"), widget.status.text()
    table = widget.table
    assert table.rowCount() == 28
    probs = [float(table.item(r, 1).text()) for r in range(28)]
    assert probs == sorted(probs, reverse=True)
    predicted = {table.item(r, 0).text() for r in range(28) if table.item(r, 2).text() == "yes"}
    assert predicted == set(result.prediction.predicted_names)
    overlay = viewer.canvas.overlays.text  # viewer.text_overlay is deprecated in napari 0.9
    assert overlay.visible and result.prediction.top(1)[0][0] in overlay.text

    cam = R.find_layer(viewer, "cam")
    assert cam is not None and cam.colormap.name == R.heat_colormap().name
    assert cam.blending == "translucent"  # tests/widgets/test_heat_maps.py: what it shows
    top = result.order()[0]
    assert cam.name.endswith(result.classes[top])

    cells = R.find_layer(viewer, "cells")
    assert type(cells).__name__ == "Labels" and cells.data.shape == (256, 256)
    # the outlines are drawn into the data in the worker (a cell's id + offset), so napari
    # never finds them itself on the main thread (contour 0)
    offset = L.meta(cells)["offset"]
    assert cells.contour == 0 and offset == int(result.labels.max())
    values = set(np.unique(cells.data)) - {0}
    assert {R.cell_of(cells, v) for v in values} == set(result.cells)
    assert {v - offset for v in values if v > offset} == set(result.cells)  # all outlined
    assert {"top_class", "classes", "probability"} <= set(cells.features.columns)
    some = int(cells.features["index"][0])
    pos = np.argwhere(cells.data == some)[0]  # inside the cell: its own id
    status = cells.get_status(tuple(pos), world=True)
    assert result.cells[some].top(1)[0][0] in status["coordinates"]
    edge = np.argwhere(cells.data == some + offset)[0]
    assert result.cells[some].top(1)[0][0] in cells.get_status(tuple(edge), world=True)["value"]
    inside, color = cells.colormap.map(np.array([some, some + offset]))
    expected = R.class_colors(28)[int(np.argmax(result.cells[some].probabilities))]
    np.testing.assert_allclose(color, expected, atol=1e-3)  # the outline in its colour
    assert inside[3] == 0  # the inside is clear

    # a class that was not predicted: its map is computed in the background, then shown
    other = result.order()[-1]
    table.select_class(other)
    qtbot.waitUntil(
        lambda: R.find_layer(viewer, "cam").name.endswith(result.classes[other]), timeout=WAIT_MS
    )
    assert other in result.cams


def test_gray_image_with_hpa_model_notifies(
    make_napari_viewer, qtbot, tmp_path, tiny_model, hpa_dir, notes
):
    viewer = make_napari_viewer()
    write_image(tmp_path / "plain.png", np.random.default_rng(0).random((1, 64, 64)))
    viewer.open(str(tmp_path / "plain.png"), plugin="napari-hpa")
    widget = _widget(viewer, tiny_model)
    widget.predict()
    assert not widget.state.running and widget.worker is None
    kind, message = notes[-1]
    assert kind == "show_warning" and "nucleus" in message and "tiny-hpa@1" in message
    # the viewer stays usable: open a proper image and predict it
    viewer.open(str(hpa_dir / "synth_0001_red.png"), plugin="napari-hpa")
    assert getattr(widget.state.assignment["nucleus"], "label", None) == "nucleus"
    widget.predict()
    _wait(qtbot, widget)
    assert widget.session.result is not None
    assert widget.session.result.image.image_id == "synth_0001"


def test_layers_opened_another_way(make_napari_viewer, qtbot, hpa_dir, tiny_model):
    """Plain layers named by colour (no napari-hpa metadata) and an RGB layer both work."""
    from napari_hpa.core.image.io import read_image

    image = read_image(hpa_dir / "synth_0000")
    viewer = make_napari_viewer()
    for plane, name in zip(image.data, ("C1 red", "C2 green", "DAPI", "er"), strict=True):
        viewer.add_image((plane * 255).astype(np.uint8), name=name)
    widget = _widget(viewer, tiny_model)
    widget.cells_check.setChecked(False)
    labels = {c: getattr(v, "label", v) for c, v in widget.state.assignment.items()}
    assert labels == {
        "microtubules": "C1 red",
        "protein": "C2 green",
        "nucleus": "DAPI",
        "er": "er",
    }
    widget.predict()
    _wait(qtbot, widget)
    assert widget.session.result is not None and R.find_layer(viewer, "cells") is None
    np.testing.assert_allclose(widget.session.result.image.data[2], image.data[2], atol=1 / 255)

    viewer.layers.clear()
    rgb = np.moveaxis(image.data[:3], 0, -1)
    viewer.add_image((rgb * 255).astype(np.uint8), name="composite", rgb=True)
    labels = {c: getattr(v, "label", v) for c, v in widget.state.assignment.items()}
    assert labels == {
        "microtubules": "composite [R]",
        "protein": "composite [G]",
        "nucleus": "composite [B]",
        "er": None,
    }  # er is optional
    widget.predict()
    _wait(qtbot, widget)
    assert widget.session.result.image.channel_names == ("microtubules", "protein", "nucleus")


def test_cancel_and_new_model_versions(make_napari_viewer, qtbot, hpa_dir, tiny_model):
    viewer = make_napari_viewer()
    viewer.open(str(hpa_dir / "synth_0000_red.png"), plugin="napari-hpa")
    widget = _widget(viewer, tiny_model)
    widget.predict()
    widget.cancel()
    _wait(qtbot, widget)
    assert widget.session.result is None and widget.progress.format() == "Cancelled"
    assert widget.predict_button.isEnabled()

    n = widget.model_combo.count()
    write_tiny_model(user_models_dir(), name="tiny-hpa", version=2)
    widget.refresh_button.click()
    assert widget.model_combo.count() == n + 1
    assert any("tiny-hpa@2" in widget.model_combo.itemText(i) for i in range(n + 1))
    assert "tiny-hpa@1" in widget.model_combo.currentText()  # the choice is kept


def test_open_command_docks_both_panels(make_napari_viewer, hpa_dir, tiny_model):
    from napari_hpa.cli import UserError
    from napari_hpa.cli.open import setup_viewer

    viewer = make_napari_viewer()
    predict, annotate = setup_viewer(viewer, str(hpa_dir / "synth_0001"), model="tiny-hpa@1")
    assert len(viewer.layers) == 4 and "tiny-hpa@1" in predict.model_combo.currentText()
    assert annotate.image_id == "synth_0001"
    from napari_hpa.core.model.registry import sample_data_dir, user_home

    # the bundled samples' corrections go to the user folder, not into the package
    assert annotate.db_path_for(str(sample_data_dir() / "synth_0000")).parent == user_home()
    assert annotate.db_path_for(str(hpa_dir / "synth_0001")).parent.parent == hpa_dir
    with pytest.raises(UserError):
        setup_viewer(viewer, model="no-such-model")


def test_gray_and_rgb_models(make_napari_viewer, qtbot, hpa_dir, tmp_path):
    """A gray model averages the image's channels; an RGB model reads an HPA set as
    microtubules/protein/nucleus (red/green/blue)."""
    from napari_hpa.core.tasks import make_task

    gray = write_tiny_model(
        user_models_dir(),
        name="tiny-gray",
        task=make_task(["a", "b", "c"], kind="multiclass", channels=("gray",), name="abc"),
    )
    rgb = write_tiny_model(
        user_models_dir(),
        name="tiny-rgb",
        task=make_task(["x", "y"], kind="multiclass", channels=("red", "green", "blue"), name="xy"),
    )
    viewer = make_napari_viewer()
    write_image(tmp_path / "photo.jpg", np.random.default_rng(1).random((3, 64, 80)))
    viewer.open(str(tmp_path / "photo.jpg"), plugin="napari-hpa")
    widget = _widget(viewer, gray)
    assert widget.state.assignment == {"gray": L.AVERAGE}
    # no nucleus channel: no cells to find, and the user's choice comes back for HPA models
    assert not widget.cells_check.isEnabled() and not widget.state.find_cells
    widget.predict()
    _wait(qtbot, widget)
    result = widget.session.result
    assert result.image.channel_names == ("gray",) and result.image.data.shape == (1, 64, 80)
    assert widget.table.rowCount() == 3
    assert R.find_layer(viewer, "cells") is None

    viewer.layers.clear()
    viewer.open(str(hpa_dir / "synth_0000_red.png"), plugin="napari-hpa")
    assert widget.select_model(str(rgb))
    labels = {c: getattr(v, "label", v) for c, v in widget.state.assignment.items()}
    assert labels == {"red": "microtubules", "green": "protein", "blue": "nucleus"}
    widget.predict()
    _wait(qtbot, widget)
    assert widget.session.result.image.channel_names == ("red", "green", "blue")
    assert widget.table.rowCount() == 2
    assert widget.select_model(str(write_tiny_model(user_models_dir(), name="tiny-hpa4")))
    assert widget.cells_check.isEnabled() and widget.cells_check.isChecked()
    assert widget.state.find_cells


def test_model_card_window(make_napari_viewer, qtbot, tiny_model):
    """The Card button opens the chosen model's README and report figures; a model
    without them gets a short description instead of an error."""
    from napari_hpa.core.model.registry import resolve_model
    from napari_hpa.widgets.predict.model_card import MAX_FIGURE_WIDTH

    widget = make_napari_viewer().window.add_plugin_dock_widget("napari-hpa", "Predict")[1]
    assert widget.select_model("hpa28-synthetic-tiny")
    entry = resolve_model("hpa28-synthetic-tiny")
    widget.card_button.click()
    dialog = widget.card_dialog
    qtbot.waitUntil(dialog.isVisible, timeout=5_000)
    tabs = [dialog.tabs.tabText(i) for i in range(dialog.tabs.count())]
    assert tabs == ["Model card", "Confusion matrix", "Training curves"]
    assert dialog.windowTitle() == f"Model card: {entry.id}"
    assert "Tiny HPA28 demo classifier" in dialog.text.toPlainText()
    for label in dialog.figures.values():
        assert not label.pixmap().isNull() and label.pixmap().width() <= MAX_FIGURE_WIDTH

    widget.card_button.click()  # the same model: the same window, brought forward
    assert widget.card_dialog is dialog

    assert widget.select_model(str(tiny_model))
    widget.card_button.click()
    assert widget.card_dialog is not dialog and not dialog.isVisible()
    text = widget.card_dialog.text.toPlainText()
    assert "has no model card" in text and "tiny-hpa" in text
    assert widget.card_dialog.tabs.count() == 1
