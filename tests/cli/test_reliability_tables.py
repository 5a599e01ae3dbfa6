"""Issue 18, the tables: batch tables that round-trip any file name and survive a full disk,
and an annotations database that is damaged, hostile, read-only or being written.

Real files, a real 64 KiB tmpfs for the full disk and a read-only remount for the share
(both skip where the machine cannot mount), a real second process for the writer. Each
bad input is counted in ``reliability_counts`` (the summary line pytest prints).
"""

from __future__ import annotations

import csv
import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import write_tiny_model
from PIL import Image
from reliability_counts import counted

from napari_hpa.cli import main
from napari_hpa.core.batch.table import BatchError, CsvWriter, Row
from napari_hpa.core.labels.store import AnnotationStore, AnnotationStoreError
from napari_hpa.core.tasks import HPA28_CLASSES

#: File names a screen may hold: every one must come back exactly from the table.
ODD_NAMES = [
    "car\rriage.png",
    "new\nline.png",
    'quo"te.png',
    "com,ma.png",
    "t\tab.png",
    " lead.png",
    "trail .png",
    '"\r\n,".png',
    "file:look-alike.png",
    os.fsdecode(b"caf\xe9-latin1.png"),  # not UTF-8: a surrogate escape in Python
]
TASK = "hpa28"


def one_line(err: str, *names: str) -> str:
    """The one stderr line of a refusal: no traceback, naming what it must name."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main(args)
    except SystemExit as exc:  # argparse
        rc = int(exc.code or 0)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs (room for a WAL database), to fill or to remount read-only."""
    import shutil
    import uuid

    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("a real tmpfs needs root and mount(8)")
    mnt = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)])
    if done.returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("model"), fit=32)


def write_png(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
    with open(path, "wb") as fh:
        Image.fromarray(pixels).save(fh, format="PNG")


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The odd names, in a deep folder: long rows fill a disk page in a few rows."""
    folder = tmp_path_factory.mktemp("odd names") / ("a folder of a screen, " * 6).strip()
    folder.mkdir()
    for i, name in enumerate(ODD_NAMES):
        write_png(folder / name, i)
    return folder


def batch(folder: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [
        "batch",
        str(folder),
        *("--out", str(out), "--model", str(model), "--device", "cpu", "--workers", "0"),
        *("--quiet", *extra),
    ]


def table_images(out: Path) -> list[str]:
    """The image column as the table's own reader gives it (exact names)."""
    if out.suffix == ".parquet":
        import pyarrow.parquet as pq

        from napari_hpa.core.batch.records import decode_image

        return [decode_image(v) for v in pq.read_table(out).column("image").to_pylist()]
    from napari_hpa.core.batch.table import read_csv_rows

    return [r.image for r in read_csv_rows(out, HPA28_CLASSES, cells=False)]


# ----------------------------------------------------------------------------- item 7: names
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_batch_table_round_trips_any_file_name(
    odd_folder: Path, model: Path, tmp_path: Path, suffix: str, capsys
) -> None:
    """Every odd name is one row, read back exactly; a resume appends nothing."""
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"results{suffix}"
    with counted(f"odd_file_names{suffix}", "batch"):
        rc, _o, err = run_cli(batch(odd_folder, out, model), capsys)
        assert rc == 0, err
        expected = sorted(str(odd_folder / n) for n in ODD_NAMES)
        assert sorted(table_images(out)) == expected
        rc, _o, err = run_cli(batch(odd_folder, out, model), capsys)  # every row recognised
        assert rc == 0, err
        assert sorted(table_images(out)) == expected
        if suffix == ".csv":  # any CSV reader sees one row per image, text names as they are
            with open(out, encoding="utf-8", newline="") as fh:
                rows = list(csv.DictReader(fh))
            assert len(rows) == len(ODD_NAMES)
            texts = {r["image"] for r in rows}
            assert {str(odd_folder / n) for n in ODD_NAMES[:-2]} <= texts
            assert all(r["status"] == "ok" for r in rows)


def test_torn_row_of_a_name_with_a_newline_is_cut_alone(tmp_path: Path) -> None:
    """A kill inside a quoted newline: the repair cuts that row only, and keeps the rest."""
    classes = ("a", "b")
    out = tmp_path / "t.csv"
    names = [f"/x/{n}" for n in ODD_NAMES[:-1]]  # text names (the bytes one: the test above)
    probs = np.array([0.25, 0.75], np.float32)
    with counted("torn_row_newline_name", "batch table"):
        writer = CsvWriter(out, classes, cells=False)
        writer.write([Row(n, "m@1", probs, [1]) for n in names])
        writer.close()
        whole = out.read_bytes()
        torn_name = "/x/torn\nname.png"
        writer = CsvWriter(out, classes, cells=False)
        writer.write([Row(torn_name, "m@1", probs, [1])])
        writer.close()
        row = out.read_bytes()[len(whole) :]
        cut = row.index(b"\n") + 1  # the kill lands just after the name's newline
        out.write_bytes(whole + row[:cut])
        writer = CsvWriter(out, classes, cells=False)
        assert writer.state.done == set(names)
        assert out.read_bytes() == whole  # the torn row is gone, nothing else
        writer.write([Row(torn_name, "m@1", probs, [1])])  # the resume redoes it, once
        writer.close()
        again = CsvWriter(out, classes, cells=False)
        assert again.state.done == {*names, torn_name} and again.state.rows == len(names) + 1
        again.close()


def test_torn_cell_block_of_odd_names_redoes_that_image(tmp_path: Path) -> None:
    classes = ("a", "b")
    out = tmp_path / "cells.csv"
    probs = np.array([0.5, 0.5], np.float32)
    first, second = '/x/one\n"cell".png', "/x/two\r\n.png"
    with counted("torn_cell_block_odd_names", "batch table"):
        writer = CsvWriter(out, classes, cells=True)
        writer.write([Row(first, "m@1", probs, [0], cell=c) for c in (1, 2, 3)])
        keep = out.stat().st_size
        writer.write([Row(second, "m@1", probs, [0], cell=c) for c in (1, 2, 3)])
        writer.close()
        data = out.read_bytes()
        out.write_bytes(data[: data.rindex(b'"/x/two') + 9])  # torn in its third row
        writer = CsvWriter(out, classes, cells=True)
        assert writer.state.done == {first} and writer.state.rows == 3
        assert out.stat().st_size == keep
        writer.close()


def test_damage_in_the_middle_is_reported_not_cut(tmp_path: Path) -> None:
    """A stray quote early on would make everything after it 'torn': refuse, change nothing."""
    classes = HPA28_CLASSES
    out = tmp_path / "t.csv"
    writer = CsvWriter(out, classes, cells=False)
    probs = np.full(28, 0.5, np.float32)
    writer.write([Row(f"/x/{i}.png", "m@1", probs, [0]) for i in range(200)])
    writer.close()
    data = bytearray(out.read_bytes())
    at = data.index(b"/x/3.png")
    data[at:at] = b'"'  # a hand edit gone wrong
    out.write_bytes(bytes(data))
    with counted("table_stray_quote", "batch table"):
        with pytest.raises(BatchError) as info:
            CsvWriter(out, classes, cells=False)
        assert str(out) in str(info.value) and "damaged from line 5" in str(info.value)
        assert "\n" not in str(info.value)
        assert out.read_bytes() == bytes(data)


# ----------------------------------------------------------------------------- item 16: output
def _fill(mnt: Path, leave: int) -> Path:
    """Fill the tmpfs but ``leave`` bytes (a real ENOSPC comes after them)."""
    filler = mnt / "filler"
    stat = os.statvfs(mnt)
    free = stat.f_bavail * stat.f_frsize
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return filler


def test_full_disk_keeps_the_table_and_resumes(
    odd_folder: Path, model: Path, tiny_tmpfs: Path, tmp_path: Path, capsys
) -> None:
    """ENOSPC while appending: one line, exit 2, the rows before kept, the resume completes."""
    out = tiny_tmpfs / "results.csv"
    first = _subset(odd_folder, tmp_path, 3)
    rc, _o, err = run_cli(batch(first, out, model), capsys)
    assert rc == 0, err
    filler = _fill(tiny_tmpfs, leave=0)  # what is left: the rest of the table's last page
    with counted("full_disk_csv_table", "batch"):
        rc, _o, err = run_cli(batch(odd_folder, out, model), capsys)
        assert rc == 2
        line = one_line(err, str(out), "No space left on device")
        assert "re-run resumes" in line
        kept = table_images(out)
        assert 3 <= len(kept) < 3 + len(ODD_NAMES)
        with open(out, "rb") as fh:
            assert fh.read().endswith(b"\n")  # cut back to whole rows
        filler.unlink()
        rc, _o, err = run_cli(batch(odd_folder, out, model), capsys)
        assert rc == 0, err
        expected = [str(first / n) for n in ODD_NAMES[:3]] + [
            str(odd_folder / n) for n in ODD_NAMES
        ]
        assert sorted(table_images(out)) == sorted(expected)


def _subset(folder: Path, tmp_path: Path, n: int) -> Path:
    """A folder with copies of the first ``n`` odd images (a run to resume)."""
    part = tmp_path / "first"
    part.mkdir()
    for name in ODD_NAMES[:n]:
        (part / name).write_bytes((folder / name).read_bytes())
    return part


def test_full_disk_parquet_keeps_the_previous_table(
    odd_folder: Path, model: Path, tiny_tmpfs: Path, tmp_path: Path, capsys
) -> None:
    pytest.importorskip("pyarrow")
    out = tiny_tmpfs / "results.parquet"
    first = _subset(odd_folder, tmp_path, 3)
    rc, _o, err = run_cli(batch(first, out, model), capsys)
    assert rc == 0, err
    before = out.read_bytes()
    filler = _fill(tiny_tmpfs, leave=1024)
    with counted("full_disk_parquet_table", "batch"):
        rc, _o, err = run_cli(batch(odd_folder, out, model), capsys)
        assert rc == 2
        one_line(err, str(out), "No space left on device")
        assert out.read_bytes() == before
        assert not [p.name for p in tiny_tmpfs.iterdir() if p.name.startswith(".tmp-")]
        filler.unlink()
        rc, _o, err = run_cli(batch(odd_folder, out, model), capsys)
        assert rc == 0, err
        expected = [str(first / n) for n in ODD_NAMES[:3]] + [
            str(odd_folder / n) for n in ODD_NAMES
        ]
        assert sorted(table_images(out)) == sorted(expected)


def _remount_ro(mnt: Path) -> None:
    done = subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot remount read-only: {done.stderr.decode().strip()}")


def test_full_cam_folder_stops_with_one_line(
    odd_folder: Path, model: Path, tmpfs: Path, tmp_path: Path, capsys
) -> None:
    """The activation maps fill the disk: stop with one line; no row without its map."""
    cams = tmpfs / "cams"
    cams.mkdir()
    four = _subset(odd_folder, tmp_path, 4)
    filler = _fill(tmpfs, leave=12 * 1024)  # room for one map
    out = tmp_path / "results.csv"
    with counted("full_disk_cam_folder", "batch"):
        rc, _o, err = run_cli(batch(four, out, model, "--cam", str(cams)), capsys)
        assert rc == 2
        one_line(err, str(cams), "cannot write the activation map", "re-run resumes")
        done = table_images(out)
        assert len(done) < 4
        assert not [p for p in cams.rglob("*") if p.name.startswith(".tmp-")]
        filler.unlink()
        rc, _o, err = run_cli(batch(four, out, model, "--cam", str(cams)), capsys)
        assert rc == 0, err
        assert sorted(table_images(out)) == sorted(str(four / n) for n in ODD_NAMES[:4])
        assert len(list(cams.glob("*_cam.tif"))) == 4


def test_read_only_table_folder_is_one_line(
    odd_folder: Path, model: Path, tiny_tmpfs: Path, capsys
) -> None:
    _remount_ro(tiny_tmpfs)
    for suffix in (".csv", ".parquet"):
        out = tiny_tmpfs / f"r{suffix}"
        with counted(f"read_only_table_folder{suffix}", "batch"):
            rc, _o, err = run_cli(batch(odd_folder, out, model), capsys)
            assert rc == 2
            one_line(err, str(tiny_tmpfs), "Read-only file system")
            assert not out.exists()


# ----------------------------------------------------------------------------- the database
def make_db(path: Path, n: int = 300) -> Path:
    with AnnotationStore(path) as store, store.transaction():
        for i in range(n):
            src = f"/data/img{i:04d}"
            store.set_model_labels(src, TASK, np.full(28, 0.1), [0, 3], "m@1")
            store.set_user_label(src, TASK, 5, True)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_damaged_pages_one_line_file_kept_and_recoverable(tmp_path: Path, capsys) -> None:
    db = make_db(tmp_path / ".napari-hpa" / "annotations.sqlite")
    data = bytearray(db.read_bytes())
    pages = len(data) // 4096
    rng = np.random.default_rng(1)
    for page in (pages // 2, pages // 2 + 1):
        data[page * 4096 : (page + 1) * 4096] = rng.integers(0, 256, 4096, np.uint8).tobytes()
    db.write_bytes(bytes(data))
    digest = sha(db)
    with counted("damaged_db_pages", "export"):
        rc, _o, err = run_cli(["export", "--db", str(db), "--out", str(tmp_path / "l.csv")], capsys)
        assert rc == 2
        one_line(err, str(db), "damaged", "recovery")
        assert sha(db) == digest
        assert not (tmp_path / "l.csv").exists()
    with counted("damaged_db_pages", "store (GUI, training)"):
        with pytest.raises(AnnotationStoreError) as info:
            AnnotationStore(db)
        assert "\n" not in str(info.value) and str(db) in str(info.value)
        assert sha(db) == digest
    from napari_hpa.core.labels.recovery import main as recover_main
    from napari_hpa.core.labels.store import open_readonly

    said: list[str] = []
    new = tmp_path / "recovered.sqlite"
    assert recover_main([str(db), str(new)], said.append) == 0
    assert sha(db) == digest
    with open_readonly(new) as store:
        assert store.integrity_ok()
        images = store.corrected_images(TASK)
    assert 0 < len(images) <= 300 and len(images) > 200, said


def test_full_disk_database_keeps_committed_edits(tmpfs: Path) -> None:
    db = tmpfs / "annotations.sqlite"
    done = 0
    with counted("full_disk_db", "store"):
        with AnnotationStore(db) as store:
            with pytest.raises(AnnotationStoreError) as info:
                for i in range(10_000):
                    store.set_model_labels(f"/data/{i:05d}", TASK, np.full(28, 0.5), [1], "m@1")
                    done = i + 1
            assert str(info.value).startswith(f"{db}: ") and "disk is full" in str(info.value)
            assert "\n" not in str(info.value)
        from napari_hpa.core.labels.store import open_readonly

        with open_readonly(db) as store:  # the disk is still full: read what was committed
            assert store.integrity_ok()
            assert len(store.images()) == done > 0


# ----------------------------------------------------------------------------- item 17: reading
def test_reading_works_in_a_read_only_folder(tmpfs: Path, tmp_path: Path, capsys) -> None:
    """A colleague's share: no -shm may be created there; a -wal may hold the last commits."""
    from napari_hpa.core.labels.store import open_readonly

    plain = tmpfs / "plain"
    with AnnotationStore(plain / "annotations.sqlite") as store:
        store.set_user_label("/x/a", TASK, 3, True)
    live = tmp_path / "live.sqlite"  # a store whose WAL was not checkpointed yet
    writer = AnnotationStore(live)
    writer._conn.execute("PRAGMA wal_autocheckpoint = 0")
    writer.set_user_label("/x/a", TASK, 3, True)
    writer.set_user_label("/x/b", TASK, 4, True)
    wal = tmpfs / "wal"
    wal.mkdir()
    for suffix in ("", "-wal"):
        (wal / f"annotations.sqlite{suffix}").write_bytes(Path(f"{live}{suffix}").read_bytes())
    writer.close()
    _remount_ro(tmpfs)
    for folder, expected in ((plain, {"/x/a"}), (wal, {"/x/a", "/x/b"})):
        db = folder / "annotations.sqlite"
        with (
            counted(f"read_only_folder_{folder.name}", "open_readonly"),
            open_readonly(db) as store,
        ):
            assert {src for src, _i, _l in store.corrected_images(TASK)} == expected
            with pytest.raises(AnnotationStoreError, match="read-only"):
                store.set_user_label("/x/c", TASK, 1, True)
    out = tmp_path / "from_the_share.csv"  # napari-hpa export reads the share read-only
    with counted("read_only_folder_export", "export"):
        rc, _o, err = run_cli(
            ["export", "--db", str(wal / "annotations.sqlite"), "--out", str(out)], capsys
        )
        assert rc == 0, err
        assert len(out.read_text().splitlines()) == 3  # header, /x/a, /x/b


HOLD_WRITE = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO images(source, image_id, added) VALUES ('/x/uncommitted', 'u', 't')")
print("holding", flush=True)
time.sleep(60)
"""


def test_reading_does_not_wait_for_a_writer(tmp_path: Path, capsys) -> None:
    """Another process holds the write lock: readers (and export) go on at once (WAL)."""
    db = make_db(tmp_path / "annotations.sqlite", n=5)
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITE, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "holding"
        with counted("db_locked_by_writer", "store / export / open_readonly"):
            t0 = time.perf_counter()
            with AnnotationStore(db, timeout=1.0) as store:  # the GUI's and training's open
                assert len(store.corrected_images(TASK)) == 5
            out = tmp_path / "labels.csv"
            rc, _o, err = run_cli(["export", "--db", str(db), "--out", str(out)], capsys)
            assert rc == 0, err
            assert len(out.read_text().splitlines()) == 6
            from napari_hpa.core.labels.store import open_readonly

            with open_readonly(db, timeout=1.0) as store:
                assert len(store.images()) == 5  # the uncommitted sixth is not seen
            assert time.perf_counter() - t0 < 5.0
    finally:
        child.kill()
        child.wait()


# ----------------------------------------------------------------------------- item 14: class ids
def _hostile(db: Path, sql: str) -> None:
    conn = sqlite3.connect(db)
    conn.execute(sql)
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("kind", "value"), [("class_id_1e23", "100000000000000000000000"), ("class_id_2e40", "2e40")]
)
def test_huge_class_id_in_the_database_is_refused(
    tmp_path: Path, kind: str, value: str, capsys
) -> None:
    db = make_db(tmp_path / "annotations.sqlite", n=2)
    _hostile(
        db,
        "INSERT INTO labels(image, cell, task, class, value, origin, time) "
        f"VALUES (1, 0, '{TASK}', {value}, 1, 'user', 't')",
    )
    for fmt, out in (("tiff", tmp_path / "cells"), ("csv", tmp_path / "l.csv")):
        with counted(kind, f"export {fmt}"):
            args = ["export", "--db", str(db), "--format", fmt, "--out", str(out)]
            rc, _o, err = run_cli(args, capsys)
            assert rc == 2
            one_line(err, str(db), "class id", "out of range")


def test_huge_integer_class_id_and_mask_are_refused(tmp_path: Path, capsys) -> None:
    db = make_db(tmp_path / "annotations.sqlite", n=2)
    _hostile(
        db,
        "INSERT INTO labels(image, cell, task, class, value, origin, time) "
        f"VALUES (2, 0, '{TASK}', {10**12}, 1, 'user', 't')",
    )
    with counted("class_id_10e12_integer", "export csv"):
        rc, _o, err = run_cli(["export", "--db", str(db), "--out", str(tmp_path / "a.csv")], capsys)
        assert rc == 2
        one_line(err, str(db), "class id 1000000000000")
    db2 = make_db(tmp_path / "two.sqlite", n=1)
    with AnnotationStore(db2) as store:
        store.set_cell_mask("/data/img0000", np.ones((8, 8), np.int32))
    conn = sqlite3.connect(db2)  # the mask's .npy header claims 10^6 x 10^6 (4 TB of int32)
    conn.execute("UPDATE masks SET labels = ?", (_forge_npz((10**6, 10**6)),))
    conn.commit()
    conn.close()
    with counted("mask_shape_10e12_pixels", "export tiff"):
        rc, _o, err = run_cli(
            ["export", "--db", str(db2), "--format", "tiff", "--out", str(tmp_path / "t")], capsys
        )
        assert rc == 2
        one_line(err, str(db2), "cell mask", "shape")


def _forge_npz(shape: tuple[int, int]) -> bytes:
    """An npz whose labels.npy header claims ``shape`` but holds 64 bytes of data."""
    import io
    import zipfile

    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1), np.int32))
    header["shape"] = shape
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, header)
    npy.write(b"\0" * 64)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("labels.npy", npy.getvalue())
    return buf.getvalue()


def test_store_refuses_huge_class_ids_before_allocating(tmp_path: Path) -> None:
    with counted("class_id_1e23_argument", "store"), AnnotationStore(tmp_path / "a.sqlite") as s:
        with pytest.raises(ValueError, match="out of range"):
            s.set_model_labels("/x/a", TASK, [], [10**23], "m@1")  # was: [None] * (10**23 + 1)
        with pytest.raises(ValueError, match="out of range"):
            s.set_user_label("/x/a", TASK, 10**23, True)
        with pytest.raises(ValueError, match="out of range"):
            s.set_cell_mask("/x/a", np.full((4, 4), 2**31 - 1, np.int32))
        assert s.images() == [] or all(not s.user_labels(r.source, TASK) for r in s.images())
