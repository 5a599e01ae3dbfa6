"""The bundled EfficientNet-Lite0 models: they load, predict through the Predictor and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data
from PIL import Image

from napari_hpa.cli import main
from napari_hpa.cli.models import measured_on
from napari_hpa.core.image.io import ImageData, read_image
from napari_hpa.core.model.checkpoint import load_model
from napari_hpa.core.model.predict import Predictor
from napari_hpa.core.model.registry import bundled_models_dir, resolve_model
from napari_hpa.core.tasks import HPA_CHANNELS

HPA = "hpa28-efficientnet_lite0"
PLANKTON = "plankton121-efficientnet_lite0"
LUNG = "lung3-efficientnet_lite0"
MAX_BYTES = 25 * 1024 * 1024


def _folder(name: str) -> Path:
    folder = bundled_models_dir() / name
    if not (folder / "model.json").is_file():
        pytest.skip(f"bundled model {name} not built (python benchmarks/train_bundled.py)")
    return folder


@pytest.mark.parametrize("name", [HPA, PLANKTON, LUNG])
def test_bundled_model_folder(name: str) -> None:
    folder = _folder(name)
    for part in ("model.safetensors", "model.json", "README.md", "report"):
        assert (folder / part).exists(), part
    assert (folder / "model.safetensors").stat().st_size <= MAX_BYTES
    loaded = load_model(folder)
    assert loaded.spec.arch == "efficientnet_lite0"
    assert loaded.spec.metrics, "model.json must carry the held-out metrics"
    assert resolve_model(name).path.resolve() == folder.resolve()
    meta = json.loads((folder / "model.json").read_text())
    if name != LUNG:  # the lung model's statistics were fitted by napari-hpa train
        assert meta["input"]["mean"] == [0.5] * len(meta["input"]["channels"])
    assert measured_on(resolve_model(name)).find("held-out") >= 0  # what `models` shows


def test_hpa_model_spec_and_channels() -> None:
    pred = Predictor(_folder(HPA), device="cpu")
    spec = pred.spec
    assert spec.task.kind == "multilabel" and spec.task.num_classes == 28
    assert tuple(spec.input.channels) == HPA_CHANNELS
    assert "er" in spec.input.optional_channels
    assert len(spec.thresholds) == 28 and all(0 < t < 1 for t in spec.thresholds)
    rng = np.random.default_rng(0)
    rgb = rng.random((3, 300, 260)).astype(np.float32)
    as_rgb = ImageData(rgb, ("red", "green", "blue"), (), "x", "x", {})
    er = rng.random((1, 300, 260)).astype(np.float32)
    as_hpa = ImageData(np.concatenate([rgb, er]), HPA_CHANNELS, (), "x", "x", {})
    p_rgb = pred.predict_one(as_rgb).probabilities
    p_hpa = pred.predict_one(as_hpa).probabilities
    assert p_rgb.shape == p_hpa.shape == (28,)
    # ER is live (chosen by cross-validation, model card): the 4-channel set's ER counts,
    # and a composite without it still gets an answer (ER optional, zeros).
    assert np.abs(p_rgb - p_hpa).max() > 1e-4
    # cells reach the network as in training: masked square crops, blended with the image
    assert spec.input.cell_fit == "square" and 0 < spec.cell_context < 1
    protein_only = ImageData(rgb[1:2], ("protein",), (), "x", "x", {})
    assert pred.predict_one(protein_only).probabilities.shape == (28,)


def test_hpa_model_on_a_real_composite() -> None:
    folder = _folder(HPA)
    split = json.loads((folder / "report" / "split.json").read_text())
    data = shared_data("hpa_class_examples_composite")
    held = [f for f in split["held_out"] if f.startswith("images/")]
    pred = Predictor(folder, device="cpu")
    # Nucleoli examples are among the easiest: the model should put the class in its top 3.
    name = next((f for f in held if Path(f).name.startswith("2-")), held[0])
    p = pred.predict_one(read_image(data / name))
    assert p.probabilities.shape == (28,)
    assert np.isfinite(p.probabilities).all()


def _plankton_like_jpeg(path: Path) -> Path:
    yy, xx = np.mgrid[:70, :50]
    blob = ((yy - 35) / 25) ** 2 + ((xx - 25) / 12) ** 2 < 1
    img = np.where(blob, 60, 250).astype(np.uint8)
    Image.fromarray(img, mode="L").save(path, quality=90)
    return path


def test_plankton_predicts_a_grayscale_jpeg(tmp_path: Path) -> None:
    folder = _folder(PLANKTON)
    pred = Predictor(folder, device="cpu")
    spec = pred.spec
    assert spec.task.kind == "multiclass" and spec.task.num_classes == 121
    assert tuple(spec.input.channels) == ("gray",)
    assert spec.input.invert and spec.input.pad_square
    jpg = _plankton_like_jpeg(tmp_path / "blob.jpg")
    p = pred.predict_one(read_image(jpg))
    assert p.probabilities.shape == (121,)
    assert abs(float(p.probabilities.sum()) - 1) < 1e-4


def test_plankton_cli_predict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _folder(PLANKTON)
    jpg = _plankton_like_jpeg(tmp_path / "blob.jpg")
    assert main(["predict", str(jpg), "--model", PLANKTON, "--device", "cpu", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "blob.jpg" in out


def test_plankton_real_image_in_top5() -> None:
    folder = _folder(PLANKTON)
    data = shared_data("plankton_ndsb2015")
    split = json.loads((folder / "report" / "split.json").read_text())
    pred = Predictor(folder, device="cpu", batch_size=32)
    files = split["held_out"][::200]
    hits = 0
    for f in files:
        p = pred.predict_one(read_image(data / f))
        true = Path(f).parent.name
        hits += true in [name for name, _ in p.top(5)]
    assert hits / len(files) >= 0.6


def test_lung_model_on_real_held_out_tiles() -> None:
    """RGB H&E tiles of groups it never saw: most get their tissue's class."""
    import csv

    folder = _folder(LUNG)
    images = shared_data("lung_histology_lc25000") / "images"
    with open(folder / "report" / "held_out.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    pred = Predictor(folder, device="cpu")
    spec = pred.spec
    assert spec.task.kind == "multiclass" and spec.task.classes == (
        "lung adenocarcinoma",
        "benign lung tissue",
        "lung squamous cell carcinoma",
    )
    assert len(spec.input.channels) == 3
    labels = ("lung_aca", "lung_n", "lung_scc")  # the data's tokens, in the classes' order
    picked = [r for c in labels for r in [r for r in rows if r["label"] == c][:3]]
    right = 0
    for r in picked:
        p = pred.predict_one(read_image(images / r["file"])).probabilities
        right += labels[int(np.argmax(p))] == r["label"]
        assert abs(float(p.sum()) - 1) < 1e-4  # softmax
    assert right >= 7, f"{right} of {len(picked)} held-out tiles right"
