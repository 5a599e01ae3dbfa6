"""Per-cell evaluation: segment each image, classify its cells, score them against its labels.

A cell inherits its image's labels (the weak labels of the HPA single-cell
challenge), so on images of one location per image the per-cell figures say how
often a single cell, on its own, gets its image's location. Everything goes
through :class:`~napari_hpa.core.model.predict.Predictor` (``predict_one`` and
``predict_cells``) and :func:`~napari_hpa.core.image.cells.segment_image`, as
napari's Predict does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..image.cells import segment_image
from ..image.io import ImageData
from .metrics import decide_multilabel, macro_f1
from .predict import Predictor


@dataclass
class CellScores:
    """Image-level and per-cell probabilities of a labelled set, and their targets."""

    image_targets: list[np.ndarray] = field(default_factory=list)
    image_probs: list[np.ndarray] = field(default_factory=list)
    cell_probs: list[np.ndarray] = field(default_factory=list)  # per image: (cells, K)
    names: list[str] = field(default_factory=list)
    crop_probs: list[np.ndarray] = field(default_factory=list)  # the crops alone (no context)

    def add(
        self,
        name: str,
        targets: np.ndarray,
        image: np.ndarray,
        cells: np.ndarray,
        crops: np.ndarray | None = None,
    ) -> None:
        """Add one image's targets, its image-level and its per-cell probabilities.

        ``crops`` are the cells' crops alone (no image context); default: ``cells``.
        """
        k = len(targets)
        self.names.append(name)
        self.image_targets.append(np.asarray(targets, np.float32))
        self.image_probs.append(np.asarray(image, np.float32))
        self.cell_probs.append(np.asarray(cells, np.float32).reshape(-1, k))
        raw = cells if crops is None else crops
        self.crop_probs.append(np.asarray(raw, np.float32).reshape(-1, k))


def classify_images_and_cells(
    predictor: Predictor,
    labelled: Iterable[tuple[ImageData, np.ndarray]],
    segment: Callable[[ImageData], np.ndarray] = segment_image,
    progress: Callable[[int], None] | None = None,
) -> CellScores:
    """Predict every image and each of its segmented cells (``targets`` are (K,) 0/1)."""
    scores = CellScores()
    for n, (image, targets) in enumerate(labelled, start=1):
        image_probs = predictor.predict_one(image).probabilities
        labels = segment(image)
        found = labels.max(initial=0) > 0
        cells = predictor.predict_cells(image, labels, use_context=False) if found else {}
        crops = np.array([cells[c].probabilities for c in sorted(cells)])
        crops = crops.reshape(-1, len(targets))
        blended = predictor.with_context(crops, image_probs) if len(crops) else crops
        scores.add(image.source, targets, image_probs, blended, crops)
        if progress is not None:
            progress(n)
    return scores


def _topk(y: np.ndarray, p: np.ndarray, k: int) -> float | None:
    """Share of rows whose top ``k`` classes hold one of their true classes."""
    if not len(y):
        return None
    top = np.argsort(-p, axis=1)[:, :k]
    return float(np.mean(np.take_along_axis(y, top, axis=1).max(axis=1) > 0))


def cell_metrics(scores: CellScores, thresholds: np.ndarray) -> dict[str, Any]:
    """Per-cell and image-level top-1/top-3/macro F1, and how often they agree.

    The per-cell figures are the cells' answers as napari gives them (with the
    model's ``cell_context``); ``cell_top1_crop_only`` is the crops' alone.

    ``agreement`` is the share of images with cells whose top class is also the
    top class of most of their cells: the image's answer is found in its cells.
    """
    y_img = np.stack(scores.image_targets) if scores.image_targets else np.zeros((0, 0))
    p_img = np.stack(scores.image_probs) if scores.image_probs else np.zeros((0, 0))
    y_cell = [
        np.repeat(t[None], len(c), 0)
        for t, c in zip(scores.image_targets, scores.cell_probs, strict=True)
    ]
    has = [len(c) > 0 for c in scores.cell_probs]
    yc = np.concatenate(y_cell) if any(has) else np.zeros((0, y_img.shape[1]))
    pc = np.concatenate([c for c in scores.cell_probs if len(c)]) if any(has) else yc
    agree = [
        int(np.argmax(pi)) == int(np.bincount(c.argmax(1), minlength=len(pi)).argmax())
        for pi, c in zip(scores.image_probs, scores.cell_probs, strict=True)
        if len(c)
    ]
    thr = np.asarray(thresholds, np.float32)
    crops = [c for c in scores.crop_probs if len(c)]
    pcrop = np.concatenate(crops) if crops else pc
    return {
        "images": len(y_img),
        "cells": int(len(yc)),
        "cells_per_image": float(len(yc) / max(1, len(y_img))),
        "images_without_cells": int(sum(not h for h in has)),
        "cell_top1": _topk(yc, pc, 1),
        "cell_top3": _topk(yc, pc, 3),
        "cell_top1_crop_only": _topk(yc, pcrop, 1),
        "cell_macro_f1": macro_f1(yc, decide_multilabel(pc, thr)) if len(yc) else None,
        "image_top1": _topk(y_img, p_img, 1),
        "image_top3": _topk(y_img, p_img, 3),
        "image_macro_f1": macro_f1(y_img, decide_multilabel(p_img, thr)) if len(y_img) else None,
        "agreement": float(np.mean(agree)) if agree else None,
    }
