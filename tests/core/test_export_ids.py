"""Exported image ids: Kaggle's bare ``Id`` (no extension, no ``_green``), read back by training."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.image.writers import write_image
from napari_hpa.core.labels.export import export_id, export_json, export_kaggle_csv
from napari_hpa.core.labels.store import AnnotationStore
from napari_hpa.core.train.data import load_csv

TASK = "hpa28"


@pytest.mark.parametrize(
    ("image_id", "source", "expected"),
    [
        ("0-2-a.jpg", "/f/0-2-a.jpg", "0-2-a"),
        ("0-2-a", "/f/0-2-a.jpg", "0-2-a"),
        ("x.ome.tif", "/f/x.ome.tif", "x"),
        ("abc", "/f/abc", "abc"),  # an HPA set: already bare
        ("abc_green.png", "/f/abc_green.png", "abc"),
        ("abc_green", "/f/abc_green.png", "abc"),  # napari's own reader: the layer's name
        ("v1.2_scan", "/f/v1.2_scan.tiff", "v1.2_scan"),  # a dot inside the id stays
        ("blobs", "layer:blobs", "blobs"),
    ],
)
def test_export_id(image_id: str, source: str, expected: str) -> None:
    assert export_id(image_id, source) == expected


def _rows(path: Path) -> dict[str, str]:
    return {r["Id"]: r["Target"] for r in csv.DictReader(path.open(encoding="utf-8"))}


def test_kaggle_csv_ids_are_bare_and_read_back(tmp_path: Path) -> None:
    """The Ids of an export match the images when training reads the CSV, as the old Ids do."""
    folder = write_samples(tmp_path / "images", n=1, size=64, seed=1)  # the set synth_0000
    gray = np.random.default_rng(0).random((1, 64, 64)).astype(np.float32)
    write_image(folder / "0-2-a.jpg", gray)
    write_image(folder / "def_green.png", gray)  # a lone Kaggle protein file
    hpa, jpg, green = str(folder / "synth_0000"), str(folder / "0-2-a.jpg"), str(folder / "def")
    with AnnotationStore(tmp_path / "db.sqlite") as store:
        store.add_image(hpa, "synth_0000")
        store.set_user_label(hpa, TASK, 3, True)
        store.set_user_label(jpg, TASK, 5, True)  # a label set first: the store names it 0-2-a.jpg
        assert store.image_ids()[jpg] == "0-2-a.jpg"
        napari_own = str(folder / "def_green.png")  # what napari's builtin reader names it
        store.add_image(napari_own, "def_green")
        store.set_user_label(napari_own, TASK, 7, True)
        out = tmp_path / "labels.csv"
        assert export_kaggle_csv(store, TASK, out) == 3
        export_json(store, TASK, None, tmp_path / "labels.json")
    assert _rows(out) == {"synth_0000": "3", "0-2-a": "5", "def": "7"}
    images = {i["image"] for i in json.loads((tmp_path / "labels.json").read_text())}
    assert images == {"synth_0000", "0-2-a", "def"}

    read = load_csv(folder, out, TASK)
    assert {s.source: s.targets for s in read.samples} == {hpa: (3,), jpg: (5,), green: (7,)}
    # a CSV written before (Ids with the extension) still matches the same images
    old = tmp_path / "old.csv"
    old.write_text("Id,Target\nsynth_0000,3\n0-2-a.jpg,5\n", encoding="utf-8")
    assert {s.source: s.targets for s in load_csv(folder, old, TASK).samples} == {
        hpa: (3,),
        jpg: (5,),
    }


def test_ids_that_would_collide_keep_what_tells_them_apart(tmp_path: Path) -> None:
    """``a.png`` and ``a.tif`` in one folder: two rows, never one Id twice."""
    with AnnotationStore(tmp_path / "db.sqlite") as store:
        for i, name in enumerate(("a.png", "a.tif", "b.png")):
            store.set_user_label(str(tmp_path / name), TASK, i, True)
        (tmp_path / "other").mkdir()
        store.add_image(str(tmp_path / "other" / "b"), "b")  # an HPA set of the same id
        store.set_user_label(str(tmp_path / "other" / "b"), TASK, 9, True)
        out = tmp_path / "labels.csv"
        export_kaggle_csv(store, TASK, out)
    rows = _rows(out)
    assert len(rows) == 4
    assert rows["a.png"] == "0" and rows["a.tif"] == "1"
    assert rows["b.png"] == "2" and rows["b"] == "9"
