"""Recipe for the bundled ``lung3-efficientnet_lite0`` model (LC25000 lung H&E tiles, RGB).

Steps (2 CPU cores):

1. Split by ``group`` (an original image and its rotated and flipped tiles): 20 % of
   each class's groups are held out, never trained on and never used for a choice.
2. Training tiles: ``TILES_PER_GROUP`` of each training group's ~5 (the others are
   rotations and flips of these, which the D4 augmentation makes anyway).
3. ``napari-hpa train --pretrained --search N``: the project's optuna search (TPE)
   over the learning rate, weight decay and augmentation strength, each trial an
   ImageNet EfficientNet-Lite0 fine-tuned on the training groups and validated on
   20 % of them, split by group (the ``group`` column). Trials are short (``SIZE``
   px, ``EPOCHS`` epochs) so that 20 fit in about half an hour on 2 cores.
4. The final model: ``napari-hpa train`` with the best trial's settings, longer and
   larger (``FINAL_SIZE`` px, ``FINAL_EPOCHS`` epochs, ``FINAL_TILES_PER_GROUP`` tiles
   per group), validated on the same kind of group split.
5. The final model is scored through the Predictor on every tile of the
   held-out groups, beside the simplest recipe (frozen ImageNet features and a
   logistic regression, on the same training tiles), and on the colon tiles of
   ``crc_nct100k_examples`` (out of its domain); :mod:`.lung_card` writes the card.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import CACHE, DATA, log, replace_model_folder, write_json

NAME = "lung3-efficientnet_lite0"
#: The Predictor averages the 8 rotations and flips of every tile: H&E has no up (held
#: out: top-1 0.958 -> 0.969, log loss 0.190 -> 0.140; benchmarks/tta_views.py).
VIEWS = "d4"
DATA_DIR = DATA / "lung_histology_lc25000"
OUT = CACHE / "lung3"
HELD_OUT = 0.2
TILES_PER_GROUP = 2
SIZE = 96
EPOCHS = 3
TRIALS = 20
FINAL_SIZE = 224
FINAL_EPOCHS = 8
FINAL_TILES_PER_GROUP = 3
SEED = 0


def read_rows() -> list[dict[str, str]]:
    with open(DATA_DIR / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def split_groups(rows: list[dict[str, str]]) -> tuple[list[str], list[str]]:
    """Training and held-out groups: ``HELD_OUT`` of each class's groups held out."""
    rng = np.random.default_rng(SEED)
    by_class: dict[str, list[str]] = {}
    for r in rows:
        by_class.setdefault(r["label"], [])
        if r["group"] not in by_class[r["label"]]:
            by_class[r["label"]].append(r["group"])
    train, held = [], []
    for label in sorted(by_class):
        groups = sorted(by_class[label])
        order = rng.permutation(len(groups))
        n = int(round(HELD_OUT * len(groups)))
        held += [groups[i] for i in order[:n]]
        train += [groups[i] for i in order[n:]]
    return train, held


def write_csvs(rows: list[dict[str, str]]) -> dict[str, Any]:
    """``train.csv`` (file,label,group; a few tiles per group) and ``held_out.csv``."""
    OUT.mkdir(parents=True, exist_ok=True)
    train_groups, held_groups = split_groups(rows)
    rng = np.random.default_rng(SEED + 1)
    held_set = set(held_groups)
    by_group: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_group.setdefault(r["group"], []).append(r)
    train_rows: list[dict[str, str]] = []
    final_rows: list[dict[str, str]] = []
    for g in sorted(train_groups):
        members = sorted(by_group[g], key=lambda r: r["file"])
        order = rng.permutation(len(members))
        train_rows += [members[i] for i in sorted(order[:TILES_PER_GROUP])]
        final_rows += [members[i] for i in sorted(order[:FINAL_TILES_PER_GROUP])]
    held_rows = [r for r in rows if r["group"] in held_set]
    all_train_rows = [r for r in rows if r["group"] not in held_set]
    for name, part in (
        ("train.csv", train_rows),
        ("train_final.csv", final_rows),
        ("held_out.csv", held_rows),
        ("train_all.csv", all_train_rows),
    ):
        with open(OUT / name, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["file", "label", "group"])
            w.writeheader()
            w.writerows({k: r[k] for k in ("file", "label", "group")} for r in part)
    split = {
        "train_groups": len(train_groups),
        "held_out_groups": len(held_groups),
        "train_tiles_used": len(train_rows),
        "final_tiles_used": len(final_rows),
        "train_tiles_in_groups": len(all_train_rows),
        "held_out_tiles": len(held_rows),
    }
    write_json(OUT / "split.json", split)
    return split


def _train(labels: str, size: int, epochs: int, extra: list[str], record: str) -> Path:
    """One ``napari-hpa train`` through the CLI's own path; return the newest model folder.

    Its command and seconds go to ``OUT/<record>.json`` (the card gives the minutes).
    """
    from napari_hpa.cli import main as cli_main

    home = OUT / "home"
    os.environ["NAPARI_HPA_HOME"] = str(home)
    args = [
        "train", "--data", str(DATA_DIR / "images"), "--labels", str(OUT / labels),
        "--arch", "efficientnet_lite0", "--pretrained", "--channels", "rgb",
        "--size", str(size), "--epochs", str(epochs), "--val-fraction", "0.2", *extra,
        "--threads", os.environ.get("BUNDLED_THREADS", "2"), "--name", NAME,
        "--description",
        "Lung H&E tile class (LC25000): adenocarcinoma, benign tissue, squamous cell carcinoma",
        "--progress", "text",
    ]  # fmt: skip
    log("napari-hpa " + " ".join(args))
    t = time.time()
    rc = cli_main(args)
    if rc != 0:
        raise SystemExit(f"{record} training failed (exit {rc})")
    write_json(OUT / f"{record}.json", {"seconds": round(time.time() - t), "args": args})
    return sorted((home / "models").glob(f"{NAME}-v*"), key=lambda p: p.stat().st_mtime)[-1]


def train(trials: int = TRIALS, epochs: int = EPOCHS) -> Path:
    """Run the search (short trials); return the best trial's model folder."""
    search = ["--search", str(trials), "--sampler", "tpe"]
    return _train("train.csv", SIZE, epochs, search, "train")


def best_params(search_folder: Path) -> dict[str, float]:
    """The best completed trial's settings, from the search's ``report/search.csv``."""
    with open(search_folder / "report" / "search.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["state"] == "COMPLETE" and r["value"]]
    best = max(rows, key=lambda r: float(r["value"]))
    return {k: float(best[k]) for k in ("lr", "weight_decay", "aug_strength")}


def final(params: dict[str, float], epochs: int = FINAL_EPOCHS) -> Path:
    """Train the bundled model with the search's best settings, longer and larger."""
    chosen = [
        "--lr", f"{params['lr']:.6g}", "--weight-decay", f"{params['weight_decay']:.6g}",
        "--aug-strength", f"{params['aug_strength']:.4f}",
    ]  # fmt: skip
    return _train("train_final.csv", FINAL_SIZE, epochs, chosen, "final")


def set_views(folder: Path) -> None:
    """Write the test-time views into the trained model's ``model.json``."""
    spec = json.loads((folder / "model.json").read_text())
    spec["input"]["views"] = VIEWS
    write_json(folder / "model.json", spec)


def run(reuse: bool = False, trials: int = TRIALS) -> Path:
    """Split, search, score and bundle (``train_bundled.py lung``)."""
    from . import lung_card

    rows = read_rows()
    split = write_csvs(rows)
    log(f"split by group: {json.dumps(split)}")
    if reuse and (OUT / "home" / "models").is_dir():
        folders = sorted((OUT / "home" / "models").glob(f"{NAME}-v*"))
        search_folder, folder = folders[0], folders[-1]
    else:
        search_folder = train(trials)
        folder = final(best_params(search_folder))
    set_views(folder)
    for name in ("search.csv", "search.png"):  # the search's table goes with the model
        if (search_folder / "report" / name).is_file() and search_folder != folder:
            shutil.copy2(search_folder / "report" / name, folder / "report" / name)
    shutil.copy2(OUT / "held_out.csv", folder / "report" / "held_out.csv")  # names, no images
    scores = lung_card.score(folder, OUT)
    lung_card.write_card(folder, scores, split)
    lung_card.record_metrics(folder, scores)
    target = replace_model_folder(NAME)
    shutil.copytree(folder, target)
    log(f"bundled {target}")
    return target
