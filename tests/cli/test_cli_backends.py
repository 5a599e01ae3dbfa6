"""``--backend``: predict and batch give torch's labels and probabilities on real images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data

from napari_hpa.cli import main
from napari_hpa.core.model.backends import is_installed

RUNTIMES = [b for b in ("onnxruntime", "openvino") if is_installed(b)]


def _composites(n: int) -> list[Path]:
    return sorted((shared_data("hpa_class_examples_composite") / "images").glob("*.jpg"))[:n]


def _predict(images: list[Path], backend: str, out: Path) -> dict[str, dict]:
    args = ["predict", *map(str, images), "--backend", backend, "--device", "cpu"]
    assert main([*args, "--out", str(out)]) == 0
    return {r["image"]: r for r in json.loads(out.read_text())["results"]}


@pytest.mark.skipif(not RUNTIMES, reason="neither onnxruntime nor openvino is installed")
def test_predict_backends_agree_with_torch_on_real_composites(tmp_path: Path) -> None:
    images = _composites(8)
    expected = _predict(images, "torch", tmp_path / "torch.json")
    assert len(expected) == len(images)
    for backend in RUNTIMES:
        got = _predict(images, backend, tmp_path / f"{backend}.json")
        assert got.keys() == expected.keys()
        for image, row in expected.items():
            assert got[image]["predicted_names"] == row["predicted_names"], (backend, image)
            probs = np.array(list(got[image]["probabilities"].values()))
            wanted = np.array(list(row["probabilities"].values()))
            assert np.abs(probs - wanted).max() < 1e-3, (backend, image)


def _table(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {row["image"]: row for row in csv.DictReader(f)}


@pytest.mark.slow  # 9 s; predict's agreement test covers the runtimes in the default run
@pytest.mark.skipif(not RUNTIMES, reason="neither onnxruntime nor openvino is installed")
def test_batch_with_auto_gives_the_torch_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = shared_data("hpa_class_examples_composite") / "images"
    common = [str(folder), "--glob", "1[0-2]-*-a.jpg", "--device", "cpu", "--workers", "1"]
    assert main(["batch", *common, "--out", str(tmp_path / "t.csv"), "--backend", "torch"]) == 0
    assert "on torch" in capsys.readouterr().out
    assert main(["batch", *common, "--out", str(tmp_path / "a.csv")]) == 0  # auto, the default
    summary = capsys.readouterr().out  # auto: the runtime measured fastest here
    assert "on onnxruntime" in summary or "on openvino" in summary, summary

    expected, got = _table(tmp_path / "t.csv"), _table(tmp_path / "a.csv")
    assert len(expected) >= 5 and got.keys() == expected.keys()
    classes = [c for c in next(iter(expected.values())) if c not in ("image", "model")]
    for image, row in expected.items():
        for name in classes:
            try:
                wanted = float(row[name])
            except ValueError:  # the text columns (predicted names, status)
                assert got[image][name] == row[name], (image, name)
                continue
            assert abs(float(got[image][name]) - wanted) < 1e-3, (image, name)
