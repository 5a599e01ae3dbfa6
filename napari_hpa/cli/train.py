"""``napari-hpa train``: train or fine-tune a model and save it as a new version.

With ``--progress jsonl`` every line on stdout is one JSON event (start, batch,
epoch, done, error, plus loading/warning/trial), for the job runner and the
Retrain widget. SIGTERM or Ctrl-C stops after the current batch and still saves
the best epoch so far; a second signal aborts at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.image.channels import ChannelMismatchError
from ..core.image.io import ImageReadError
from ..core.model.architectures.base import POOLS, available_archs
from ..core.model.checkpoint import CheckpointError
from ..core.tasks import BUILTIN_TASKS, HPA_CHANNELS, Task, get_task, make_task
from ..core.train.augment import AugmentConfig
from ..core.train.data import (
    DataError,
    TrainData,
    load_annotations,
    load_csv,
    load_folder_per_class,
)
from . import UserError
from .stopping import StopFlag

CHANNEL_SETS = {"hpa": HPA_CHANNELS, "rgb": ("red", "green", "blue"), "gray": ("gray",)}
#: small_cnn keywords of a new model trained from the command line (the library default,
#: ``pool="avg", stem_stride=1, stage1_stride=2``, is the original network that older
#: models rebuild). The recipe of docs/benchmarks.md, "Synthetic HPA-like data".
SMALL_CNN_DEFAULTS: dict[str, Any] = {
    "width": 16,
    "pool": "avgmax",
    "stem_stride": 2,
    "stage1_stride": 1,
}
_USER_ERRORS = (DataError, CheckpointError, ImageReadError, ChannelMismatchError, LookupError)


def _crop_scale(text: str) -> tuple[float, float]:
    parts = [float(v) for v in text.replace(",", " ").split()]
    if len(parts) == 1:
        parts = [parts[0], 1.0]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError("give MIN,MAX, e.g. 0.5,1")
    return parts[0], parts[1]


def _dropout(text: str) -> tuple[str, float]:
    name, _, p = text.partition("=")
    try:
        return name.strip(), float(p or 0.5)
    except ValueError:
        raise argparse.ArgumentTypeError("give CHANNEL=P, e.g. er=0.5") from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand to the CLI's parser."""
    p = sub.add_parser(
        "train",
        help="train or fine-tune a classifier on labelled images",
        description="Train a new model (or fine-tune --base) on a folder of images with a "
        "Kaggle CSV (Id,Target), a folder per class, or the corrected labels of an "
        "annotation database. Writes <name>-v<N> with weights, model.json, a report/ "
        "folder and a model card.",
    )
    src = p.add_argument_group("data")
    src.add_argument("--data", type=Path, help="folder of images (HPA sets or single files)")
    src.add_argument(
        "--labels", type=Path, help="Kaggle CSV: Id,Target (space-separated class ids or names)"
    )
    src.add_argument(
        "--folder-per-class", action="store_true", help="--data holds one sub-folder per class"
    )
    src.add_argument(
        "--db",
        type=Path,
        help="annotation database (annotations.sqlite): train on corrected labels, the "
        "corrected images and their stored cells (a cell's own labels, else its image's)",
    )
    src.add_argument(
        "--no-cells",
        action="store_true",
        help="with --db: the corrected images only, not their cells",
    )
    src.add_argument(
        "--task",
        nargs="+",
        help="built-in task (hpa28, hela10, bach4) or class names "
        "(one name = a binary task); default: the base model's or the labels' classes",
    )
    src.add_argument("--kind", choices=["auto", "multilabel", "multiclass"], default="auto")
    src.add_argument(
        "--channels",
        help="input channels of a new model: hpa, rgb, gray or a comma list "
        "(default: the task's, else what the images have)",
    )
    src.add_argument("--val-fraction", type=float, default=0.2)
    src.add_argument("--seed", type=int, default=0)
    m = p.add_argument_group("model")
    m.add_argument("--base", help="fine-tune this model (name, name@version or folder)")
    m.add_argument("--arch", default="small_cnn", choices=available_archs())
    m.add_argument(
        "--pretrained",
        action="store_true",
        help="start a new efficientnet_lite0 from ImageNet weights (the pretrained extra): "
        "the head trains alone for the first epoch, then everything at lr x 0.1",
    )
    m.add_argument("--width", type=int, help="small_cnn width (default 16)")
    m.add_argument(
        "--pool",
        choices=POOLS,
        help=f"small_cnn global pooling (default {SMALL_CNN_DEFAULTS['pool']}; avgmax/max pool "
        "the class maps, so a few-pixel structure is not averaged away)",
    )
    m.add_argument(
        "--stem-stride",
        type=int,
        choices=[1, 2],
        help=f"small_cnn first-convolution stride (default {SMALL_CNN_DEFAULTS['stem_stride']}; "
        "2 is about 4x cheaper at full resolution)",
    )
    m.add_argument(
        "--stage1-stride",
        type=int,
        choices=[1, 2],
        help=f"small_cnn second-stage stride (default {SMALL_CNN_DEFAULTS['stage1_stride']}; "
        "1 gives the resolution after the first max pool convolutions of its own, 2 is the "
        "original network)",
    )
    m.add_argument("--size", type=int, help="input size in px (default 128, or the base model's)")
    m.add_argument("--fit", type=int, help="resize the longer side to FIT px and use SIZE tiles")
    m.add_argument("--normalize", choices=["none", "percentile"])
    m.add_argument("--invert", action="store_true", help="dark objects on a bright background")
    m.add_argument(
        "--pad-square", action="store_true", help="pad to a square, keeping aspect ratio"
    )
    m.add_argument(
        "--optional-channels",
        help="comma list of channels that may be missing (default: er for HPA)",
    )
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument(
        "--pos-weight-max",
        type=float,
        default=10.0,
        help="cap on the per-class loss weights from the label frequencies (1 = unweighted)",
    )
    t.add_argument(
        "--threshold-prior",
        type=float,
        default=20.0,
        help="pull per-class thresholds of classes with few validation positives toward one "
        "shared threshold, with weight K / (positives + K); 0 = each class on its own",
    )
    t.add_argument(
        "--weight-average",
        type=float,
        default=0.0,
        metavar="DECAY",
        help="validate and save a moving average of the weights with this decay per step "
        "(e.g. 0.99); 0 = the live weights",
    )
    t.add_argument(
        "--freeze-bn",
        action="store_true",
        help="keep the batch-norm statistics (the parent's when fine-tuning) instead of "
        "re-estimating them from small batches",
    )
    t.add_argument("--schedule", choices=["onecycle", "cosine"], default="onecycle")
    t.add_argument(
        "--freeze-epochs", type=int, help="head-only epochs when fine-tuning (default 1)"
    )
    t.add_argument(
        "--patience", type=int, default=5, help="early-stopping patience in epochs (0 = off)"
    )
    t.add_argument("--crops-per-image", type=int, default=1)
    t.add_argument(
        "--crop-scale",
        type=_crop_scale,
        default=(1.0, 1.0),
        metavar="MIN,MAX",
        help="random crop side as a fraction of the view (default 1,1 = whole image)",
    )
    t.add_argument(
        "--channel-dropout",
        type=_dropout,
        action="append",
        default=[],
        metavar="CH=P",
        help="blank channel CH with probability P (repeatable), e.g. er=0.5",
    )
    t.add_argument(
        "--aug-strength", type=float, default=1.0, help="intensity jitter strength (0 = off)"
    )
    t.add_argument("--no-d4", action="store_true", help="no random rotations/flips")
    t.add_argument(
        "--workers",
        type=int,
        help="DataLoader worker processes (default: auto, 0 for small data or two cores)",
    )
    t.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    t.add_argument("--cache-mb", type=int, default=2048, help="RAM for decoded training images")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    t.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    t.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="CPU training precision: auto is bf16 autocast where the CPU has native bf16 "
        "(AVX-512 BF16, AMX), else fp32; weights, loss and metrics stay fp32",
    )
    t.add_argument(
        "--max-minutes",
        type=float,
        help="time limit: the learning-rate schedule is fitted to the epochs that fit, the run "
        "stops after the last whole one and keeps the best epoch (--epochs is then a maximum)",
    )
    t.add_argument(
        "--search", type=int, default=0, metavar="N", help="hyperparameter search with N trials"
    )
    t.add_argument("--sampler", choices=["tpe", "grid"], default="tpe")
    t.add_argument(
        "--search-over",
        type=_names,
        metavar="NAMES",
        help="what --search varies, comma-separated, among lr, weight_decay, width, "
        "aug_strength, arch (efficientnet_lite0 or small_cnn) and epochs (grid: 4 or 8); "
        "default lr,weight_decay,width,aug_strength",
    )
    o = p.add_argument_group("output")
    o.add_argument(
        "--name", default="my-model", help="model name (the version is the next free one)"
    )
    o.add_argument("--out-root", type=Path, help="models folder (default: the user models folder)")
    o.add_argument("--description", default="", help="one line for the model card")
    o.add_argument("--notes", default="", help="a paragraph for the model card's Notes section")
    o.add_argument("--half", action="store_true", help="store weights as float16")
    o.add_argument("--progress", choices=["text", "jsonl", "none"], default="text")
    p.set_defaults(run=run)


def _names(text: str) -> list[str]:
    return [name.strip().replace("-", "_") for name in text.split(",") if name.strip()]


def _task_arg(args: argparse.Namespace) -> Task | str | list[str] | None:
    if not args.task:
        if args.base:
            from ..core.model.registry import resolve_model

            return resolve_model(args.base).spec.task
        return None
    if len(args.task) == 1 and args.task[0] in BUILTIN_TASKS:
        return get_task(args.task[0])
    return [c for c in args.task]


def _channels(args: argparse.Namespace) -> tuple[str, ...] | None:
    if not args.channels:
        return None
    key = args.channels.strip().lower()
    return tuple(CHANNEL_SETS.get(key, [c.strip() for c in key.split(",") if c.strip()]))


def load_data(args: argparse.Namespace) -> TrainData:
    """Return the training data the flags name."""
    task = _task_arg(args)
    channels = _channels(args)
    if isinstance(task, Task) and channels and not args.base:
        task = Task(task.name, task.kind, task.classes, channels, task.description)
    if args.db:
        if task is None:
            task = get_task("hpa28")
        if isinstance(task, list):
            kind = "multiclass" if args.kind == "multiclass" else "multilabel"
            task = make_task(task, kind, channels or HPA_CHANNELS)
        return load_annotations(args.db, task, cells=not args.no_cells)
    if args.data is None:
        raise UserError("give --data DIR (with --labels CSV or --folder-per-class) or --db FILE")
    if args.folder_per_class:
        return load_folder_per_class(args.data, task, channels)
    if args.labels is None:
        raise UserError("give --labels CSV (Id,Target), or --folder-per-class")
    return load_csv(args.data, args.labels, task, kind=args.kind, channels=channels)


def _arch_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Return the architecture keywords of a new model.

    small_cnn gets the current recipe's defaults (:data:`SMALL_CNN_DEFAULTS`), written to
    model.json so the model rebuilds the same.
    """
    given = {
        "width": args.width,
        "pool": args.pool,
        "stem_stride": args.stem_stride,
        "stage1_stride": args.stage1_stride,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if args.arch != "small_cnn" or args.base:
        return {"width": args.width} if args.width else {}
    return {**SMALL_CNN_DEFAULTS, **given}


def make_config(args: argparse.Namespace) -> Any:
    """Turn the command line into a :class:`~napari_hpa.core.train.config.TrainConfig`."""
    from ..core.train.config import TrainConfig

    arch_kwargs = _arch_kwargs(args)
    optional = None
    if args.optional_channels is not None:
        optional = [c.strip() for c in args.optional_channels.split(",") if c.strip()]
    try:
        aug = AugmentConfig(
            d4=not args.no_d4,
            strength=args.aug_strength,
            crop_scale=args.crop_scale,
            channel_dropout=dict(args.channel_dropout),
        )
        return TrainConfig(
            name=args.name,
            arch=args.arch,
            arch_kwargs=arch_kwargs,
            base=args.base,
            pretrained=args.pretrained,
            size=args.size,
            fit=args.fit,
            normalize=args.normalize,
            invert=args.invert,
            pad_square=args.pad_square,
            optional_channels=optional,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            pos_weight_max=args.pos_weight_max,
            threshold_prior=args.threshold_prior,
            weight_average=args.weight_average,
            freeze_bn=args.freeze_bn,
            schedule=args.schedule,
            freeze_epochs=args.freeze_epochs,
            patience=args.patience,
            val_fraction=args.val_fraction,
            seed=args.seed,
            workers=args.workers,
            device=args.device,
            amp=not args.no_amp,
            precision=args.precision,
            max_minutes=args.max_minutes,
            crops_per_image=args.crops_per_image,
            augment=aug,
            cache_mb=args.cache_mb,
            out_root=str(args.out_root) if args.out_root else None,
            description=args.description,
            notes=args.notes,
            half=args.half,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _printer(mode: str) -> Callable[[dict[str, Any]], None]:
    def jsonl(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    def text(event: dict[str, Any]) -> None:
        e = event["event"]
        trial = (
            f"[trial {event['trial']}/{event['n_trials']}] "
            if "trial" in event and e != "trial"
            else ""
        )
        if e in ("start", "trial_start"):
            print(
                f"{trial}training {event['name']}: {event['n_train']} train / {event['n_val']} "
                f"validation images, {event['total_epochs']} epochs on {event['device']}",
                file=sys.stderr,
            )
        elif e == "epoch":
            acc = f"  acc {event['val_accuracy']:.3f}" if "val_accuracy" in event else ""
            print(
                f"{trial}epoch {event['epoch']}: train loss {event['train_loss']:.4f}  val loss "
                f"{event['val_loss']:.4f}  val macro F1 {event['val_macro_f1']:.3f}{acc}  "
                f"({event['elapsed_s']:.0f} s, ~{event['eta_s']:.0f} s left)",
                file=sys.stderr,
            )
        elif e == "trial":
            print(
                f"trial {event['trial']}: {event['state'].lower()} value={event['value']} "
                f"{event['params']}",
                file=sys.stderr,
            )
        elif e == "warning":
            print(f"warning: {event['message']}", file=sys.stderr)
        elif e == "done":
            if event["path"]:
                f1 = event["metrics"].get("macro_f1")
                print(
                    f"saved {event['model_id']} to {event['path']} (validation macro F1 {f1}; "
                    f"{event['status']})"
                )
            elif not event.get("reason"):  # a diverged run: run() says why, in one line
                print(event.get("message", "no model written"), file=sys.stderr)

    return jsonl if mode == "jsonl" else text if mode == "text" else (lambda e: None)


def run(args: argparse.Namespace) -> int:
    """Run ``napari-hpa train``; return the exit code."""
    from ..core.train.loop import train_model
    from ..core.train.report import output_folder

    emit = _printer(args.progress)
    if args.threads:
        import torch

        torch.set_num_threads(max(1, args.threads))
    try:
        config = make_config(args)  # the name, the sizes and the architecture first
        if args.search_over:
            from ..core.train.search import search_params

            try:
                search_params(config, args.search_over)
            except ValueError as exc:
                raise UserError(f"--search-over: {exc}") from None
        output_folder(config)  # then where the model goes: before any data are read
        data = load_data(args)
        for w in data.warnings:
            emit({"event": "warning", "message": w})
        with StopFlag() as flag:
            if args.search:
                from ..core.train.search import run_search

                result = run_search(
                    config, data, args.search, args.sampler, emit, flag, over=args.search_over
                )
            else:
                result = train_model(config, data, emit, flag)
    except UserError as exc:
        if args.progress == "jsonl":
            emit({"event": "error", "message": str(exc)})
        raise
    except _USER_ERRORS as exc:
        message = str(exc.args[0]) if isinstance(exc, LookupError) and exc.args else str(exc)
        if args.progress == "jsonl":
            emit({"event": "error", "message": message})
        raise UserError(message) from None
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        if args.progress == "jsonl":
            emit({"event": "error", "message": f"{type(exc).__name__}: {exc}"})
        raise
    reason = result.extra.get("stop_reason")
    if result.status == "diverged" and not result.path:
        if args.progress == "jsonl":
            emit({"event": "error", "message": f"{reason}; no model was written"})
        raise UserError(f"{reason}; no model was written")
    if reason and args.progress == "text":
        print(f"warning: {reason}", file=sys.stderr)
    if args.progress == "none" and result.path:
        print(result.path)
    return 0 if result.path else 130 if result.status == "cancelled" else 1
