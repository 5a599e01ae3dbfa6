"""Tooltips of the Retrain widget, kept apart from the widget logic."""

from __future__ import annotations

from ...jobs.retrain import MIN_IMAGES_PER_CLASS, PRESETS

TOOLTIPS: dict[str, str] = {
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
    "cancel": "Stop now and keep nothing (no new model version is written).",
    "use": "Use the new version: select it in Predict and remember it as your preferred model.",
    "rollback": "Go back to the parent model: select it in Predict and remember it as preferred.",
    "log": "Show the training log (errors, warnings, output).",
    "compare": "Parent and new version on the same held-out corrected images: F1 per class.",
}


def tip(key: str) -> str:
    return TOOLTIPS.get(key, "")
