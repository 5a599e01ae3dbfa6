"""Weight averaging: the arithmetic, and a training run that validates and saves the average."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_hpa.core.image.io import read_image
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.model.architectures import build_model
from napari_hpa.core.model.checkpoint import load_model, read_spec
from napari_hpa.core.model.predict import Predictor
from napari_hpa.core.train.averaging import WeightAverage
from napari_hpa.core.train.data import load_csv, split
from napari_hpa.core.train.loop import TrainConfig, train_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_average_moves_by_one_minus_decay_and_copies_counts() -> None:
    torch.manual_seed(0)
    live = build_model("small_cnn", 4, 3, width=4)
    avg = WeightAverage(live, decay=0.9)
    start = {k: v.clone() for k, v in avg.net.state_dict().items()}
    with torch.no_grad():
        for p in live.parameters():
            p.add_(1.0)
    live.train()(torch.rand(2, 4, 32, 32))  # batch norm: new statistics and one more batch
    avg.update(live)
    w = 1 - min(0.9, 2 / 11)  # the warm-up decay of the first update
    src = live.state_dict()
    for k, v in avg.net.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, start[k] + w * (src[k] - start[k]))
        else:
            assert torch.equal(v, src[k])  # num_batches_tracked follows the live net
    assert not any(p.requires_grad for p in avg.net.parameters())
    assert avg.current_decay() == pytest.approx(2 / 11)  # the decay the update used
    avg.updates = 10_000
    assert avg.current_decay() == 0.9  # the ramp ends at the configured decay


def test_decay_outside_zero_one_is_refused() -> None:
    net = build_model("small_cnn", 1, 2, width=4)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="decay"):
            WeightAverage(net, bad)
    with pytest.raises(ValueError, match="weight-averaging"):
        TrainConfig(weight_average=1.0)


def test_training_validates_and_saves_the_average(tmp_path: Path) -> None:
    data_dir = write_samples(tmp_path / "d", n=60, size=48, seed=5, classes=[0, 2, 23], n_labels=1)
    data = load_csv(data_dir, data_dir / "labels.csv", ["Nucleoplasm", "Nucleoli", "Mitochondria"])
    kw = dict(size=48, epochs=3, batch_size=16, lr=5e-3, arch_kwargs={"width": 8}, patience=0)
    plain = train_model(TrainConfig(name="plain", out_root=str(tmp_path), **kw), data)
    averaged = train_model(
        TrainConfig(name="avg", out_root=str(tmp_path), weight_average=0.9, **kw), data
    )
    assert read_spec(averaged.path).training["config"]["weight_average"] == 0.9
    # same seed, same batches: only the validated and saved weights differ
    a, b = plain.net.state_dict(), averaged.net.state_dict()
    assert any(not torch.allclose(a[k], b[k]) for k in a if a[k].is_floating_point())
    # what was validated is what was saved: the stored validation scores reproduce
    _, val = split(data, 0.2, 0)
    predictor = Predictor(load_model(averaged.path), device="cpu")
    probs = np.stack(
        [p.probabilities for p in predictor.predict([read_image(s.source) for s in val])]
    )
    np.testing.assert_allclose(probs, averaged.val_probs, atol=1e-4)
