"""Test-time D4 views, side by side: the bundled plankton and lung models on their held-out images.

Issue 21 asks for test-time D4 averaging inside the Predictor, as an option stored in
``model.json`` (``input.views``; the HPA model already ships with it), measured on the
held-out split. Plankton and H&E tiles have no up or down, so the 8 rotations and flips
of an image are the same specimen. Both models score the same held-out files, read from
disk by one Predictor, with ``views`` none and d4, in one run.

Run: ``python benchmarks/tta_views.py [MODEL ...]`` (default both; the last line is
``d4_vs_none_top1 plankton121=<ratio> lung3=<ratio>``).
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bundled.common import DATA, MODELS  # noqa: E402
from benchmarks.bundled.lung_card import NAMES  # noqa: E402

PLANKTON = "plankton121-efficientnet_lite0"
LUNG = "lung3-efficientnet_lite0"
#: The lung data's class tokens, in the model's class order (the recipe's names).
LUNG_TOKENS = tuple(NAMES)


def held_out(model: str) -> tuple[list[Path], list[str]]:
    """The held-out files and their classes, as the model's card lists them."""
    report = MODELS / model / "report"
    if model == PLANKTON:
        folder = DATA / "plankton_ndsb2015"
        with open(folder / "labels.csv", newline="") as fh:
            label = {r["file"]: r["label"] for r in csv.DictReader(fh)}
        files = json.loads((report / "split.json").read_text())["held_out"]
        return [folder / f for f in files], [label[f] for f in files]
    folder = DATA / "lung_histology_lc25000" / "images"
    with open(report / "held_out.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [folder / r["file"] for r in rows], [r["label"] for r in rows]


def class_index(model: str, classes: list[str], label: str) -> int:
    """The model's index of a data label (the lung model names its classes in words)."""
    return LUNG_TOKENS.index(label) if model == LUNG else classes.index(label)


def score(model: str) -> dict[str, dict[str, float]]:
    """Top-1, macro F1 and log loss with views none and d4, and the seconds each took."""
    from napari_hpa.core.image.io import read_image
    from napari_hpa.core.model import metrics
    from napari_hpa.core.model.checkpoint import load_model
    from napari_hpa.core.model.predict import Predictor

    files, labels = held_out(model)
    loaded = load_model(MODELS / model)
    classes = list(loaded.spec.task.classes)
    y = np.array([class_index(model, classes, c) for c in labels])
    predictor = Predictor(loaded, device="cpu", batch_size=64, backend="torch")
    tiles = [predictor.prepare(read_image(f))[0] for f in files]
    out = {}
    for views in ("none", "d4"):
        predictor.spec.input.views = views
        t = time.perf_counter()
        probs = predictor.predict_prepared(tiles)
        seconds = time.perf_counter() - t
        m = metrics.multiclass_metrics(y, probs, classes)
        loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0))))
        out[views] = {"top1": m["accuracy"], "macro_f1": m["macro_f1"], "log_loss": loss,
                      "seconds": seconds, "n": len(y)}  # fmt: skip
        print(f"{model} views={views}: top-1 {m['accuracy']:.4f} macro F1 {m['macro_f1']:.4f} "
              f"log loss {loss:.4f} ({len(y)} images, {seconds:.0f} s)", flush=True)  # fmt: skip
    return out


def main() -> None:
    """Both models, both ways; the Markdown table and the last line."""
    results = {model: score(model) for model in sys.argv[1:] or (PLANKTON, LUNG)}
    print("\n| model | held out | views | top-1 | macro F1 | log loss | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for model, r in results.items():
        for views, m in r.items():
            print(f"| {model} | {m['n']} | {views} | {m['top1']:.4f} | {m['macro_f1']:.4f} | "
                  f"{m['log_loss']:.4f} | {m['seconds']:.0f} |")  # fmt: skip
    ratios = {m.split("-")[0]: r["d4"]["top1"] / r["none"]["top1"] for m, r in results.items()}
    print("d4_vs_none_top1 " + " ".join(f"{m}={v:.4f}" for m, v in ratios.items()))


if __name__ == "__main__":
    main()
