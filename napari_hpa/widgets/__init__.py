"""napari dock widgets of napari-hpa: Predict, Annotate (and Retrain, Batch).

Widgets are thin views over ``napari_hpa.core``. Modules here import Qt lazily
where they can, so that the reader and the sample-data functions (which share
``_layers``) stay cheap to import.
"""

from __future__ import annotations

__all__ = ["PredictWidget", "AnnotateWidget"]


def __getattr__(name: str):  # lazy: importing the package must not pull in Qt
    if name == "PredictWidget":
        from .predict.widget import PredictWidget

        return PredictWidget
    if name == "AnnotateWidget":
        from .annotate.widget import AnnotateWidget

        return AnnotateWidget
    raise AttributeError(name)
