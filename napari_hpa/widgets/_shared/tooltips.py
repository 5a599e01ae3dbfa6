"""The tooltips of every napari-hpa dock, one table kept apart from the widget logic."""

from __future__ import annotations

from ...jobs.retrain import MIN_IMAGES_PER_CLASS, PRESETS

TOOLTIPS: dict[str, str] = {
    # Predict
    "model": "Model to run: name@version, its task and the channels it reads. "
    "Press ↻ after training or importing a model to list new versions.",
    "refresh": "Look for new models and versions (bundled and in your user folder).",
    "card": "The chosen model's card: what it is for, how it was trained and tested, with "
    "its confusion matrix and training curves.",
    "device": "Where the model runs: auto picks a CUDA GPU if there is one, else the CPU.",
    "backend": "What runs the network. auto: on a CPU the fastest installed runtime "
    "(OpenVINO on Intel, ONNX Runtime on others; 1.7-2.9 times torch, the same answers "
    "within 1e-4), torch on a GPU. A runtime that fails falls back to torch.",
    "channels": "Which image layer feeds each channel of the model. Filled in from the layer "
    "names and colours; change it for layers opened some other way.",
    "cells": "Also segment the cells (nucleus seeds + watershed) and classify each cell; "
    "cells are outlined in the colour of their top class.",
    "predict": "Classify the image in the background; the viewer stays usable.",
    "cancel": "Stop the running prediction.",
    "table": "Click a row to show where the model saw that class (activation map).",
    # Annotate
    "labels": "Effective labels: your corrections override the model. Number keys 1-9 "
    "toggle the classes marked [1]..[9] (the most probable ones).",
    "accept": "Store the model's predicted classes as your own labels for the image, "
    "or for the selected cell.",
    "undo": "Undo the last change (Ctrl+Z).",
    "redo": "Redo (Ctrl+Shift+Z).",
    "next": "Save is automatic. Open the next image of this folder.",
    "previous": "Open the previous image of this folder.",
    "auto_predict": "Run Predict on every image that Next/Previous opens.",
    "database": "The annotations database of this image folder; every change is written at once.",
    "queue_order": "The order Next opens the folder's images in. Least certain first: the "
    "smallest gap between the two most probable classes (a correction there teaches the model "
    "most), moved up when the cells disagree with the image. Next skips the images reviewed "
    "already and marks the one it leaves; file order walks the folder as it is sorted.",
    "queue_class": "Only the images whose most probable class is this one, least sure first.",
    "queue_counts": "An image counts as reviewed once Next left it in the queue or once you "
    "corrected one of its labels (or a cell's). Kept in the annotations database.",
    "queue_predict": "Predict the folder's images that have no stored prediction yet, in the "
    "background, so that the queue can rank them (image level; Predict adds the cells).",
    "queue_cancel": "Stop predicting the folder; the images done so far are kept.",
    "queue_cell": "Select this image's next cell in the queue's order (least certain and "
    "disagreeing with the image first), to correct its labels; it is marked reviewed.",
    "export_csv": "Kaggle CSV (Id,Target): one row per annotated image, class ids.",
    "export_json": "JSON: every image with its image- and cell-level classes.",
    "export_tiff": "Per-cell label TIFFs (one per image with cells) in a folder.",
    # Retrain
    "db": "The annotations database whose corrected labels the model learns from (the one "
    "the Annotate widget writes to for the current image). A copy is taken when you press "
    "Retrain: corrections you make during the run go to the next run.",
    "browse": "Choose another annotations database (annotations.sqlite).",
    "counts": f"Corrected images and cells per class. Classes with fewer than "
    f"{MIN_IMAGES_PER_CLASS} corrected images are marked: the model cannot learn them well.",
    "base": "The model to start from (the parent). The new version gets the same name and "
    "the next version number, with the parent recorded in its model card.",
    "preset": "\n".join(f"{p.label}: {p.description}" for p in PRESETS.values()),
    "holdout": "Share of the corrected images kept out of training entirely. Both the parent "
    "and the new version are scored on them, so the comparison is fair.",
    "retrain": "Train in the background; you can keep annotating. napari stays responsive.",
    "stop": "Stop after the current batch and keep the best epoch so far.",
    "cancel_training": "Stop now and keep nothing (no new model version is written).",
    "use": "Use the new version: select it in Predict and remember it as your preferred model.",
    "rollback": "Go back to the parent model: select it in Predict and remember it as preferred.",
    "log": "Show the training log (errors, warnings, output).",
    "compare": "Parent and new version on the same held-out corrected images: F1 per class.",
}


def tip(key: str) -> str:
    """Return the tooltip text for ``key`` ('' if none)."""
    return TOOLTIPS.get(key, "")
