"""Per-viewer state shared by the napari-hpa widgets (no Qt here).

The Predict and Annotate widgets are separate dock widgets, created by napari
one at a time. They meet in one :class:`Session` per viewer, which holds the
latest prediction, the selected cell and the loaded models, and tells the
widgets about changes through psygnal signals. Widgets keep no state of their
own beyond what they display.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from psygnal import Signal

from ...core.image.io import ImageData
from ...core.model.predict import Prediction, Predictor
from ...core.model.registry import ModelEntry


@dataclass
class PredictionResult:
    """Everything one Predict run produced, ready to display.

    Attributes
    ----------
    image
        The image as the model saw it (rebuilt from the layers).
    entry
        The model used.
    prediction
        Image-level result; ``prediction.cams`` is left empty, the maps live in ``cams``.
    cells
        Cell id -> per-cell prediction (empty when cells were not segmented).
    labels
        (H, W) cell labels, or None (not segmented, or not yet).
    cams
        Class index -> activation map, downsampled by ``cam_factor`` (filled on demand).
    cam_factor
        Integer downsampling factor of the maps in ``cams``.
    timings
        Seconds per stage (``load``, ``classify``, ``segment``, ``cells``).
    raw_cams, grid, predictor
        The network's per-tile class maps, the tile layout and the model, to make more maps.
    cells_display
        The cells layer's data, features and colormap (``_results.CellsDisplay``).
    """

    image: ImageData
    entry: ModelEntry
    prediction: Prediction
    cells: dict[int, Prediction] = field(default_factory=dict)
    labels: np.ndarray | None = None
    cams: dict[int, np.ndarray] = field(default_factory=dict)
    cam_factor: int = 1
    timings: dict[str, float] = field(default_factory=dict)
    raw_cams: np.ndarray | None = None
    grid: Any = None
    cells_display: Any = None
    predictor: Predictor | None = None

    @property
    def source(self) -> str:
        return self.image.source

    @property
    def classes(self) -> tuple[str, ...]:
        return self.prediction.classes

    def order(self) -> list[int]:
        """Class indices by decreasing image-level probability."""
        return [int(i) for i in np.argsort(-self.prediction.probabilities, kind="stable")]


class Session:
    """State of napari-hpa in one viewer; get it with :func:`session_for`."""

    #: A new :class:`PredictionResult` (or None when it was cleared).
    prediction_changed = Signal(object)
    #: The image shown changed (new source string).
    image_changed = Signal(str)
    #: A cell was selected (cell id) or deselected (None).
    cell_selected = Signal(object)
    #: Someone (Annotate's auto-predict) asks the Predict widget to run.
    predict_requested = Signal()

    def __init__(self) -> None:
        self.result: PredictionResult | None = None
        self.selected_cell: int | None = None
        self._predictors: dict[tuple[str, str], Predictor] = {}
        #: Held while a model runs, so a worker never shares a network with another.
        self.model_lock = threading.Lock()

    # -- models ---------------------------------------------------------------------
    def predictor(self, entry: ModelEntry, device: str) -> Predictor:
        """The loaded model for ``(entry, device)``, loading it on first use.

        Call it from a worker thread: loading a large model takes seconds.
        """
        key = (str(entry.path), str(device))
        predictor = self._predictors.get(key)
        if predictor is None:
            predictor = Predictor(entry, device=device)
            self._predictors[key] = predictor
        return predictor

    def is_loaded(self, entry: ModelEntry, device: str) -> bool:
        return (str(entry.path), str(device)) in self._predictors

    # -- results --------------------------------------------------------------------
    def set_result(self, result: PredictionResult | None) -> None:
        self.result = result
        self.selected_cell = None
        self.prediction_changed.emit(result)

    def select_cell(self, cell: int | None) -> None:
        self.selected_cell = None if cell is None else int(cell)
        self.cell_selected.emit(cell)


# Keyed by identity: napari viewers compare equal by value (pydantic models), so a
# WeakKeyDictionary could hand a new viewer the session of an old, equal-looking one.
_SESSIONS: dict[int, Session] = {}


def session_for(viewer: Any) -> Session:
    """The :class:`Session` of ``viewer`` (created on first use, dropped with the viewer)."""
    key = id(viewer)
    session = _SESSIONS.get(key)
    if session is None:
        session = Session()
        _SESSIONS[key] = session
        weakref.finalize(viewer, _SESSIONS.pop, key, None)
    return session


@dataclass
class PredictState:
    """What the Predict widget shows and does, kept out of the widgets.

    ``assignment`` maps each model channel to a :class:`~._layers.ChannelChoice`,
    :data:`~._layers.AVERAGE` or None; ``manual`` holds the channels the user
    picked by hand (kept when layers change).
    """

    model_path: str | None = None
    device: str = "auto"
    find_cells: bool = True
    assignment: dict[str, Any] = field(default_factory=dict)
    manual: set[str] = field(default_factory=set)
    running: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    selected_class: int | None = None
    cam_running: int | None = None
    clicked_at: float = 0.0
    shown_after: float | None = None
    #: The image layer the results are drawn over (its scale and translate).
    ref_layer: Any = None


def connect_while_alive(widget: Any, pairs: list[tuple[Any, Any]], cleanup: Any = None) -> None:
    """Connect each ``(signal, callback)`` and disconnect them all when ``widget`` is destroyed.

    A closed dock widget must not be called back by the viewer or the session
    (its Qt side is gone). ``signal`` is a napari event emitter or a psygnal
    signal; ``cleanup()`` runs last.
    """
    for signal, callback in pairs:
        signal.connect(callback)

    def _teardown(*_: Any) -> None:
        for signal, callback in pairs:
            with contextlib.suppress(Exception):
                signal.disconnect(callback)
        if cleanup is not None:
            cleanup()

    widget.destroyed.connect(_teardown)
