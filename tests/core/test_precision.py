"""Training precision: bf16 autocast on CPUs with native bf16 (fp32 master weights), else fp32."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import EASY, tiny_config

from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.model.architectures import build_model
from napari_hpa.core.model.checkpoint import load_model, read_spec
from napari_hpa.core.train.data import load_csv
from napari_hpa.core.train.loop import TrainConfig, train_model
from napari_hpa.core.train.precision import (
    MIN_SPEEDUP,
    bf16_speedup,
    cpu_has_native_bf16,
    resolve_precision,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")


def test_auto_is_bf16_only_where_the_cpu_has_it() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("fp32", CPU) == "fp32"
        assert resolve_precision("AUTO", CPU) == ("bf16" if cpu_has_native_bf16() else "fp32")
        assert resolve_precision("auto", torch.device("cuda")) == "fp32"  # CUDA has its amp
    with pytest.warns(RuntimeWarning, match="for the CPU"):
        assert resolve_precision("bf16", torch.device("cuda")) == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="half")


def test_a_cpu_without_native_bf16_trains_in_fp32_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)
    assert not cpu_has_native_bf16()
    assert resolve_precision("auto", CPU) == "fp32"
    with pytest.warns(RuntimeWarning, match="no native bf16"):
        assert resolve_precision("bf16", CPU) == "fp32"


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16")
def test_bf16_training_keeps_fp32_weights_and_learns(tmp_path: Path) -> None:
    images = write_samples(
        tmp_path / "easy", n=90, size=64, seed=11, classes=[0, 2, 23], n_labels=1
    )
    data = load_csv(images, images / "labels.csv", EASY)
    runs = {}
    for precision in ("fp32", "bf16"):
        events: list[dict] = []
        name = f"p-{precision}"
        cfg = tiny_config(tmp_path / precision, name=name, precision=precision, epochs=10)
        result = train_model(cfg, data, events.append)
        assert result.path is not None, events[-1]
        start = next(e for e in events if e["event"] == "start")
        assert start["precision"] == precision
        assert read_spec(result.path).training["precision"] == precision
        loaded = load_model(result.path)  # a float32 model, whatever the training computed in
        assert {p.dtype for p in loaded.net.parameters()} == {torch.float32}
        runs[precision] = result
    assert np.isfinite(runs["bf16"].history[-1]["train_loss"])
    # both learn the three easy patterns; bf16 is not a different recipe
    f1 = {name: run.metrics["macro_f1"] for name, run in runs.items()}
    # both learn the three patterns (chance: 0.33; 6 seeds here: fp32 0.99, bf16 0.98 mean)
    assert f1["bf16"] >= 0.8 and f1["fp32"] >= 0.8, f1
    assert abs(f1["bf16"] - f1["fp32"]) <= 0.15, f1


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16")
def test_auto_times_the_runs_own_network_and_keeps_what_is_faster(tmp_path: Path) -> None:
    images = write_samples(tmp_path / "easy", n=24, size=64, seed=3, classes=[0, 2], n_labels=1)
    data = load_csv(images, images / "labels.csv", EASY[:2])
    events: list[dict] = []
    cfg = tiny_config(tmp_path, name="auto", epochs=1, precision="auto")
    result = train_model(cfg, data, events.append)
    training = read_spec(result.path).training
    gain = training["bf16_speedup"]
    assert 0.05 < gain < 20
    assert training["precision"] == ("bf16" if gain >= MIN_SPEEDUP else "fp32")
    assert next(e for e in events if e["event"] == "start")["precision"] == training["precision"]


def test_the_timing_leaves_the_network_as_it_was() -> None:
    net = build_model("small_cnn", 4, 3, width=8).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert bf16_speedup(net, (4, 4, 32, 32), rounds=1) > 0
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16")
def test_a_timing_that_fails_trains_in_fp32(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import napari_hpa.core.train.loop as loop

    def broken(*args: object, **kwargs: object) -> float:
        raise RuntimeError("the probe ran out of memory")

    monkeypatch.setattr(loop, "bf16_speedup", broken)
    images = write_samples(tmp_path / "easy", n=12, size=64, seed=3, classes=[0, 2], n_labels=1)
    data = load_csv(images, images / "labels.csv", EASY[:2])
    cfg = tiny_config(tmp_path, name="probe", epochs=1, precision="auto")
    result = train_model(cfg, data, lambda event: None)
    training = read_spec(result.path).training
    assert training["precision"] == "fp32" and training["bf16_speedup"] == 0.0
