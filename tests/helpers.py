"""Small builders shared by tests: a tiny real model written in the real format."""

from __future__ import annotations

from pathlib import Path

import torch

from napari_hpa.core.architectures import build_model
from napari_hpa.core.checkpoint import InputSpec, ModelSpec, save_model
from napari_hpa.core.tasks import HPA_CHANNELS, Task, get_task


def tiny_spec(
    task: Task | None = None,
    name: str = "tiny",
    version: int = 1,
    size: int = 32,
    fit: int | None = None,
) -> ModelSpec:
    task = task or get_task("hpa28")
    return ModelSpec(
        name=name,
        version=version,
        arch="small_cnn",
        arch_kwargs={"width": 4, "depth": 2},
        task=task,
        input=InputSpec(
            channels=list(task.channels),
            size=size,
            fit=fit,
            optional_channels=["er"] if tuple(task.channels) == HPA_CHANNELS else [],
        ),
    )


def write_tiny_model(
    root: Path, task: Task | None = None, name: str = "tiny", version: int = 1, seed: int = 0, **kw
) -> Path:
    """Write a randomly initialised small_cnn model folder and return it."""
    spec = tiny_spec(task, name, version, **kw)
    torch.manual_seed(seed)
    net = build_model(
        spec.arch, len(spec.input.channels), spec.task.num_classes, **spec.arch_kwargs
    )
    return save_model(net, spec, root)


def batch_args(folder: Path, out: Path, model: Path, *extra: str) -> list[str]:
    """``napari-hpa batch`` arguments of the tests: CPU, one decode worker, no progress bar."""
    return [
        "batch",
        str(folder),
        *("--out", str(out), "--model", str(model), "--device", "cpu"),
        *("--workers", "1", "--quiet", *extra),
    ]
