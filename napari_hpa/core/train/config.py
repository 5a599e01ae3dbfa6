"""A training run's request (:class:`TrainConfig`) and its outcome (:class:`TrainResult`).

Kept apart from the loop so that the run set-up and the report can name them
without importing the loop that imports them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..model.architectures.base import ClassifierNet
from ..model.checkpoint import ModelSpec
from .augment import AugmentConfig
from .data import DataError


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
    ``freeze_bn`` keeps every batch-norm layer's statistics as they are (the
    parent's, when fine-tuning): small batches from another microscope then
    cannot replace them with noisy batch statistics; the layers' scale and
    shift still train.
    """

    name: str = "my-model"
    arch: str = "small_cnn"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    base: str | None = None
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
        if self.schedule not in ("onecycle", "cosine"):
            raise ValueError(f"schedule must be onecycle or cosine, not {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch size must be >= 1 and the learning rate > 0")
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

    status: str  # completed | early_stopping | cancelled | time_limit
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
