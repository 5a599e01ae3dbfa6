"""``napari-hpa import-weights``: turn a ``.pt``/``.pth`` state dict into a model folder.

Why a separate step: a PyTorch checkpoint is a pickle, and unpickling a file
from elsewhere can run any code. This command reads it once with
``torch.load(weights_only=True)`` (plain tensors only; anything else is
refused before it can run), checks that the tensors fit the architecture
exactly, and writes a normal safetensors model folder, which napari-hpa then
loads without ever unpickling.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from . import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``import-weights`` subcommand to the CLI's parser."""
    from ..core.model.architectures.base import available_archs

    p = sub.add_parser(
        "import-weights",
        help="import a PyTorch state dict (.pt/.pth) as a model folder, safely",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("weights", type=Path, help="the .pt/.pth file (a state dict of tensors)")
    p.add_argument("--arch", required=True, choices=available_archs(), help="the architecture")
    p.add_argument(
        "--arch-kwargs",
        default="{}",
        help="JSON keyword arguments of the architecture, e.g. '{\"width\": 16}'",
    )
    task = p.add_argument_group("task (one of --task or --classes)")
    task.add_argument("--task", help="a built-in task: hpa28, hela10, bach4")
    task.add_argument("--classes", help="comma list of class names (a custom task)")
    task.add_argument("--kind", choices=["multilabel", "multiclass"], default="multiclass")
    task.add_argument("--task-name", default="custom", help="name of a custom task")
    inp = p.add_argument_group("input")
    inp.add_argument("--channels", help="comma list of input channels (default: the task's)")
    inp.add_argument(
        "--optional-channels", default="", help="comma list of channels that may be missing"
    )
    inp.add_argument("--size", type=int, default=224, help="tile size in px (default 224)")
    inp.add_argument("--fit", type=int, help="resize the longer side to FIT px, SIZE tiles")
    inp.add_argument("--normalize", choices=["none", "percentile"], default="none")
    inp.add_argument("--mean", help="comma list, one per channel (default 0)")
    inp.add_argument("--std", help="comma list, one per channel (default 1)")
    out = p.add_argument_group("output")
    out.add_argument("--name", help="model name (default: the file's stem)")
    out.add_argument("--version", type=int, help="version (default: the next free one)")
    out.add_argument("--out", type=Path, help="models folder (default: your user models folder)")
    out.add_argument("--strip-prefix", default="", help="remove this key prefix, e.g. 'module.'")
    out.add_argument("--description", default="", help="one line about the model")
    out.add_argument("--half", action="store_true", help="store float16 weights (half size)")
    p.set_defaults(run=run)


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _floats(value: str | None, what: str) -> list[float]:
    try:
        return [float(v) for v in _csv(value)]
    except ValueError:
        raise UserError(f"--{what} must be a comma list of numbers, not {value!r}") from None


def _task(args: argparse.Namespace) -> Any:
    from ..core.tasks import get_task, make_task

    if bool(args.task) == bool(args.classes):
        raise UserError("give exactly one of --task NAME or --classes A,B,...")
    if args.task:
        try:
            task = get_task(args.task)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        channels = tuple(_csv(args.channels)) or task.channels
        return make_task(task.classes, task.kind, channels, task.name)
    classes = _csv(args.classes)
    channels = tuple(_csv(args.channels))
    if not channels:
        raise UserError("a custom task needs --channels (e.g. red,green,blue or gray)")
    if args.kind == "multiclass" and len(classes) < 2:
        raise UserError("a multiclass task needs at least two classes")
    return make_task(classes, args.kind, channels, args.task_name)


def run(args: argparse.Namespace) -> int:
    """Run ``napari-hpa import-weights``; return the exit code."""
    from ..core.model.adding import import_state_dict
    from ..core.model.checkpoint import CheckpointError, InputSpec, ModelSpec
    from ..core.model.names import check_model_name
    from ..core.model.registry import writable_models_dir

    path = Path(args.weights).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    name = args.name or path.stem
    try:  # the name and the output folder first: nothing is read before they are right
        check_model_name(name)
        root = writable_models_dir(args.out)
    except CheckpointError as exc:
        raise UserError(str(exc)) from None
    except ValueError as exc:
        hint = "" if args.name else f" (from the file name {path.name!r}; give --name)"
        raise UserError(f"{exc}{hint}") from None
    try:
        arch_kwargs = json.loads(args.arch_kwargs)
    except json.JSONDecodeError as exc:
        raise UserError(f"--arch-kwargs is not JSON ({exc})") from None
    if not isinstance(arch_kwargs, dict):
        raise UserError("--arch-kwargs must be a JSON object")
    task = _task(args)
    n = len(task.channels)
    mean, std = _floats(args.mean, "mean") or [0.0] * n, _floats(args.std, "std") or [1.0] * n
    try:
        spec = ModelSpec(
            name=name,
            version=args.version or 0,
            arch=args.arch,
            task=task,
            input=InputSpec(
                channels=list(task.channels),
                size=args.size,
                fit=args.fit,
                optional_channels=_csv(args.optional_channels),
                mean=mean,
                std=std,
                normalize=args.normalize,
            ),
            arch_kwargs=arch_kwargs,
            description=args.description or f"imported from {path.name}",
            training={"imported_from": str(path.resolve())},
        )
    except (ValueError, TypeError) as exc:
        raise UserError(str(exc)) from None
    try:  # --version: exactly that one; else the next free one, safe against another save
        folder = import_state_dict(
            path,
            spec,
            root,
            strip_prefix=args.strip_prefix,
            half=args.half,
            keep_version=bool(args.version),
        )
    except CheckpointError as exc:
        raise UserError(str(exc)) from None
    print(f"imported {spec.id} -> {folder}")
    return 0
