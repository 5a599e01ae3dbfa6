"""What the Retrain widget shows and does, and the texts of its progress line (no Qt)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...jobs.compare import Comparison
from ...jobs.retrain import DataSummary
from ...jobs.runner import Job, Progress


@dataclass
class RetrainState:
    """What the Retrain widget shows and does (no Qt).

    ``job`` is the training job shown, ``compare_job`` its comparison,
    ``comparison`` the finished table, ``pending`` the napari thread workers in
    flight, ``latest`` the newest worker of each kind whose result is still wanted.
    """

    db: Path | None = None
    db_chosen: bool = False
    base_path: str | None = None
    base_chosen: bool = False
    preset: str = "quick"
    holdout_fraction: float = 0.2
    summary: DataSummary | None = None
    job: Job | None = None
    compare_job: Job | None = None
    comparison: Comparison | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    starting: bool = False
    pending: list[Any] = field(default_factory=list)
    latest: dict[str, Any] = field(default_factory=dict)


def format_eta(seconds: float | None) -> str:
    """``~2 min 05 s left``-style text ('' when unknown)."""
    if seconds is None:
        return ""
    s = int(round(seconds))
    if s >= 60:
        return f"~{s // 60} min {s % 60:02d} s left"
    return f"~{s} s left"


def progress_text(p: Progress) -> str:
    """``Epoch 4 of 6 · val F1 0.512 · ~1 min 05 s left`` (what the status line says)."""
    if not p.epochs:
        return "Loading the images and the parent model…"
    parts = [f"Epoch {max(1, p.epoch, len(p.history))} of {p.epochs}"]
    f1 = p.last_metrics.get("val_macro_f1")
    if isinstance(f1, float):
        parts.append(f"val F1 {f1:.3f}")
    eta = format_eta(p.eta_s)
    if eta:
        parts.append(eta)
    return " · ".join(parts) + ". You can keep annotating."
