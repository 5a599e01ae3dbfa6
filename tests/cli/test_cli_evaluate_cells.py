"""``napari-hpa evaluate --cells`` on real DULoc sets, and the bundled real HPA sample."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data

from napari_hpa.cli import main

CHANNELS = ("red", "green", "blue", "yellow")


def _duloc_subset(tmp_path: Path, ids: list[str]) -> tuple[Path, Path]:
    """A folder of a few DULoc sets (symlinks: the data stay where they are) and its CSV."""
    src = shared_data("hpa_duloc_single_cells")
    with (src / "labels.csv").open(newline="") as fh:
        targets = {r["Id"]: r["Target"] for r in csv.DictReader(fh)}
    folder = tmp_path / "sets"
    folder.mkdir()
    for i in ids:
        for ch in CHANNELS:
            os.symlink(src / "images" / f"{i}_{ch}.jpg", folder / f"{i}_{ch}.jpg")
    labels = tmp_path / "labels.csv"
    labels.write_text("Id,Target\n" + "".join(f"{i},{targets[i]}\n" for i in ids), "utf-8")
    return folder, labels


def test_evaluate_cells_scores_every_segmented_cell(tmp_path: Path, capsys) -> None:
    ids = ["comb1_mixed_img0", "comb1_mixed_img1"]
    folder, labels = _duloc_subset(tmp_path, ids)
    rc = main(["evaluate", "--cells", "--data", str(folder), "--labels", str(labels),
               "--device", "cpu", "--out", str(tmp_path / "report")])  # fmt: skip
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    assert out[-1].startswith("cell_top1=")
    keys = [line.split("=")[0] for line in out if "=" in line and not line.startswith(" ")]
    assert {"cell_top3", "cell_macro_f1", "image_top1", "image_top3"} <= set(keys)
    report = json.loads((tmp_path / "report" / "cell_metrics.json").read_text())
    assert report["images"] == 2
    # each DULoc set is 9 cells; the segmentation finds about that many
    assert 12 <= report["cells"] <= 24
    assert report["cell_top1"] == pytest.approx(float(out[-1].split("=")[1]), abs=1e-4)
    assert 0 <= report["cell_top1"] <= report["cell_top3"] <= 1


def test_evaluate_cells_names_a_folder_without_labelled_images(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    labels = tmp_path / "labels.csv"
    labels.write_text("Id,Target\nnothing,0\n", "utf-8")
    rc = main(["evaluate", "--cells", "--data", str(tmp_path / "empty"), "--labels", str(labels)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and ("empty" in err[0] or "nothing" in err[0])


def test_the_bundled_sample_is_the_real_hpa_field() -> None:
    from napari_hpa import _sample_data
    from napari_hpa.core.model.registry import sample_data_dir

    folder = sample_data_dir()
    assert "CC BY-SA" in (folder / "README.md").read_text("utf-8")
    layers = _sample_data.real_hpa()
    assert [kw["colormap"] for _, kw, _ in layers] == ["red", "green", "blue", "yellow"]
    data = np.asarray(layers[1][0])
    assert data.shape == (864, 864) and data.std() > 0.05  # a real protein image, not blank
