"""What a prediction is: one image's (or cell's) probabilities, decided classes and maps.

Kept apart from :mod:`.predict` (which makes them) so that readers of results, such as
the CLI's writers and the docks, need not reason about devices and backends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .checkpoint import ModelSpec
from .heat import Activations
from .metrics import decide_multilabel


class NonFiniteOutput(ValueError):
    """The network gave NaN or infinite outputs: its weights or ``model.json`` are damaged.

    A ValueError, so every caller that turns a bad image into one line (the CLI, a
    batch's error row, a napari notification) does the same here: a NaN must never
    be shown or written as a probability.
    """

    def __init__(self, model_id: str) -> None:
        super().__init__(
            f"model {model_id} gave non-finite outputs (NaN or infinity): its weights or "
            "model.json (input mean/std) are damaged; retrain it or pick another model"
        )


def is_finite(probabilities: np.ndarray) -> bool:
    """Return True when every probability is a finite number (see :class:`NonFiniteOutput`)."""
    return bool(np.isfinite(probabilities).all())


@dataclass
class Prediction:
    """The result for one image (or one cell)."""

    image_id: str
    source: str
    model_id: str
    classes: tuple[str, ...]
    probabilities: np.ndarray
    predicted: list[int]
    cams: dict[int, np.ndarray] = field(default_factory=dict)
    activations: Activations | None = field(default=None, repr=False)

    @property
    def predicted_names(self) -> list[str]:
        """Names of the predicted classes."""
        return [self.classes[i] for i in self.predicted]

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """Return the ``k`` most probable classes as (name, probability), highest first."""
        order = np.argsort(-self.probabilities)[:k]
        return [(self.classes[i], float(self.probabilities[i])) for i in order]

    def to_dict(self) -> dict:
        """Return a JSON-able summary, no maps (``napari-hpa predict --out FILE.json``)."""
        return {
            "image": self.source,
            "image_id": self.image_id,
            "model": self.model_id,
            "probabilities": dict(zip(self.classes, map(float, self.probabilities), strict=True)),
            "predicted": [int(i) for i in self.predicted],
            "predicted_names": self.predicted_names,
        }


def decide(probabilities: np.ndarray, spec: ModelSpec) -> list[int]:
    """Predicted classes: over their threshold (multilabel), or the argmax.

    Multilabel keeps at least the top class, unless the task has only one class.
    """
    if spec.task.multilabel:
        chosen = decide_multilabel(np.asarray(probabilities)[None], np.asarray(spec.thresholds))
        return [int(i) for i in np.flatnonzero(chosen[0])]
    return [int(np.argmax(probabilities))]
