from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_tiny_model

from napari_hpa.core.image.io import ImageData
from napari_hpa.core.model.checkpoint import load_model
from napari_hpa.core.model.device import choose_device
from napari_hpa.core.model.predict import Predictor
from napari_hpa.core.model.prediction import decide
from napari_hpa.core.tasks import HPA_CHANNELS, get_task


def _image(
    h: int = 96, w: int = 80, channels: tuple[str, ...] = HPA_CHANNELS, seed: int = 0
) -> ImageData:
    data = np.random.default_rng(seed).random((len(channels), h, w)).astype(np.float32)
    return ImageData(
        data=data,
        channel_names=channels,
        paths=(),
        image_id=f"img{seed}",
        source=f"img{seed}",
        metadata={},
    )


def test_choose_device() -> None:
    assert choose_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else None
    if expected:
        assert choose_device("auto").type == "cuda"
    else:
        assert choose_device("auto").type in ("cpu", "mps")
        with pytest.raises(ValueError, match="CUDA"):
            choose_device("cuda")


def test_predict_outputs_probabilities_and_cams(tmp_path: Path) -> None:
    folder = write_tiny_model(tmp_path, fit=64)
    predictor = Predictor(folder, device="cpu")
    pred = predictor.predict_one(_image(), cam_classes=[3, 23])
    assert pred.probabilities.shape == (28,)
    assert np.all((pred.probabilities >= 0) & (pred.probabilities <= 1))
    assert pred.predicted and all(0 <= i < 28 for i in pred.predicted)
    assert set(pred.cams) == {3, 23}
    assert pred.cams[3].shape == (96, 80)
    assert pred.model_id == "tiny@1"
    top = pred.top(3)
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1]


def test_batched_equals_single(tmp_path: Path) -> None:
    predictor = Predictor(write_tiny_model(tmp_path, fit=64), device="cpu", batch_size=3)
    images = [_image(seed=s) for s in range(4)]
    batched = predictor.predict_prepared([predictor.prepare(im)[0] for im in images])
    single = np.stack([predictor.predict_one(im).probabilities for im in images])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    progress = []
    results = predictor.predict(images, progress=lambda d, t: progress.append((d, t)))
    assert [r.image_id for r in results] == ["img0", "img1", "img2", "img3"]
    assert progress[-1] == (4, 4)


def test_rgb_composite_on_hpa_model(tmp_path: Path) -> None:
    predictor = Predictor(write_tiny_model(tmp_path), device="cpu")
    pred = predictor.predict_one(_image(channels=("red", "green", "blue")))
    assert pred.probabilities.shape == (28,)


def test_multiclass_decision_is_argmax(tmp_path: Path) -> None:
    folder = write_tiny_model(tmp_path, task=get_task("hela10"), name="hela")
    predictor = Predictor(folder, device="cpu")
    pred = predictor.predict_one(_image(channels=("gray",)))
    assert pred.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert pred.predicted == [int(np.argmax(pred.probabilities))]


def test_thresholds_decide_multilabel(tmp_path: Path) -> None:
    spec = load_model(write_tiny_model(tmp_path)).spec
    probs = np.full(28, 0.1, np.float32)
    probs[[2, 5]] = 0.7
    spec.thresholds = [0.5] * 28
    assert decide(probs, spec) == [2, 5]
    spec.thresholds[5] = 0.8
    assert decide(probs, spec) == [2]
    assert decide(np.full(28, 0.01, np.float32), spec) != []


def test_cuda_oom_halves_batch_then_falls_back_to_cpu(tmp_path: Path) -> None:
    """Simulate OOM at the device boundary: the predictor must still answer, with warnings."""
    predictor = Predictor(write_tiny_model(tmp_path, fit=64), device="cpu", batch_size=4)
    expected = predictor.predict_one(_image()).probabilities
    real_forward = predictor._forward
    calls = {"n": 0}

    def flaky(batch: np.ndarray, with_cam: bool):
        if predictor.device.type != "cpu" or calls["n"] < 3:
            calls["n"] += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(batch, with_cam)

    predictor._forward = flaky  # type: ignore[method-assign]
    predictor.device = torch.device("cuda")  # pretend we were on a GPU
    predictor.model.net.to = lambda *a, **k: predictor.model.net  # type: ignore[method-assign]
    with pytest.warns(RuntimeWarning) as record:
        got = predictor.predict_one(_image()).probabilities
    messages = " ".join(str(w.message) for w in record)
    assert "batch size 2" in messages and "batch size 1" in messages and "CPU" in messages
    assert predictor.device.type == "cpu"
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_cancel(tmp_path: Path) -> None:
    from napari_hpa.core.model.predict import PredictionCancelled

    predictor = Predictor(write_tiny_model(tmp_path), device="cpu")
    with pytest.raises(PredictionCancelled):
        predictor.predict([_image(), _image()], should_stop=lambda: True)


def test_activation_maps_at_a_fraction_match_the_full_maps_downsampled():
    """The GUI's heat maps come from the Predictor: the same maps, stitched smaller."""
    from napari_hpa.core.image.io import ImageData
    from napari_hpa.core.model.predict import Predictor

    predictor = Predictor("hpa28-synthetic-tiny", device="cpu")
    rng = np.random.default_rng(0)
    image = ImageData(
        rng.random((4, 300, 260), dtype=np.float32),
        ("microtubules", "protein", "nucleus", "er"),
        (),
        "x",
        "x",
        {},
    )
    kept = predictor.predict_one(image, keep_activations=True)
    full = predictor.predict_one(image, cam_classes=[0, 5])
    assert kept.activations is not None and full.activations is None
    np.testing.assert_allclose(kept.probabilities, full.probabilities, atol=1e-6)
    same = predictor.activation_maps(kept.activations, [0, 5])
    np.testing.assert_allclose(same[5], full.cams[5], atol=1e-6)
    small = predictor.activation_maps(kept.activations, [5], downsample=4)
    assert small[5].shape == (75, 65)
    coarse = full.cams[5][:300:4, :260:4]
    assert np.corrcoef(small[5].ravel(), coarse.ravel())[0, 1] > 0.95


def test_a_square_cell_keeps_its_shape():
    """cell_fit="square" pads a long cell before resizing; "stretch" distorts it."""
    from napari_hpa.core.model.checkpoint import InputSpec
    from napari_hpa.core.model.tiles import prepare_cell

    crop = np.zeros((1, 40, 120), np.float32)
    crop[0, 10:30, 10:110] = 1.0
    square = InputSpec(["protein"], size=60, cell_fit="square")
    stretch = InputSpec(["protein"], size=60)
    sq = prepare_cell(crop, ["protein"], square)[0, 0]
    st = prepare_cell(crop, ["protein"], stretch)[0, 0]
    assert sq.shape == st.shape == (60, 60)
    rows_sq = np.flatnonzero(sq.max(axis=1) > 0.5)
    rows_st = np.flatnonzero(st.max(axis=1) > 0.5)
    assert len(rows_sq) < 15 < len(rows_st)
    with pytest.raises(ValueError, match="cell_fit"):
        InputSpec(["protein"], cell_fit="zoom")


def test_cells_blend_with_their_image_by_the_models_cell_context(tmp_path: Path) -> None:
    """cell_context in model.json: 0 keeps a crop's answer, w mixes in the image's."""
    import dataclasses

    from napari_hpa.core.model.checkpoint import LoadedModel

    base = Predictor("hpa28-synthetic-tiny", device="cpu")
    rng = np.random.default_rng(1)
    image = ImageData(rng.random((4, 128, 128), dtype=np.float32), HPA_CHANNELS, (), "x", "x", {})
    labels = np.zeros((128, 128), np.int32)
    labels[10:60, 10:60], labels[70:120, 64:120] = 1, 2
    own = base.predict_cells(image, labels)
    spec = dataclasses.replace(base.spec, cell_context=0.5)
    blended = Predictor(LoadedModel(spec, base.model.net), device="cpu")
    image_p = blended.predict_one(image).probabilities
    mixed = blended.predict_cells(image, labels, context=image_p)
    alone = blended.predict_cells(image, labels, use_context=False)
    for c in (1, 2):
        np.testing.assert_allclose(alone[c].probabilities, own[c].probabilities, atol=1e-6)
        expect = 0.5 * own[c].probabilities + 0.5 * image_p
        np.testing.assert_allclose(mixed[c].probabilities, expect, atol=1e-5)
    # without a context given, the Predictor predicts the image itself
    again = blended.predict_cells(image, labels)
    np.testing.assert_allclose(again[1].probabilities, mixed[1].probabilities, atol=1e-5)
    assert spec.to_dict()["cell_context"] == 0.5
    with pytest.raises(ValueError, match="cell_context"):
        dataclasses.replace(base.spec, cell_context=1.5)


def test_non_finite_outputs_are_an_error_never_a_probability(tmp_path: Path) -> None:
    """Weights damaged after loading (a NaN) must not come out as NaN 'probabilities'."""
    from napari_hpa.core.model.prediction import NonFiniteOutput, is_finite

    predictor = Predictor(write_tiny_model(tmp_path, fit=64), device="cpu")
    image = _image()
    assert is_finite(predictor.predict_one(image).probabilities)
    with torch.no_grad():
        next(predictor.model.net.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteOutput, match="tiny@1 gave non-finite outputs"):
        predictor.predict_one(image)
    labels = np.zeros(image.data.shape[1:], np.int32)
    labels[10:40, 10:40] = 1
    with pytest.raises(NonFiniteOutput):
        predictor.predict_cells(image, labels)
    # a batch keeps its rows (NaN) for the caller to turn into error rows, one per image
    rows = predictor.predict_prepared([predictor.prepare(image)[0]])
    assert rows.shape == (1, 28) and not is_finite(rows[0])
