"""``napari-hpa models``: list the available models."""

from __future__ import annotations

import argparse
import json
import sys

from ..core.model.registry import bundled_models_dir, list_models, user_models_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the available models", description=__doc__)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(run=run)


def _headline_metric(metrics: dict) -> str:
    for key in ("macro_f1", "top1", "accuracy", "top3"):
        value = metrics.get(key)
        if isinstance(value, int | float):
            return f"{key}={value:.3f}"
    return "-"


def run(args: argparse.Namespace) -> int:
    problems: list[str] = []
    models = list_models(problems=problems)
    for message in problems:  # the others are still listed: one bad folder hides nothing
        print(f"napari-hpa models: skipped a broken model: {message}", file=sys.stderr)
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
                        "metrics": m.spec.metrics,
                    }
                    for m in models
                ],
                indent=2,
            )
        )
        return 0
    if not models:
        print(f"no models found in {bundled_models_dir()} or {user_models_dir()}")
        return 1
    rows = [("MODEL", "VERSION", "TASK", "CLASSES", "CHANNELS", "SOURCE", "METRIC")]
    for m in models:
        rows.append(
            (
                m.name,
                str(m.version),
                f"{m.spec.task.name} ({m.spec.task.kind})",
                str(m.spec.task.num_classes),
                ",".join(m.spec.input.channels),
                m.source,
                _headline_metric(m.spec.metrics),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip())
    return 0
