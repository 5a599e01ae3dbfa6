"""The review queue's state in the annotations database: reviewed items and the chosen order."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from napari_hpa.core.labels.store import (
    SCHEMA_VERSION,
    AnnotationStore,
    AnnotationStoreError,
    open_readonly,
)

TASK = "hpa28"
#: The tables of a version-1 file as napari-hpa before the review queue made them.
V1_TABLES = {"images", "labels", "masks", "cells", "history"}


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {r[0] for r in rows} - {"sqlite_sequence"}


def test_marked_and_corrected_items_count_as_reviewed(tmp_path: Path) -> None:
    with AnnotationStore(tmp_path / "a.sqlite") as store:
        assert store.reviewed(TASK) == set()
        store.set_model_labels("f/a", TASK, [0.6, 0.4], [0], "m@1")
        store.mark_reviewed("f/a", TASK)
        store.mark_reviewed("f/a", TASK)  # twice is once
        store.set_user_label("f/b", TASK, 1, True)  # a correction is a review
        store.set_user_label("f/c", TASK, 0, False, cell=3)  # of a cell too
        store.mark_reviewed("f/d", "other-task")
        assert store.reviewed(TASK) == {("f/a", 0), ("f/b", 0), ("f/c", 3)}
        assert store.reviewed("other-task") == {("f/d", 0)}
        store.remove_image("f/a")
        assert store.reviewed(TASK) == {("f/b", 0), ("f/c", 3)}


def test_a_new_mask_forgets_its_cells_reviews(tmp_path: Path) -> None:
    mask = np.zeros((8, 8), np.int32)
    mask[1:4, 1:4] = 1
    with AnnotationStore(tmp_path / "a.sqlite") as store:
        store.set_cell_mask("f/a", mask)
        store.mark_reviewed("f/a", TASK, cell=1)
        store.mark_reviewed("f/a", TASK)
        store.set_cell_mask("f/a", mask)  # the same cells: kept
        assert store.reviewed(TASK) == {("f/a", 0), ("f/a", 1)}
        mask[5:7, 5:7] = 2
        store.set_cell_mask("f/a", mask)  # other cells: cell 1 may be another cell now
        assert store.reviewed(TASK) == {("f/a", 0)}


def test_the_order_round_trips_per_task(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    with AnnotationStore(path) as store:
        assert store.review_order(TASK) is None
        store.set_review_order(TASK, "least_certain")
        assert store.review_order(TASK) == ("least_certain", None)
        store.set_review_order(TASK, "class", 5)
        store.set_review_order("hela10", "file")
        with pytest.raises(ValueError, match="out of range"):
            store.set_review_order(TASK, "class", -1)
    with open_readonly(path) as reader:  # reopened, and by a reader that writes nothing
        assert reader.review_order(TASK) == ("class", 5)
        assert reader.review_order("hela10") == ("file", None)
        assert reader.review_order("bach4") is None


def test_the_file_stays_version_1_and_older_files_read_as_empty(tmp_path: Path) -> None:
    """A file no queue touched keeps the version-1 tables; the readers take it as empty.
    One the queue wrote keeps version 1 with two more tables, which older versions (they
    check the version only) never read, so they open it as before."""
    old = tmp_path / "old.sqlite"
    with AnnotationStore(old) as store:
        store.set_user_label("f/b", TASK, 1, True)
    assert _tables(old) == V1_TABLES
    with open_readonly(old) as reader:  # read-only: the tables cannot be made here
        assert reader.reviewed(TASK) == {("f/b", 0)}
        assert reader.review_order(TASK) is None
        with pytest.raises(AnnotationStoreError):
            reader.mark_reviewed("f/b", TASK)
    assert _tables(old) == V1_TABLES

    with AnnotationStore(old) as store:
        store.mark_reviewed("f/a", TASK)
        store.set_review_order(TASK, "lowest_confidence")
    assert _tables(old) == V1_TABLES | {"reviewed", "review_orders"}
    with sqlite3.connect(old) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1
    with open_readonly(old) as reader:
        assert reader.integrity_ok()
        assert reader.user_labels("f/b", TASK) == {1: True}
        assert reader.reviewed(TASK) == {("f/a", 0), ("f/b", 0)}


def test_bad_stored_order_values_read_safely(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    with AnnotationStore(path) as store:
        store.set_review_order(TASK, "class", 2)
    with sqlite3.connect(path) as conn:  # a damaged or hostile file's class id
        conn.execute("UPDATE review_orders SET class = 1e23")
    with open_readonly(path) as reader:
        assert reader.review_order(TASK) == ("class", None)
