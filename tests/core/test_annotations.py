"""Tests for napari_hpa.core.labels.store (SQLite label store) and napari_hpa.core.labels.export."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from napari_hpa.core.labels.export import (
    CELL_CSV,
    export_cell_tiff,
    export_json,
    export_kaggle_csv,
    image_summaries,
)
from napari_hpa.core.labels.store import (
    SCHEMA_VERSION,
    AnnotationStore,
    AnnotationStoreError,
    Edit,
    default_db_path,
)

T = "hpa28"
A, B = "/data/hpa/img_a", "/data/hpa/img_b"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ann" / "annotations.sqlite"


@pytest.fixture
def store(db: Path):
    with AnnotationStore(db) as s:
        yield s


def _mask() -> np.ndarray:
    m = np.zeros((40, 50), np.int32)
    m[2:12, 3:20] = 1
    m[20:35, 5:15] = 2
    m[15:38, 30:48] = 5
    return m


def test_pragmas_and_schema(store: AnnotationStore, db: Path):
    assert db.exists()
    assert store.journal_mode == "wal"
    other = sqlite3.connect(db)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in other.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        other.close()
    assert {"images", "labels", "masks", "cells", "history"} <= tables
    assert store._q("PRAGMA synchronous") == [(2,)]  # FULL
    assert store._q("PRAGMA foreign_keys") == [(1,)]
    assert store.integrity_ok()


def test_default_db_path(tmp_path: Path):
    img = tmp_path / "plate1" / "x.tif"
    img.parent.mkdir()
    img.write_bytes(b"")
    assert default_db_path(img) == tmp_path / "plate1" / ".napari-hpa" / "annotations.sqlite"
    assert default_db_path(img.parent) == img.parent / ".napari-hpa" / "annotations.sqlite"
    # An HPA source "<folder>/<id>" is not a file: its folder is used.
    assert default_db_path(img.parent / "57_F11_1").parent.parent == img.parent


def test_bad_files(tmp_path: Path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(AnnotationStoreError):
        AnnotationStore(junk)
    foreign = tmp_path / "foreign.sqlite"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE t(x)")
    con.commit()
    con.close()
    with pytest.raises(AnnotationStoreError, match="not a napari-hpa"):
        AnnotationStore(foreign)
    newer = tmp_path / "newer.sqlite"
    AnnotationStore(newer).close()
    con = sqlite3.connect(newer)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(AnnotationStoreError, match="newer"):
        AnnotationStore(newer)


def test_images(store: AnnotationStore):
    pk = store.add_image(A, "img_a", shape=(4, 100, 120))
    assert store.add_image(A) == pk  # idempotent, keeps the id and shape
    store.add_image(B)
    recs = store.images()
    assert [r.source for r in recs] == [A, B]
    assert (recs[0].image_id, recs[0].height, recs[0].width) == ("img_a", 100, 120)
    assert recs[1].image_id == "img_b" and recs[1].width is None and not recs[1].has_mask
    assert store.image_ids() == {A: "img_a", B: "img_b"}


def test_model_labels(store: AnnotationStore):
    store.set_model_labels(A, T, [0.9, 0.1, 0.7, 0.2], [0, 2], "small-cnn@1")
    assert store.model_labels(A, T) == {0, 2}
    assert store.model_scores(A, T) == pytest.approx({0: 0.9, 1: 0.1, 2: 0.7, 3: 0.2})
    assert store.model_id(A, T) == "small-cnn@1"
    assert store.effective_labels(A, T) == {0, 2}
    assert store.user_labels(A, T) == {}
    assert not store.is_corrected(A, T)
    # A new prediction replaces the old one completely.
    store.set_model_labels(A, T, np.array([0.1, 0.8]), [1], "small-cnn@2")
    assert store.model_scores(A, T) == pytest.approx({0: 0.1, 1: 0.8})
    assert store.effective_labels(A, T) == {1}
    # Other tasks and cells are separate.
    store.set_model_labels(A, "hela10", [], [3], "m")
    store.set_model_labels(A, T, [0.2, 0.3, 0.9], [2], "m", cell=4)
    assert store.effective_labels(A, "hela10") == {3}
    assert store.model_scores(A, "hela10") == {}
    assert store.effective_labels(A, T, cell=4) == {2}
    assert store.effective_labels(A, T) == {1}
    assert store.tasks() == ["hela10", T]
    with pytest.raises(ValueError):
        store.set_model_labels(A, T, [0.5, 0.5], [7], "m")
    assert store.effective_labels(A, T) == {1}  # failed call changed nothing


def test_user_labels_override_and_persist(db: Path):
    with AnnotationStore(db) as store:
        store.set_model_labels(A, T, [0.9, 0.1, 0.7], [0, 2], "m")
        assert store.set_user_label(A, T, 2, False)
        assert store.set_user_label(A, T, 1, True)
        assert not store.set_user_label(A, T, 1, True)  # no-op, not logged
        assert store.user_labels(A, T) == {1: True, 2: False}
        assert store.effective_labels(A, T) == {0, 1}
        assert store.model_labels(A, T) == {0, 2}
        assert store.is_corrected(A, T) and store.is_corrected(A, T, cell=0)
        assert not store.is_corrected(A, T, cell=3)
        assert store.set_user_label(A, T, 2, None)  # clear: back to the model
        assert store.effective_labels(A, T) == {0, 1, 2}
    with AnnotationStore(db) as again:  # a new object sees every edit
        assert again.user_labels(A, T) == {1: True}
        assert again.effective_labels(A, T) == {0, 1, 2}
        assert again.integrity_ok()


def test_other_process_reads_committed_edit(store: AnnotationStore, db: Path):
    store.set_user_label(A, T, 5, True, cell=3)
    code = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); print(c.execute("
        '"SELECT i.source, l.cell, l.class, l.value, l.origin FROM labels l JOIN images i '
        'ON i.id = l.image").fetchall())'
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert f"[('{A}', 3, 5, 1, 'user')]" in res.stdout


def test_undo_redo(db: Path):
    with AnnotationStore(db) as store:
        assert store.undo() is None and store.redo() is None
        store.set_model_labels(A, T, [0.9, 0.1, 0.8], [0, 2], "m")
        store.set_user_label(A, T, 1, True)
        store.set_user_label(A, T, 0, False)
        assert store.effective_labels(A, T) == {1, 2}
        assert store.undo() == [Edit(A, 0, T, 0, False, None)]
        assert store.effective_labels(A, T) == {0, 1, 2}
        assert store.undo() == [Edit(A, 0, T, 1, True, None)]
        assert store.effective_labels(A, T) == {0, 2}
        assert store.undo() is None  # model predictions are not undoable edits
        assert store.redo() == [Edit(A, 0, T, 1, None, True)]
        assert store.effective_labels(A, T) == {0, 1, 2}
        assert store.can_undo() and store.can_redo()
    with AnnotationStore(db) as store:  # the stack survives a reopen
        assert store.redo() == [Edit(A, 0, T, 0, None, False)]
        assert store.effective_labels(A, T) == {1, 2}
        store.undo()
        store.set_user_label(A, T, 2, False)  # a new edit drops the redo chain
        assert not store.can_redo() and store.redo() is None
        # accept_model copies every model value (one step, undone as a whole).
        edits = store.accept_model(A, T)
        assert {e.class_index for e in edits} == {0, 1, 2}
        assert store.user_labels(A, T) == {0: True, 1: False, 2: True}
        assert len(store.undo()) == 3
        assert store.user_labels(A, T) == {1: True, 2: False}
        store.clear_user_labels(A, T)
        assert store.user_labels(A, T) == {}
        store.undo()
        assert store.user_labels(A, T) == {1: True, 2: False}


def test_corrections_and_counts(store: AnnotationStore):
    store.set_model_labels(A, T, [0.9, 0.1, 0.8], [0, 2], "m")
    store.set_model_labels(B, T, [0.9, 0.6, 0.1], [0, 1], "m")
    store.set_model_labels("/c", T, [0.1, 0.1, 0.9], [2], "m")
    store.add_image(A, "img_a")
    store.set_user_label(A, T, 2, False)
    store.set_user_label(B, T, 2, True, cell=7)
    store.set_user_label(B, T, 0, True, cell=8)
    assert store.corrected_images(T) == [(A, "img_a", {0})]
    assert store.corrected_cells(T) == [(B, "img_b", 7, {2}), (B, "img_b", 8, {0})]
    assert store.class_counts(T) == {0: (1, 1), 2: (0, 1)}
    assert store.class_counts(T, corrected_only=False) == {0: (2, 1), 1: (1, 0), 2: (1, 1)}
    table = store.effective_table(T)
    assert table[(A, 0)] == ({0}, "user") and table[("/c", 0)] == ({2}, "model")
    assert store.corrected_images("other") == [] and store.class_counts("other") == {}
    from napari_hpa.core.tasks import get_task

    assert store.corrected_images(get_task(T)) == store.corrected_images(T)  # Task = its name


def test_cell_masks(store: AnnotationStore):
    assert store.cell_mask(A) is None and store.cells(A) == []
    m = _mask()
    store.set_cell_mask(A, m.astype(np.uint16))
    back = store.cell_mask(A)
    assert back.dtype == np.int32 and np.array_equal(back, m)
    assert store.cells(A) == [1, 2, 5]
    info = store.cell_info(A)
    assert info[1]["area"] == 170 and info[1]["bbox"] == (2, 3, 12, 20)
    rec = store.images()[0]
    assert rec.has_mask and (rec.height, rec.width) == (40, 50)
    store.set_user_label(A, T, 3, True, cell=2)
    store.set_user_label(A, T, 4, True)
    store.set_cell_mask(A, m)  # same mask: labels stay
    assert store.effective_labels(A, T, cell=2) == {3}
    m2 = m.copy()
    m2[m2 == 5] = 0
    store.set_cell_mask(A, m2, keep_labels=True)
    assert store.effective_labels(A, T, cell=2) == {3} and store.cells(A) == [1, 2]
    store.set_cell_mask(A, m)  # a new segmentation: cell labels go, image labels stay
    assert store.effective_labels(A, T, cell=2) == set()
    assert store.effective_labels(A, T) == {4}
    assert store.undo() == [Edit(A, 0, T, 4, True, None)]  # the dropped cell edit is skipped
    with pytest.raises(ValueError):
        store.set_cell_mask(A, np.zeros((3, 4, 5), np.int32))
    assert store.remove_image(A) and store.cell_mask(A) is None and store.images() == []
    assert store.integrity_ok()


def test_transaction_batch_and_rollback(store: AnnotationStore):
    with store.transaction():
        for i in range(20):
            store.set_model_labels(f"/img{i}", T, [0.2, 0.9], [1], "m")
    assert len(store.images()) == 20
    with pytest.raises(RuntimeError), store.transaction():
        store.set_user_label("/img0", T, 0, True)
        raise RuntimeError("boom")
    assert store.user_labels("/img0", T) == {}
    assert not store.can_undo()


def test_threads(store: AnnotationStore):
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(15):
                store.set_user_label(f"/t{k}", T, i, bool(i % 2))
                store.effective_labels(f"/t{k}", T)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(len(store.user_labels(f"/t{k}", T)) == 15 for k in range(4))
    assert store.integrity_ok()


@pytest.fixture
def filled(store: AnnotationStore) -> AnnotationStore:
    store.add_image(A, "img_a")
    store.add_image(B, "img_b")
    store.add_image("/x/img_c", "img_c")
    store.set_model_labels(A, T, [0.9, 0.1, 0.8, 0.0], [0, 2], "m@1")
    store.set_user_label(A, T, 3, True)
    store.set_model_labels(B, T, [0.1, 0.95, 0.1, 0.1], [1], "m@1")
    store.set_cell_mask(B, _mask())
    store.set_user_label(B, T, 0, True, cell=1)
    store.set_model_labels(B, T, [0.1, 0.2, 0.9, 0.3], [2], "m@1", cell=5)
    return store


def test_summaries(filled: AnnotationStore):
    s = {x.source: x for x in image_summaries(filled, T)}
    assert s[A].labels == {0, 2, 3} and s[A].origin == "user" and s[A].model == "m@1"
    assert s[B].cells == {1: ({0}, "user"), 2: (set(), None), 5: ({2}, "model")}
    assert s["/x/img_c"].labels == set() and s["/x/img_c"].origin is None
    assert [x.source for x in image_summaries(filled, T, only_corrected=True)] == [A, B]


def test_export_kaggle_csv(filled: AnnotationStore, tmp_path: Path):
    out = tmp_path / "out" / "labels.csv"
    assert export_kaggle_csv(filled, T, out) == 3
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["Id", "Target"]
    assert rows[1:] == [["img_a", "0 2 3"], ["img_b", "1"], ["img_c", ""]]
    assert export_kaggle_csv(filled, T, out, classes_only_corrected=True) == 2
    with open(out, newline="") as fh:
        assert [r["Id"] for r in csv.DictReader(fh)] == ["img_a", "img_b"]


def test_export_json(filled: AnnotationStore, tmp_path: Path):
    names = ["Nucleoplasm", "Nuclear membrane", "Nucleoli", "Nucleoli fibrillar center"]
    out = tmp_path / "labels.json"
    assert export_json(filled, T, names, out) == 3
    data = json.loads(out.read_text())
    assert [d["image"] for d in data] == ["img_a", "img_b", "img_c"]
    a = data[0]
    assert set(a) >= {"image", "source", "labels", "label_ids", "cells", "origin"}
    assert a["source"] == A and a["label_ids"] == [0, 2, 3]
    assert a["labels"] == ["Nucleoplasm", "Nucleoli", "Nucleoli fibrillar center"]
    assert a["origin"] == "user" and a["scores"]["Nucleoplasm"] == pytest.approx(0.9)
    b = data[1]
    assert b["cells"][0] == {
        "cell": 1,
        "labels": ["Nucleoplasm"],
        "label_ids": [0],
        "origin": "user",
    }
    assert [c["cell"] for c in b["cells"]] == [1, 2, 5] and b["cells"][1]["origin"] is None
    assert data[2]["labels"] == [] and data[2]["cells"] == [] and data[2]["origin"] is None


def test_export_cell_tiff(filled: AnnotationStore, tmp_path: Path):
    import tifffile

    out_dir = tmp_path / "tiff"
    names = ["n0", "n1", "n2"]
    paths = export_cell_tiff(filled, T, out_dir, class_names=names)
    assert [p.name for p in paths] == ["img_b.tif"]  # only images with a mask
    stack = tifffile.imread(paths[0])
    m = _mask()
    assert stack.shape == (4, 40, 50) and stack.dtype == np.uint16
    assert np.array_equal(stack[0], m)
    assert np.array_equal(stack[1], np.where(m == 1, 1, 0))  # class 0: cell 1
    assert not stack[2].any()  # class 1: no cell
    assert np.array_equal(stack[3], np.where(m == 5, 5, 0))  # class 2: cell 5
    with tifffile.TiffFile(paths[0]) as tif:
        assert tif.imagej_metadata["Labels"] == ["cells", *names]
    with open(out_dir / CELL_CSV, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["cell"], r["label_ids"], r["labels"], r["origin"]) for r in rows] == [
        ("1", "0", "n0", "user"),
        ("2", "", "", ""),
        ("5", "2", "n2", "model"),
    ]
    assert rows[0]["file"] == "img_b.tif" and rows[0]["area"] == "170"
    # Without names: pages up to the highest class used.
    assert tifffile.imread(export_cell_tiff(filled, T, tmp_path / "t2")[0]).shape == (4, 40, 50)
    # Only the classes present in the image, named.
    path = export_cell_tiff(filled, T, tmp_path / "t3", names, all_classes=False)[0]
    with tifffile.TiffFile(path) as tif:
        assert tif.imagej_metadata["Labels"] == ["cells", "n0", "n2"]
        assert np.array_equal(tif.asarray()[2], np.where(m == 5, 5, 0))
