"""Progress of a training run, folded from its JSON-lines events.

The trainer (``napari-hpa train --progress jsonl``) writes one event a line:
``start``, ``batch``, ``epoch``, ``done``, ``error``...; :class:`Progress`
turns them into a fraction, an ETA and a per-epoch history for the plot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Progress:
    """What the events so far say about a training run.

    ``fraction`` is in [0, 1]; ``eta_s`` is None until it can be estimated.
    ``history`` holds one dict per finished epoch (the ``epoch`` events).
    ``epoch_elapsed_s`` and ``epoch_eta_s`` are the trainer's own clock at its
    last epoch event: seconds since it started, and its estimate of the rest.
    """

    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    batches: int = 0
    fraction: float = 0.0
    eta_s: float | None = None
    elapsed_s: float = 0.0
    stage: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    last_metrics: dict[str, Any] = field(default_factory=dict)
    epoch_elapsed_s: float | None = None
    epoch_eta_s: float | None = None

    def update(self, event: dict[str, Any], t_since_start: float | None = None) -> None:
        """Fold one event into the progress.

        ``t_since_start`` is the seconds since the job started, for events that do
        not carry their own time (the ETA before the first epoch ends).
        """
        kind = event_kind(event)
        num = _numbers(event)
        self.epochs = int(num.get("total_epochs", num.get("epochs", self.epochs)) or self.epochs)
        batches = num.get("batches", num.get("n_batches", num.get("steps", self.batches)))
        self.batches = int(batches or self.batches)
        if kind == "start":
            self.stage = "started"
        elif kind == "batch":
            self.stage = "training"
            self.epoch = int(num.get("epoch", self.epoch) or self.epoch)
            self.batch = int(num.get("batch", num.get("step", self.batch)) or self.batch)
        elif kind == "epoch":
            self.stage = "training"
            self.epoch = int(num.get("epoch", self.epoch) or self.epoch)
            self.batch = self.batches
            metrics = epoch_metrics(event)
            self.history.append(metrics)
            self.last_metrics = metrics
            if "elapsed_s" in num:
                self.epoch_elapsed_s = float(num["elapsed_s"])
                self.epoch_eta_s = float(num["eta_s"]) if "eta_s" in num else None
        elif kind == "done":
            self.stage = "done"
            self.fraction = 1.0
            self.eta_s = 0.0
        elif kind in ("stage", "status"):
            self.stage = str(event.get("stage", event.get("message", self.stage)))
        if kind != "done":
            self.fraction = self._fraction()
        elapsed = num.get("elapsed_s", num.get("elapsed", t_since_start))
        if elapsed is not None:
            self.elapsed_s = float(elapsed)
        eta = num.get("eta_s", num.get("eta"))
        if kind == "done":
            self.eta_s = 0.0
        elif eta is not None:
            self.eta_s = max(0.0, float(eta))
        elif self._epoch_eta() is not None:
            self.eta_s = self._epoch_eta()
        elif self.fraction > 0.02 and self.elapsed_s > 0:
            self.eta_s = self.elapsed_s * (1.0 - self.fraction) / self.fraction

    def _epoch_eta(self) -> float | None:
        """Seconds left from the trainer's epoch timings: its seconds per epoch times the rest.

        Batch events carry no time; their ETA comes from the epochs already timed,
        not from when napari began to watch (a napari reopened during the run would
        otherwise see a few seconds for the whole run). It never exceeds what the
        trainer estimated at its last epoch (a time limit ends the run sooner).
        """
        if not self.epoch_elapsed_s or not self.history or not self.epochs:
            return None
        per_epoch = self.epoch_elapsed_s / len(self.history)
        left = max(0.0, per_epoch * self.epochs * (1.0 - self.fraction))
        if self.epoch_eta_s is not None:
            left = min(left, self.epoch_eta_s)
        return left

    def _fraction(self) -> float:
        if not self.epochs:
            return 0.0
        # Epochs may be counted from 0 or 1 in events; "epoch" events mean that epoch finished.
        done_epochs = len(self.history)
        within = self.batch / self.batches if self.batches else 0.0
        if done_epochs and self.batch >= self.batches:
            within = 0.0
        return float(min(1.0, (done_epochs + min(1.0, within)) / self.epochs))


def event_kind(event: dict[str, Any]) -> str:
    """Return the event's type: its ``event`` (or ``type``) field."""
    return str(event.get("event", event.get("type", "")))


def _numbers(event: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in event.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[key] = value
    return out


_METRIC_ALIASES = {
    "train_loss": ("train_loss", "loss", "training_loss"),
    "val_loss": ("val_loss", "valid_loss", "validation_loss"),
    "val_macro_f1": ("val_macro_f1", "macro_f1", "val_f1", "f1"),
}


def epoch_metrics(event: dict[str, Any]) -> dict[str, Any]:
    """``epoch``, ``train_loss``, ``val_loss``, ``val_macro_f1`` (None if absent) of an epoch event.

    The values may sit at the top level or in a ``metrics`` / ``val`` sub-dict.
    """
    pools: list[dict[str, Any]] = [event]
    for key in ("metrics", "val", "val_metrics", "train"):
        sub = event.get(key)
        if isinstance(sub, dict):
            pools.append(sub)
    out: dict[str, Any] = {"epoch": event.get("epoch")}
    for name, aliases in _METRIC_ALIASES.items():
        value = None
        for pool in pools:
            for alias in aliases:
                v = pool.get(alias)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    value = float(v)
                    break
            if value is not None:
                break
        out[name] = value
    # ``val.loss`` / ``val.macro_f1`` spelled inside a "val" dict.
    val = event.get("val")
    if isinstance(val, dict):
        if out["val_loss"] is None and isinstance(val.get("loss"), (int, float)):
            out["val_loss"] = float(val["loss"])
        if isinstance(val.get("macro_f1"), (int, float)):
            out["val_macro_f1"] = float(val["macro_f1"])
    return out
