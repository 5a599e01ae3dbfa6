# ruff: noqa: E501  (model-card table rows are long lines)
"""The model card of the bundled plankton model (its README.md), from its spec and results."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_hpa.core.model.checkpoint import ModelSpec

from .common import fmt


def mean_recall(res: dict[str, Any]) -> float:
    return round(
        float(np.mean([r["recall"] for r in res["per_class"] if r["recall"] is not None])), 6
    )


def model_card(
    spec: ModelSpec,
    res: dict[str, Any],
    summary: dict[str, Any],
    counts_all: np.ndarray,
    counts_tr: np.ndarray,
    counts_te: np.ndarray,
    classes: list[str],
) -> str:
    tr = spec.training
    ft = tr.get("fine_tune")
    lines = [
        f"# {spec.name}",
        "",
        "Grayscale plankton classifier, 121 classes of the Kaggle National Data Science Bowl 2015",
        "(ISIIS in-situ images, OSU Hatfield Marine Science Center). EfficientNet-Lite0 started",
        "from ImageNet weights and trained on 2 CPU cores. Research / non-commercial use, as the",
        "data's competition terms.",
        "",
        "## Use",
        "",
        "```",
        f"napari-hpa predict some_plankton.jpg --model {spec.name}",
        "```",
        "",
        "Input: one gray channel (an RGB file is averaged to gray), inverted (dark objects on white",
        "become bright on black), padded to a square with the border's median value so the object",
        f"keeps its aspect ratio, resized to {spec.input.size}x{spec.input.size}, then (x - 0.5) / 0.5. All of this is in",
        "`model.json` (`input.invert`, `input.pad_square`) and done by the Predictor.",
        "",
        "## Data",
        "",
        f"`/work/shared/data/plankton_ndsb2015`: {int(counts_all.sum())} JPEGs (85 % of the NDSB",
        "train set; the other 15 % are kept aside by the data curator and were never seen here),",
        f"{len(classes)} classes, {int(counts_all.min())} to {int(counts_all.max())} images per class.",
        f"Stratified split (seed {tr['split_seed']}): {tr['n_train']} images train, {tr['n_held_out']}",
        "held out (15 % of each class, at least 1). The held-out images were used for nothing but",
        "the numbers below. Per-class counts (all / train / held-out) are in the table at the end.",
        "",
        "## Recipe",
        "",
        "1. Frozen ImageNet features -> class-weighted (n_c^-0.5) linear head",
        f"   (held-out top-1 of this linear probe: {fmt(summary['linear_probe_top1'])}).",
    ]
    if ft:
        lines += [
            f"2. Fine-tuning of blocks {tr['frozen_blocks']}-15 + head (blocks 0-{tr['frozen_blocks'] - 1}",
            "   frozen), AdamW (1e-3 body, 2e-3 head, wd 1e-4), cosine over a fixed time budget,",
            f"   batch 64, {tr['augmentation']}, class-weighted cross-entropy:",
            f"   {ft['seconds']} s, {ft['epochs']} epochs ({ft['images_seen']} images).",
        ]
    adj = tr.get("logit_adjustment")
    if adj:
        b, a = adj["held_out_before"], adj.get("held_out_after", {})
        recall_after = adj.get("mean_per_class_recall_after", summary["mean_per_class_recall"])
        lines += [
            f"{3 if ft else 2}. Prior correction: `{adj['formula']}` is folded into the head's bias.",
            "   The class weights of the loss give rare classes a fair share of training; this",
            "   undoes their bias at prediction time, so the top class is the likeliest one. The",
            "   strength 0.5 follows from the weights, it was not tuned. Held out (on the cached",
            "   80-px inputs; the table below is through the Predictor), before -> after:",
            f"   top-1 {fmt(b['top1_accuracy'])} -> {fmt(a.get('top1_accuracy'))}, log loss",
            f"   {fmt(b['log_loss'])} -> {fmt(a.get('log_loss'))}, mean per-class recall",
            f"   {fmt(adj['mean_per_class_recall_before'])} -> {fmt(recall_after)}"
            " (rare classes are called less often).",
        ]
    views = tr.get("views_before")
    if spec.input.views == "d4":
        step = 2 + bool(ft) + bool(adj)
        lines += [
            f"{step}. Test-time views (`input.views: d4` in `model.json`): the Predictor averages",
            "   the probabilities of the 8 rotations and flips of every image (a plankter has no",
            "   up), at 8 times the inference cost."
            + (
                f" The same weights held out through the Predictor without them: top-1"
                f" {fmt(views.get('top1'))}, top-5 {fmt(views.get('top5'))}, log loss"
                f" {fmt(views.get('log_loss'))} (`benchmarks/tta_views.py` measures both side by"
                " side)."
                if views
                else ""
            ),
        ]
    lines += [
        "",
        f"Rebuild: `python benchmarks/train_bundled.py plankton` — {tr['total_seconds'] / 60:.0f} min",
        "on 2 shared CPU cores (decoding the JPEGs into a /tmp cache ~1-2 min the first time,",
        f"frozen features {tr['feature_seconds']} s, fine-tuning {ft['seconds'] if ft else 0} s, held-out",
        f"evaluation through the Predictor {tr['held_out_eval_seconds']} s).",
        "",
        "## Held-out results",
        "",
        f"Evaluated on the {summary['n_held_out']} held-out images read from disk through",
        "`napari_hpa.core.model.predict.Predictor` (the path users get).",
        "",
        "| metric | this model | chance |",
        "|---|---|---|",
        f"| top-1 accuracy | {fmt(summary['top1_accuracy'])} | {fmt(summary['chance_top1_majority'])} (majority class) |",
        f"| top-5 accuracy | {fmt(summary['top5_accuracy'])} | |",
        f"| log loss | {fmt(summary['log_loss'])} | {fmt(summary['chance_log_loss_prior'])} (class priors) |",
        f"| macro F1 | {fmt(summary['macro_f1'])} | |",
        f"| mean per-class recall | {fmt(summary['mean_per_class_recall'])} | {fmt(1 / len(classes))} |",
        "",
        "Confusion matrix: `report/confusion.png`; all numbers: `report/metrics.json`;",
        "the held-out file list: `report/split.json`.",
        "",
        "## Known limits",
        "",
        "- Classes are very fine-grained and several are near-duplicates (e.g. the",
        "  `*_other` classes, chaetognath variants, copepod sub-types); most errors are between",
        "  such siblings (see the confusion matrix).",
        "- Classes with fewer than ~20 images have 1-3 held-out images, so their recall is",
        "  a very noisy estimate.",
        f"- Only {spec.input.size} px input (CPU budget): fine detail of large organisms is lost.",
        "- Images from other imaging systems (not ISIIS) or not on a white background are out of",
        "  distribution.",
        "- Fine-tuning stops at a time budget, not an epoch count: a faster (or less busy) machine",
        "  trains more epochs, so a rebuild gives numbers within about a point of these.",
        "",
        "## Per-class recall on the held-out split",
        "",
        "| class | all | train | held-out | recall |",
        "|---|---|---|---|---|",
    ]
    for i, row in enumerate(res["per_class"]):
        lines.append(
            f"| {classes[i]} | {int(counts_all[i])} | {int(counts_tr[i])} | {int(counts_te[i])} "
            f"| {fmt(row['recall'], 2)} |"
        )
    return "\n".join(lines) + "\n"
