"""Annotate on a disk that fills up mid-session (issue 18): one line, nothing lost silently.

The images and their annotations database are on a real 1 MiB tmpfs. After the
prediction is stored the disk is filled to the last byte: a correction then cannot
be written. The dock says so in one line, keeps the correction checked and marked
"not saved", and writes it with the next change once there is room again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import GUI_TEST
from helpers import write_tiny_model

from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.model.registry import user_models_dir

pytestmark = GUI_TEST
WAIT_MS = 60_000
TASK = "hpa28"
HPA_PATTERNS = [f"*_{c}.png" for c in ("red", "green", "blue", "yellow")]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs (needs root and mount); skipped where the machine cannot."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("a real full disk needs root and mount(8) to make a tmpfs")
    mnt = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path) -> Path:
    """Fill the disk of ``folder`` to the last byte; the filler file."""
    filler = folder / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as fh:
        while True:
            fh.write(b"\0" * 4096)
            fh.flush()
    return filler


def _row(annotate, class_index: int):
    from qtpy.QtCore import Qt

    items = [annotate.list.item(i) for i in range(annotate.list.count())]
    return next(it for it in items if int(it.data(Qt.UserRole)) == class_index)


def test_a_full_disk_keeps_the_correction_and_says_so(
    make_napari_viewer, monkeypatch, qtbot, small_disk: Path
) -> None:
    from napari.settings import get_settings
    from qtpy.QtCore import Qt

    folder = write_samples(small_disk / "hpa", n=2, size=64, seed=2)
    write_tiny_model(user_models_dir(), name="tiny-hpa")
    viewer = make_napari_viewer()
    readers = get_settings().plugins.extension2reader  # the user's remembered choice
    for pattern in HPA_PATTERNS:
        monkeypatch.setitem(readers, pattern, "napari-hpa")
    _dock, predict = viewer.window.add_plugin_dock_widget("napari-hpa", "Predict")
    _dock, annotate = viewer.window.add_plugin_dock_widget("napari-hpa", "Annotate")
    viewer.open(str(folder / "synth_0000_red.png"), plugin=None)  # napari picks the reader
    source = str(folder / "synth_0000")
    assert annotate.source == source and annotate.store.path.parent.parent == folder
    assert predict.select_model("tiny-hpa@1")
    predict.cells_check.setChecked(False)
    predict.predict_button.click()
    qtbot.waitUntil(
        lambda: annotate._writer is None and annotate.store.model_id(source, TASK) is not None,
        timeout=WAIT_MS,
    )
    result = predict.session.result
    off = [c for c in result.order() if c not in result.prediction.predicted]
    first, second = off[0], off[1]

    filler = _fill(small_disk)
    _row(annotate, first).setCheckState(Qt.Checked)  # the user ticks a class
    line = annotate.status.text()
    assert line.startswith("Not saved: the disk is full. "), line
    assert "\n" not in line and "kept here" in line
    assert _row(annotate, first).checkState() == Qt.Checked  # the correction stays
    assert "not saved" in _row(annotate, first).text()
    annotate.toggle(second)  # a number key: kept too
    assert "2 corrections are kept" in annotate.status.text()
    assert _row(annotate, second).checkState() == Qt.Checked
    assert first not in annotate.store.user_labels(source, TASK)  # not written: the disk is full

    filler.unlink()  # room again: the next change writes the waiting ones first, in order
    annotate.toggle(second)
    assert annotate.store.user_labels(source, TASK) == {first: True, second: False}
    assert annotate.status.text().startswith("Cleared")
    assert "not saved" not in _row(annotate, first).text()

    # a prediction that cannot be stored: one line in the dock, not a traceback
    _fill(small_disk)
    annotate.step(1)  # Next image, auto-predicted
    qtbot.waitUntil(
        lambda: annotate.status.text().startswith("The prediction was not saved:"),
        timeout=WAIT_MS,
    )
    assert "disk is full" in annotate.status.text()
