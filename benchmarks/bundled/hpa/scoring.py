"""Held-out figures of the HPA recipe, per source, from per-image and per-cell probabilities."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from napari_hpa.core.image.cells import cell_crops, segment_image
from napari_hpa.core.model import metrics
from napari_hpa.core.model.architectures import ClassifierNet
from napari_hpa.core.model.cell_evaluation import CellScores, cell_metrics
from napari_hpa.core.model.tiles import prepare_cell, prepare_tiles
from napari_hpa.core.tasks import HPA28_CLASSES

from .fit import top_features, trunk_outputs
from .inputs import input_spec
from .sources import Item


@dataclass
class EvalInputs:
    """What the Predictor feeds the network for one item: its tiles and its cells' tiles."""

    tiles: np.ndarray
    cells: np.ndarray
    trunk: dict[bool, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


def eval_inputs(item: Item) -> EvalInputs:
    """The Predictor's inputs (raw image, scale bar included; cells as napari segments them)."""
    image = item.read()
    spec = input_spec()
    tiles = prepare_tiles(image.data, image.channel_names, spec)[0]
    cells = np.zeros((0, *tiles.shape[1:]), np.float32)
    if item.source == "duloc":
        labels = segment_image(image)
        crops = cell_crops(image.data, labels)
        if crops:
            cells = np.concatenate([prepare_cell(c, image.channel_names, spec) for _, c in crops])
    return EvalInputs(tiles, cells)


@torch.no_grad()
def predict_items(
    net: ClassifierNet, inputs: list[EvalInputs], er_live: bool, whole: bool
) -> tuple[np.ndarray, list[np.ndarray]]:
    """(image probs (N, K), per-item cell probs) as the Predictor computes them.

    ``whole`` runs the full network (after ``staged``, the trunk changed); else the
    cached trunk outputs feed the top, which is exact for ``head``/``last_blocks``.
    """
    net.eval()
    imgs, cells = [], []
    for ev in inputs:
        if whole:
            logits = [
                net(torch.from_numpy(a)) if len(a) else torch.zeros((0, len(HPA28_CLASSES)))
                for a in (ev.tiles, ev.cells)
            ]
        else:
            if er_live not in ev.trunk:
                ev.trunk[er_live] = (trunk_outputs(net, ev.tiles), trunk_outputs(net, ev.cells))
            logits = [
                net.head(top_features(net, t)) if len(t) else torch.zeros((0, len(HPA28_CLASSES)))
                for t in ev.trunk[er_live]
            ]
        imgs.append(torch.sigmoid(logits[0]).mean(0).numpy())
        cells.append(torch.sigmoid(logits[1]).numpy())
    return np.stack(imgs), cells


def figures(
    items: list[Item],
    idx: list[int],
    probs: np.ndarray,
    cells: list[np.ndarray],
    thresholds: np.ndarray,
) -> dict[str, Any]:
    """Per source: composites top-1/3, Kaggle F1/AUROC, DULoc set and per-cell top-1/3."""
    out: dict[str, Any] = {}
    for source in ("composite", "kaggle", "duloc"):
        sel = [j for j, i in enumerate(idx) if items[i].source == source]
        if not sel:
            continue
        y = np.stack([items[idx[j]].labels for j in sel])
        p = probs[sel]
        m = metrics.multilabel_metrics(y, p, thresholds, list(HPA28_CLASSES))
        pred = metrics.decide_multilabel(p, thresholds)
        m["sample_f1"] = metrics.sample_f1(y, pred)
        m["labels_per_image"] = float(pred.sum(1).mean())
        if source == "duloc":
            sc = CellScores()
            for j in sel:
                sc.add(items[idx[j]].key, items[idx[j]].labels, probs[j], cells[j])
            m.update(cell_metrics(sc, thresholds))
        out[source] = m
    return out


def headline(res: dict[str, Any]) -> dict[str, float | None]:
    """The issue's three figures and a few more, flat."""
    c, k, d = res.get("composite", {}), res.get("kaggle", {}), res.get("duloc", {})
    return {
        "composite_top1": c.get("top1_accuracy"),
        "composite_top3": c.get("top3_accuracy"),
        "composite_macro_f1": c.get("macro_f1"),
        "kaggle_macro_f1": k.get("macro_f1"),
        "kaggle_macro_auroc": k.get("macro_auroc"),
        "duloc_set_top1": d.get("image_top1"),
        "duloc_set_top3": d.get("image_top3"),
        "duloc_cell_top1": d.get("cell_top1"),
        "duloc_cell_top3": d.get("cell_top3"),
        "duloc_cell_macro_f1": d.get("cell_macro_f1"),
        "duloc_agreement": d.get("agreement"),
        "duloc_cells_per_set": d.get("cells_per_image"),
    }


def selection_score(h: dict[str, float | None]) -> float:
    """What chooses between recipes (on validation, never the held-out images)."""
    keys = ("duloc_set_top1", "duloc_cell_top1", "composite_top3")
    return float(np.mean([h[k] or 0.0 for k in keys]))
