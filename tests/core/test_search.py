"""Hyperparameter search: trials run, the best is saved with its trial table."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.model.checkpoint import read_spec
from napari_hpa.core.train.config import with_overrides
from napari_hpa.core.train.data import load_csv
from napari_hpa.core.train.loop import TrainConfig
from napari_hpa.core.train.search import GRID, run_search, search_params

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    out = write_samples(
        tmp_path_factory.mktemp("s"), n=30, size=32, seed=5, classes=[0, 23], n_labels=1
    )
    return load_csv(out, out / "labels.csv", ["Nucleoplasm", "Mitochondria"])


def _config(root: Path) -> TrainConfig:
    return TrainConfig(
        name="searched",
        size=32,
        epochs=2,
        batch_size=8,
        out_root=str(root),
        arch_kwargs={"width": 4},
        patience=0,
    )


@pytest.mark.parametrize("sampler", ["tpe", "grid"])
def test_search_saves_the_best_trial(data, tmp_path: Path, sampler: str) -> None:
    events: list[dict] = []
    result = run_search(_config(tmp_path), data, 3, sampler, events.append)
    trials = [e for e in events if e["event"] == "trial"]
    assert len(trials) == 3
    finished = [t for t in trials if t["state"] == "COMPLETE"]
    assert result.score == max(t["value"] for t in finished)
    assert events[-1]["event"] == "done" and events[-1]["path"] == str(result.path)
    assert all("trial" in e for e in events if e["event"] in ("batch", "epoch"))
    spec = read_spec(result.path)
    best = result.extra["search"]["best_params"]
    assert spec.training["config"]["lr"] == pytest.approx(best["lr"])
    assert spec.arch_kwargs["width"] == best["width"]
    with open(result.path / "report" / "search.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and {"lr", "weight_decay", "width", "aug_strength"} <= set(rows[0])
    assert (result.path / "report" / "search.png").is_file()
    if sampler == "grid":
        assert all(float(r["lr"]) in GRID["lr"] for r in rows)
    assert len(list(tmp_path.glob("searched-v*"))) == 1  # only the best trial is written


def test_search_params_skip_width_without_one() -> None:
    assert "width" in search_params(TrainConfig(arch="small_cnn"))
    assert "width" not in search_params(TrainConfig(arch="resnet18"))


def test_cancelled_search_writes_nothing(data, tmp_path: Path) -> None:
    result = run_search(_config(tmp_path), data, 3, "tpe", None, lambda: True)
    assert result.path is None and not list(tmp_path.glob("searched-v*"))


def test_grid_over_backbone_and_epochs_trains_each_point(data, tmp_path: Path) -> None:
    """``over=["lr", "arch", "epochs"]``: every grid point is its own backbone and length;
    the best is saved with its own architecture, and the table names both."""
    config = with_overrides(_config(tmp_path), arch="efficientnet_lite0", arch_kwargs={})
    events: list[dict] = []
    result = run_search(config, data, 8, "grid", events.append, over=["arch", "epochs"])
    trials = [e for e in events if e["event"] == "trial"]
    assert len(trials) == 4  # the grid has 2 x 2 points; 8 asked for is capped
    assert {(t["params"]["arch"], t["params"]["epochs"]) for t in trials} == {
        (a, e) for a in GRID["arch"] for e in GRID["epochs"]
    }
    epochs_seen: dict[int, int] = {}
    for e in events:
        if e["event"] == "epoch":
            epochs_seen[e["trial"]] = max(epochs_seen.get(e["trial"], 0), e["epoch"])
    for t in trials:
        if t["state"] == "COMPLETE":
            assert epochs_seen[t["trial"]] == t["params"]["epochs"]
    best = result.extra["search"]["best_params"]
    assert read_spec(result.path).arch == best["arch"]
    with open(result.path / "report" / "search.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {"arch", "epochs"} <= set(rows[0]) and "weight_decay" not in rows[0]


def test_search_over_refuses_what_cannot_be_searched() -> None:
    with pytest.raises(ValueError, match="cannot search colour"):
        search_params(TrainConfig(), ["lr", "colour"])
    assert search_params(TrainConfig(), ["lr", "arch", "lr"]) == ["lr", "arch"]
