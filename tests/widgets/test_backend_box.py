"""The Backend box of the Predict and Batch docks, as a user meets it on the bundled HPA field.

The docks come from the plugin (``add_plugin_dock_widget``) and napari's reader opens the
bundled sample (a real A-431 field, reduced), so this is the path a user clicks.
"""

from __future__ import annotations

from conftest import GUI_TEST

from napari_hpa.core.model.registry import sample_data_dir

pytestmark = GUI_TEST
WAIT_MS = 120_000
CHOICES = ["auto", "torch", "onnxruntime", "openvino"]


def _viewer_with_field(make_napari_viewer, monkeypatch):
    from napari.settings import get_settings

    viewer = make_napari_viewer()
    readers = get_settings().plugins.extension2reader  # in place: nothing is saved
    monkeypatch.setitem(readers, "*_red.png", "napari-hpa")
    viewer.open(str(sample_data_dir() / "hpa_57_F11_1_red.png"), plugin=None)
    return viewer


def test_each_backend_answers_alike_and_the_status_line_names_it(
    make_napari_viewer, monkeypatch, qtbot
) -> None:
    from napari_hpa.core.model.backends import is_installed

    viewer = _viewer_with_field(make_napari_viewer, monkeypatch)
    _dock, predict = viewer.window.add_plugin_dock_widget("napari-hpa", "Predict")
    _dock, batch = viewer.window.add_plugin_dock_widget("napari-hpa", "Batch")
    for box in (predict.backend_combo, batch.backend_combo):
        assert [box.itemText(i) for i in range(box.count())] == CHOICES
        assert box.currentText() == "auto"
    predict.cells_check.setChecked(False)
    answers = {}
    for backend in [b for b in CHOICES[1:] if is_installed(b)]:
        predict.backend_combo.setCurrentText(backend)
        predict.predict_button.click()
        qtbot.waitUntil(lambda: not predict.state.running, timeout=WAIT_MS)
        result = predict.session.result
        assert result is not None and result.predictor is not None
        assert result.predictor.backend == backend
        assert predict.status.text().endswith(f" s on {backend}"), predict.status.text()
        answers[backend] = result.prediction
    torch_answer = answers.pop("torch")
    for backend, answer in answers.items():
        gap = abs(answer.probabilities - torch_answer.probabilities).max()
        assert gap <= 1e-3, (backend, gap)
        assert answer.predicted == torch_answer.predicted, backend


def test_a_runtime_that_is_not_installed_is_greyed_out(make_napari_viewer, monkeypatch) -> None:
    import napari_hpa.widgets._shared.backend_box as box_module

    monkeypatch.setattr(box_module, "is_installed", lambda name: name != "openvino")
    viewer = make_napari_viewer()
    _dock, predict = viewer.window.add_plugin_dock_widget("napari-hpa", "Predict")
    model = predict.backend_combo.model()
    enabled = {CHOICES[i]: model.item(i).isEnabled() for i in range(len(CHOICES))}
    assert enabled == {"auto": True, "torch": True, "onnxruntime": True, "openvino": False}
    assert "pip install openvino" in model.item(3).toolTip()
