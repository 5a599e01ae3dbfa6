"""Exports never overwrite what they must not (issue 18, items 1-3): images, the database,
files that are not earlier exports; and a failed write keeps the previous export."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_hpa.core.atomic import TMP_PREFIX
from napari_hpa.core.image.writers import write_image
from napari_hpa.core.labels.export import (
    CELL_CSV,
    ExportError,
    export_cell_tiff,
    export_json,
    export_kaggle_csv,
)
from napari_hpa.core.labels.store import AnnotationStore, default_db_path

TASK = "hpa28"


def _labelled(store: AnnotationStore, source: Path, size: int = 40, seed: int = 0) -> None:
    """Give ``source`` a cell mask (random ids when ``seed``: a stack that compresses badly)."""
    if seed:
        mask = np.random.default_rng(seed).integers(0, 200, (size, size)).astype(np.int32)
    else:
        mask = np.zeros((size, size), np.int32)
        mask[2:15, 2:15], mask[20:35, 20:38] = 1, 2
    store.add_image(str(source), source.stem, mask.shape)
    store.set_cell_mask(str(source), mask)
    store.set_user_label(str(source), TASK, 3, True)
    store.set_user_label(str(source), TASK, 5, True, cell=1)


@pytest.fixture
def field(tmp_path: Path) -> Path:
    """A folder with one raw TIFF, ``cell1.tif``, labelled in its own database."""
    folder = tmp_path / "F"
    raw = np.random.default_rng(1).integers(0, 4000, (2, 40, 40)).astype(np.uint16)
    write_image(folder / "cell1.tif", raw)
    with AnnotationStore(default_db_path(folder / "cell1.tif")) as store:
        _labelled(store, folder / "cell1.tif")
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_cell_tiffs_never_go_beside_the_images(field: Path, tmp_path: Path) -> None:
    before = _files(field)
    with AnnotationStore(default_db_path(field / "cell1.tif")) as store:
        with pytest.raises(ExportError, match="holds the images this database labels"):
            export_cell_tiff(store, TASK, field)
        assert _files(field) == before  # the raw image is untouched, nothing was added

        # another folder with an unrelated cell1.tif: kept; the stack takes another name
        other = tmp_path / "G"
        other.mkdir()
        (other / "cell1.tif").write_bytes(before["cell1.tif"])
        assert export_cell_tiff(store, TASK, other) == [other / "cell1_2.tif"]
        assert (other / "cell1.tif").read_bytes() == before["cell1.tif"]
        assert tifffile.imread(other / "cell1_2.tif").shape == (7, 40, 40)  # cells, classes 0-5
        # the next export replaces its own stack, and only it
        store.set_user_label(str(field / "cell1.tif"), TASK, 7, True, cell=2)
        assert export_cell_tiff(store, TASK, other) == [other / "cell1_2.tif"]
        assert sorted(p.name for p in other.iterdir()) == ["cell1.tif", "cell1_2.tif", CELL_CSV]
        assert set(np.unique(tifffile.imread(other / "cell1_2.tif")[1 + 7])) == {0, 2}

        # a cell_labels.csv that no export wrote is not replaced
        third = tmp_path / "H"
        third.mkdir()
        (third / CELL_CSV).write_text("my,own,table\n1,2,3\n")
        with pytest.raises(ExportError, match="not the cell table of an earlier export"):
            export_cell_tiff(store, TASK, third)
        assert (third / CELL_CSV).read_text() == "my,own,table\n1,2,3\n"
        assert [p.name for p in third.iterdir()] == [CELL_CSV]


def test_csv_and_json_never_replace_the_database_or_an_image(field: Path, tmp_path: Path):
    db = default_db_path(field / "cell1.tif")
    raw = (field / "cell1.tif").read_bytes()
    with AnnotationStore(db) as store:
        labels = store.effective_labels(str(field / "cell1.tif"), TASK)
        with pytest.raises(ExportError, match="is the annotations database this export reads"):
            export_kaggle_csv(store, TASK, db)
        wal = Path(f"{db}-wal")
        if wal.exists():
            with pytest.raises(ExportError, match="annotations database"):
                export_json(store, TASK, None, wal)
        with pytest.raises(ExportError, match="is a TIFF image"):
            export_json(store, TASK, None, field / "cell1.tif")
        copy = tmp_path / "copy.sqlite"  # any SQLite file, by content
        copy.write_bytes(db.read_bytes())
        with pytest.raises(ExportError, match="is an SQLite database"):
            export_kaggle_csv(store, TASK, copy)
        blob = tmp_path / "notes.csv"
        blob.write_bytes(b"\x00\x01binary\xff")
        with pytest.raises(ExportError, match="binary file"):
            export_kaggle_csv(store, TASK, blob)
        assert store.integrity_ok()
        assert store.effective_labels(str(field / "cell1.tif"), TASK) == labels
        # an earlier export (text) is replaced as before
        out = tmp_path / "labels.csv"
        out.write_text("Id,Target\nold,1\n")
        assert export_kaggle_csv(store, TASK, out) == 1
        assert out.read_text(encoding="utf-8").splitlines() == ["Id,Target", "cell1,3"]
    assert (field / "cell1.tif").read_bytes() == raw


def test_a_full_disk_keeps_the_previous_exports(tiny_tmpfs: Path, tmp_path: Path) -> None:
    """On a real 64 KiB tmpfs: the new CSV, JSON and TIFF do not fit; the old ones stay."""
    with AnnotationStore(tmp_path / "db.sqlite") as store:
        first = tmp_path / "img_000.tif"
        _labelled(store, first)
        csv_out, json_out = tiny_tmpfs / "labels.csv", tiny_tmpfs / "labels.json"
        tiffs = tiny_tmpfs / "tiffs"
        export_kaggle_csv(store, TASK, csv_out)
        export_json(store, TASK, None, json_out)
        export_cell_tiff(store, TASK, tiffs)
        before = {p.relative_to(tiny_tmpfs): p.read_bytes() for p in tiny_tmpfs.rglob("*.*")}
        assert len(before) == 4  # the CSV, the JSON, one stack and its cell table

        for i in range(1, 700):  # a CSV and a JSON over 64 KiB: long names
            name = f"img_{i:03d}_{'x' * 100}.tif"
            store.set_user_label(str(tmp_path / name), TASK, i % 28, True)
        _labelled(store, first, size=384, seed=3)  # random cell ids: zlib cannot shrink them
        for export in (
            lambda: export_kaggle_csv(store, TASK, csv_out),
            lambda: export_json(store, TASK, None, json_out),
            lambda: export_cell_tiff(store, TASK, tiffs),
        ):
            with pytest.raises(OSError) as err:
                export()
            assert err.value.errno == errno.ENOSPC
    after = {p.relative_to(tiny_tmpfs): p.read_bytes() for p in tiny_tmpfs.rglob("*.*")}
    assert after == before  # byte for byte, and no temporary file is left
    assert not [p for p in tiny_tmpfs.rglob("*") if p.name.startswith(TMP_PREFIX)]
    assert json.loads(json_out.read_text())[0]["image"] == "img_000"


def test_a_one_page_stack_is_recognised_as_its_images(tmp_path: Path) -> None:
    """No class labelled yet: the stack has only its 'cells' page; an unrelated ``a.tif``
    in the folder is kept, and the stack is replaced by the next export, not duplicated."""
    source, out = tmp_path / "a.tif", tmp_path / "out"
    out.mkdir()
    (out / "a.tif").write_bytes(b"II*\x00 someone else's TIFF")
    with AnnotationStore(tmp_path / "db.sqlite") as store:
        mask = np.zeros((20, 20), np.int32)
        mask[2:9, 2:9] = 1
        store.add_image(str(source), "a", mask.shape)
        store.set_cell_mask(str(source), mask)
        for _ in range(2):
            assert export_cell_tiff(store, TASK, out) == [out / "a_2.tif"]
    assert (out / "a.tif").read_bytes() == b"II*\x00 someone else's TIFF"
    assert tifffile.imread(out / "a_2.tif").shape == (20, 20)
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "a_2.tif", CELL_CSV]
