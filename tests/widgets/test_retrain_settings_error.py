"""Use this model / Roll back when the settings cannot be saved (issue 18): one line, no raise.

``settings.json`` cannot be written (here it is a folder, as a broken sync or a
mistaken copy leaves it): the Retrain dock raised ``SettingsError`` out of the button's
handler. Now the model is used in this session and the status says, in one line
that fits the dock, that it is not remembered; the file is named in the tooltip.
"""

from __future__ import annotations

import json
import sys
import time

from conftest import GUI_TEST
from helpers import write_tiny_model

from napari_hpa.core.image.sources import find_images
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.model import preferences as settings
from napari_hpa.core.model import registry
from napari_hpa.jobs.runner import JobManager, pid_alive

pytestmark = GUI_TEST
TASK = "hpa28"
WAIT_MS = 300_000


def _finished_job(tmp_path) -> None:
    """A training of tiny@2 from tiny@1 that ended (its done event), with held-out images."""
    models = registry.user_models_dir()
    parent = write_tiny_model(models, version=1)
    child = write_tiny_model(models, version=2, seed=1)
    images = write_samples(tmp_path / "im", n=2, size=32, seed=1, classes=[0, 25], n_labels=1)
    done = json.dumps({"event": "done", "model_id": "tiny@2", "path": str(child)})
    manager = JobManager()
    job = manager.start(
        [sys.executable, "-c", f"print({done!r})"],
        "tiny",
        meta={"parent": "tiny@1", "parent_path": str(parent)},
    )
    holdout = {
        "task": TASK,
        "classes": list(registry.resolve_model("tiny@1").spec.task.classes),
        "images": [{"source": s, "targets": [0]} for s in find_images(images)],
    }
    (job.folder / "holdout.json").write_text(json.dumps(holdout))
    while pid_alive(job.pid):
        time.sleep(0.05)


def test_use_and_roll_back_say_in_one_line_that_the_choice_is_not_kept(
    make_napari_viewer, qtbot, tmp_path
) -> None:
    _finished_job(tmp_path)
    settings.settings_path().mkdir(parents=True)  # settings.json is a folder: cannot be saved
    viewer = make_napari_viewer()
    _dock, predict = viewer.window.add_plugin_dock_widget("napari-hpa", "Predict")
    _dock, retrain = viewer.window.add_plugin_dock_widget("napari-hpa", "Retrain")
    qtbot.waitUntil(lambda: retrain.use_button.isEnabled(), timeout=WAIT_MS)

    retrain.use_button.click()  # raised SettingsError before
    line = retrain.status.text()
    assert line.startswith("Using tiny@2 in this session only; not remembered: "), line
    assert "cannot save the settings" in line and "\n" not in line
    assert str(settings.settings_path()) in retrain.status.toolTip()
    assert predict.entry is not None and predict.entry.id == "tiny@2"  # used all the same
    assert settings.preferred_model(TASK) is None

    retrain.rollback_button.click()
    assert retrain.status.text().startswith("Using tiny@1 in this session only")
    assert predict.entry.id == "tiny@1"

    settings.settings_path().rmdir()  # the file can be written again: remembered
    retrain.use_button.click()
    assert retrain.status.text().startswith("Using tiny@2. Roll back")
    assert settings.preferred_model(TASK) == "tiny@2" and retrain.status.toolTip() == ""
