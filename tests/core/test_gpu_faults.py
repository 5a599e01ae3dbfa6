"""Out-of-memory at the device boundary: smaller batches, then the CPU or a clear message.

There is no GPU here, so the OOM is simulated where the device would raise it: the
network's forward pass raises ``torch.OutOfMemoryError`` (the class CUDA raises)
whenever a batch is larger than what "fits". Prediction is covered in
tests/test_predict.py (halve, then CPU, with warnings); these cover training, the
batch pipeline and the message a user sees.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_tiny_model

from napari_hpa.cli import main
from napari_hpa.core.batch.run import run_batch
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.model.architectures import ClassifierNet
from napari_hpa.core.model.checkpoint import load_model
from napari_hpa.core.model.predict import Predictor
from napari_hpa.core.train.data import load_csv
from napari_hpa.core.train.loop import TrainConfig, TrainingOutOfMemory, train_model
from napari_hpa.core.train.schedule import PhaseSchedule

EASY = ["Nucleoplasm", "Nucleoli", "Mitochondria"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_samples(
        tmp_path_factory.mktemp("oom"), n=16, size=32, seed=5, classes=[0, 2, 23], n_labels=1
    )


def _limit(monkeypatch: pytest.MonkeyPatch, fits: int, training_only: bool = True) -> list[int]:
    """Forward passes of more than ``fits`` images raise CUDA's OOM; returns the sizes seen."""
    sizes: list[int] = []
    forward, with_cam = ClassifierNet.forward, ClassifierNet.forward_with_cam

    def check(net: ClassifierNet, x: torch.Tensor) -> None:
        if net.training or not training_only:
            sizes.append(len(x))
        if len(x) > fits and (net.training or not training_only):
            raise torch.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {len(x) * 512} MiB (simulated)"
            )

    def oom_forward(self: ClassifierNet, x: torch.Tensor) -> torch.Tensor:
        check(self, x)
        return forward(self, x)

    def oom_cam(self: ClassifierNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check(self, x)
        return with_cam(self, x)

    monkeypatch.setattr(ClassifierNet, "forward", oom_forward)
    monkeypatch.setattr(ClassifierNet, "forward_with_cam", oom_cam)
    return sizes


def _config(root: Path, **kw) -> TrainConfig:
    base = dict(
        name="oom", size=32, epochs=2, batch_size=8, lr=5e-3, arch_kwargs={"width": 4},
        out_root=str(root), patience=0, workers=0, device="cpu", seed=0,
        precision="fp32",  # the simulated OOM is the training step's, not the bf16 timing's
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_training_splits_the_batch_on_oom_and_finishes(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = _limit(monkeypatch, fits=2)
    data = load_csv(data_dir, data_dir / "labels.csv", EASY)
    events: list[dict] = []
    with pytest.warns(RuntimeWarning, match="out of memory") as record:
        result = train_model(_config(tmp_path), data, events.append)
    assert result.status == "completed" and result.path is not None
    load_model(result.path)  # a complete, loadable version
    notes = [e["message"] for e in events if e["event"] == "warning"]
    assert notes == [str(w.message) for w in record if "out of memory" in str(w.message)]
    assert "micro-batches of 4 (same batch of 8)" in notes[0]
    assert "micro-batches of 2" in notes[1] and len(notes) == 2  # halved once per size
    # 8 and 4 failed; every later training pass (this batch's rest and all later
    # batches) is at most 2 images: the split is remembered, not rediscovered per batch.
    assert sizes[:2] == [8, 4] and sizes[2:] and max(sizes[2:]) <= 2
    batches = [e for e in events if e["event"] == "batch"]
    assert batches and all(np.isfinite(e["loss"]) for e in batches)


def test_micro_batches_give_the_same_update(tmp_path: Path, monkeypatch) -> None:
    """Splitting is gradient accumulation: the same step as the whole batch (no batch norm
    statistics in play: the network is in eval mode for the comparison)."""
    from napari_hpa.core.train.loop import _Run

    torch.manual_seed(0)
    x, y = torch.rand(8, 4, 32, 32), (torch.rand(8, 28) > 0.8).float()
    states = []
    for micro in (0, 2):
        run = _Run.__new__(_Run)
        torch.manual_seed(1)
        loaded = load_model(write_tiny_model(tmp_path / f"m{micro}"))
        run.net, run.task = loaded.net.eval(), loaded.spec.task
        run.device, run.use_amp, run.micro = torch.device("cpu"), False, micro
        run.precision = "fp32"
        run.criterion = torch.nn.BCEWithLogitsLoss()
        run.opt = torch.optim.SGD(run.net.parameters(), lr=0.1)
        run.scaler = torch.amp.GradScaler("cuda", enabled=False)
        run.schedule = PhaseSchedule(run.opt, "cosine", 0.1, 0, 1, 1)  # lr 0.1 at its step 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss = run.step(x, y)
        states.append((loss, {k: v.clone() for k, v in run.net.state_dict().items()}))
    (loss_a, a), (loss_b, b) = states
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_training_that_never_fits_fails_with_a_clear_message(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    _limit(monkeypatch, fits=0)
    data = load_csv(data_dir, data_dir / "labels.csv", EASY)
    with pytest.warns(RuntimeWarning), pytest.raises(TrainingOutOfMemory, match="--device cpu"):
        train_model(_config(tmp_path), data)
    assert not any(tmp_path.iterdir())  # nothing written
    with pytest.warns(RuntimeWarning):
        rc = main([
            "train", "--data", str(data_dir), "--labels", str(data_dir / "labels.csv"),
            "--size", "32", "--width", "4", "--batch-size", "4", "--epochs", "1",
            "--out-root", str(tmp_path), "--device", "cpu", "--progress", "jsonl",
        ])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 2
    err = captured.err.strip().splitlines()
    assert err[-1].startswith("napari-hpa train: error: CPU out of memory even with one image")
    assert "Traceback" not in captured.err
    events = [json.loads(line) for line in captured.out.splitlines()]
    assert events[-1]["event"] == "error" and "--device cpu" in events[-1]["message"]
    assert any(e["event"] == "warning" and "micro-batches" in e["message"] for e in events)


def test_batch_on_gpu_oom_halves_then_uses_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch pipeline's model runs through Predictor.run_tiles: a simulated CUDA
    device that runs out of memory still gives every row, with warnings."""
    folder = write_samples(tmp_path / "screen", n=4, size=64, seed=1)
    model = write_tiny_model(tmp_path / "models", size=32, fit=64)
    expected = run_batch(folder, tmp_path / "cpu.csv", model, device="cpu", workers=0)
    assert expected.done == 4
    predictor = Predictor(model, device="cpu", batch_size=8)
    real_forward = predictor._forward
    tried: list[int] = []

    def on_fake_gpu(batch: np.ndarray, with_cam: bool):
        if predictor.device.type == "cuda":  # every pass runs out of memory on the "GPU"
            tried.append(len(batch))
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(batch, with_cam)

    monkeypatch.setattr(predictor, "_forward", on_fake_gpu)
    monkeypatch.setattr(predictor.model.net, "to", lambda *a, **k: predictor.model.net)
    predictor.device = torch.device("cuda")  # pretend the model sits on a GPU
    with pytest.warns(RuntimeWarning) as record:
        summary = run_batch(folder, tmp_path / "gpu.csv", predictor, workers=0, infer="main")
    messages = " ".join(str(w.message) for w in record)
    assert "batch size 4" in messages and "batch size 1" in messages and "CPU" in messages
    assert tried == [8, 4, 2, 1]
    assert summary.done == 4 and summary.errors == 0 and predictor.device.type == "cpu"
    got, want = _table(tmp_path / "gpu.csv"), _table(tmp_path / "cpu.csv")
    assert sorted(got) == sorted(want)
    for image, probs in want.items():  # the same probabilities as a plain CPU run
        np.testing.assert_allclose(got[image], probs, atol=2e-6)


def _table(path: Path) -> dict[str, np.ndarray]:
    import csv

    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    skip = {"image", "model", "predicted", "status", "error"}
    return {r["image"]: np.array([float(v) for k, v in r.items() if k not in skip]) for r in rows}
