"""The Retrain widget in a real viewer: counts, background retrain, comparison, versions, cancel."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from conftest import GUI_TEST
from helpers import write_tiny_model
from qtpy.QtWidgets import QPlainTextEdit

from napari_hpa import layers as L
from napari_hpa.core.image.io import read_image
from napari_hpa.core.image.sources import find_images
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.labels.store import AnnotationStore, default_db_path
from napari_hpa.core.model import preferences as settings
from napari_hpa.core.model import registry
from napari_hpa.jobs.runner import CANCEL_LIMIT_S, JobManager, job_alive, pid_alive
from napari_hpa.widgets.retrain.state import format_eta

pytestmark = GUI_TEST
TASK = "hpa28"
TRAIN_MS = 300_000


def _parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


@pytest.fixture
def corrected(tmp_path: Path) -> tuple[Path, list[str]]:
    """Ten generated 64-px images, each corrected by the user (labels in the folder's DB)."""
    images = write_samples(
        tmp_path / "images", n=10, size=64, seed=1, classes=[0, 23, 25], n_labels=1
    )
    rows = [line.split(",") for line in (images / "labels.csv").read_text().splitlines()[1:]]
    labels = {i: [int(t) for t in target.split()] for i, target in rows}
    sources = find_images(images)
    with AnnotationStore(default_db_path(sources[0])) as store:
        for source in sources:
            store.set_user_labels(source, TASK, dict.fromkeys(labels[Path(source).name], True))
    return default_db_path(sources[0]), sources


def test_retrain_in_the_background_then_cancel(make_napari_viewer, qtbot, corrected) -> None:
    db, sources = corrected
    models = registry.user_models_dir()
    write_tiny_model(models)  # tiny@1: small_cnn width 4, 32 px
    viewer = make_napari_viewer()
    for data, kwargs, _kind in L.image_layer_data(read_image(sources[0])):
        viewer.add_image(data, **kwargs)
    widget = viewer.window.add_plugin_dock_widget("napari-hpa", "Retrain")[1]

    # The counts of the image folder's database are shown, with a warning for rare classes;
    # the parent defaults to a model of the task the corrections are for.
    qtbot.waitUntil(
        lambda: widget.state.summary is not None and widget.state.summary.task == TASK,
        timeout=30_000,
    )
    assert widget.state.db == db
    summary = widget.state.summary
    assert summary.n_images == 10 and summary.task == TASK
    assert widget.counts_table.rowCount() == len(summary.counts) == 3
    assert "10 corrected images" in widget.totals_label.text()
    assert [c.images for c in summary.counts] == [2, 5, 3]  # Nucleoplasm has too few
    warning = widget.warning_label.text()
    assert "fewer than 3" in warning and "Nucleoplasm" in warning
    assert widget.select_base("tiny") and widget.base_entry.id == "tiny@1"  # the user's model
    assert widget.retrain_button.isEnabled()

    # 2) Retrain (quick preset) 3) in a child process 4) progress arrives.
    widget.preset_combo.setCurrentIndex(
        list(widget.preset_combo.itemData(i) for i in range(widget.preset_combo.count())).index(
            "quick"
        )
    )
    widget.retrain_button.click()
    qtbot.waitUntil(lambda: widget.state.job is not None, timeout=30_000)
    job = widget.state.job
    assert job.pid != os.getpid() and _parent_pid(job.pid) == os.getpid()
    assert not widget.retrain_button.isEnabled() and widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: any(e.get("event") == "epoch" for e in job.events), timeout=TRAIN_MS)
    qtbot.waitUntil(lambda: bool(widget.state.history), timeout=5_000)
    assert widget.progress.value() > 0 and "epoch" in widget.progress.format()
    qtbot.waitUntil(lambda: widget.plot.renders >= 2 and not widget.plot.busy, timeout=30_000)
    assert widget.plot.history and widget.plot.pixmap() is not None  # the live plot

    # Corrections made during the run go to the live DB, not to the snapshot being trained on.
    with AnnotationStore(db) as store:
        store.set_user_label(sources[0], TASK, 5, True)
    with AnnotationStore(job.folder / "snapshot.sqlite") as snap:
        assert 5 not in snap.user_labels(sources[0], TASK)

    # 5) a new version with its parent is registered and listed; the comparison follows.
    qtbot.waitUntil(lambda: job.is_final, timeout=TRAIN_MS)
    assert job.state == "done", job.log_text()
    new = registry.resolve_model("tiny")
    assert new.version == 2 and new.spec.parent == "tiny@1"
    qtbot.waitUntil(
        lambda: (
            "tiny@2"
            in [widget.base_combo.itemText(i).split()[0] for i in range(widget.base_combo.count())]
        ),
        timeout=10_000,
    )
    qtbot.waitUntil(lambda: widget.state.comparison is not None, timeout=TRAIN_MS)
    comp = widget.state.comparison
    assert comp.parent == "tiny@1" and comp.child == "tiny@2" and comp.n_images == 2
    assert widget.has_result and widget.compare_table.rowCount() >= 1
    assert widget.compare_table.item(0, 0).text() == "macro F1"
    assert "held-out" in widget.headline.text()

    widget.use_button.click()
    assert settings.preferred_model(TASK) == "tiny@2"
    widget.rollback_button.click()
    assert settings.preferred_model(TASK) == "tiny@1"
    dialog = widget.show_log()
    assert "napari_hpa train" in dialog.findChild(QPlainTextEdit).toPlainText()
    dialog.close()

    # 6) a second run, cancelled: gone within 2 s, no partial model.
    qtbot.waitUntil(lambda: widget.retrain_button.isEnabled(), timeout=30_000)
    widget.retrain_button.click()
    assert not widget.retrain_button.isEnabled()  # no double start while it starts
    qtbot.waitUntil(
        lambda: widget.state.job is not job and widget.state.job is not None, timeout=30_000
    )
    second = widget.state.job
    qtbot.waitUntil(lambda: bool(second.events), timeout=TRAIN_MS)
    assert widget.cancel_button.isEnabled()
    t0 = time.monotonic()
    widget.cancel_button.click()
    qtbot.waitUntil(
        lambda: not pid_alive(second.pid) or "failed" in widget.status.text(), timeout=10_000
    )
    took = time.monotonic() - t0
    assert took < CANCEL_LIMIT_S, (took, widget.status.text(), second.record)
    qtbot.waitUntil(lambda: second.state == "cancelled", timeout=5_000)
    assert not job_alive(second.id)
    assert sorted(p.name for p in models.iterdir()) == ["tiny-v1", "tiny-v2"]
    qtbot.waitUntil(lambda: "Cancelled" in widget.progress.format(), timeout=5_000)
    kinds = [j.record.kind for j in JobManager().list_jobs()]
    assert kinds.count("compare") == 1 and kinds.count("train") == 2  # each end handled once
    assert widget.retrain_button.isEnabled()


def test_unreadable_database_is_reported(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    write_tiny_model(registry.user_models_dir())
    widget = make_napari_viewer().window.add_plugin_dock_widget("napari-hpa", "Retrain")[1]
    assert widget.state.db is None and not widget.retrain_button.isEnabled()
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a database")
    widget.set_db(bad)
    qtbot.waitUntil(lambda: widget.state.summary is not None, timeout=30_000)
    assert "cannot read" in widget.warning_label.text()
    assert not widget.retrain_button.isEnabled()
    assert format_eta(125) == "~2 min 05 s left" and format_eta(None) == ""
    widget.close()


def test_a_run_finished_while_napari_was_closed_is_shown(
    make_napari_viewer, qtbot, tmp_path: Path
) -> None:
    """The trainer wrote tiny@2 after napari closed: on reopening, the widget shows it and
    compares it with its parent on the held-out images."""
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
    job_id = job.id
    while pid_alive(job.pid):
        time.sleep(0.05)
    del manager, job  # napari closed before it noticed the end

    widget = make_napari_viewer().window.add_plugin_dock_widget("napari-hpa", "Retrain")[1]
    qtbot.waitUntil(lambda: widget.state.job is not None, timeout=30_000)
    assert widget.state.job.id == job_id and widget.state.job.state == "done"
    qtbot.waitUntil(lambda: widget.state.comparison is not None, timeout=TRAIN_MS)
    assert widget.state.comparison.child == "tiny@2" and widget.has_result
    assert JobManager().recover() == []  # seen now


def test_long_warning_stays_below_the_counts_table(qtbot, tmp_path: Path) -> None:
    """A word-wrapped warning in a narrow, short dock used to be drawn over the table."""
    from napari_hpa.jobs.retrain import ClassCount, DataSummary
    from napari_hpa.widgets.retrain.counts_panel import CountsPanel

    panel = CountsPanel()
    qtbot.addWidget(panel)
    panel.resize(300, 260)
    panel.show()
    counts = [ClassCount(i, f"Class number {i}", 1 + i % 3, 0) for i in range(12)]
    panel.show_summary(DataSummary(tmp_path / "a.sqlite", "hpa28", 40, 0, counts))
    qtbot.waitUntil(lambda: panel.warning_label.text() != "", timeout=5_000)
    label, table = panel.warning_label, panel.counts_table
    for width in (300, 220, 420):
        panel.resize(width, 260)
        qtbot.wait(50)
        assert label.text().count("fewer than") == 1 and len(label.text()) > 100
        assert label.height() >= label.heightForWidth(label.width())  # every wrapped line fits
        assert label.geometry().top() >= table.geometry().bottom()  # below the table, not on it
    panel.show_summary(None)
    assert label.height() == 0


def test_long_comparison_headline_is_not_cut(qtbot) -> None:
    """The headline kept a fixed 3 lines; a 4-line headline in the dock was cut off."""
    from napari_hpa.widgets.retrain.compare_panel import ComparePanel

    panel = ComparePanel()
    qtbot.addWidget(panel)
    panel.resize(330, 300)
    panel.show()
    panel.clear()
    qtbot.wait(50)
    label = panel.headline
    placeholder_height = label.height()
    assert placeholder_height >= 3 * label.fontMetrics().lineSpacing()  # room kept when empty
    label.setText(
        "hpa28-efficientnet_lite0@3 is better than hpa28-efficientnet_lite0@2 on 12 held-out "
        "images: macro F1 0.217 vs 0.000 (+0.217); 10 class(es) improved, 0 got worse."
    )
    for width in (330, 260, 500):
        panel.resize(width, 300)
        qtbot.wait(50)
        assert label.height() >= label.heightForWidth(label.width())  # every line shown
        assert label.geometry().bottom() < panel.compare_table.geometry().top()
    panel.resize(260, 300)
    qtbot.wait(50)
    assert label.height() > placeholder_height  # it grew past the three lines
