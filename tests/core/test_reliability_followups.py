"""Issue 18, round two's follow-ups in core and jobs: the sample writer, a cancelled job's
leftovers, read-only readers of the annotations database, the cell-TIFF export as one set,
and checkpoint.py's sanity checks in their own module.

Real files, a real second process for the writer and the job, a real tmpfs (full, or
remounted read-only) where the machine can mount one.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from napari_hpa.core.atomic import TMP_PREFIX
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.labels.export import CELL_CSV, export_cell_tiff
from napari_hpa.core.labels.store import AnnotationStore
from napari_hpa.core.model.folders import writer_tag
from napari_hpa.core.tasks import get_task

TASK = "hpa28"


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture
def share(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs (room for a WAL database), to remount read-only."""
    import shutil

    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("a read-only share needs root and mount(8) to remount a tmpfs")
    mnt = tmp_path / f"share-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def _remount_ro(mnt: Path) -> None:
    done = subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot remount read-only: {done.stderr.decode().strip()}")


# ----------------------------------------------------------------------------- 3: write_samples
def test_write_samples_never_overwrites_unless_asked(tmp_path: Path) -> None:
    out = write_samples(tmp_path / "s", n=2, size=32, seed=1)
    before = _files(out)
    assert len(before) == 9  # 2 sets of 4 channels and labels.csv
    with pytest.raises(FileExistsError) as err:
        write_samples(out, n=3, size=32, seed=2)
    assert err.value.errno == errno.EEXIST and err.value.filename == str(out)
    assert "nothing was overwritten" in str(err.value)
    assert _files(out) == before  # nothing replaced, nothing added (not even set 3)

    own = tmp_path / "mine"  # someone's own labels.csv is data too
    own.mkdir()
    (own / "labels.csv").write_text("Id,Target\nmine,3\n")
    with pytest.raises(FileExistsError, match="labels.csv"):
        write_samples(own, n=1, size=32)
    assert [p.name for p in own.iterdir()] == ["labels.csv"]

    write_samples(out, n=2, size=32, seed=2, overwrite=True)  # asked: replaced
    after = _files(out)
    assert after.keys() == before.keys() and after != before
    assert not [p for p in out.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_write_samples_on_a_full_disk_leaves_the_folder_as_it_was(tiny_tmpfs: Path) -> None:
    """On a real 64 KiB tmpfs: the sets do not fit; no half set, no temporary file is left."""
    out = tiny_tmpfs / "samples"
    with pytest.raises(OSError) as err:
        write_samples(out, n=20, size=256, seed=0)
    assert err.value.errno == errno.ENOSPC
    assert list(out.iterdir()) == []


# ----------------------------------------------------------------------------- 4: a job's leftovers
CHILD_SAVE = """
import json, sys, time
from pathlib import Path
from napari_hpa.core.model.folders import writer_tag
root = Path(sys.argv[1])
(root / f".tmp-x-v3~{writer_tag()}~00c0ffee").mkdir()  # a save in progress, as save_model names it
print(json.dumps({"event": "start", "total_epochs": 1}), flush=True)
time.sleep(120)
"""


def test_a_cancelled_job_removes_only_its_own_temporary_versions(tmp_path: Path) -> None:
    """Another live run of the same name, and a model whose name starts alike, keep theirs."""
    from napari_hpa.jobs.runner import JobManager

    models = tmp_path / "models"
    models.mkdir()
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD_SAVE))
    tag = writer_tag()  # this test process: a live writer
    other_run = models / f".tmp-x-v4~{tag}~0badf00d"
    other_model = models / f".tmp-x-vision-v1~{tag}~0ddba11f"
    finished = models / "x-vision-v1"
    for folder in (other_run, other_model, finished):
        folder.mkdir()
        (folder / "model.json").write_text("{}")
    job = JobManager(tmp_path / "jobs").start(
        [sys.executable, str(script), str(models)], "x", meta={"models_dir": str(models)}
    )
    deadline = time.monotonic() + 60
    while not [p for p in models.iterdir() if p.name.startswith(".tmp-x-v3~")]:
        assert job.is_alive() and time.monotonic() < deadline, job.log_text()
        time.sleep(0.05)
    assert job.cancel() == "cancelled"
    left = sorted(p.name for p in models.iterdir())
    assert left == sorted([other_run.name, other_model.name, finished.name])


# ----------------------------------------------------------------------------- 5: read-only readers
def _corrected_db(path: Path, n: int = 10) -> Path:
    with AnnotationStore(path) as store, store.transaction():
        for i in range(n):
            source = f"/data/img{i:02d}.png"
            store.add_image(source, f"img{i:02d}", (32, 32))
            store.set_user_label(source, TASK, (0, 23, 25)[i % 3], True)
    return path


def test_training_and_retrain_counts_read_a_read_only_share(share: Path, tmp_path: Path) -> None:
    from napari_hpa.core.train.data import load_annotations
    from napari_hpa.jobs.retrain import snapshot_db, summarize

    db = _corrected_db(share / "annotations.sqlite")
    _remount_ro(share)
    task = get_task(TASK)
    summary = summarize(db, task)
    assert summary.error is None, summary.error
    assert summary.n_images == 10 and {c.name for c in summary.counts} == {
        task.classes[0],
        task.classes[23],
        task.classes[25],
    }
    data = load_annotations(db, task)
    assert len(data.samples) == 10
    copy = snapshot_db(db, tmp_path / "snapshot.sqlite")  # Retrain's first step
    with AnnotationStore(copy) as store:
        assert len(store.corrected_images(TASK)) == 10
    assert sorted(p.name for p in share.iterdir()) == ["annotations.sqlite"]


HOLD_WRITE = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO images(source, image_id, added) VALUES ('/x/uncommitted', 'u', 't')")
print("holding", flush=True)
time.sleep(60)
"""


def test_the_counts_never_wait_for_a_writer(tmp_path: Path) -> None:
    """Napari writes (a write transaction held) while the Retrain dock counts: no lock wait.

    A guard: since round two no opening takes a lock, so this held before too."""
    from napari_hpa.core.train.data import load_annotations
    from napari_hpa.jobs.retrain import summarize

    db = _corrected_db(tmp_path / "annotations.sqlite")
    writer = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITE, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "holding"
        t0 = time.monotonic()
        summary = summarize(db, get_task(TASK))
        data = load_annotations(db, get_task(TASK))
        took = time.monotonic() - t0
    finally:
        writer.kill()
        writer.wait()
    assert summary.error is None and summary.n_images == 10, summary.error
    assert len(data.samples) == 10
    assert took < 5.0, took  # a lock wait would be the store's 10 s timeout


# ----------------------------------------------------------------------------- 6: TIFFs as one set
def _masked(store: AnnotationStore, source: str, size: int = 40, seed: int = 0) -> None:
    if seed:  # random cell ids: zlib cannot shrink them
        mask = np.random.default_rng(seed).integers(0, 200, (size, size)).astype(np.int32)
    else:
        mask = np.zeros((size, size), np.int32)
        mask[2:15, 2:15], mask[20:35, 20:38] = 1, 2
    store.add_image(source, Path(source).stem, mask.shape)
    store.set_cell_mask(source, mask)
    store.set_user_label(source, TASK, 5, True, cell=1)


def test_a_failed_tiff_export_keeps_the_whole_previous_set(
    tiny_tmpfs: Path, tmp_path: Path
) -> None:
    """On a real 64 KiB tmpfs: the first stack of the new set fits, the second does not.

    Before, ``a.tif`` was new and ``cell_labels.csv`` the previous one (half a set)."""
    out = tiny_tmpfs / "cells"
    with AnnotationStore(tmp_path / "db.sqlite") as store:
        a, b = str(tmp_path / "a.tif"), str(tmp_path / "b.tif")
        _masked(store, a)
        _masked(store, b)
        assert export_cell_tiff(store, TASK, out) == [out / "a.tif", out / "b.tif"]
        before = _files(out)
        assert sorted(before) == ["a.tif", "b.tif", CELL_CSV]

        store.set_user_label(a, TASK, 7, True, cell=2)  # a's stack changes, and fits
        _masked(store, b, size=384, seed=3)  # b's does not
        with pytest.raises(OSError) as err:
            export_cell_tiff(store, TASK, out)
        assert err.value.errno == errno.ENOSPC
        assert _files(out) == before  # byte for byte: the previous set, whole
        assert not [p for p in tiny_tmpfs.rglob("*") if p.name.startswith(TMP_PREFIX)]

        _masked(store, b)  # small again: the new set goes in, all of it
        assert export_cell_tiff(store, TASK, out) == [out / "a.tif", out / "b.tif"]
        after = _files(out)
        assert sorted(after) == sorted(before) and after["a.tif"] != before["a.tif"]
        rows = after[CELL_CSV].decode().splitlines()
        assert len(rows) == 1 + 4 and any(",a.tif,2," in r and "7" in r for r in rows)


def test_a_folder_in_the_way_is_refused_before_anything_moves(tmp_path: Path) -> None:
    from napari_hpa.core.labels.staging import staged_set

    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "a.tif").write_bytes(b"previous a")
    (folder / "b.tif").mkdir()
    (folder / "b.tif" / "x").write_bytes(b"keep")
    with pytest.raises(IsADirectoryError), staged_set(folder, last=("z.csv",)) as stage:
        for name in ("a.tif", "b.tif", "z.csv"):
            (stage / name).write_bytes(b"new " + name.encode())
    assert (folder / "a.tif").read_bytes() == b"previous a"
    assert (folder / "b.tif" / "x").read_bytes() == b"keep"
    assert sorted(p.name for p in folder.iterdir()) == ["a.tif", "b.tif"]  # no z.csv, no .tmp-


def test_a_move_that_fails_part_way_puts_the_previous_files_back(tmp_path: Path) -> None:
    """``b.tif`` is immutable (chattr +i): it can be neither linked nor renamed, so the
    moves fail after ``a.tif`` went in; ``a.tif`` is the previous one again."""
    import shutil

    from napari_hpa.core.labels.staging import staged_set

    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "a.tif").write_bytes(b"previous a")
    (folder / "b.tif").write_bytes(b"previous b")
    if shutil.which("chattr") is None:
        pytest.skip("needs chattr(1) to make a file that cannot be moved")
    if subprocess.run(["chattr", "+i", str(folder / "b.tif")], capture_output=True).returncode:
        pytest.skip("this file system (or user) cannot make a file immutable")
    try:
        with pytest.raises(PermissionError), staged_set(folder, last=("z.csv",)) as stage:
            for name in ("a.tif", "b.tif", "z.csv"):
                (stage / name).write_bytes(b"new " + name.encode())
        assert (folder / "a.tif").read_bytes() == b"previous a"
        assert (folder / "b.tif").read_bytes() == b"previous b"
        assert sorted(p.name for p in folder.iterdir()) == ["a.tif", "b.tif"]
    finally:
        subprocess.run(["chattr", "-i", str(folder / "b.tif")], check=False)
    with staged_set(folder, last=("z.csv",)) as stage:  # all well: all of it moves in
        for name in ("a.tif", "b.tif", "z.csv"):
            (stage / name).write_bytes(b"new " + name.encode())
    assert [(folder / n).read_bytes() for n in ("a.tif", "b.tif")] == [b"new a.tif", b"new b.tif"]
    assert sorted(p.name for p in folder.iterdir()) == ["a.tif", "b.tif", "z.csv"]


# ----------------------------------------------------------------------------- 7: sanity module
def test_the_load_time_checks_have_their_own_module(tmp_path: Path) -> None:
    from napari_hpa.core.model import checkpoint, sanity
    from napari_hpa.core.model.checkpoint import CheckpointError, read_spec

    assert checkpoint.weights_problem is sanity.weights_problem  # the old name still works
    assert (checkpoint.MAX_META_BYTES, checkpoint.MAX_JSON_DEPTH) == (4 * 2**20, 32)
    lines = Path(checkpoint.__file__).read_text(encoding="utf-8").count("\n")
    assert lines <= 500, lines
    assert sanity.too_deep([[[1]]], 2) and not sanity.too_deep([[1]], 2)
    folder = tmp_path / "deep"
    folder.mkdir()
    (folder / "model.json").write_text('{"a": ' + "[" * 40 + "]" * 40 + "}")
    with pytest.raises(CheckpointError, match="nested deeper than 32 levels"):
        read_spec(folder)
    (folder / "model.safetensors").write_bytes(b"\x80\x04pickle")
    with pytest.raises(CheckpointError, match="pickle/torch archive"):
        sanity.check_not_pickle(folder / "model.safetensors")
