"""Does the review queue's order teach the model faster? A simulated user on real HPA cells.

Issue 22: the correct-retrain loop measured on real 4-channel HPA cells
(``hpa_duloc_single_cells``: 67 sets of 9 segmented cells, one location per set),
split by set, never by cell.

The parent is ``hpa28-efficientnet_lite0@2``, the bundled HPA model before v3: it never
saw a DULoc set or an ER channel, so it stands for a model meeting a user's new
microscope. (v3 was trained on 47 of the 67 sets: correcting those would teach it
nothing, and the 20 it did not see are too few for a pool and a test set.)

Steps:

1. 25 % of each class's sets are the test set (never corrected, never trained on); the
   rest are the pool the simulated user corrects.
2. The parent predicts the pool once (image and cells), as a user's first Predict of the
   folder; :func:`napari_hpa.core.labels.review.rank_images` orders it. The orders
   compared: the queue's (least certain first: the margin, moved up by disagreeing
   cells), the margin alone (``margin``: is the disagreement term worth keeping?), the
   queue's order with each confusion (an image's top two classes) taken in turn
   (``spread``, :func:`~napari_hpa.core.labels.review.spread_confusions`), random (one
   order per seed) and file order.
3. In rounds, the user "corrects" the next sets of the order (the true label from the
   labels file, stored as a user label in an annotations database), then presses
   Retrain: :func:`napari_hpa.jobs.retrain.start_retrain`, quick preset, the job runner's
   subprocess, exactly as the Retrain dock does. Each round retrains the parent on all
   corrections so far. The database holds the cells Predict segmented, as napari stores
   them, so the retrain also learns each corrected set's cells (its label as theirs).
4. After each round the new model classifies every cell of the test sets through the
   Predictor (segmented once, the same masks for every model): per-cell top-1.

The target is the per-cell top-1 that every random seed reaches within the budget (the
lowest of the random curves' best values); ``corrections_to_target`` is the first round
that reaches it. The last line is ``corrections_to_target_ranked=<n>
corrections_to_target_random=<n> ratio=<random/ranked>`` (means over the seeds).

Run: ``python benchmarks/correction_loop.py [--seeds 3] [--rounds 5,10,15,20,30,40,50]``.
Writes ``<out>/curves.png`` and ``<out>/curves.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bundled.common import DATA, log, stratified_split  # noqa: E402

DULOC = DATA / "hpa_duloc_single_cells"
TASK = "hpa28"
#: The curves of the order the Annotate queue ships as "least certain first".
QUEUE = "ranked"
TEST_FRACTION = 0.25


def split(out: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Copy the pool and the test sets into ``out``; return {source: class} of each."""
    with open(DULOC / "labels.csv", newline="") as fh:
        rows = [(r["Id"], int(r["Target"].split()[0])) for r in csv.DictReader(fh)]
    labels = np.array([c for _, c in rows])
    pool_idx, test_idx = stratified_split(labels, TEST_FRACTION, seed=0)
    from napari_hpa.core.image.sources import find_images

    parts = {}
    for name, idx in (("pool", pool_idx), ("test", test_idx)):
        folder = out / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        truth = {}
        for i in idx:
            set_id, cls = rows[i]
            for f in (DULOC / "images").glob(f"{set_id}_*.jpg"):
                shutil.copyfile(f, folder / f.name)
            truth[set_id] = cls
        parts[name] = {s: truth[Path(s).name] for s in find_images(folder)}
    return parts["pool"], parts["test"]


def predict_sets(model: str | Path, sources: list[str], masks: dict[str, np.ndarray]) -> Any:
    """Image and cell probabilities of ``sources`` through the Predictor (cached masks)."""
    from napari_hpa.core.image.cells import segment_image
    from napari_hpa.core.image.io import read_image
    from napari_hpa.core.model.cell_evaluation import classify_images_and_cells
    from napari_hpa.core.model.predict import Predictor

    predictor = Predictor(model, device="cpu", backend="torch")
    k = len(predictor.spec.task.classes)

    def segment(image: Any) -> np.ndarray:
        if image.source not in masks:
            masks[image.source] = segment_image(image)
        return masks[image.source]

    labelled = ((read_image(s), np.zeros(k, np.float32)) for s in sources)
    return predictor, classify_images_and_cells(predictor, labelled, segment)


def cell_top1(scores: Any, truth: dict[str, int]) -> float:
    """Share of the test cells whose top class is their set's location."""
    hits = n = 0
    for source, cells in zip(scores.names, scores.cell_probs, strict=True):
        if len(cells):
            hits += int(np.sum(cells.argmax(1) == truth[source]))
            n += len(cells)
    return hits / max(n, 1)


def orders(
    parent: Path, pool: dict[str, int], seeds: list[int], masks: dict[str, np.ndarray]
) -> dict[str, list[str]]:
    """The pool in the queue's order, in file order and in one random order per seed."""
    from napari_hpa.core.labels.review import Scored, rank_images, spread_confusions

    sources = sorted(pool)
    predictor, scores = predict_sets(parent, sources, masks)
    classes = list(predictor.spec.task.classes)
    scored = [
        Scored(src, img, {i + 1: c for i, c in enumerate(cells)})
        for src, img, cells in zip(scores.names, scores.image_probs, scores.cell_probs, strict=True)
    ]
    ranked = rank_images(scored, classes, "least_certain")
    margin_only = rank_images(scored, classes, "least_certain", disagreement_weight=0.0)
    out = {
        "ranked": [r.source for r in ranked],
        "margin": [r.source for r in margin_only],
        "spread": [r.source for r in spread_confusions(ranked, scored)],
        "file": sources,
    }
    for seed in seeds:
        out[f"random-{seed}"] = [
            sources[i] for i in np.random.default_rng(seed).permutation(len(sources))
        ]
    log("queue head: " + "; ".join(f"{Path(r.source).name} ({r.reason})" for r in ranked[:3]))
    return out


def retrain(parent: Path, db: Path, seed: int) -> tuple[Path, float]:
    """One press of Retrain (quick preset) through the job runner; the new model's folder."""
    from napari_hpa.jobs.retrain import RetrainRequest, result_entry, start_retrain
    from napari_hpa.jobs.runner import JobManager

    t = time.perf_counter()
    job = start_retrain(
        RetrainRequest(
            str(parent), db, preset="quick", holdout_fraction=0.0, seed=seed, device="cpu"
        ),  # fmt: skip
        JobManager(),
    )
    while not job.is_final:
        job.poll()
        time.sleep(0.5)
    entry = result_entry(job)
    if job.state != "done" or entry is None:
        raise SystemExit(f"retrain {job.state}: {job.record.error}\n{job.log_text()[-2000:]}")
    return Path(entry.path), time.perf_counter() - t


def run_curve(
    name: str, order: list[str], pool: dict[str, int], rounds: list[int], seed: int,
    parent: Path, test: dict[str, int], masks: dict[str, np.ndarray], out: Path,
) -> list[dict[str, float]]:  # fmt: skip
    """Correct along ``order`` round by round, retrain, score; one point per round."""
    from napari_hpa.core.labels.store import AnnotationStore

    folder = out / "runs" / f"{name}-s{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    db = folder / "annotations.sqlite"
    points = []
    done = 0
    for budget in rounds:
        with AnnotationStore(db) as store, store.transaction():
            for source in order[done:budget]:
                # Predict stored the cells it segmented; the user's label is the set's
                store.set_cell_mask(source, masks[source])
                store.set_user_labels(source, TASK, {pool[source]: True})
        done = budget
        child, seconds = retrain(parent, db, seed)
        _, scores = predict_sets(child, sorted(test), masks)
        top1 = cell_top1(scores, test)
        counts = np.bincount([pool[s] for s in order[:budget]], minlength=28)
        points.append({"corrected": budget, "cell_top1": top1, "retrain_s": seconds,
                       "classes": int((counts > 0).sum())})  # fmt: skip
        log(f"{name} seed {seed}: {budget} corrected -> cell top-1 {top1:.3f} "
            f"(retrain {seconds:.0f} s, {int((counts > 0).sum())} classes)")  # fmt: skip
        shutil.rmtree(child, ignore_errors=True)  # the next round starts from the parent
    return points


def to_target(points: list[dict[str, float]], target: float) -> float:
    """Corrections of the first round at or above ``target`` (inf: never)."""
    return next((p["corrected"] for p in points if p["cell_top1"] >= target - 1e-9), float("inf"))


def plot(curves: dict[str, list[dict[str, float]]], parent_top1: float, target: float,
         path: Path) -> None:  # fmt: skip
    """The learning curves as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    colours = {
        "ranked": "tab:red",
        "margin": "tab:orange",
        "random": "tab:blue",
        "file": "tab:gray",
    }
    for key, points in curves.items():
        kind = key.split("-")[0]
        ax.plot([p["corrected"] for p in points], [p["cell_top1"] for p in points],
                marker="o", color=colours[kind], alpha=0.85, label=key)  # fmt: skip
    ax.axhline(parent_top1, color="black", ls=":", label=f"parent @2 ({parent_top1:.3f})")
    ax.axhline(target, color="green", ls="--", label=f"target ({target:.3f})")
    ax.set_xlabel("corrected sets")
    ax.set_ylabel("held-out per-cell top-1")
    ax.set_title("Correct, then Retrain (quick preset): real HPA cells, held out by set")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    """Split, rank, run every curve, print the table and the last line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/napari_hpa_correction_loop"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", default="5,10,15,20,30,40,50")
    parser.add_argument(
        "--orders", default="ranked,margin,random,file", help="the curves to run (comma list)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="keep the curves a previous run saved in --out"
    )
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    os.environ["NAPARI_HPA_HOME"] = str(out / "home")
    from benchmarks.bundled.hpa.card import previous_model

    parent = previous_model()
    seeds = list(range(args.seeds))
    pool, test = split(out)
    rounds = [r for r in (int(v) for v in args.rounds.split(",")) if r <= len(pool)]
    log(f"pool {len(pool)} sets, test {len(test)} sets; rounds {rounds}; parent {parent}")
    masks: dict[str, np.ndarray] = {}
    _, parent_scores = predict_sets(parent, sorted(test), masks)
    parent_top1 = cell_top1(parent_scores, test)
    log(f"parent @2: test per-cell top-1 {parent_top1:.3f}")
    ordered = orders(parent, pool, seeds, masks)
    wanted = args.orders.split(",")
    saved = out / "curves.json"
    curves: dict[str, list[dict[str, float]]] = {}
    if args.resume and saved.is_file():
        old = json.loads(saved.read_text())
        curves = {k: v for k, v in old["curves"].items() if [p["corrected"] for p in v] == rounds}
        log(f"resumed: {', '.join(curves)}")
    plan = [(f"{name}-s{seed}", name, seed) for seed in seeds
            for name in ("ranked", "margin", "spread", "random") if name in wanted]  # fmt: skip
    plan += [("file-s0", "file", 0)] if "file" in wanted else []
    for key, name, seed in plan:
        if key not in curves:
            order = ordered[f"random-{seed}" if name == "random" else name]
            curves[key] = run_curve(name, order, pool, rounds, seed, parent, test, masks, out)
            saved.write_text(json.dumps({"parent": parent_top1, "curves": curves}))
    randoms = [v for k, v in curves.items() if k.startswith("random")]
    target = min(max(p["cell_top1"] for p in c) for c in randoms)
    (out / "curves.json").write_text(
        json.dumps({"parent": parent_top1, "target": target, "rounds": rounds, "curves": curves})
    )
    plot(curves, parent_top1, target, out / "curves.png")
    print(f"\nparent @2 per-cell top-1 on the {len(test)} test sets: {parent_top1:.3f}")
    print("\n| order | " + " | ".join(f"{r} sets" for r in rounds) + " | retrain s (mean) |")
    print("| --- |" + " --- |" * (len(rounds) + 1))
    for key, points in curves.items():
        cells = " | ".join(f"{p['cell_top1']:.3f}" for p in points)
        print(f"| {key} | {cells} | {np.mean([p['retrain_s'] for p in points]):.0f} |")
    n_random = [to_target(c, target) for c in randoms]
    print(f"\ntarget per-cell top-1 {target:.3f} (the lowest best value of the random seeds)")
    print(f"corrections to it: random {n_random} (mean {np.mean(n_random):g})")
    for name in ("ranked", "margin", "spread", "file"):
        runs = [to_target(v, target) for k, v in curves.items() if k.startswith(name + "-")]
        if runs:
            print(f"corrections to it: {name} {runs} (mean {np.mean(runs):g}; ratio "
                  f"random/{name} {np.mean(n_random) / np.mean(runs):.2f})")  # fmt: skip
    queue = [to_target(v, target) for k, v in curves.items() if k.startswith(QUEUE + "-")]
    m_ranked, m_random = float(np.mean(queue)), float(np.mean(n_random))
    print(f"corrections_to_target_ranked={m_ranked:g} corrections_to_target_random={m_random:g} "
          f"ratio={m_random / m_ranked:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
