"""Hyperparameter search with optuna: many short trainings, the best one saved.

Searched by default: learning rate, weight decay, network width (architectures
that have one) and augmentation strength; ``over`` names another set, which may
include the architecture (the backbone) and the number of epochs. Every trial uses
the same seeded split, and shares one image cache where the input cannot differ
between trials, so trials differ only in the hyperparameters. Trials
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
from .config import PRETRAINED_ARCHS, done_event, with_overrides
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
    # the ImageNet-started backbone against the small CNN from scratch
    "arch": ["efficientnet_lite0", "small_cnn"],
    "epochs": [4, 8],
}

#: Everything ``over`` may name.
SEARCHABLE = tuple(GRID)


def _has_width(arch: str) -> bool:
    return "width" in arch_parameters(arch)


def search_params(config: TrainConfig, over: list[str] | None = None) -> list[str]:
    """Return the parameters searched (by default: width only where the architecture has one).

    Raises
    ------
    ValueError
        ``over`` names a parameter that cannot be searched.
    """
    if over:
        unknown = [name for name in over if name not in SEARCHABLE]
        if unknown:
            raise ValueError(
                f"cannot search {', '.join(unknown)}; searchable: {', '.join(SEARCHABLE)}"
            )
        if config.base and "arch" in over:
            raise ValueError("a fine-tuning keeps its parent's architecture: drop arch")
        return list(dict.fromkeys(over))
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
    if "arch" in names:
        out["arch"] = trial.suggest_categorical("arch", GRID["arch"])
    if "epochs" in names:
        out["epochs"] = trial.suggest_categorical("epochs", GRID["epochs"])
    return out


def _apply(config: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    """Return the trial's config: the searched values, the rest as given."""
    changes: dict[str, Any] = {
        k: params[k] for k in ("lr", "weight_decay", "aug_strength") if k in params
    }
    if "epochs" in params:
        changes["epochs"] = int(params["epochs"])
    arch_kwargs = dict(config.arch_kwargs)
    if "arch" in params and params["arch"] != config.arch:
        changes["arch"] = params["arch"]
        # another backbone: its own defaults, and ImageNet weights only where installed
        arch_kwargs = {}
        changes["pretrained"] = config.pretrained and params["arch"] in PRETRAINED_ARCHS
    if "width" in params and _has_width(changes.get("arch", config.arch)):
        arch_kwargs["width"] = int(params["width"])
    changes["arch_kwargs"] = arch_kwargs
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
    over: list[str] | None = None,
) -> TrainResult:
    """Run ``n_trials`` trainings (TPE or grid) and save the best as a new model version.

    ``over`` names the parameters searched (:data:`SEARCHABLE`); None: the default set.

    Progress events of each trial carry a ``trial`` key; after each trial a
    ``{"event": "trial", ...}`` event gives its parameters and score.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    emit = progress or (lambda e: None)
    root = output_folder(config) if save else None  # a bad name or folder: before any trial
    names = search_params(config, over)
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
    cache = None if "arch" in names else make_cache_for(config, data)
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
    return make_cache(spec, config.augment.crop_scale[0], config.cache_mb * 2**20, data.mask_db)
