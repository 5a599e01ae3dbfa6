"""Is Cytosol present? A one-class model chosen by a grid search, scored on held-out sets.

Issue 21, part 4: the engine's one-class tasks and ``--search N --sampler grid`` shown on
real images. The data are every real HPA image here with a location label of one class:
the 65 class-example composites (RGB: microtubules, protein, nucleus) and the 67 DULoc
4-channel sets (RGBY). An image is positive when its location is Cytosol.

Steps:

1. Split by set (a composite or a DULoc set is one item; the 9 cells of a set never
   straddle the split): 25 % of each (source, positive) stratum held out, seed 0.
2. ``napari-hpa train --task Cytosol --search 12 --sampler grid --search-over
   lr,arch,epochs`` on the rest, through the CLI's own path: 3 learning rates x 2
   backbones (EfficientNet-Lite0 from ImageNet, small CNN from scratch) x 2 epoch counts,
   each trial validated on 25 % of the training items; the best trial is saved.
3. The saved model scores the held-out items through ``napari-hpa batch`` (the one
   Predictor) at the threshold the training chose on validation: precision, recall, F1
   and the confusion matrix, overall and per source.

Run: ``python benchmarks/cytosol_grid.py [--out DIR]`` (the last line is
``cytosol_f1=<v> precision=<v> recall=<v>``). It prints the trial table and the
held-out figures as Markdown for ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bundled.common import DATA, log, stratified_split  # noqa: E402

COMPOSITES = DATA / "hpa_class_examples_composite"
DULOC = DATA / "hpa_duloc_single_cells"
CYTOSOL_ID = 25
CLASS = "Cytosol"
HELD_OUT = 0.25
SIZE = 192


def items() -> list[tuple[str, str, bool, list[Path]]]:
    """Every labelled real HPA item: (id, source, is Cytosol, its files)."""
    out: list[tuple[str, str, bool, list[Path]]] = []
    with open(COMPOSITES / "labels.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            path = COMPOSITES / row["file"]
            out.append((path.stem, "composite", int(row["class_id"]) == CYTOSOL_ID, [path]))
    with open(DULOC / "labels.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            files = sorted((DULOC / "images").glob(f"{row['Id']}_*.jpg"))
            ids = {int(t) for t in row["Target"].split()}
            out.append((row["Id"], "duloc", CYTOSOL_ID in ids, files))
    return out


def write_split(out: Path) -> tuple[list[int], list[int], list[tuple[str, str, bool, list[Path]]]]:
    """Copy the items into ``out`` (train and held-out folders) and write their labels."""
    every = items()
    strata = np.array([f"{src}:{pos}" for _, src, pos, _ in every])
    train, held = stratified_split(strata, HELD_OUT, seed=0)
    for name, idx in (("train", train), ("held_out", held)):
        folder = out / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        with open(out / f"{name}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["Id", "Target"])
            for i in idx:
                item_id, _, positive, files = every[i]
                for f in files:
                    shutil.copyfile(f, folder / f.name)
                w.writerow([item_id, CLASS if positive else ""])
    return train.tolist(), held.tolist(), every


def search(out: Path, trials: int) -> tuple[Path, float]:
    """The grid search through the CLI; return the saved best model and the minutes."""
    from napari_hpa.cli import main as cli_main

    os.environ["NAPARI_HPA_HOME"] = str(out / "home")
    shutil.rmtree(out / "models", ignore_errors=True)
    args = [
        "train", "--data", str(out / "train"), "--labels", str(out / "train.csv"),
        "--task", CLASS, "--channels", "hpa", "--arch", "efficientnet_lite0", "--pretrained",
        "--size", str(SIZE), "--val-fraction", "0.25", "--patience", "0",
        "--search", str(trials), "--sampler", "grid", "--search-over", "lr,arch,epochs",
        "--threads", os.environ.get("BUNDLED_THREADS", "2"),
        "--name", "cytosol-present", "--out-root", str(out / "models"), "--progress", "text",
    ]  # fmt: skip
    log("napari-hpa " + " ".join(args))
    t = time.time()
    rc = cli_main(args)
    if rc != 0:
        raise SystemExit(f"the search failed (exit {rc})")
    return next((out / "models").glob("cytosol-present-v*")), (time.time() - t) / 60


def held_out_scores(out: Path, model: Path) -> list[tuple[str, bool, bool, float]]:
    """(id, truth, said, probability) of every held-out item, through ``napari-hpa batch``."""
    from napari_hpa.cli import main as cli_main

    table = out / "held_out_predictions.csv"
    table.unlink(missing_ok=True)
    args = ["batch", str(out / "held_out"), "--out", str(table), "--model", str(model),
            "--device", "cpu", "--backend", "torch", "--workers", "0", "--quiet"]  # fmt: skip
    log("napari-hpa " + " ".join(args))
    if cli_main(args) != 0:
        raise SystemExit("the held-out batch failed")
    with open(out / "held_out.csv", newline="") as fh:
        truth = {r["Id"]: r["Target"] == CLASS for r in csv.DictReader(fh)}
    rows = []
    with open(table, newline="") as fh:
        for r in csv.DictReader(fh):
            item = Path(r["image"]).name.removesuffix(".jpg")  # a file, or <folder>/<set id>
            said = r["predicted"].split() == ["0"]  # the one class's index
            rows.append((item, truth[item], said, float(r[CLASS])))
    if len(rows) != len(truth):
        raise SystemExit(f"{len(rows)} predictions for {len(truth)} held-out items")
    return rows


def figures(rows: list[tuple[str, bool, bool, float]]) -> dict[str, float | int]:
    """Precision, recall, F1 and the four cells of the confusion matrix."""
    tp = sum(t and s for _, t, s, _ in rows)
    fp = sum(s and not t for _, t, s, _ in rows)
    fn = sum(t and not s for _, t, s, _ in rows)
    tn = len(rows) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn,
            "tn": tn, "n": len(rows)}  # fmt: skip


def trial_table(model: Path) -> str:
    """The search's ``report/search.csv`` as Markdown."""
    with open(model / "report" / "search.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    lines = ["| trial | lr | backbone | epochs | state | validation macro F1 | best epoch |",
             "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in rows:
        value = f"{float(r['value']):.3f}" if r["value"] else ""
        lines.append(
            f"| {r['trial']} | {float(r['lr']):g} | {r['arch']} | {r['epochs']} | "
            f"{r['state'].lower()} | {value} | {r['best_epoch']} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Split, search, score; print the Markdown and the last line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/napari_hpa_cytosol"))
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument(
        "--reuse", action="store_true", help="score the model a previous run saved in --out"
    )
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    train, held, every = write_split(out)
    pos = sum(every[i][2] for i in train)
    log(f"{len(train)} training items ({pos} Cytosol), {len(held)} held out")
    saved = sorted((out / "models").glob("cytosol-present-v*"))
    if args.reuse and saved:
        model, minutes = saved[-1], float("nan")
    else:
        model, minutes = search(out, args.trials)
    rows = held_out_scores(out, model)
    source = {item_id: src for item_id, src, _, _ in every}
    print(f"\nsearch: {minutes:.1f} min; best model {model.name}\n")
    print(trial_table(model))
    print("\n| held out | items | precision | recall | F1 | TP | FP | FN | TN |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, part in (
        ("all", rows),
        ("composites", [r for r in rows if source[r[0]] == "composite"]),
        ("DULoc sets", [r for r in rows if source[r[0]] == "duloc"]),
    ):
        f = figures(part)
        print(
            f"| {name} | {f['n']} | {f['precision']:.3f} | {f['recall']:.3f} | {f['f1']:.3f} | "
            f"{f['tp']} | {f['fp']} | {f['fn']} | {f['tn']} |"
        )
    f = figures(rows)
    print(f"cytosol_f1={f['f1']:.3f} precision={f['precision']:.3f} recall={f['recall']:.3f}")


if __name__ == "__main__":
    main()
