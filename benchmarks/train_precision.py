"""bf16 vs fp32 training on the CPU, on real images: speed side by side, and held-out accuracy.

The same recipe is trained twice, ``--precision fp32`` and ``--precision bf16``, on
the real lung H&E tiles of ``../shared/data/lung_histology_lc25000``, with the
validation set held out **by group** (each original image was cut into 20 rotated
tiles; SOURCE.md): the training engine (``core.train.fit``) with its augmentation,
the same seed and the same split. Printed per precision: training images/s (the
epochs after the first, validation excluded) and the held-out top-1 and macro F1
of the best epoch; then a forward+backward step timed alone on random tensors
(:func:`~napari_hpa.core.train.precision.bf16_speedup`, what ``auto`` measures).

Usage::

    python benchmarks/train_precision.py --arch small_cnn --epochs 8
    python benchmarks/train_precision.py --arch efficientnet_lite0 --epochs 3

The last lines are ``bf16_vs_fp32=<engine img/s ratio>`` and ``accuracy_gap=<bf16 - fp32
held-out top-1>``.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch

from napari_hpa.core.tasks import make_task
from napari_hpa.core.train.config import TrainConfig
from napari_hpa.core.train.data import Sample, TrainData
from napari_hpa.core.train.loop import fit
from napari_hpa.core.train.precision import bf16_speedup, cpu_has_native_bf16

LUNG = Path(__file__).resolve().parents[2] / "shared/data/lung_histology_lc25000"


def lung_data(folder: Path, val_share: float, seed: int, limit: int | None) -> TrainData:
    """The lung tiles, with every tile of a held-out group in validation."""
    with (folder / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    classes = sorted({r["label"] for r in rows})
    groups = sorted({r["group"] for r in rows})
    rng = np.random.default_rng(seed)
    held = set(rng.choice(groups, size=max(1, round(len(groups) * val_share)), replace=False))
    rows = [rows[i] for i in rng.permutation(len(rows))[: limit or len(rows)]]
    train, val = [], []
    for r in rows:
        sample = Sample(str(folder / "images" / r["file"]), (classes.index(r["label"]),))
        (val if r["group"] in held else train).append(sample)
    task = make_task(classes, "multiclass", ("red", "green", "blue"), name="lung3")
    return TrainData(task, train, val, origin=f"{folder} (groups held out: {len(held)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="small_cnn")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--limit", type=int, default=None, help="use this many tiles at most")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data", type=Path, default=LUNG)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not (args.data / "labels.csv").is_file():
        raise SystemExit(f"{args.data}: no labels.csv (the real lung tiles are in ../shared/data)")
    data = lung_data(args.data, 0.2, 0, args.limit)
    assert data.val_samples is not None
    print(
        f"native bf16: {cpu_has_native_bf16()}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s); {args.arch} at {args.size} px, batch "
        f"{args.batch_size}, {args.epochs} epochs; {len(data.samples)} training tiles, "
        f"{len(data.val_samples)} held-out tiles ({data.origin})"
    )
    results = {}
    for precision in ("fp32", "bf16"):
        cfg = TrainConfig(
            name=f"precision-{precision}",
            arch=args.arch,
            size=args.size,
            epochs=args.epochs,
            batch_size=args.batch_size,
            patience=0,
            workers=0,
            device="cpu",
            precision=precision,
        )
        t0 = time.monotonic()
        result = fit(cfg, data)
        timed = result.history[1:] or result.history
        rate = result.n_train * len(timed) / sum(h["train_seconds"] for h in timed)
        m = result.metrics
        results[precision] = (rate, float(m["accuracy"]), float(m["macro_f1"]))
        print(
            f"{precision}: {rate:.1f} training img/s; held-out top-1 {m['accuracy']:.4f}, "
            f"macro F1 {m['macro_f1']:.4f} (best epoch {m['best_epoch']}); "
            f"{time.monotonic() - t0:.0f} s",
            flush=True,
        )
        net = result.net
    shape = (min(args.batch_size, 16), 3, args.size, args.size)
    step = bf16_speedup(net, shape, rounds=3)
    print(f"one forward+backward step alone (what auto times): bf16 {step:.2f}x fp32")
    (f_rate, f_top1, _), (b_rate, b_top1, _) = results["fp32"], results["bf16"]
    print(f"bf16_vs_fp32={b_rate / f_rate:.2f}")
    print(f"accuracy_gap={b_top1 - f_top1:+.4f}")


if __name__ == "__main__":
    main()
