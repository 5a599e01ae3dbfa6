"""Does one click of Retrain (quick preset) make a better model, and how fast?

The same code path as the Retrain widget (:func:`napari_hpa.jobs.retrain.start_retrain`,
then :func:`~napari_hpa.jobs.retrain.start_compare`), without the GUI:

1. generate N HPA-style images (``core.synth``) and store their true labels as
   user corrections in an annotations database;
2. retrain the parent on them in a background process (quick preset); 20 % of
   the images are held out and never seen by the trainer;
3. score parent and new version on the held-out images (same images, each
   model with its own thresholds).

Usage::

    python benchmarks/retrain_quality.py [--images 200] [--size 128] \
        [--parent hpa28-synthetic-tiny | weak] [--preset quick] [--extra "--freeze-bn"]

``--parent weak`` starts from a small_cnn trained for one epoch on 40 other
images (a deliberately weak model); by default the bundled synthetic model is
the parent. Prints ``retrain_seconds=``, ``parent_macro_f1=``,
``child_macro_f1=`` and ``retrain_better=``.
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path


def _correct_all(images: Path, db: Path, task: str) -> int:
    from napari_hpa.core.image.sources import find_images
    from napari_hpa.core.labels.store import AnnotationStore

    with open(images / "labels.csv", encoding="utf-8") as fh:
        labels = {r["Id"]: [int(t) for t in r["Target"].split()] for r in csv.DictReader(fh)}
    sources = find_images(images)
    with AnnotationStore(db) as store, store.transaction():
        for source in sources:
            store.set_user_labels(source, task, dict.fromkeys(labels[Path(source).name], True))
    return len(sources)


def _weak_parent(root: Path, size: int) -> str:
    """A small_cnn trained for one epoch on 40 other images: a deliberately weak parent."""
    import subprocess

    from napari_hpa.core.image.synth import write_samples

    data = write_samples(root / "weak-data", n=40, size=size, seed=999)
    cmd = [
        sys.executable,
        "-m",
        "napari_hpa",
        "train",
        "--data",
        str(data),
        "--labels",
        str(data / "labels.csv"),
        "--task",
        "hpa28",
        "--name",
        "weak",
        "--epochs",
        "1",
        "--size",
        str(min(size, 128)),
        "--device",
        "cpu",
        "--progress",
        "none",
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return "weak"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument(
        "--parent", default="hpa28-synthetic-tiny", help="parent model name, or 'weak'"
    )
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--extra", default="", help="more napari-hpa train flags")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="napari-hpa-retrain-quality-"))
    os.environ["NAPARI_HPA_HOME"] = str(root / "home")
    from napari_hpa.core.image.synth import write_samples
    from napari_hpa.core.labels.store import default_db_path
    from napari_hpa.jobs.retrain import (
        RetrainRequest,
        read_comparison,
        result_entry,
        start_compare,
        start_retrain,
    )
    from napari_hpa.jobs.runner import JobManager

    t = time.perf_counter()
    images = write_samples(root / "images", n=args.images, size=args.size, seed=args.seed)
    db = default_db_path(images / "synth_0000")
    n = _correct_all(images, db, "hpa28")
    print(
        f"corrected_images={n} size={args.size} (generated in {time.perf_counter() - t:.0f} s)",
        flush=True,
    )
    parent = _weak_parent(root, args.size) if args.parent == "weak" else args.parent

    manager = JobManager()
    t0 = time.perf_counter()
    job = start_retrain(
        RetrainRequest(
            parent,
            db,
            preset=args.preset,
            holdout_fraction=args.holdout,
            seed=args.seed,
            device=args.device,
            extra_args=shlex.split(args.extra),
        ),
        manager,
    )
    last = -1
    while not job.is_final:
        job.poll()
        if len(job.progress.history) != last:
            last = len(job.progress.history)
            if job.progress.last_metrics:
                m = job.progress.last_metrics
                print(
                    f"  epoch {m['epoch']}: train loss {m['train_loss']:.4f} val loss "
                    f"{m['val_loss']:.4f} val F1 {m['val_macro_f1']:.3f} "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
        time.sleep(0.5)
    train_s = time.perf_counter() - t0
    if job.state != "done" or result_entry(job) is None:
        print(
            f"error: training {job.state}: {job.record.error}\n{job.log_text()[-3000:]}",
            file=sys.stderr,
        )
        return 1
    compare = start_compare(job, manager, device=args.device)
    compare.wait(600)
    total_s = time.perf_counter() - t0
    comp = read_comparison(job)
    if comp is None:
        print(f"error: comparison {compare.state}: {compare.record.error}", file=sys.stderr)
        return 1
    print(comp.headline())
    for r in comp.improved()[:5]:
        print(f"  better: {r.name} {r.parent_f1} -> {r.child_f1} (support {r.support})")
    for r in comp.worse()[:5]:
        print(f"  worse:  {r.name} {r.parent_f1} -> {r.child_f1} (support {r.support})")
    print(f"command={' '.join(job.record.command[1:])}")
    print(f"parent={comp.parent} child={comp.child} held_out_images={comp.n_images}")
    print(f"train_images={job.record.meta.get('n_train_images')}")
    print(f"retrain_seconds={train_s:.1f}")
    print(f"retrain_and_compare_seconds={total_s:.1f}")
    print(f"parent_macro_f1={comp.parent_macro_f1:.4f}")
    print(f"child_macro_f1={comp.child_macro_f1:.4f}")
    print(f"retrain_better={comp.child_macro_f1 > comp.parent_macro_f1}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
