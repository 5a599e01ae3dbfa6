"""``napari-hpa evaluate``: score a model on labelled images.

Predictions go through :class:`~napari_hpa.core.model.predict.Predictor` (the same
path as ``predict``) with the model's stored thresholds. Prints a metrics JSON,
then ``top1_accuracy=...``/``top3_accuracy=...`` when every image has one label,
and ``macro_f1=<value>`` as the last line, for scripts.

``--cells`` segments every image as napari does, classifies each cell, and scores
each cell against its image's labels (weak labels): it prints per-cell top-1,
top-3 and macro F1, then the image-level figures, and ``cell_top1=<value>`` last.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import atomic_open
from ..core.image.channels import ChannelMap, ChannelMismatchError, apply_channel_map
from ..core.image.exposure import exposure_problem
from ..core.image.io import ImageData, ImageReadError, read_image
from ..core.model.checkpoint import CheckpointError
from ..core.model.metrics import evaluate
from ..core.tasks import BUILTIN_TASKS
from ..core.train.data import DataError, load_csv, load_folder_per_class, targets_matrix
from . import UserError, announce_model, chosen_model, shown
from .options import add_backend_option, add_channels_option, channel_map
from .outputs import check_output_folder, reporting_writes


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand to the CLI's parser."""
    p = sub.add_parser(
        "evaluate",
        help="score a model on labelled images (macro F1, AUROC, top-k, confusion)",
        description="Evaluate a model on a folder of images with a Kaggle CSV (Id,Target; Id = "
        "HPA id or file stem) or a folder per class. The last printed line is macro_f1=<value>.",
    )
    p.add_argument(
        "--model",
        default=None,
        help="model name, name@version or folder (default: the model chosen in napari, "
        "else the bundled one)",
    )
    p.add_argument("--data", type=Path, required=True, help="folder of images")
    p.add_argument("--labels", type=Path, help="Kaggle CSV: Id,Target")
    p.add_argument(
        "--folder-per-class", action="store_true", help="--data holds one sub-folder per class"
    )
    p.add_argument(
        "--label-task",
        choices=sorted(BUILTIN_TASKS),
        help="numeric labels are ids of this built-in task (default: the model's classes)",
    )
    p.add_argument(
        "--out", type=Path, help="folder for metrics.json, confusion.png, predictions.csv"
    )
    p.add_argument(
        "--cells",
        action="store_true",
        help="segment each image, classify every cell, score each cell against its image's "
        "labels (last line: cell_top1=<value>)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--batch-size", type=int, default=16)
    add_channels_option(p)
    add_backend_option(p)
    p.set_defaults(run=run)


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in metrics.items() if k not in ("confusion", "per_class")}
    out["per_class_f1"] = {
        r["class"]: r["f1"] for r in metrics.get("per_class", []) if r["f1"] is not None
    }
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``napari-hpa evaluate``; return the exit code."""
    from ..core.model.predict import Predictor
    from ..core.tasks import get_task
    from ..core.train.report import write_metrics_report

    if args.out is not None:  # before the model and the images: a bad folder is one line at once
        check_output_folder(args.out)
    choice = chosen_model(args.model)
    try:
        predictor = Predictor(
            choice.entry, device=args.device, batch_size=args.batch_size, backend=args.backend
        )
    except (LookupError, CheckpointError, ValueError) as exc:
        raise UserError(
            str(exc.args[0]) if isinstance(exc, LookupError) and exc.args else str(exc)
        ) from None
    spec = predictor.spec
    task = spec.task
    mapping = channel_map(args.channels, spec.input.channels)
    try:
        if args.folder_per_class:
            data = load_folder_per_class(args.data, task)
        elif args.labels is None:
            raise UserError("give --labels CSV (Id,Target), or --folder-per-class")
        else:
            namespace = get_task(args.label_task).classes if args.label_task else None
            data = load_csv(args.data, args.labels, task, label_classes=namespace)
    except (DataError, ImageReadError) as exc:
        raise UserError(str(exc)) from None
    announce_model(choice)
    for w in data.warnings:
        print(f"warning: {shown(w)}", file=sys.stderr)
    if args.cells:
        return _run_cells(args, predictor, data.samples, mapping)
    kept, probs = [], []
    chunk = max(1, args.batch_size)
    for start in range(0, len(data.samples), chunk):
        images = []
        try:
            for s in data.samples[start : start + chunk]:
                image = _read(s.source, mapping, spec.input.invert)
                if image is not None:
                    images.append((s, image))
            preds = predictor.predict([im for _, im in images])
        except ChannelMismatchError as exc:
            raise UserError(f"{args.data}: {exc}") from None
        kept += [s for s, _ in images]
        probs += [p.probabilities for p in preds]
    if not kept:
        raise UserError(f"{args.data}: no readable labelled image")
    y = targets_matrix(kept, task.num_classes)
    p = np.stack(probs)
    metrics = evaluate(task.kind, y, p, spec.thresholds, task.classes)
    metrics = {"model": spec.id, "data": data.origin, **metrics}
    if args.out is not None:
        with reporting_writes(args.out):
            title = f"{spec.id} on {args.data.name}"
            write_metrics_report(args.out, metrics, task.classes, title)
            with atomic_open(args.out / "predictions.csv", "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["image", "true", *task.classes])
                for s, row in zip(kept, p, strict=True):
                    writer.writerow(
                        [s.source, " ".join(map(str, s.targets)), *(f"{v:.6f}" for v in row)]
                    )
    print(json.dumps(_summary(metrics), indent=2))
    for k in ("top1_accuracy", "top3_accuracy"):
        if metrics.get(k) is not None:
            print(f"{k}={metrics[k]:.4f}")
    print(f"macro_f1={metrics['macro_f1']:.4f}")
    return 0


def _read(source: str, mapping: ChannelMap | None, invert: bool = False) -> ImageData | None:
    """One labelled image with ``--channels`` applied; an unreadable one is named and skipped.

    A blank or saturated image is kept (its label is what it is) but named, since a
    score over such images says little about the model.
    """
    try:
        image = apply_channel_map(read_image(source), mapping)
    except ImageReadError as exc:
        print(f"warning: skipping {shown(exc)}", file=sys.stderr)
        return None
    problem = exposure_problem(image.data, image.channel_names, invert)  # the model's invert
    if problem:
        print(f"warning: {shown(source)}: {problem}", file=sys.stderr)
    return image


def _labelled_images(
    samples: list[Any],
    num_classes: int,
    mapping: ChannelMap | None = None,
    invert: bool = False,
) -> Iterator[tuple[Any, np.ndarray]]:
    """(image, targets) of every readable sample; unreadable ones are named and skipped."""
    for s in samples:
        image = _read(s.source, mapping, invert)
        if image is not None:
            yield image, targets_matrix([s], num_classes)[0]


def _run_cells(
    args: argparse.Namespace, predictor: Any, samples: list[Any], mapping: ChannelMap | None
) -> int:
    from ..core.atomic import write_text
    from ..core.model.cell_evaluation import cell_metrics, classify_images_and_cells

    spec = predictor.spec
    try:
        scores = classify_images_and_cells(
            predictor, _labelled_images(samples, spec.task.num_classes, mapping, spec.input.invert)
        )
    except ChannelMismatchError as exc:
        raise UserError(f"{args.data}: {exc}") from None
    if not scores.names:
        raise UserError(f"{args.data}: no readable labelled image")
    m = cell_metrics(scores, np.asarray(spec.thresholds, np.float32))
    if m["cells"] == 0:
        raise UserError(f"{args.data}: no cell was found in {m['images']} images")
    result = {"model": spec.id, "data": str(args.data), **m}
    if args.out is not None:
        with reporting_writes(args.out):
            text = json.dumps(result, indent=2, default=str)
            write_text(args.out / "cell_metrics.json", text)
    print(json.dumps(result, indent=2))
    for k in ("cell_top3", "cell_macro_f1", "image_top1", "image_top3", "image_macro_f1"):
        if m.get(k) is not None:
            print(f"{k}={m[k]:.4f}")
    print(f"cell_top1={m['cell_top1']:.4f}")
    return 0
