"""Retrain after napari was closed and opened again (issue 17, defect 10).

"napari closed" is the Retrain dock closed with its job manager, the job's
process going on by itself; "reopened" is a new viewer whose Retrain dock comes
from the Plugins menu (``add_plugin_dock_widget``). The jobs are real
subprocesses with their records on disk: a scripted trainer that writes the
trainer's events, and the real comparison of two tiny models.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

from conftest import GUI_TEST
from helpers import write_tiny_model

from napari_hpa.core.image.sources import find_images
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.model import preferences as settings
from napari_hpa.core.model import registry
from napari_hpa.jobs.runner import JobManager, pid_alive

pytestmark = GUI_TEST
TASK = "hpa28"
WAIT_MS = 120_000

#: The trainer's events as ``napari-hpa train --progress jsonl`` writes them, six epochs of
#: four batches that by its own clock take 60 s each. It stops in epoch 4 until the gate
#: file exists (napari is closed and opened again meanwhile), then goes on with two batches
#: and waits to be cancelled.
TRAINER = """
import json, pathlib, sys, time
gate = pathlib.Path(sys.argv[1])
def emit(**e):
    print(json.dumps(e), flush=True)
emit(event="start", total_epochs=6, n_train=8, n_val=2, n_batches=4)
for epoch in (1, 2, 3):
    for b in (1, 2, 3, 4):
        emit(event="batch", epoch=epoch, batch=b, n_batches=4, loss=1.0)
    emit(event="epoch", epoch=epoch, train_loss=1.0, val_loss=1.0, val_macro_f1=0.1 * epoch,
         elapsed_s=60.0 * epoch, eta_s=60.0 * (6 - epoch))
emit(event="batch", epoch=4, batch=1, n_batches=4, loss=1.0)
while not gate.exists():
    time.sleep(0.05)
for b in (2, 3):
    emit(event="batch", epoch=4, batch=b, n_batches=4, loss=1.0)
time.sleep(120)
"""


def _retrain_dock(viewer):
    """The Retrain dock, added as the Plugins menu adds it: (dock, widget)."""
    return viewer.window.add_plugin_dock_widget("napari-hpa", "Retrain")


def _close_napari(viewer, dock, widget) -> None:
    """Close the Retrain dock as napari's exit does: its timer stops, its manager goes."""
    viewer.window.remove_dock_widget(dock)
    widget.close()


def test_eta_after_reopening_comes_from_the_epoch_timings(
    make_napari_viewer, qtbot, tmp_path: Path
) -> None:
    """Reattached at epoch 4 of 6, the ETA said "~0 s left": it was the time since napari
    reopened, not the run's. The trainer's 60-s epochs leave 2 min 15 s after 3.75 epochs."""
    script = tmp_path / "trainer.py"
    script.write_text(textwrap.dedent(TRAINER))
    gate = tmp_path / "go-on"
    job = JobManager().start([sys.executable, str(script), str(gate)], "tiny")
    deadline = time.monotonic() + 60
    while job.progress.epoch < 4:  # the first napari follows it into epoch 4
        assert time.monotonic() < deadline
        job.poll()
        time.sleep(0.05)
    job_id = job.id
    del job  # napari closed; the trainer goes on

    viewer = make_napari_viewer()
    _dock, widget = _retrain_dock(viewer)
    qtbot.waitUntil(lambda: widget.state.job is not None, timeout=30_000)
    followed = widget.state.job
    assert followed.id == job_id and "Epoch 4 of 6" in widget.status.text()
    try:
        gate.touch()  # two more batches of epoch 4, seen by the reopened napari
        qtbot.waitUntil(lambda: followed.progress.batch == 3, timeout=30_000)
        qtbot.wait(800)  # the status line follows within UI_INTERVAL_S
        assert "Epoch 4 of 6" in widget.status.text()
        assert "~2 min 15 s left" in widget.status.text(), widget.status.text()
        assert widget.progress.format().startswith("epoch 4/6")
    finally:
        followed.cancel()


def _trained_while_closed(tmp_path: Path) -> str:
    """A finished training job (tiny@1 -> tiny@2) with held-out images, as napari left it."""
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
    assert job.wait(60) == "done"
    return job.id


def _comparison_started(make_napari_viewer, qtbot, train_id: str):
    """The first napari: its Retrain dock picks the run up and starts the comparison."""
    viewer = make_napari_viewer()
    dock, widget = _retrain_dock(viewer)
    qtbot.waitUntil(lambda: widget.state.compare_job is not None, timeout=30_000)
    assert widget.state.job.id == train_id
    return viewer, dock, widget, widget.state.compare_job


def _assert_result_usable(qtbot, widget) -> None:
    """The comparison is shown, and Use this model / Roll back work."""
    qtbot.waitUntil(lambda: widget.state.comparison is not None, timeout=WAIT_MS)
    comp = widget.state.comparison
    assert comp.parent == "tiny@1" and comp.child == "tiny@2" and comp.n_images == 2
    assert widget.has_result and widget.compare_table.item(0, 0).text() == "macro F1"
    assert "held-out" in widget.headline.text()
    assert widget.use_button.isEnabled() and widget.rollback_button.isEnabled()
    widget.use_button.click()
    assert settings.preferred_model(TASK) == "tiny@2"
    widget.rollback_button.click()
    assert settings.preferred_model(TASK) == "tiny@1"
    assert JobManager().recover() == []  # the training and its comparison: seen


def test_a_comparison_outlives_napari(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    """The comparison of a new version runs on when napari closes.

    Reopened while it ran, the dock started a second one, which the model's lock refused
    ("no comparison"), and the running one's result was never shown; one that ended while
    napari was closed stayed unseen. Now the reopened dock follows the running one, and a
    later napari shows the one that ended, with Use this model and Roll back.
    """
    train_id = _trained_while_closed(tmp_path)
    first, dock, widget, cjob = _comparison_started(make_napari_viewer, qtbot, train_id)
    os.killpg(cjob.pid, signal.SIGSTOP)  # held while napari is closed and reopened
    try:
        _close_napari(first, dock, widget)
        second = make_napari_viewer()
        dock, reopened = _retrain_dock(second)
        qtbot.waitUntil(lambda: reopened.state.compare_job is not None, timeout=30_000)
        assert reopened.state.compare_job.id == cjob.id  # followed, not started again
        assert "comparing it with its parent" in reopened.status.text()
        assert not reopened.use_button.isEnabled()  # not before the comparison ends
        _close_napari(second, dock, reopened)  # closed again before it ends
    finally:
        os.killpg(cjob.pid, signal.SIGCONT)
    deadline = time.monotonic() + WAIT_MS / 1000
    while pid_alive(cjob.pid):  # the comparison ends while napari is closed
        assert time.monotonic() < deadline
        time.sleep(0.1)

    _dock, third = _retrain_dock(make_napari_viewer())
    _assert_result_usable(qtbot, third)
    kinds = [j.record.kind for j in JobManager().list_jobs()]
    assert kinds.count("compare") == 1  # the one that ran, never a second one
