"""The loop as a user runs it: docks from the Plugins menu, napari's reader, real HPA images.

napari hands each plugin dock its own proxy of the viewer; these tests add the
docks through ``viewer.window.add_plugin_dock_widget`` as the Plugins menu does,
so they see what a user sees (issue 17). The real images are copied from
../shared/data into a temporary folder, where the annotations database is written.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import GUI_TEST, shared_data

from napari_hpa.widgets._shared import results as R

pytestmark = GUI_TEST
WAIT_MS = 120_000
MODEL = "hpa28-efficientnet_lite0"
TASK = "hpa28"
#: What a user ticks in napari's "Choose reader" dialog ("remember this choice") for HPA sets.
HPA_PATTERNS = [f"*_{c}.{e}" for c in ("red", "green", "blue", "yellow") for e in ("png", "jpg")]


@pytest.fixture
def real_sets(tmp_path: Path) -> Path:
    """A folder with two real HPA sets: the 4-channel A-431 field and a DULoc set."""
    field = shared_data("hpa_public_4ch_examples") / "images"
    duloc = shared_data("hpa_duloc_single_cells") / "images"
    out = tmp_path / "images"
    out.mkdir()
    for path in [*field.glob("57_F11_1_*.png"), *duloc.glob("comb1_mixed_img0_*.jpg")]:
        shutil.copy(path, out)
    return out


def _viewer(make_napari_viewer, monkeypatch):
    """A viewer where napari-hpa reads HPA channel files (the user's remembered choice)."""
    from napari.settings import get_settings

    viewer = make_napari_viewer()
    readers = get_settings().plugins.extension2reader  # in place: nothing is saved to disk
    for pattern in HPA_PATTERNS:
        monkeypatch.setitem(readers, pattern, "napari-hpa")
    return viewer


def _dock(viewer, name: str):
    """Add a napari-hpa dock the way the Plugins menu does; its widget."""
    _dock_widget, widget = viewer.window.add_plugin_dock_widget("napari-hpa", name)
    return widget


def _checked(annotate) -> set[int]:
    from qtpy.QtCore import Qt

    items = [annotate.list.item(i) for i in range(annotate.list.count())]
    return {int(it.data(Qt.UserRole)) for it in items if it.checkState() == Qt.Checked}


def _wait_stored(qtbot, predict, annotate, source: str, cells: bool = True) -> None:
    """Until the prediction of ``source`` (with its cells) is shown and in the database."""
    qtbot.waitUntil(
        lambda: (
            predict.session.result is not None
            and predict.session.result.source == source
            and (predict.session.result.labels is not None or not cells)
        ),
        timeout=WAIT_MS,
    )
    qtbot.waitUntil(lambda: not predict.state.running, timeout=WAIT_MS)
    qtbot.waitUntil(
        lambda: (
            annotate.store is not None
            and annotate._writer is None
            and annotate.store.model_id(source, TASK) is not None
        ),
        timeout=WAIT_MS,
    )


def test_docks_share_one_session(make_napari_viewer, monkeypatch, qtbot, real_sets, tmp_path):
    """Predict -> Annotate pre-filled -> Next image auto-predicts -> export with scores."""
    viewer = _viewer(make_napari_viewer, monkeypatch)
    predict = _dock(viewer, "Predict")
    annotate = _dock(viewer, "Annotate")
    assert predict.viewer is not annotate.viewer  # napari gave each dock its own proxy

    viewer.open(str(real_sets / "57_F11_1_red.png"), plugin=None)  # napari picks the reader
    first = str(real_sets / "57_F11_1")
    assert [lyr.name for lyr in viewer.layers] == ["microtubules", "protein", "nucleus", "ER"]
    assert annotate.source == first
    assert MODEL in predict.model_combo.currentText()
    predict.predict_button.click()
    _wait_stored(qtbot, predict, annotate, first)

    # Annotate shows the prediction: the model's classes checked, the probabilities listed.
    result = predict.session.result
    assert result.prediction.predicted
    assert _checked(annotate) == set(result.prediction.predicted)
    top = result.order()[0]
    first_row = annotate.list.item(0).text()
    assert result.classes[top] in first_row
    assert f"{result.prediction.probabilities[top]:.2f}" in first_row

    # Next image with auto-predict: the DULoc set is opened and predicted.
    second = annotate.step(1)
    assert second == str(real_sets / "comb1_mixed_img0")
    _wait_stored(qtbot, predict, annotate, second)
    assert annotate.image_id == "comb1_mixed_img0"
    assert R.find_layer(viewer, "cells") is not None
    text = viewer.canvas.overlays.text.text
    assert "comb1_mixed_img0" in text and "57_F11_1" not in text

    # The exports carry the model and its scores, and one label TIFF per image with cells.
    annotate.exports.export_json(str(tmp_path / "labels.json"))
    items = {i["image"]: i for i in json.loads((tmp_path / "labels.json").read_text())}
    assert set(items) == {"57_F11_1", "comb1_mixed_img0"}
    for item in items.values():
        assert item["model"] == predict.entry.id
        assert len(item["scores"]) == 28
        assert item["cells"]
    annotate.exports.export_tiff(str(tmp_path / "tiffs"))
    tiffs = sorted(p.name for p in (tmp_path / "tiffs").glob("*.tif"))
    assert tiffs == ["57_F11_1.tif", "comb1_mixed_img0.tif"]


def _result_layers(viewer) -> list[str]:
    return [k for k in ("cam", "cells", "selected-cell") if R.find_layer(viewer, k) is not None]


def _shows_nothing(viewer, predict) -> bool:
    """No prediction anywhere: no table rows, status, canvas text or result layers."""
    return (
        predict.session.result is None
        and predict.table.rowCount() == 0
        and predict.status.text() == ""
        and not viewer.canvas.overlays.text.visible
        and not _result_layers(viewer)
    )


def test_results_follow_the_image(make_napari_viewer, monkeypatch, qtbot, real_sets):
    """Another image opened, or the image's layers deleted: the old prediction goes."""
    viewer = _viewer(make_napari_viewer, monkeypatch)
    predict = _dock(viewer, "Predict")
    annotate = _dock(viewer, "Annotate")
    viewer.open(str(real_sets / "57_F11_1_red.png"), plugin=None)
    first = str(real_sets / "57_F11_1")
    predict.predict_button.click()
    _wait_stored(qtbot, predict, annotate, first)
    assert predict.table.rowCount() == 28 and "57_F11_1" in predict.status.text()
    assert viewer.canvas.overlays.text.visible and _result_layers(viewer) == ["cam", "cells"]

    # Another image is opened next to it: nothing of the first prediction is shown over it.
    viewer.open(str(real_sets / "comb1_mixed_img0_red.jpg"), plugin=None)
    second = str(real_sets / "comb1_mixed_img0")
    qtbot.waitUntil(lambda: _shows_nothing(viewer, predict), timeout=5_000)
    assert annotate.source == second
    rows = [annotate.list.item(i).text() for i in range(annotate.list.count())]
    assert not any(re.search(r"\b[01]\.\d\d\b", row) for row in rows)  # no scores of the first

    # Its prediction, then its layers deleted: the table, status, text and layers go too.
    predict.predict_button.click()
    _wait_stored(qtbot, predict, annotate, second)
    assert predict.table.rowCount() == 28 and _result_layers(viewer)
    for layer in [lyr for lyr in viewer.layers if lyr.metadata["napari_hpa"]["source"] == second]:
        if layer.metadata["napari_hpa"]["kind"] == "channel":
            viewer.layers.remove(layer)
    qtbot.waitUntil(lambda: _shows_nothing(viewer, predict), timeout=5_000)
    assert annotate.source == first  # Annotate is back on the image still shown
    assert [lyr.name for lyr in viewer.layers] == ["microtubules", "protein", "nucleus", "ER"]


def test_a_prediction_that_ends_after_the_image_changed_is_dropped(
    make_napari_viewer, monkeypatch, qtbot, real_sets
):
    """Predict, then at once open another image: the late result is not shown over it."""
    viewer = _viewer(make_napari_viewer, monkeypatch)
    predict = _dock(viewer, "Predict")
    viewer.open(str(real_sets / "57_F11_1_red.png"), plugin=None)
    predict.predict_button.click()
    viewer.layers.clear()
    viewer.open(str(real_sets / "comb1_mixed_img0_red.jpg"), plugin=None)
    qtbot.waitUntil(lambda: not predict.state.running, timeout=WAIT_MS)
    assert predict.status.text() == "Prediction of 57_F11_1 stopped: its image is no longer shown."
    assert predict.session.result is None and predict.table.rowCount() == 0
    assert not _result_layers(viewer) and not viewer.canvas.overlays.text.visible


def test_the_session_is_freed_with_its_viewer() -> None:
    """Sessions are held weakly: a closed viewer does not keep its models and results."""
    import gc
    import weakref

    from napari.components import ViewerModel

    from napari_hpa.widgets._shared.session import session_for

    viewer = ViewerModel()
    session = weakref.ref(session_for(viewer))
    assert session_for(viewer) is session()
    del viewer
    gc.collect()
    assert session() is None


# ----------------------------------------------------------------------------- partial sets
def _copy(paths, folder: Path) -> Path:
    folder.mkdir()
    for path in paths:
        shutil.copy(path, folder)
    return folder


def test_a_lone_kaggle_green_png_is_predicted(make_napari_viewer, monkeypatch, qtbot, tmp_path):
    """A Kaggle ``<id>_green.png`` alone is the protein channel: the model needs no more."""
    sample = shared_data("hpa_kaggle2018_single_channels") / "train_sample"
    green = sorted(sample.glob("*_green.png"))[0]
    folder = _copy([green], tmp_path / "kaggle")
    viewer = _viewer(make_napari_viewer, monkeypatch)
    predict = _dock(viewer, "Predict")
    annotate = _dock(viewer, "Annotate")
    viewer.open(str(folder / green.name), plugin=None)
    (layer,) = viewer.layers
    assert layer.metadata["napari_hpa"]["channel"] == "protein"
    assert layer.colormap.name == "green"
    picked = {c: getattr(v, "label", v) for c, v in predict.state.assignment.items()}
    assert picked == {"microtubules": None, "protein": layer.name, "nucleus": None, "er": None}

    predict.predict_button.click()
    source = str(folder / green.name.removesuffix("_green.png"))
    _wait_stored(qtbot, predict, annotate, source, cells=False)
    result = predict.session.result
    assert result.image.channel_names == ("protein",) and result.labels is None
    assert "no cells: the image has no nucleus channel" in predict.status.text()
    assert predict.table.rowCount() == 28 and R.find_layer(viewer, "cells") is None
    assert _checked(annotate) == set(result.prediction.predicted)


def test_a_set_without_yellow_is_predicted_with_its_cells(
    make_napari_viewer, monkeypatch, qtbot, tmp_path
):
    """Red, green and blue without yellow: ER is optional, the nucleus gives the cells."""
    field = shared_data("hpa_public_4ch_examples") / "images"
    rgb = [field / f"57_F11_1_{c}.png" for c in ("red", "green", "blue")]
    folder = _copy(rgb, tmp_path / "no_yellow")
    viewer = _viewer(make_napari_viewer, monkeypatch)
    predict = _dock(viewer, "Predict")
    annotate = _dock(viewer, "Annotate")
    viewer.open(str(folder / "57_F11_1_green.png"), plugin=None)
    assert [lyr.name for lyr in viewer.layers] == ["microtubules", "protein", "nucleus"]
    assert predict.state.assignment["er"] is None
    predict.predict_button.click()
    _wait_stored(qtbot, predict, annotate, str(folder / "57_F11_1"))
    result = predict.session.result
    assert result.image.channel_names == ("microtubules", "protein", "nucleus")
    assert result.cells and R.find_layer(viewer, "cells") is not None
    assert "no nucleus" not in predict.status.text()


def test_a_set_without_its_protein_says_why_first(make_napari_viewer, monkeypatch, tmp_path, notes):
    """The toast's first line (all napari shows of it) has the reason; no API advice."""
    field = shared_data("hpa_public_4ch_examples") / "images"
    folder = _copy([field / "57_F11_1_red.png", field / "57_F11_1_blue.png"], tmp_path / "np")
    viewer = _viewer(make_napari_viewer, monkeypatch)
    viewer.open(str(folder / "57_F11_1_red.png"), plugin=None)
    assert len(viewer.layers) == 0
    errors = [m for kind, m in notes if kind == "show_error"]
    assert len(errors) == 1 and "hpa_set" not in errors[0]
    first, *rest = errors[0].splitlines()
    assert first.startswith("Cannot open 57_F11_1: ")
    assert first.lower().index("no protein channel") < 40  # inside the toast's one line
    assert str(folder / "57_F11_1") in errors[0]
