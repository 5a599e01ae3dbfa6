"""Cells of corrected images train the model: samples, labels, tiles, one real training."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from support.helpers import tiny_spec

from napari_hpa.cli import main
from napari_hpa.core.image.cells import cell_crops, segment_image
from napari_hpa.core.image.io import read_image
from napari_hpa.core.image.sources import find_images
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.labels.store import AnnotationStore
from napari_hpa.core.model.checkpoint import read_spec
from napari_hpa.core.model.tiles import prepare_cell
from napari_hpa.core.tasks import get_task
from napari_hpa.core.train.cells import CellViews, cell_key, pick_cells, split_cell_key
from napari_hpa.core.train.data import load_annotations, split

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corrected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], dict]:
    """Six generated fields, corrected; the first four with their segmented cells stored."""
    root = tmp_path_factory.mktemp("cells")
    images = write_samples(root / "images", n=6, size=96, seed=3, classes=[0, 25], n_labels=1)
    rows = [line.split(",") for line in (images / "labels.csv").read_text().splitlines()[1:]]
    labels = {i: int(t.split()[0]) for i, t in rows}
    db = root / "annotations.sqlite"
    sources = find_images(images)
    masks = {}
    with AnnotationStore(db) as store:
        for n, source in enumerate(sources):
            store.set_user_labels(source, "hpa28", {labels[Path(source).name]: True})
            if n < 4:
                image = read_image(source)
                masks[source] = segment_image(image)
                store.set_cell_mask(source, masks[source])
    return db, sources, masks


def test_keys_round_trip_and_cells_are_picked_evenly() -> None:
    assert split_cell_key(cell_key("/a/b#x", 12)) == ("/a/b#x", 12)
    assert split_cell_key("/a/b.png") is None and split_cell_key("/a#cell=0") is None
    assert pick_cells(list(range(1, 41)), 5) == [1, 11, 21, 30, 40]


def test_corrected_images_bring_their_cells_with_weak_or_own_labels(corrected) -> None:
    db, sources, masks = corrected
    first = sources[0]
    cells = sorted(int(c) for c in np.unique(masks[first]) if c)
    assert len(cells) >= 2, "the generated field should hold several cells"
    with AnnotationStore(db) as store:  # the user says cell 1 is Mitochondria only
        store.set_user_labels(first, "hpa28", {23: True}, cell=cells[0])
        image_label = store.user_labels(first, "hpa28")
    task = get_task("hpa28")
    data = load_annotations(db, task)
    by_source = {s.source: s for s in data.samples}
    assert data.mask_db == str(db) and "cells)" in data.origin
    assert {s.source for s in data.samples if split_cell_key(s.source) is None} == set(sources)
    n_cells = sum(min(16, len([c for c in np.unique(m) if c])) for m in masks.values())
    assert len(data.samples) == len(sources) + n_cells
    weak = by_source[cell_key(first, cells[1])]
    own = by_source[cell_key(first, cells[0])]
    image_class = task.class_index(next(c for c, v in image_label.items() if v))
    assert weak.targets == (image_class,) and weak.group == first
    assert own.targets == (task.class_index(23),)
    # an image and its cells stay on one side of the validation split
    for seed in range(5):
        train, val = split(data, 0.3, seed)
        side = {s.source: "t" for s in train} | {s.source: "v" for s in val}
        for s in data.samples:
            if s.group is not None:
                assert side[s.source] == side[s.group]
    assert len(load_annotations(db, task, cells=False).samples) == len(sources)


def test_a_cell_tile_is_the_predictors_tile(corrected) -> None:
    db, sources, masks = corrected
    spec = tiny_spec(get_task("hpa28")).input
    spec = replace(spec, cell_fit="square", mean=[0.2] * 4, std=[0.5] * 4)
    source = sources[1]
    image = read_image(source)
    cell, crop = cell_crops(image.data, masks[source])[0]
    expected = prepare_cell(crop, image.channel_names, spec)[0]
    view = CellViews(db).view(cell_key(source, cell), spec)
    mean = np.asarray(spec.mean, np.float32)[:, None, None]
    np.testing.assert_allclose((view - mean) / 0.5, expected, atol=1e-5)
    with pytest.raises(ValueError, match="not in the stored cell mask"):
        CellViews(db).view(cell_key(source, 999), spec)
    with pytest.raises(ValueError, match="no cell mask stored"):
        CellViews(db).view(cell_key(sources[5], 1), spec)


def test_train_on_a_database_with_cells(corrected, tmp_path: Path, capsys) -> None:
    """``napari-hpa train --db``: the cells go through the loader and the validation."""
    db, _sources, _masks = corrected
    rc = main(["train", "--db", str(db), "--arch", "small_cnn", "--width", "4", "--size", "32",
               "--epochs", "1", "--batch-size", "8", "--val-fraction", "0.3", "--task", "hpa28",
               "--out-root", str(tmp_path), "--name", "cells", "--progress", "none"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    saved = next(tmp_path.glob("cells-v*"))
    spec = read_spec(saved)
    assert spec.training["n_train"] + spec.training["n_val"] > 6
