"""Small builders shared by tests: a tiny real model written in the real format."""

from __future__ import annotations

from pathlib import Path

import torch

from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.model.architectures import build_model
from napari_hpa.core.model.checkpoint import InputSpec, ModelSpec, save_model
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


def make_screen(folder: Path, n_good: int = 37, size: int = 64, seed: int = 0) -> Path:
    """``n_good`` HPA sets plus 3 corrupt images: a 0-byte channel, a truncated
    channel, and a text file named .png. Sources: n_good + 3."""
    write_samples(folder, n=n_good + 2, size=size, seed=seed)
    (folder / "labels.csv").unlink()
    empty = folder / f"synth_{n_good:04d}_red.png"
    empty.write_bytes(b"")
    cut = folder / f"synth_{n_good + 1:04d}_green.png"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    sub = folder / "plate2"
    sub.mkdir()
    (sub / "notes.png").write_text("this is not a picture\n", encoding="utf-8")
    return folder


def prefer_napari_hpa(monkeypatch, patterns: list[str]) -> None:
    """Make napari-hpa the remembered reader of ``patterns`` (in memory: nothing is saved),
    as a user's earlier choice in napari's reader dialog does."""
    from napari.settings import get_settings

    readers = get_settings().plugins.extension2reader
    for pattern in patterns:
        monkeypatch.setitem(readers, pattern, "napari-hpa")
