"""``napari-hpa export``: CSV, JSON and per-cell TIFFs from an annotations database."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_hpa.cli import main
from napari_hpa.core.labels.store import AnnotationStore
from napari_hpa.core.tasks import HPA28_CLASSES

TASK = "hpa28"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Two images: a corrected one with two cells, and a model-only one."""
    path = tmp_path / ".napari-hpa" / "annotations.sqlite"
    labels = np.zeros((40, 40), np.int32)
    labels[2:15, 2:15] = 1
    labels[20:35, 20:38] = 2
    probs = np.full(28, 0.1)
    probs[[0, 25]] = 0.9
    with AnnotationStore(path) as store:
        a, b = str(tmp_path / "img_a"), str(tmp_path / "img_b")
        store.add_image(a, "img_a", (40, 40))
        store.set_model_labels(a, TASK, probs, [0, 25], "tiny@1")
        store.set_user_label(a, TASK, 25, False)
        store.set_user_label(a, TASK, 23, True)
        store.set_cell_mask(a, labels)
        store.set_model_labels(a, TASK, probs, [0], "tiny@1", cell=1)
        store.set_user_label(a, TASK, 23, True, cell=2)
        store.add_image(b, "img_b", (40, 40))
        store.set_model_labels(b, TASK, probs, [0, 25], "tiny@1")
    return path


def test_export_csv(db: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out" / "labels.csv"
    assert main(["export", "--db", str(db), "--format", "csv", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert rows == [{"Id": "img_a", "Target": "0 23"}, {"Id": "img_b", "Target": "0 25"}]
    assert "wrote 2 image(s)" in capsys.readouterr().out
    only = tmp_path / "corrected.csv"
    assert main(["export", "--db", str(db), "--out", str(only), "--only-corrected"]) == 0
    assert [r["Id"] for r in csv.DictReader(only.open())] == ["img_a"]


def test_export_json(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "labels.json"
    assert main(["export", "--db", str(db), "--out", str(out)]) == 0  # format from suffix
    items = {i["image"]: i for i in json.loads(out.read_text())}
    a = items["img_a"]
    assert a["labels"] == [HPA28_CLASSES[0], HPA28_CLASSES[23]] and a["origin"] == "user"
    assert {c["cell"]: c["label_ids"] for c in a["cells"]} == {1: [0], 2: [23]}
    assert items["img_b"]["origin"] == "model" and items["img_b"]["cells"] == []


def test_export_tiff(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiffs"
    assert main(["export", "--db", str(db), "--format", "tiff", "--out", str(out)]) == 0
    stack = tifffile.imread(out / "img_a.tif")
    assert stack.shape == (29, 40, 40)
    assert set(np.unique(stack[0])) == {0, 1, 2}
    assert set(np.unique(stack[1 + 23])) == {0, 2}  # only cell 2 has Mitochondria
    assert (out / "cell_labels.csv").is_file()
    assert not (out / "img_b.tif").exists()  # no cell mask, no TIFF


def test_user_errors_exit_2(db: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.sqlite"
    assert main(["export", "--db", str(missing), "--out", str(tmp_path / "x.csv")]) == 2
    assert "no such annotations database" in capsys.readouterr().err
    assert not missing.exists()  # never creates an empty database
    assert (
        main(["export", "--db", str(db), "--task", "bach4", "--out", str(tmp_path / "x.csv")]) == 2
    )
    assert "no labels for task 'bach4'" in capsys.readouterr().err
    not_db = tmp_path / "text.sqlite"
    not_db.write_text("hello, not SQLite at all" * 100)
    assert main(["export", "--db", str(not_db), "--out", str(tmp_path / "x.csv")]) == 2
    assert (
        main(["export", "--db", str(db), "--format", "tiff", "--out", str(tmp_path / "x.tif")]) == 2
    )
