"""What a training run leaves next to the weights: a report folder and a model card.

:func:`save_result` writes a trained network as a new model version. The
report (``metrics.json``, ``history.csv``, ``confusion.png``,
``curves.png``) lets anyone judge a model without re-running it; the model
card (``README.md``) says in plain words what the model is for and what it was
trained on. Figures use matplotlib's Agg canvas directly (no pyplot state), so
this works headless and from worker threads.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..model.checkpoint import ModelSpec
    from .config import TrainConfig, TrainResult
    from .data import TrainData


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_confusion(
    cm: np.ndarray, classes: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Confusion matrix (rows true, columns predicted), row-normalised colours, with counts."""
    cm = np.asarray(cm)
    classes = list(classes)
    if len(classes) > 12:  # show only the classes that occur, or 28 rows are unreadable
        used = np.flatnonzero((cm.sum(0) + cm.sum(1)) > 0)
        if 0 < len(used) < len(classes):
            cm = cm[np.ix_(used, used)]
            classes = [classes[i] for i in used]
    k = len(classes)
    side = min(16.0, 2.5 + 0.38 * k)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot(1, 1, 1)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    labels = [c if len(c) <= 22 else c[:20] + "…" for c in classes]
    ax.set_xticks(range(k), labels, rotation=90, fontsize=7 if k > 10 else 9)
    ax.set_yticks(range(k), labels, fontsize=7 if k > 10 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        str(int(cm[i, j])),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    ax.set_title(title or "confusion matrix")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def plot_curves(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Training and validation loss, and validation macro F1 (and accuracy), per epoch."""
    fig = _figure(9, 3.6)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    epochs = [h["epoch"] for h in history]
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train (weighted)")
    ax1.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(epochs, [h["val_macro_f1"] for h in history], "o-", label="val macro F1")
    if history and "val_accuracy" in history[0]:
        ax2.plot(epochs, [h["val_accuracy"] for h in history], "s-", label="val accuracy")
    ax2.set_ylim(0, 1.02)
    ax2.set_xlabel("epoch")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def plot_search(trials: Sequence[dict[str, Any]], params: Sequence[str], path: str | Path) -> Path:
    """Plot the validation score per trial, and against each searched parameter."""
    n = 1 + len(params)
    fig = _figure(3.2 * n, 3.2)
    done = [t for t in trials if t.get("value") is not None]
    ax = fig.add_subplot(1, n, 1)
    ax.plot([t["trial"] for t in done], [t["value"] for t in done], "o")
    ax.set_xlabel("trial")
    ax.set_ylabel("val macro F1")
    for i, p in enumerate(params, start=2):
        ax = fig.add_subplot(1, n, i)
        xs = [t["params"].get(p) for t in done]
        ax.plot(xs, [t["value"] for t in done], "o")
        if p in ("lr", "weight_decay"):
            ax.set_xscale("log")
        ax.set_xlabel(p)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def write_history_csv(history: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Write one row per epoch, ``epoch`` first; a key some epochs lack stays empty there."""
    keys = sorted({k for h in history for k in h}, key=lambda k: (k != "epoch", k))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def write_metrics_report(
    folder: str | Path, metrics: dict[str, Any], classes: Sequence[str], title: str = ""
) -> Path:
    """metrics.json and confusion.png for an evaluation (used by ``napari-hpa evaluate``).

    Each file is written beside its target and renamed (``core/atomic``): a full
    disk leaves the previous files, never half of one. OSError says why.
    """
    from ..atomic import atomic_path, write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "metrics.json", json.dumps(metrics, indent=2))
    if metrics.get("confusion"):
        with atomic_path(folder / "confusion.png") as tmp:
            plot_confusion(np.asarray(metrics["confusion"]), classes, tmp, title)
    return folder


def write_report(folder: str | Path, result: TrainResult, spec: ModelSpec) -> Path:
    """Write the ``report/`` folder of a trained model version."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": spec.id,
        "parent": spec.parent,
        "status": result.status,
        "best_epoch": result.best_epoch,
        "n_train": result.n_train,
        "n_val": result.n_val,
        "metrics": result.metrics,
        "history": result.history,
        "search": result.extra.get("search"),
    }
    (folder / "metrics.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    if result.history:
        write_history_csv(result.history, folder / "history.csv")
        plot_curves(result.history, folder / "curves.png")
    kind = "confusion" if spec.task.kind == "multiclass" else "true x predicted co-occurrence"
    if result.metrics.get("confusion"):
        plot_confusion(
            np.asarray(result.metrics["confusion"]),
            spec.task.classes,
            folder / "confusion.png",
            f"{spec.id}: validation {kind}",
        )
    return folder


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else "n/a" if v is None else str(v)


def model_card(spec: ModelSpec, result: TrainResult | None = None, notes: str = "") -> str:
    """Write a short README for the version folder: purpose, data, numbers, limits."""
    m = spec.metrics
    t = spec.training
    lines = [
        f"# {spec.name} v{spec.version}",
        "",
        spec.description,
        "",
        "## What it does",
        f"- Task `{spec.task.name}` ({spec.task.kind}), {spec.task.num_classes} classes: "
        + ", ".join(spec.task.classes[:12])
        + (" ..." if spec.task.num_classes > 12 else ""),
        f"- Architecture `{spec.arch}` {spec.arch_kwargs or ''}; input {spec.input.size} px, "
        f"channels {', '.join(spec.input.channels)}"
        + (
            f" (optional: {', '.join(spec.input.optional_channels)})"
            if spec.input.optional_channels
            else ""
        )
        + f", normalisation `{spec.input.normalize}`.",
        f"- Parent: {spec.parent or 'none (trained from scratch)'}"
        + (" - new classification head for this task" if t.get("new_head") else ""),
        "",
        "## Training data",
        f"- {t.get('data', 'unknown')}; {t.get('n_train')} training and {t.get('n_val')} "
        f"validation images; fingerprint `{spec.data_fingerprint}`.",
        f"- Stopped: {t.get('status')} after {t.get('epochs_run')} epochs (best epoch "
        f"{t.get('best_epoch')}), {_fmt(t.get('duration_s'))} s on {t.get('device')}.",
        "",
        "## Held-out numbers (validation split)",
        f"- macro F1 {_fmt(m.get('macro_f1'))}, micro F1 {_fmt(m.get('micro_f1'))}, "
        f"macro AUROC {_fmt(m.get('macro_auroc'))}"
        + (f", accuracy {_fmt(m.get('accuracy'))}" if "accuracy" in m else ""),
        "- The validation split also chose the best epoch and the per-class thresholds, so "
        "these numbers are optimistic; use `napari-hpa evaluate` on independent images.",
        "- Details: `report/metrics.json`, `report/curves.png`, `report/confusion.png`.",
    ]
    if notes:
        lines += ["", "## Notes", notes]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- saving
def output_folder(config: TrainConfig) -> Path:
    """Check the run's model name and output folder before it starts; return the folder.

    A bad name, ``$NAPARI_HPA_HOME`` pointing to a file, or a read-only or full
    models folder is a :class:`~napari_hpa.core.model.checkpoint.CheckpointError`
    (one line) now, not after the run has finished and been lost.
    """
    from ..model.checkpoint import checked_name
    from ..model.registry import writable_models_dir

    checked_name(config.name)
    return writable_models_dir(config.out_root)


def save_result(
    result: TrainResult,
    config: TrainConfig,
    data: TrainData,
    root: str | Path | None = None,
    extra_files: Callable[[Path], None] | None = None,
) -> Path:
    """Write a result as the next version of ``config.name``, atomically; return its folder.

    Weights, ``model.json``, ``report/`` and ``README.md`` appear together or
    not at all (``checkpoint.save_model`` renames a finished temporary folder).
    Two runs saving the same name at once get different versions, and neither
    loses its model (``registry.save_new_version``).
    """
    from ..model.registry import save_new_version

    if result.spec is None or result.net is None:
        raise ValueError("nothing to save: no epoch finished")
    folder = Path(root).expanduser() if root else output_folder(config)
    spec = result.spec
    spec.metrics = {
        k: v for k, v in result.metrics.items() if k not in ("confusion", "per_class", "thresholds")
    }
    spec.metrics["per_class_f1"] = {
        r["class"]: r["f1"] for r in result.metrics.get("per_class", []) if r["f1"] is not None
    }
    spec.data_fingerprint = result.fingerprint
    spec.description = (
        config.description
        or spec.description
        or (f"{spec.task.name} classifier ({spec.arch}) trained with napari-hpa")
    )
    spec.training = {
        "config": config.to_dict(),
        "status": result.status,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "n_train": result.n_train,
        "n_val": result.n_val,
        "data": data.origin,
        **result.extra.get("info", {}),
        "device": result.extra.get("device"),
        "precision": result.extra.get("precision"),
        "duration_s": result.extra.get("duration_s"),
    }
    if "stop_reason" in result.extra:
        spec.training["stop_reason"] = result.extra["stop_reason"]

    def write_extra(tmp: Path) -> None:
        write_report(tmp / "report", result, spec)
        card = model_card(spec, result, notes=config.notes)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        if extra_files is not None:
            extra_files(tmp)

    path = save_new_version(result.net, spec, folder, half=config.half, write_extra=write_extra)
    result.path = path
    return path
