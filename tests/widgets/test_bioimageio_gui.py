"""bioimage.io in napari: Export from the model card window, "Add model…" in the Predict dock."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GUI_TEST
from helpers import write_tiny_model

from napari_hpa.core.image.io import read_image
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.model.checkpoint import load_model
from napari_hpa.core.model.predict import Predictor
from napari_hpa.core.model.registry import list_models, user_models_dir

pytestmark = GUI_TEST
spec_lib = pytest.importorskip("bioimageio.spec", reason="the bioimageio extra is not installed")
WAIT_MS = 120_000


class _Evil:
    """Unpickling this runs ``touch MARKER``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _predict_dock(make_napari_viewer, model: Path):
    viewer = make_napari_viewer()
    _, predict = viewer.window.add_plugin_dock_widget("napari-hpa", "Predict")
    assert predict.select_model(str(model))
    return viewer, predict


def _probabilities(model: Path, image) -> np.ndarray:
    return Predictor(model, device="cpu", backend="torch").predict_one(image).probabilities


def _errors(notes: list[tuple[str, str]]) -> list[str]:
    return [msg for kind, msg in notes if kind == "show_error"]


def test_export_from_the_card_then_add_the_package(make_napari_viewer, qtbot, tmp_path, notes):
    original = write_tiny_model(user_models_dir(), name="tiny-bio")
    _, predict = _predict_dock(make_napari_viewer, original)
    predict.card_button.click()
    bar = predict.card_dialog.export
    assert bar.button.isEnabled() and bar.button.text() == "Export to bioimage.io…"

    out = tmp_path / "tiny-bio.zip"
    assert bar.export_to(out)
    assert bar.running and not bar.button.isEnabled() and bar.busy.isVisible()
    qtbot.waitUntil(lambda: not bar.running, timeout=WAIT_MS)
    assert not _errors(notes), notes
    assert out.is_file() and str(out) in bar.status.text() and bar.button.isEnabled()
    assert any(kind == "show_info" and str(out) in msg for kind, msg in notes)
    descr = spec_lib.load_description(out, perform_io_checks=True)
    assert not isinstance(descr, spec_lib.InvalidDescr), descr.validation_summary
    assert descr.type == "model"

    written = out.read_bytes()
    notes.clear()
    assert not bar.export_to(out, overwrite=False)  # never replaced without asking
    assert out.read_bytes() == written and not bar.running
    (error,) = _errors(notes)
    assert str(out) in error and "already exists" in error

    before = {e.path for e in list_models()}
    notes.clear()
    actions = [a.text() for a in predict.add_button.menu().actions()]
    assert predict.add_button.text() == "Add…" and all(a.startswith("Add model") for a in actions)
    assert predict.add_button.add(out)
    qtbot.waitUntil(lambda: not predict.add_button.running, timeout=WAIT_MS)
    assert not _errors(notes), notes
    (added,) = {e.path for e in list_models()} - before
    entry = predict.entry
    assert entry is not None and entry.path == added and entry.source == "user"
    assert added.parent == user_models_dir() and entry.id != "tiny-bio@1"
    assert predict.model_combo.currentText().startswith(entry.id)

    images = write_samples(tmp_path / "images", n=1, size=96, seed=4)
    image = read_image(images / "synth_0000")
    np.testing.assert_allclose(
        _probabilities(added, image), _probabilities(original, image), atol=1e-3
    )


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    evil = tmp_path / "evil.pt"
    torch.save({"head.weight": _Evil(tmp_path / "ran")}, evil)  # a real torch archive
    not_zip = tmp_path / "notes.zip"
    not_zip.write_text("not a zip file\n")
    no_rdf = tmp_path / "empty.zip"
    with zipfile.ZipFile(no_rdf, "w") as zf:
        zf.writestr("README.md", "# nothing here\n")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("no model here\n")
    text = tmp_path / "weights.txt"
    text.write_text("0.1 0.2\n")
    return {"pickle": evil, "not a zip": not_zip, "no rdf": no_rdf, "folder": folder, "txt": text}


@pytest.mark.parametrize("kind", ["pickle", "not a zip", "no rdf", "folder", "txt"])
def test_add_model_refuses_bad_input(make_napari_viewer, qtbot, tmp_path, notes, kind):
    model = write_tiny_model(user_models_dir(), name="tiny-bio")
    _, predict = _predict_dock(make_napari_viewer, model)
    bad = _bad_inputs(tmp_path)[kind]
    before = [e.path for e in list_models()]
    notes.clear()
    assert predict.add_button.add(bad)
    qtbot.waitUntil(lambda: not predict.add_button.running, timeout=WAIT_MS)
    (error,) = _errors(notes)
    assert str(bad) in error, error
    assert error in predict.status.text() and predict.add_button.isEnabled()
    assert [e.path for e in list_models()] == before
    assert predict.entry is not None and predict.entry.path == model
    assert not (tmp_path / "ran").exists()  # nothing was unpickled
    if kind == "pickle":
        assert "refused: not a plain state dict" in error and "system" in error


@pytest.mark.parametrize("kind", ["state dict", "model folder"])
def test_add_model_takes_a_state_dict_or_a_model_folder(
    make_napari_viewer, qtbot, tmp_path, notes, kind
):
    original = write_tiny_model(tmp_path / "elsewhere", name="tiny-bio", seed=3)
    chosen = write_tiny_model(user_models_dir(), name="tiny-chosen")  # the .pt's settings
    _, predict = _predict_dock(make_napari_viewer, chosen)
    if kind == "state dict":
        source = tmp_path / "mine.pt"
        torch.save(load_model(original).net.state_dict(), source)
    else:
        source = original
    before = {e.path for e in list_models()}
    assert predict.add_button.add(source)
    qtbot.waitUntil(lambda: not predict.add_button.running, timeout=WAIT_MS)
    assert not _errors(notes), notes
    (added,) = {e.path for e in list_models()} - before
    assert predict.entry is not None and predict.entry.path == added
    assert predict.entry.id == ("mine@1" if kind == "state dict" else "tiny-bio@1")
    images = write_samples(tmp_path / "images", n=1, size=96, seed=5)
    image = read_image(images / "synth_0000")
    np.testing.assert_allclose(
        _probabilities(added, image), _probabilities(original, image), atol=1e-6
    )


def test_export_is_disabled_without_the_extra(make_napari_viewer, monkeypatch):
    import napari_hpa.core.model.bioimage_io as bio

    def missing() -> None:
        raise bio.BioimageioError(bio.INSTALL_HINT)

    monkeypatch.setattr(bio, "require_bioimageio", missing)
    _, predict = _predict_dock(make_napari_viewer, write_tiny_model(user_models_dir()))
    predict.card_button.click()
    button = predict.card_dialog.export.button
    assert not button.isEnabled()
    assert "pip install 'napari-hpa[bioimageio]'" in button.toolTip()
