"""Recipe for the bundled ``hpa28-efficientnet_lite0`` model (v3): real HPA images and cells.

:mod:`.recipe` trains (sources, inputs, fit, scoring); :mod:`.card` checks the
result through the Predictor beside the previous version and saves the model
folder with its card.
"""

from __future__ import annotations

from pathlib import Path


def run(quick: bool = False, finetune_budget_s: float | None = None, reuse: bool = False) -> Path:
    """Train, then save the model folder (``train_bundled.py hpa``).

    ``reuse`` keeps the bundled weights and redoes only model.json's input, the
    held-out figures and the card (``--reuse``, minutes instead of 70).
    """
    from . import card, recipe

    if reuse:
        return card.rescore()
    recipe.run(quick=quick, staged_budget_s=finetune_budget_s)
    return card.finish()
