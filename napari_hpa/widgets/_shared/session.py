"""Per-viewer state shared by the napari-hpa widgets (no Qt here).

The Predict, Annotate, Retrain and Batch widgets are separate dock widgets,
created by napari one at a time, each with its own proxy of the viewer. They
meet in one :class:`Session` per real viewer, which holds the latest prediction,
the selected cell, the loaded models and the open docks, and tells the widgets
about changes through psygnal signals. Widgets keep no state of their own
beyond what they display.

A prediction is bound to the image layers it was computed from: when one of
them leaves the viewer, or another image is opened, the session drops it, so
no dock shows it against a different image.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from psygnal import Signal

from ... import layers as L
from ...core.image.io import ImageData
from ...core.model.predict import Predictor
from ...core.model.prediction import Prediction
from ...core.model.registry import ModelEntry

if TYPE_CHECKING:
    import napari


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
        Class index -> its heat map, downsampled by ``cam_factor`` and ready to draw
        (``results.HeatImage``, made in the worker; filled on demand).
    cam_factor
        Integer downsampling factor of the maps in ``cams``.
    timings
        Seconds per stage (``load``, ``classify``, ``segment``, ``cells``).
    predictor
        The model, to draw more maps from ``prediction.activations`` (the network's
        per-tile class maps, kept by ``predict_one(..., keep_activations=True)``).
    cells_display
        The cells layer's data, features and colormap (``_results.CellsDisplay``).
    exposure
        Why the image has no usable signal (blank or saturated), or None: measured in
        the worker, since it reads every pixel and the GUI thread must not.
    """

    image: ImageData
    entry: ModelEntry
    prediction: Prediction
    cells: dict[int, Prediction] = field(default_factory=dict)
    labels: np.ndarray | None = None
    cams: dict[int, Any] = field(default_factory=dict)
    cam_factor: int = 1
    timings: dict[str, float] = field(default_factory=dict)
    cells_display: Any = None
    predictor: Predictor | None = None
    exposure: str | None = None

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
        self._predictors: dict[tuple[str, str, str], Predictor] = {}
        #: Held while a model runs, so a worker never shares a network with another.
        self.model_lock = threading.Lock()
        #: The image layers the result was computed from (weakly: a deleted layer goes).
        self._result_layers: list[weakref.ref] = []
        self._docks: weakref.WeakSet[Any] = weakref.WeakSet()

    # -- docks ----------------------------------------------------------------------
    def add_dock(self, dock: Any) -> None:
        """Register an open dock widget (it calls :meth:`remove_dock` when it closes)."""
        self._docks.add(dock)

    def remove_dock(self, dock: Any) -> None:
        self._docks.discard(dock)

    def docks(self, class_name: str) -> list[Any]:
        """List the open napari-hpa docks of this viewer with this class name."""
        return [d for d in list(self._docks) if type(d).__name__ == class_name]

    # -- following the viewer's layers ----------------------------------------------------
    def watch(self, layers: Any) -> None:
        """Follow a viewer's layer list: drop the result when its image goes or another comes."""
        layers.events.inserted.connect(self._on_inserted)
        layers.events.removed.connect(self._on_removed)

    def _on_inserted(self, event: Any) -> None:
        result = self.result
        layer = getattr(event, "value", None)
        if result is None or not L.channel_choices([layer]):
            return  # our own result layers, labels, points...: the image is the same
        if L.layer_source(layer) != result.source:
            self.set_result(None)  # another image is opened: the result is not about it

    def _on_removed(self, event: Any) -> None:
        if self.result is not None and not self.shows(self._result_layers, event.source):
            self.set_result(None)

    # -- models ---------------------------------------------------------------------
    def predictor(self, entry: ModelEntry, device: str, backend: str = "auto") -> Predictor:
        """Return the loaded model for ``(entry, device, backend)``, loading it on first use.

        Call it from a worker thread: loading a large model takes seconds, and a CPU
        runtime's first use exports the model (a few seconds, once per weights).
        """
        key = (str(entry.path), str(device), str(backend))
        predictor = self._predictors.get(key)
        if predictor is None:
            predictor = Predictor(entry, device=device, backend=backend)
            predictor.ensure_backend()
            self._predictors[key] = predictor
        return predictor

    def is_loaded(self, entry: ModelEntry, device: str, backend: str = "auto") -> bool:
        return (str(entry.path), str(device), str(backend)) in self._predictors

    # -- results --------------------------------------------------------------------
    def set_result(
        self, result: PredictionResult | None, layers: Sequence[Any] | None = None
    ) -> None:
        """Publish ``result`` (None clears it), computed from the image layers ``layers``.

        Without ``layers`` a result keeps the layers it was published with before.
        """
        if result is None:
            self._result_layers = []
        elif layers is not None:
            self._result_layers = [weakref.ref(layer) for layer in layers]
        self.result = result
        self.selected_cell = None
        self.prediction_changed.emit(result)

    def shows(self, layers: Sequence[Any], present: Any) -> bool:
        """Tell whether the result's image is still shown by ``layers`` among ``present``.

        See :func:`still_shown`; the image is the current result's.
        """
        source = None if self.result is None else self.result.source
        return still_shown(layers, present, source)

    def select_cell(self, cell: int | None) -> None:
        self.selected_cell = None if cell is None else int(cell)
        self.cell_selected.emit(cell)


def real_viewer(viewer: napari.Viewer) -> napari.Viewer:
    """Return the viewer itself, behind the proxy napari hands each plugin dock.

    napari wraps the viewer it passes to a dock widget in a ``PublicOnlyProxy``
    (a ``wrapt.ObjectProxy``), a new one per dock. The wrapped object is the
    proxy's ``__wrapped__``; it is read with ``object.__getattribute__`` so that
    nothing of the proxy's own attribute hooks runs.
    """
    inner: Any = viewer
    while True:
        try:
            inner = object.__getattribute__(inner, "__wrapped__")
        except AttributeError:
            return inner


# Keyed by identity: napari viewers compare equal by value (pydantic models), so a
# WeakKeyDictionary could hand a new viewer the session of an old, equal-looking one.
# The weak reference is checked too: an id can be reused once its viewer is gone.
_SESSIONS: dict[int, tuple[weakref.ref, Session]] = {}


def session_for(viewer: napari.Viewer) -> Session:
    """Return the :class:`Session` of ``viewer``, however napari wraps it (one per viewer).

    Created on first use and dropped with the viewer: the session is held by
    the viewer's id and a weak reference, never by a strong one.
    """
    real = real_viewer(viewer)
    key = id(real)
    held = _SESSIONS.get(key)
    if held is not None and held[0]() is real:
        return held[1]
    session = Session()
    session.watch(real.layers)
    _SESSIONS[key] = (weakref.ref(real), session)
    weakref.finalize(real, _drop_session, key, session)
    return session


def _drop_session(key: int, session: Session) -> None:
    held = _SESSIONS.get(key)
    if held is not None and held[1] is session:
        del _SESSIONS[key]


def still_shown(layers: Sequence[Any], present: Any, source: str | None = None) -> bool:
    """Tell whether every one of ``layers`` (or weak references to them) is in ``present``.

    Where a layer is napari-hpa's and ``source`` is given, it must still show that
    image too: Next image reuses the layers for the next image.
    """
    present = list(present)
    for item in layers:
        layer = item() if isinstance(item, weakref.ref) else item
        if layer is None or not any(layer is p for p in present):
            return False
        shown = L.meta(layer).get("source")
        if source is not None and shown is not None and shown != source:
            return False
    return True


@dataclass
class PredictState:
    """What the Predict widget shows and does, kept out of the widgets.

    ``assignment`` maps each model channel to a :class:`~._layers.ChannelChoice`,
    :data:`~._layers.AVERAGE` or None; ``manual`` holds the channels the user
    picked by hand (kept when layers change).
    """

    model_path: str | None = None
    device: str = "auto"
    backend: str = "auto"
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
    #: The image layers the running (or last) prediction reads, and their image's source.
    used_layers: list[Any] = field(default_factory=list)
    used_source: str = ""
    used_id: str = ""
    #: The running prediction was stopped because its image went away (not by Cancel).
    stale: bool = False
    #: Cells were asked for but the image has no nucleus plane, so none are found.
    no_nucleus: bool = False
    #: A prediction was asked for while one was running: start it when that one ends.
    queued: bool = False


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
