"""Hyperparameter search with optuna: many short trainings, the best one saved.

Searched: learning rate, weight decay, network width (architectures that have
one) and augmentation strength. Every trial uses the same seeded split, and
shares one image cache, so trials differ only in the hyperparameters. Trials
that lag the median at the same epoch are pruned to save time. The trial table
(CSV) and a plot go into the saved model's ``report/`` folder.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from ..model.architectures import arch_parameters
from .augment import ImageCache
from .config import done_event, with_overrides
from .data import TrainData
from .loop import (
    Progress,
    ShouldStop,
    TrainConfig,
    TrainResult,
    fit,
    make_cache,
    save_result,
)
from .report import output_folder
from .setup import new_input_spec

#: Grid used by ``sampler="grid"`` (trials draw grid points without repetition).
GRID: dict[str, list[Any]] = {
    "lr": [1e-3, 3e-3, 1e-2],
    "weight_decay": [1e-5, 1e-3],
    "width": [8, 16, 32],
    "aug_strength": [0.5, 1.0],
}


def _has_width(arch: str) -> bool:
    return "width" in arch_parameters(arch)


def search_params(config: TrainConfig) -> list[str]:
    """Return the parameters searched here (width only where the architecture has one)."""
    names = ["lr", "weight_decay", "aug_strength"]
    if not config.base and _has_width(config.arch):
        names.insert(2, "width")
    return names


def _suggest(trial: Any, names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "lr" in names:
        out["lr"] = trial.suggest_float("lr", 3e-4, 3e-2, log=True)
    if "weight_decay" in names:
        out["weight_decay"] = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    if "width" in names:
        out["width"] = trial.suggest_categorical("width", [8, 16, 32])
    if "aug_strength" in names:
        out["aug_strength"] = trial.suggest_float("aug_strength", 0.0, 1.5)
    return out


def _apply(config: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    changes: dict[str, Any] = {
        "lr": params["lr"],
        "weight_decay": params["weight_decay"],
        "aug_strength": params["aug_strength"],
    }
    if "width" in params:
        changes["arch_kwargs"] = {**config.arch_kwargs, "width": int(params["width"])}
    return with_overrides(config, **changes)


def write_trials_csv(trials: list[dict[str, Any]], params: list[str], path: str | Path) -> None:
    """Write one row per trial: its state, score, best epoch and parameter values."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["trial", "state", "value", "best_epoch", *params])
        for t in trials:
            writer.writerow(
                [
                    t["trial"],
                    t["state"],
                    "" if t["value"] is None else t["value"],
                    t.get("best_epoch", ""),
                    *(t["params"].get(p, "") for p in params),
                ]
            )


def run_search(
    config: TrainConfig,
    data: TrainData,
    n_trials: int,
    sampler: str = "tpe",
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    save: bool = True,
) -> TrainResult:
    """Run ``n_trials`` trainings (TPE or grid) and save the best as a new model version.

    Progress events of each trial carry a ``trial`` key; after each trial a
    ``{"event": "trial", ...}`` event gives its parameters and score.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    emit = progress or (lambda e: None)
    root = output_folder(config) if save else None  # a bad name or folder: before any trial
    names = search_params(config)
    if sampler == "grid":
        space = {k: v for k, v in GRID.items() if k in names}
        chooser: Any = optuna.samplers.GridSampler(space, seed=config.seed)
        n_trials = min(n_trials, math.prod(len(v) for v in space.values()))
    elif sampler == "tpe":
        chooser = optuna.samplers.TPESampler(
            seed=config.seed, n_startup_trials=max(2, min(10, n_trials // 2))
        )
    else:
        raise ValueError(f"unknown sampler {sampler!r}; use tpe or grid")
    study = optuna.create_study(
        direction="maximize",
        sampler=chooser,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
    )
    cache = make_cache_for(config, data)
    state: dict[str, Any] = {"best": None, "trials": [], "cancelled": False}

    def objective(trial: optuna.Trial) -> float:
        params = _suggest(trial, names)
        cfg = _apply(config, params)

        def relay(event: dict[str, Any]) -> None:
            if event["event"] == "epoch":
                trial.report(event["val_macro_f1"], event["epoch"])
                if trial.should_prune():
                    raise optuna.TrialPruned()
            name = "trial_start" if event["event"] == "start" else event["event"]
            emit({**event, "event": name, "trial": trial.number + 1, "n_trials": n_trials})

        result = fit(cfg, data, relay, should_stop, cache=cache)
        trial.set_user_attr("best_epoch", result.best_epoch)
        if result.status == "cancelled":
            state["cancelled"] = True
            trial.study.stop()
        if result.net is None:
            raise optuna.TrialPruned()
        best = state["best"]
        if best is None or result.score > best[0].score:
            state["best"] = (result, cfg, params)
        return result.score

    def after(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        row = {
            "trial": trial.number + 1,
            "state": trial.state.name,
            "value": trial.value,
            "best_epoch": trial.user_attrs.get("best_epoch"),
            "params": dict(trial.params),
        }
        state["trials"].append(row)
        emit({"event": "trial", **row, "n_trials": n_trials})

    emit({"event": "search_start", "n_trials": n_trials, "sampler": sampler, "params": names})
    study.optimize(objective, n_trials=n_trials, callbacks=[after], catch=())
    if state["best"] is None:
        result = TrainResult("cancelled" if state["cancelled"] else "failed")
        emit(done_event(result))
        return result
    result, cfg, params = state["best"]
    if state["cancelled"]:
        result.status = "cancelled"
    result.extra["search"] = {
        "sampler": sampler,
        "n_trials": n_trials,
        "best_params": params,
        "trials": state["trials"],
    }

    def extra(folder: Path) -> None:
        from .report import plot_search

        report = folder / "report"
        report.mkdir(exist_ok=True)
        write_trials_csv(state["trials"], names, report / "search.csv")
        plot_search(state["trials"], names, report / "search.png")

    if save:
        save_result(result, cfg, data, root=root, extra_files=extra)
    emit(done_event(result))
    return result


def make_cache_for(config: TrainConfig, data: TrainData) -> ImageCache | None:
    """One view cache for all trials; only when the input spec cannot differ between them."""
    if config.base:
        return None  # the parent's input spec decides; fit builds its own cache
    spec = new_input_spec(config, data.task)
    return make_cache(spec, config.augment.crop_scale[0], config.cache_mb * 2**20)
