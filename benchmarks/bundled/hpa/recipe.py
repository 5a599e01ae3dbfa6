"""Train the bundled HPA model: channel policy and recipe chosen on validation, then fit.

1. Read every real image (:mod:`.sources`), segment it, cut its crops and cells
   (:mod:`.inputs`); the held-out images and sets are only read for the figures.
2. Channel policy: ER live or ER zeroed, compared with the ``head`` recipe on
   3-fold cross-validation of the training items (by image or set).
3. Recipe: ``head``, ``last_blocks`` and ``staged`` (:mod:`.fit`), compared on
   the first of those folds (fine-tuning 3 folds would not fit the 2-core budget);
   every recipe is also fitted on all the training items and scored on the held-out
   ones, for the card's table; the one with the best validation score is kept.
4. Thresholds: per-class max F1 on the kept recipe's validation predictions,
   raised to a common floor that maximises the per-image F1.

Writes ``$NAPARI_HPA_CACHE/hpa_v3/`` (weights, results JSON); :mod:`.card` then
saves the model folder, checked through the Predictor.
"""

from __future__ import annotations

import copy
import json
import os
import time
from typing import Any

import numpy as np
import torch

from napari_hpa.core.model import metrics

from ..common import CACHE, log, setup_torch, write_json
from . import fit as F
from . import inputs as I
from .scoring import EvalInputs, eval_inputs, figures, headline, predict_items, selection_score
from .sources import SEED, Item, load_items, split

OUT = CACHE / "hpa_v3"
CROPS = {"composite": 24, "kaggle": 12, "duloc": 12}
PER_CELL = {"composite": 6, "duloc": 4}
FOLDS = 3


def build_samples(
    net: torch.nn.Module,
    items: list[Item],
    preps: list[I.Prepared],
    idx: list[int],
    er_live: bool,
    keep_raw: bool,
) -> F.Samples:
    """Augmented training inputs of ``idx`` through the trunk, with balanced weights."""
    rng = np.random.default_rng(SEED)
    trunks, ys, owners, groups, raws = [], [], [], [], []
    for n, i in enumerate(idx):
        it, prep = items[i], preps[i]
        parts = [("img", I.image_crops(prep, CROPS[it.source], rng, it.source, er_live))]
        if it.source in PER_CELL and prep.cells:
            parts.append(("cell", I.cell_tiles(prep, PER_CELL[it.source], rng, it.source, er_live)))
        for kind, x in parts:
            trunks.append(F.trunk_outputs(net, x))
            ys += [it.labels] * len(x)
            owners += [i] * len(x)
            groups += [f"{it.source}-{kind}"] * len(x)
            if keep_raw:
                raws.append(x.astype(np.float16))
        if (n + 1) % 25 == 0:
            log(f"    inputs of {n + 1}/{len(idx)} items")
    y = np.stack(ys).astype(np.float32)
    w = F.balanced_weights(y, np.array(groups))
    return F.Samples(
        torch.cat(trunks),
        torch.from_numpy(y),
        torch.from_numpy(w),
        np.array(owners),
        np.concatenate(raws) if keep_raw else None,
    )


def folds_of(items: list[Item], train: list[int]) -> list[list[int]]:
    """FOLDS folds of the training items, stratified by source and class."""
    rng = np.random.default_rng(SEED + 1)
    folds: list[list[int]] = [[] for _ in range(FOLDS)]
    by: dict[tuple[str, int], list[int]] = {}
    for i in train:
        by.setdefault((items[i].source, int(items[i].labels.argmax())), []).append(i)
    k = 0
    for key in sorted(by):
        for i in rng.permutation(by[key]):
            folds[k % FOLDS].append(int(i))
            k += 1
    return folds


class Fits:
    """Fitted nets by (recipe, ER policy, fold): each recipe continues the one before it."""

    def __init__(self, s: dict[bool, F.Samples], folds: list[list[int]], budget: float):
        self.samples, self.folds, self.budget = s, folds, budget
        self.nets: dict[tuple[str, bool, int | None], torch.nn.Module] = {}
        self.info: dict[tuple[str, bool, int | None], dict[str, Any]] = {}

    def get(self, recipe: str, er_live: bool, fold: int | None) -> torch.nn.Module:
        """The net of ``recipe`` trained on every training item but those of ``fold``."""
        key = (recipe, er_live, fold)
        if key in self.nets:
            return self.nets[key]
        s = self.samples[er_live]
        if fold is not None:
            s = s.subset(np.isin(s.owner, self.folds[fold], invert=True))
        t = time.time()
        info: dict[str, Any] = {}
        if recipe == "head":
            net = F.make_net(er_live)
            net.head.load_state_dict(F.train_head(F.pooled(net, s.trunk), s).state_dict())
        else:
            before = F.RECIPES[F.RECIPES.index(recipe) - 1]
            net = copy.deepcopy(self.get(before, er_live, fold))
            if recipe == "last_blocks":
                F.train_top(net, s)
            else:
                info["whole"] = F.train_whole(net, s, self.budget)
        info["seconds"] = round(time.time() - t)
        self.nets[key], self.info[key] = net, info
        log(f"    fitted {recipe} (fold {fold}) in {info['seconds']}s")
        return net


def run(quick: bool = False, staged_budget_s: float | None = None) -> dict[str, Any]:
    setup_torch(int(os.environ.get("BUNDLED_THREADS", "2")), SEED)
    t_start = time.time()
    budget = 20.0 if quick else float(staged_budget_s or 420.0)
    OUT.mkdir(parents=True, exist_ok=True)
    items = load_items()
    if quick:  # a smoke run of every step on a few images of each source
        items = [it for n, it in enumerate(items) if n % 5 == 0]
    train, held = split(items)
    log(f"{len(items)} items: {len(train)} train, {len(held)} held out")
    t = time.time()
    preps = [
        I.prepare(it) if i in set(train) else I.Prepared(np.zeros((4, 1, 1)), [])
        for i, it in enumerate(items)
    ]
    evs: list[EvalInputs] = [eval_inputs(it) for it in items]
    log(
        f"read and segmented in {time.time() - t:.0f}s; "
        f"training cells {sum(len(p.cells) for p in preps)}"
    )
    folds = folds_of(items, train)
    results: dict[str, Any] = {
        "split": {"train": [items[i].key for i in train], "held_out": [items[i].key for i in held]},
        "folds": [[items[i].key for i in f] for f in folds],
    }

    def cv(recipe: str, er_live: bool, n_folds: int) -> dict[str, Any]:
        probs = np.zeros((len(items), len(items[0].labels)), np.float32)
        cells: list[np.ndarray] = [np.zeros((0, probs.shape[1]))] * len(items)
        done: list[int] = []
        for f, fold in enumerate(folds[:n_folds]):
            net = fits.get(recipe, er_live, f)
            p, c = predict_items(net, [evs[i] for i in fold], er_live, recipe == "staged")
            for j, i in enumerate(fold):
                probs[i], cells[i] = p[j], c[j]
            done += fold
        thr = np.full(probs.shape[1], 0.5, np.float32)
        f0 = folds[0]
        h = headline(figures(items, done, probs[done], [cells[i] for i in done], thr))
        h0 = headline(figures(items, f0, probs[f0], [cells[i] for i in f0], thr))
        return {
            "headline": h,
            "score": selection_score(h),
            "probs": probs,
            "cells": cells,
            "idx": done,
            "fold0": h0,
            "fold0_score": selection_score(h0),
        }

    samples: dict[bool, F.Samples] = {}
    fits = Fits(samples, folds, budget)
    policy: dict[str, Any] = {}
    for er_live in (True, False):
        net0 = F.make_net(er_live)
        t = time.time()
        samples[er_live] = build_samples(net0, items, preps, train, er_live, keep_raw=True)
        log(
            f"  {len(samples[er_live].y)} training inputs (ER {'live' if er_live else 'zeroed'}) "
            f"in {time.time() - t:.0f}s"
        )
        r = cv("head", er_live, FOLDS)
        policy["er_live" if er_live else "er_zeroed"] = r["headline"] | {"score": r["score"]}
        log(f"  channel policy ER {'live' if er_live else 'zeroed'}: {r['headline']}")
    er_live = policy["er_live"]["score"] >= policy["er_zeroed"]["score"]
    results["channel_policy"] = {"compared": policy, "er_live": er_live}
    s = samples[er_live]
    del samples[not er_live]
    fits.nets = {k: v for k, v in fits.nets.items() if k[1] == er_live}

    recipes: dict[str, Any] = {}
    kept_cv: dict[str, Any] = {}
    for recipe in ["head", "staged"] if quick else list(F.RECIPES):
        t = time.time()
        # fine-tuning is slow on 2 cores: validated on the first fold only (as are all, for
        # the choice); the cheap head also on all folds (it chose the channel policy)
        r = cv(recipe, er_live, FOLDS if recipe == "head" else 1)
        net = fits.get(recipe, er_live, None)
        info = fits.info[(recipe, er_live, None)]
        p, c = predict_items(net, [evs[i] for i in held], er_live, recipe == "staged")
        thr = np.full(p.shape[1], 0.5, np.float32)
        recipes[recipe] = {
            "validation_fold0": r["fold0"],
            "validation_score": r["fold0_score"],
            "validation_all_folds": r["headline"] if recipe == "head" else None,
            "held_out": headline(figures(items, held, p, c, thr)),
            "fit": info,
            "seconds": round(time.time() - t),
        }
        kept_cv[recipe] = (r, net)
        log(
            f"  recipe {recipe}: validation {r['fold0_score']:.3f}, held out "
            f"{recipes[recipe]['held_out']} ({recipes[recipe]['seconds']}s)"
        )
    best = max(recipes, key=lambda k: recipes[k]["validation_score"])
    results["recipes"] = recipes
    results["recipe"] = best
    r, net = kept_cv[best]
    # thresholds: on the kept recipe's validation predictions (fold 1, or all 3 for head)
    results["thresholds_from"] = f"{best}, {len(r['idx'])} validation items"
    y_tr = np.stack([items[i].labels for i in r["idx"]])
    oof = r["probs"][r["idx"]]
    thr = metrics.tune_thresholds(y_tr, oof)
    floor = metrics.threshold_floor(y_tr, oof, thr)
    thr = np.maximum(thr, floor)
    results["thresholds"] = [round(float(v), 4) for v in thr]
    results["threshold_floor"] = float(floor)
    p, c = predict_items(net, [evs[i] for i in held], er_live, True)
    results["held_out"] = figures(items, held, p, c, thr)
    results["held_out_headline"] = headline(results["held_out"])
    results["n_inputs"] = int(len(s.y))
    results["n_training_cells"] = {
        src: int(sum(len(preps[i].cells) for i in train if items[i].source == src))
        for src in ("composite", "duloc")
    }
    results["total_seconds"] = round(time.time() - t_start)
    torch.save(copy.deepcopy(net).state_dict(), OUT / "net.pt")
    write_json(OUT / "results.json", results)
    log(f"kept {best} (ER {'live' if er_live else 'zeroed'}): {results['held_out_headline']}")
    log(f"wrote {OUT} in {results['total_seconds'] / 60:.1f} min")
    return json.loads((OUT / "results.json").read_text())
