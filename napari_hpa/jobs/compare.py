"""Score a parent model and its retrained version on the same held-out images.

Run as a background process by :func:`napari_hpa.jobs.retrain.start_compare`::

    python -m napari_hpa.jobs.compare --parent P --child C --holdout holdout.json --out compare.json

Both models go through :class:`~napari_hpa.core.model.predict.Predictor` (the one
inference path) with their own stored thresholds, and are scored with
:func:`napari_hpa.core.model.metrics.evaluate`, so the numbers are the ones
``napari-hpa evaluate`` reports. Progress is one JSON object per stdout line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

COMPARE_FILE = "compare.json"
#: F1 changes smaller than this count as "no change".
SAME_TOLERANCE = 0.01


@dataclass(frozen=True)
class ClassDelta:
    """One class: held-out support and both models' F1 (None where undefined)."""

    name: str
    support: int
    parent_f1: float | None
    child_f1: float | None

    @property
    def delta(self) -> float | None:
        """Child F1 minus parent F1 (None where either is undefined)."""
        if self.parent_f1 is None or self.child_f1 is None:
            return None
        return self.child_f1 - self.parent_f1

    @property
    def verdict(self) -> str:
        """``better``, ``worse``, ``same`` or ``n/a``."""
        d = self.delta
        if d is None:
            return "n/a"
        if d > SAME_TOLERANCE:
            return "better"
        if d < -SAME_TOLERANCE:
            return "worse"
        return "same"


@dataclass
class Comparison:
    """Parent vs new version on the same held-out images."""

    parent: str
    child: str
    n_images: int
    parent_macro_f1: float
    child_macro_f1: float
    rows: list[ClassDelta] = field(default_factory=list)
    parent_summary: dict[str, Any] = field(default_factory=dict)
    child_summary: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    #: Why the new version is worse, where the cause is known (:func:`worse_because`).
    reasons: list[str] = field(default_factory=list)

    @property
    def delta(self) -> float:
        """Child macro F1 minus parent macro F1."""
        return self.child_macro_f1 - self.parent_macro_f1

    @property
    def better(self) -> bool:
        """True when the new version's macro F1 is higher."""
        return self.delta > 0

    def improved(self) -> list[ClassDelta]:
        """Return the classes that got better, most improved first."""
        rows = [r for r in self.rows if r.verdict == "better"]
        return sorted(rows, key=lambda r: -(r.delta or 0))

    def worse(self) -> list[ClassDelta]:
        """Return the classes that got worse, worst first."""
        return sorted((r for r in self.rows if r.verdict == "worse"), key=lambda r: r.delta or 0)

    def headline(self) -> str:
        """One sentence for the widget."""
        sign = "+" if self.delta >= 0 else ""
        word = "about the same as"
        if self.delta > SAME_TOLERANCE:
            word = "better than"
        elif self.delta < -SAME_TOLERANCE:
            word = "worse than"
        images = f"{self.n_images} held-out image{'' if self.n_images == 1 else 's'}"
        line = (
            f"{self.child} is {word} {self.parent} on {images}: "
            f"macro F1 {self.child_macro_f1:.3f} vs {self.parent_macro_f1:.3f} "
            f"({sign}{self.delta:.3f}); {len(self.improved())} class(es) improved, "
            f"{len(self.worse())} got worse."
        )
        if self.reasons and (self.delta < -SAME_TOLERANCE or self.worse()):
            line += " Likely why: " + "; ".join(self.reasons) + "."
        return line

    def to_dict(self) -> dict[str, Any]:
        """Return the comparison as plain data (the job's comparison file)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        """Read a comparison that :meth:`to_dict` wrote."""
        rows = [ClassDelta(**r) for r in data.get("rows", [])]
        return cls(
            parent=str(data["parent"]),
            child=str(data["child"]),
            n_images=int(data["n_images"]),
            parent_macro_f1=float(data["parent_macro_f1"]),
            child_macro_f1=float(data["child_macro_f1"]),
            rows=rows,
            parent_summary=dict(data.get("parent_summary", {})),
            child_summary=dict(data.get("child_summary", {})),
            skipped=list(data.get("skipped", [])),
            reasons=[str(r) for r in data.get("reasons", [])],
        )


def worse_because(comp: Comparison, trained_on: dict[str, int], enough: int) -> list[str]:
    """Say why classes got worse, where the training data show a cause.

    ``trained_on`` counts the corrected training images of each class (by name). A class
    that got worse with fewer than ``enough`` of them was likely not learned, only
    disturbed; a comparison on very few held-out images is mostly noise.
    """
    reasons = [
        f"too few corrected images of {r.name} to learn it ({trained_on.get(r.name, 0)}; "
        f"{enough} or more help)"
        for r in comp.worse()
        if trained_on.get(r.name, 0) < enough
    ]
    if comp.n_images < enough:
        reasons.append(
            f"only {comp.n_images} held-out image{'' if comp.n_images == 1 else 's'}: "
            "one image changes the score a lot"
        )
    return reasons


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "macro_f1",
        "micro_f1",
        "macro_auroc",
        "accuracy",
        "top1_accuracy",
        "exact_match",
        "n_samples",
    )
    return {k: metrics[k] for k in keys if k in metrics}


def compare_models(
    parent: str | Path,
    child: str | Path,
    images: Sequence[tuple[str, Sequence[int]]],
    classes: Sequence[str] | None = None,
    device: str = "auto",
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> Comparison:
    """Score both models on ``images`` = ``(source, class indices)``.

    ``classes`` names the classes the indices refer to (default: the parent's);
    each model is scored on its own classes, matched by name.
    """
    import numpy as np

    from ..core.image.io import ImageReadError, read_image
    from ..core.model.metrics import evaluate
    from ..core.model.predict import Predictor

    emit = progress or (lambda e: None)
    models = [Predictor(parent, device=device), Predictor(child, device=device)]
    names = list(classes or models[0].spec.task.classes)
    emit(
        {
            "event": "start",
            "total": len(images),
            "parent": models[0].model_id,
            "child": models[1].model_id,
        }
    )
    probs: list[list[np.ndarray]] = [[], []]
    kept: list[list[str]] = []
    skipped: list[str] = []
    t0 = time.monotonic()
    for i, (source, targets) in enumerate(images):
        try:
            image = read_image(source)
            out = [m.predict_one(image).probabilities for m in models]
        except (ImageReadError, ValueError) as exc:
            skipped.append(f"{source}: {exc}")
            continue
        for k in range(2):
            probs[k].append(out[k])
        kept.append([names[t] for t in targets if 0 <= t < len(names)])
        elapsed = time.monotonic() - t0
        emit(
            {
                "event": "batch",
                "batch": i + 1,
                "n_batches": len(images),
                "elapsed_s": round(elapsed, 2),
                "eta_s": round(elapsed / (i + 1) * (len(images) - i - 1), 2),
            }
        )
    if not kept:
        raise ValueError("no held-out image could be read")
    results = []
    for k, model in enumerate(models):
        spec = model.spec
        lookup = {c.lower(): j for j, c in enumerate(spec.task.classes)}
        y = np.zeros((len(kept), spec.task.num_classes), np.float32)
        for i, labels in enumerate(kept):
            for name in labels:
                if name.lower() in lookup:
                    y[i, lookup[name.lower()]] = 1
        p = np.stack(probs[k])
        results.append(evaluate(spec.task.kind, y, p, spec.thresholds, spec.task.classes))
    per = [{r["class"]: r for r in m["per_class"]} for m in results]
    rows = []
    for name in models[1].spec.task.classes:
        c_row = per[1].get(name, {})
        p_row = per[0].get(name, {})
        if not c_row.get("support") and c_row.get("f1") is None and p_row.get("f1") is None:
            continue
        support = int(c_row.get("support", 0))
        rows.append(ClassDelta(name, support, p_row.get("f1"), c_row.get("f1")))
    return Comparison(
        parent=models[0].model_id,
        child=models[1].model_id,
        n_images=len(kept),
        parent_macro_f1=float(results[0]["macro_f1"]),
        child_macro_f1=float(results[1]["macro_f1"]),
        rows=rows,
        parent_summary=_summary(results[0]),
        child_summary=_summary(results[1]),
        skipped=skipped,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Compare two models on a retrain job's held-out images (the compare job's process).

    Writes ``--out`` atomically and reports JSON events on stdout; returns the exit code.
    """
    parser = argparse.ArgumentParser(prog="python -m napari_hpa.jobs.compare", description=__doc__)
    parser.add_argument("--parent", required=True)
    parser.add_argument("--child", required=True)
    parser.add_argument("--holdout", type=Path, required=True, help="holdout.json of a retrain job")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    def emit(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    try:
        holdout = json.loads(args.holdout.read_text(encoding="utf-8"))
        images = [(r["source"], r["targets"]) for r in holdout["images"]]
        if not images:
            raise ValueError("no images were held out (too few corrected images)")
        result = compare_models(
            args.parent, args.child, images, holdout.get("classes"), args.device, emit
        )
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
        tmp.replace(args.out)
    except Exception as exc:  # noqa: BLE001 - reported as an event, the runner shows it
        emit({"event": "error", "message": f"{type(exc).__name__}: {exc}"})
        print(f"compare: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    emit(
        {
            "event": "done",
            "path": str(args.out),
            "parent_macro_f1": result.parent_macro_f1,
            "child_macro_f1": result.child_macro_f1,
        }
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
