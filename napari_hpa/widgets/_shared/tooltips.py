"""Tooltips and help texts of the widgets, kept apart from the widget logic."""

from __future__ import annotations

TOOLTIPS: dict[str, str] = {
    # Predict
    "model": "Model to run: name@version, its task and the channels it reads. "
    "Press ↻ after training or importing a model to list new versions.",
    "refresh": "Look for new models and versions (bundled and in your user folder).",
    "card": "The chosen model's card: what it is for, how it was trained and tested, with "
    "its confusion matrix and training curves.",
    "device": "Where the model runs: auto picks a CUDA GPU if there is one, else the CPU.",
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
    "export_csv": "Kaggle CSV (Id,Target): one row per annotated image, class ids.",
    "export_json": "JSON: every image with its image- and cell-level classes.",
    "export_tiff": "Per-cell label TIFFs (one per image with cells) in a folder.",
}


def tip(key: str) -> str:
    """The tooltip text for ``key`` ('' if none)."""
    return TOOLTIPS.get(key, "")
