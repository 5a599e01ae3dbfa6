"""The Predict dock: model picker, channels, Predict/Cancel, the probability table, results."""

from .widget import PredictWidget

__all__ = ["PredictWidget"]
