"""The Retrain dock: fine-tune a model on the corrections in a subprocess, then compare."""

from .widget import RetrainWidget

__all__ = ["RetrainWidget"]
