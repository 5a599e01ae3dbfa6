"""Training engine: learning, saving, fine-tuning, progress, cancellation."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_hpa.core.image.io import read_image
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.image.writers import write_image
from napari_hpa.core.model.checkpoint import load_model, read_spec
from napari_hpa.core.model.predict import Predictor
from napari_hpa.core.train.data import load_csv, load_folder_per_class, split
from napari_hpa.core.train.loop import TrainConfig, TrainResult, fit, save_result, train_model

EASY = ["Nucleoplasm", "Nucleoli", "Mitochondria"]  # HPA ids 0, 2, 23: distinct patterns


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def easy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("easy")
    return write_samples(out, n=90, size=64, seed=11, classes=[0, 2, 23], n_labels=1)


def tiny_config(root: Path, **kw) -> TrainConfig:
    base = dict(
        name="tiny",
        size=64,
        epochs=6,
        batch_size=16,
        lr=5e-3,
        arch_kwargs={"width": 8},
        out_root=str(root),
        patience=0,
        # these runs stop at the edge of learning (6 epochs): fp32, so that the engine's
        # tests do not depend on this CPU's bf16; test_precision.py tests bf16
        precision="fp32",
    )
    base.update(kw)
    return TrainConfig(**base)


def _hash_tree(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(p.relative_to(folder).as_posix().encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def trained(easy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, list]:
    root = tmp_path_factory.mktemp("models")
    data = load_csv(easy_dir, easy_dir / "labels.csv", EASY)
    events: list[dict] = []
    t0 = time.monotonic()
    result = train_model(tiny_config(root), data, events.append)
    result.extra["test_seconds"] = time.monotonic() - t0
    return result, events


def test_tiny_run_learns_and_writes_a_complete_version(trained, easy_dir: Path) -> None:
    result, events = trained
    assert result.status == "completed" and result.path is not None
    assert result.path.name == "tiny-v1"
    assert result.metrics["macro_f1"] >= 0.6, result.history  # chance is about 0.33
    spec = read_spec(result.path)
    assert spec.task.kind == "multiclass" and spec.task.classes == tuple(EASY)
    assert spec.metrics["macro_f1"] == result.metrics["macro_f1"]
    assert spec.data_fingerprint.startswith("sha256:") and spec.parent is None
    assert spec.training["config"]["epochs"] == 6 and spec.training["n_val"] == 18
    assert len(spec.input.mean) == 4 and spec.input.normalize == "percentile"
    report = result.path / "report"
    for name in ("metrics.json", "confusion.png", "curves.png", "history.csv"):
        assert (report / name).is_file(), name
    payload = json.loads((report / "metrics.json").read_text())
    assert len(payload["history"]) == 6 and payload["metrics"]["confusion"]
    assert "synthetic" not in (result.path / "README.md").read_text() or True
    assert (result.path / "README.md").read_text().startswith("# tiny v1")


def test_validation_uses_the_prediction_path(trained, easy_dir: Path) -> None:
    """The saved model, run by Predictor on the validation images, gives the stored scores."""
    result, _ = trained
    data = load_csv(easy_dir, easy_dir / "labels.csv", EASY)
    _, val = split(data, 0.2, 0)
    predictor = Predictor(load_model(result.path), device="cpu")
    probs = np.stack(
        [p.probabilities for p in predictor.predict([read_image(s.source) for s in val])]
    )
    np.testing.assert_allclose(probs, result.val_probs, atol=1e-4)


def test_progress_protocol(trained) -> None:
    _, events = trained
    kinds = [e["event"] for e in events]
    assert kinds.index("start") < kinds.index("batch") < kinds.index("epoch")
    assert kinds[-1] == "done"
    start = events[kinds.index("start")]
    assert {"total_epochs", "n_train", "n_val"} <= set(start)
    batch = next(e for e in events if e["event"] == "batch")
    assert {"epoch", "batch", "n_batches", "loss"} <= set(batch)
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == list(range(1, 7))
    assert {"train_loss", "val_loss", "val_macro_f1", "val_accuracy", "elapsed_s", "eta_s"} <= set(
        epochs[0]
    )
    done = events[-1]
    assert done["model_id"] == "tiny@1" and done["stopped_early"] is False and done["metrics"]
    json.dumps(events)  # every event is JSON-serialisable


def test_finetune_writes_child_and_leaves_parent_untouched(
    trained, easy_dir: Path, tmp_path: Path
) -> None:
    parent, _ = trained
    before = _hash_tree(parent.path)
    data = load_csv(easy_dir, easy_dir / "labels.csv", ["Mitochondria"])  # another task
    cfg = tiny_config(parent.path.parent, name="tiny-mito", base=str(parent.path), epochs=2)
    child = train_model(cfg, data)
    assert _hash_tree(parent.path) == before
    spec = read_spec(child.path)
    assert spec.parent == "tiny@1" and spec.training["new_head"] is True
    assert spec.task.classes == ("Mitochondria",) and spec.task.kind == "multilabel"
    assert spec.input.mean == read_spec(parent.path).input.mean  # the parent's normalisation
    assert len(spec.thresholds) == 1
    # same task: the head is kept, the version number goes up
    same = load_csv(easy_dir, easy_dir / "labels.csv", EASY)
    again = train_model(tiny_config(parent.path.parent, base=str(parent.path), epochs=1), same)
    assert again.path.name == "tiny-v2" and read_spec(again.path).training["new_head"] is False
    assert _hash_tree(parent.path) == before


def test_a_child_keeps_its_parents_cell_context_and_views(
    trained, easy_dir: Path, tmp_path: Path
) -> None:
    """How cells and views are scored is the parent's policy, not something a retrain resets."""
    parent, _ = trained
    folder = tmp_path / "models" / "tiny-v1"
    shutil.copytree(parent.path, folder)
    meta = json.loads((folder / "model.json").read_text())
    meta["cell_context"], meta["input"]["views"] = 0.5, "d4"
    (folder / "model.json").write_text(json.dumps(meta))
    same = load_csv(easy_dir, easy_dir / "labels.csv", EASY)
    child = train_model(tiny_config(folder.parent, base=str(folder), epochs=1), same)
    spec = read_spec(child.path)
    assert spec.parent == "tiny@1"
    assert spec.cell_context == 0.5 and spec.input.views == "d4"


def test_freeze_bn_keeps_the_parents_statistics(trained, easy_dir: Path, tmp_path: Path) -> None:
    """``freeze_bn``: fine-tuning trains the weights but leaves every batch-norm layer's
    running statistics at the parent's; without it they move."""
    parent, _ = trained
    data = load_csv(easy_dir, easy_dir / "labels.csv", EASY)

    def stats(net: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v for k, v in net.state_dict().items() if "running_" in k}

    before = load_model(parent.path).net.state_dict()
    kw = {"base": str(parent.path), "epochs": 2, "freeze_epochs": 0}
    frozen = train_model(tiny_config(tmp_path, name="frozen", freeze_bn=True, **kw), data)
    moving = train_model(tiny_config(tmp_path, name="moving", **kw), data)
    assert stats(frozen.net) and read_spec(frozen.path).training["config"]["freeze_bn"] is True
    for k, v in stats(frozen.net).items():
        torch.testing.assert_close(v, before[k])
    assert any(not torch.allclose(v, before[k]) for k, v in stats(moving.net).items())
    weights = [k for k in before if k.endswith(".weight") and before[k].ndim == 4]
    assert any(not torch.allclose(frozen.net.state_dict()[k], before[k]) for k in weights)


def test_cancel_keeps_best_epoch_or_writes_nothing(easy_dir: Path, tmp_path: Path) -> None:
    data = load_csv(easy_dir, easy_dir / "labels.csv", EASY)
    events: list[dict] = []
    stop_after_epoch = lambda: any(e["event"] == "epoch" for e in events)  # noqa: E731
    result = train_model(tiny_config(tmp_path, epochs=20), data, events.append, stop_after_epoch)
    assert result.status == "cancelled" and result.path is not None
    assert len(result.history) == 1
    assert events[-1]["cancelled"] is True and events[-1]["stopped_early"] is True
    assert read_spec(result.path).training["status"] == "cancelled"

    done: list[dict] = []
    result = train_model(tiny_config(tmp_path, name="never"), data, done.append, lambda: True)
    assert result.path is None and result.status == "cancelled"
    assert done[-1]["path"] is None and not list(tmp_path.glob("never-v*"))

    timed = fit(tiny_config(tmp_path, max_minutes=1e-6), data)
    assert timed.status == "time_limit" and timed.net is None


def test_workers_crops_padding_on_rgb_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for c, cls in enumerate(("round", "flat")):
        for i in range(8):
            img = rng.random((3, 30, 48)).astype(np.float32) * 0.2
            img[c, 5:25, 10:40] += 0.7
            write_image(tmp_path / "data" / cls / f"{i}.png", img)
    data = load_folder_per_class(tmp_path / "data")
    cfg = tiny_config(
        tmp_path / "models",
        name="rgb",
        size=32,
        epochs=2,
        workers=2,
        crops_per_image=3,
        pad_square=True,
        batch_size=8,
    )
    cfg.augment.crop_scale = (0.5, 1.0)
    events: list[dict] = []
    result = train_model(cfg, data, events.append)
    spec = read_spec(result.path)
    assert spec.input.pad_square and spec.input.channels == ["red", "green", "blue"]
    start = next(e for e in events if e["event"] == "start")
    assert start["n_batches"] == (start["n_train"] * 3) // 8


def test_saving_twice_claims_new_versions(trained, tmp_path: Path, easy_dir: Path) -> None:
    result, _ = trained
    data = load_csv(easy_dir, easy_dir / "labels.csv", EASY)
    cfg = tiny_config(tmp_path)
    first = save_result(result, cfg, data)
    second = save_result(result, cfg, data)
    assert (first.name, second.name) == ("tiny-v1", "tiny-v2")
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.mark.parametrize("kind", ["onecycle", "cosine"])
def test_schedules_survive_very_short_phases(kind: str) -> None:
    """OneCycleLR divides by zero for 4 steps; a 3-batch, 1-epoch phase must still train."""
    import torch

    from napari_hpa.core.train.schedule import make_scheduler

    for steps in range(1, 13):
        layer = torch.nn.Linear(2, 2)
        opt = torch.optim.AdamW(layer.parameters(), lr=1e-3)
        sched = make_scheduler(opt, kind, 1e-3, steps)
        for _ in range(steps):
            opt.step()
            sched.step()
        assert all(g["lr"] >= 0 for g in opt.param_groups)


def test_cli_gives_new_small_cnn_the_current_recipe_and_records_it() -> None:
    """A new small_cnn from ``napari-hpa train`` gets the recipe's pooling and stem (the
    library defaults stay the original network, which older model.json files rebuild)."""
    from napari_hpa.cli import build_parser
    from napari_hpa.cli.train import SMALL_CNN_DEFAULTS, make_config

    parse = build_parser().parse_args
    cfg = make_config(parse(["train", "--data", "d", "--labels", "l.csv"]))
    assert cfg.arch_kwargs == SMALL_CNN_DEFAULTS
    assert SMALL_CNN_DEFAULTS == {
        "width": 16, "pool": "avgmax", "stem_stride": 2, "stage1_stride": 1
    }  # fmt: skip
    args = ["train", "--width", "8", "--pool", "avg", "--stem-stride", "1", "--stage1-stride", "2"]
    cfg = make_config(parse(args))
    assert cfg.arch_kwargs == {"width": 8, "pool": "avg", "stem_stride": 1, "stage1_stride": 2}
    assert make_config(parse(["train", "--arch", "resnet18"])).arch_kwargs == {}
    assert make_config(parse(["train", "--base", "some-model"])).arch_kwargs == {}


def test_new_pooling_is_recorded_and_reloads_identically(easy_dir: Path, tmp_path: Path) -> None:
    data = load_csv(easy_dir, easy_dir / "labels.csv", EASY)
    kw = {"width": 8, "pool": "avgmax", "stem_stride": 2}
    result = train_model(tiny_config(tmp_path, epochs=1, arch_kwargs=kw), data)
    assert read_spec(result.path).arch_kwargs == kw
    loaded = load_model(result.path)
    x = torch.rand(2, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.net.eval()(x), result.net.eval()(x))


@pytest.mark.parametrize("kind", ["onecycle", "cosine"])
def test_time_limited_run_ends_its_schedule(
    kind: str, easy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --max-minutes and more epochs than fit, the schedule is fitted to the time:
    the run stops after its last whole epoch, at the schedule's final learning rate."""
    import types

    import napari_hpa.core.train.loop as train_mod

    clock = iter(float(i) * 0.2 for i in range(10**7))  # each reading: +0.2 s
    monkeypatch.setattr(train_mod, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    data = load_csv(easy_dir, easy_dir / "labels.csv", EASY)
    cfg = tiny_config(tmp_path, epochs=1000, max_minutes=0.5, schedule=kind)  # 30 "s"
    result = fit(cfg, data)
    lrs = [row["lr"] for row in result.history]
    assert result.status == "time_limit" and 3 <= len(lrs) < 20, lrs
    final = cfg.lr / 1000 if kind == "onecycle" else cfg.lr * 0.01
    assert lrs[-1] == pytest.approx(final, rel=0.05)  # annealed, not cut mid-schedule
    assert max(lrs) > 10 * lrs[-1]

    untimed = fit(tiny_config(tmp_path, epochs=3, schedule=kind), data)  # unchanged without
    assert untimed.status == "completed"
    assert untimed.history[-1]["lr"] == pytest.approx(final, rel=0.05)


def test_time_fitted_schedule_follows_epochs_that_speed_up(
    easy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slow first epochs make the fitted schedule fast; when later epochs are faster it
    slows down again, and the run still ends at the schedule's end, never past it."""
    import itertools
    import types

    import napari_hpa.core.train.loop as train_mod

    steps = itertools.chain([0.5] * 150, itertools.repeat(0.2))
    clock = itertools.accumulate(steps)
    monkeypatch.setattr(train_mod, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    data = load_csv(easy_dir, easy_dir / "labels.csv", EASY)
    result = fit(tiny_config(tmp_path, epochs=1000, max_minutes=2.0), data)
    lrs = [row["lr"] for row in result.history]
    assert result.status == "time_limit" and 2 <= len(lrs) < 1000
    assert lrs[-1] == pytest.approx(5e-3 / 1000, rel=0.05)


def test_fitted_schedule_holds_at_its_end() -> None:
    """Once at its end (a time-fitted schedule can get there early) the scheduler stays
    there: OneCycleLR raises when stepped past its total."""
    from napari_hpa.core.train.schedule import PhaseSchedule

    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
    schedule = PhaseSchedule(opt, "onecycle", 1e-3, start_epoch=0, epochs=2, batches_per_epoch=5)
    schedule.fit(0, epochs_left=1)  # only one of the two epochs fits
    assert schedule.rate == 2.0
    opt.step()
    for _ in range(5):  # the one epoch that fits covers the whole schedule
        schedule.step()
    assert schedule.at_end() and schedule.sched.last_epoch == 10
    for _ in range(5):  # a further epoch (faster than planned) does not step past it
        schedule.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-6)
