"""``napari-hpa models``: list the available models, their figures and the data behind them.

Everything printed from a model folder (names, tasks, channels, the data a figure
was measured on, paths, why a folder was skipped) goes through
:func:`~napari_hpa.core.model.names.printable`: a shared ``model.json`` cannot move
the cursor, clear the screen or forge rows with escape codes or newlines.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..core.model.names import printable
from ..core.model.registry import ModelEntry, bundled_models_dir, list_models, user_models_dir

#: Printed under the table: the figures of different models are rarely on the same images.
NOT_COMPARABLE = (
    "Figures measured on different data are not comparable (see MEASURED ON); to compare "
    "models, score each on the same images: napari-hpa evaluate --model NAME --data FOLDER "
    "--labels CSV."
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``models`` subcommand to the CLI's parser."""
    p = sub.add_parser("models", help="list the available models", description=__doc__)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(run=run)


def _headline_metric(metrics: dict[str, Any]) -> str:
    """Return the first of macro F1, top-1, accuracy, top-3; then top-1 and top-3 if recorded.

    A macro F1 over 28 classes on a held-out set that shows few of them is low however
    good the ranking is (the HPA model's 0.037 beside a top-3 of 0.519), so the
    ranking figures are shown beside it.
    """
    shown = []
    for key in ("macro_f1", "top1", "accuracy", "top3"):
        value = metrics.get(key)
        if isinstance(value, int | float):
            shown.append(key)
            break
    shown += [
        k for k in ("top1", "top3") if k not in shown and isinstance(metrics.get(k), int | float)
    ]
    return " ".join(f"{key}={float(metrics[key]):.3f}" for key in shown) or "-"


def measured_on(entry: ModelEntry) -> str:
    """On which images the model's headline figure was measured, in words.

    The bundled models were scored on held-out real images, a model trained here on
    the validation split of its own training data: the figures look alike but are
    not comparable, and a listing that does not say so invites the wrong choice.
    """
    metrics, spec = entry.spec.metrics, entry.spec
    described = metrics.get("headline_set")
    if isinstance(described, str) and described:
        return described
    evaluated = metrics.get("evaluated_on")
    n = metrics.get("n_samples")
    count = f", {n} images" if isinstance(n, int) else ""
    if isinstance(evaluated, str) and evaluated.startswith("validation"):
        return f"validation split of its own training{count}"
    if isinstance(evaluated, str) and evaluated:
        return evaluated + count
    held = metrics.get("n_held_out")
    data = spec.data_fingerprint or ""
    origin = "" if not data or data.startswith("sha256:") else f" of {data.split(':')[0]}"
    if isinstance(held, int):
        return f"{held} held-out images{origin}"
    return "not recorded" if _headline_metric(metrics) != "-" else "-"


def _current_id() -> tuple[str | None, str]:
    """Return the id of the model that ``predict`` and ``batch`` use without --model, and why."""
    from ..core.model.checkpoint import CheckpointError
    from ..core.model.preferences import current_model

    try:
        choice = current_model()
    except (LookupError, CheckpointError):
        return None, ""
    return choice.entry.id, choice.reason


def run(args: argparse.Namespace) -> int:
    """Run ``napari-hpa models``; return the exit code."""
    problems: list[str] = []
    models = list_models(problems=problems)
    for message in problems:  # the others are still listed: one bad folder hides nothing
        print(
            f"napari-hpa models: skipped a broken model: {printable(message, 400)}", file=sys.stderr
        )
    current, reason = _current_id() if models else (None, "")
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": m.id,
                        "name": m.name,
                        "version": m.version,
                        "task": m.spec.task.name,
                        "kind": m.spec.task.kind,
                        "classes": len(m.spec.task.classes),
                        "channels": list(m.spec.input.channels),
                        "source": m.source,
                        "path": str(m.path),
                        "current": m.id == current,
                        "metrics": m.spec.metrics,
                        "measured_on": measured_on(m),
                    }
                    for m in models
                ],
                indent=2,
            )
        )
        return 0
    if not models:
        print(printable(f"no models found in {bundled_models_dir()} or {user_models_dir()}", 400))
        return 1
    header = ("", "MODEL", "VERSION", "TASK", "CLASSES", "CHANNELS", "SOURCE", "METRIC")
    rows = [(*header, "MEASURED ON")]
    for m in models:
        cells = (
            "*" if m.id == current else "",
            m.name,
            str(m.version),
            f"{m.spec.task.name} ({m.spec.task.kind})",
            str(m.spec.task.num_classes),
            ",".join(m.spec.input.channels),
            m.source,
            _headline_metric(m.spec.metrics),
            measured_on(m),
        )
        rows.append(tuple(printable(cell, limit=80) for cell in cells))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if current is not None:
        shown = printable(f"{current} ({reason})")
        print(f"\n* used by predict, batch and evaluate without --model: {shown}")
    print(NOT_COMPARABLE)
    return 0
