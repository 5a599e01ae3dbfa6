"""Work done off napari's main thread: prediction, activation maps, storing, reading.

Each function runs in a napari ``thread_worker`` (see the widgets). Errors a
user can cause come back as a message string, so the widget shows them as a
notification; bugs raise (napari then shows them with their traceback).
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from typing import Any

import numpy as np

from ... import layers as L
from ...core.image.channels import ChannelMismatchError
from ...core.image.exposure import exposure_problem
from ...core.image.io import ImageReadError, read_image
from ...core.labels.store import AnnotationStore
from ...core.model.checkpoint import CheckpointError
from ...core.model.heat import heat_mask
from ...core.model.predict import PredictionCancelled
from ...core.model.registry import ModelEntry
from . import results as R
from .session import PredictionResult, Session
from .wording import counted

#: Errors a user can cause (wrong channels, bad model, no GPU...): a notification, no traceback.
USER_ERRORS = (
    ChannelMismatchError,
    CheckpointError,
    ImageReadError,
    LookupError,
    ValueError,
    MemoryError,
)


def _leave_a_core() -> None:
    """Let torch use all cores but one, so napari's main thread always has one to draw."""
    import torch

    cores = os.cpu_count() or 1
    if cores > 1 and torch.get_num_threads() >= cores:
        torch.set_num_threads(cores - 1)


def run_prediction(
    session: Session,
    entry: ModelEntry,
    device: str,
    backend: str,
    planes: dict[str, np.ndarray],
    source: str,
    image_id: str,
    average: bool,
    find_cells: bool,
    should_stop: Any,
) -> Generator[tuple, None, PredictionResult | str | None]:
    """Classify the image, then segment and classify its cells (the Predict worker).

    Yields ``(stage, fraction)`` progress, and once ``(stage, fraction, result)``
    with the image-level result, so it shows before the cells are done. Returns
    the full result, an error message (errors a user can cause), or None when
    cancelled. Bugs raise.
    """
    from ...core.image.cells import segment_image

    timings: dict[str, float] = {}

    def check() -> None:
        if should_stop():
            raise PredictionCancelled()

    try:
        t = time.perf_counter()
        loading = not session.is_loaded(entry, device, backend)
        yield (f"Loading {entry.id}" if loading else "Reading channels", 0.05)
        _leave_a_core()
        with session.model_lock:
            predictor = session.predictor(entry, device, backend)
        image = L.build_image(planes, source, image_id, average)
        timings["load"] = time.perf_counter() - t
        check()
        yield ("Classifying the image", 0.2)
        t = time.perf_counter()
        with session.model_lock:
            prediction = predictor.predict_one(
                image, should_stop=should_stop, keep_activations=True
            )
        result = PredictionResult(
            image,
            entry,
            prediction,
            cam_factor=R.cam_factor(image.data.shape),
            timings=timings,
            predictor=predictor,
            exposure=exposure_problem(image.data, image.channel_names, entry.spec.input.invert),
        )
        first = list(dict.fromkeys([*result.order()[:3], *prediction.predicted]))[:8]
        if prediction.activations is not None:
            maps = predictor.activation_maps(
                prediction.activations, first, result.cam_factor, heat_mask_of(result)
            )
            result.cams = R.prepare_heats(maps)
        timings["classify"] = time.perf_counter() - t
        if not find_cells:
            return result
        yield ("Finding cells", 0.5, result)
        check()
        t = time.perf_counter()
        labels = segment_image(image)
        timings["segment"] = time.perf_counter() - t
        check()
        n = int(labels.max(initial=0))
        yield (f"Classifying {counted(n, 'cell')}", 0.7)
        t = time.perf_counter()
        with session.model_lock:
            cells = (
                predictor.predict_cells(
                    image, labels, should_stop, context=prediction.probabilities
                )
                if n
                else {}
            )
        check()
        yield ("Drawing the cells", 0.9)
        display = R.prepare_cells(labels, cells, len(prediction.classes))
        if n and prediction.activations is not None:
            # the maps drawn so far were masked to the foreground: now to the cells
            mask = heat_mask_of(result, labels)
            masked = R.prepare_heats(
                predictor.activation_maps(
                    prediction.activations, list(result.cams), result.cam_factor, mask
                )
            )
            result.cams.update(masked)
            display.heat = {prediction.classes[c]: m for c, m in masked.items()}
            display.heat_factor = result.cam_factor
        timings["cells"] = time.perf_counter() - t
        result.labels, result.cells, result.cells_display = labels, cells, display
        return result
    except PredictionCancelled:
        return None
    except USER_ERRORS as exc:
        return f"Predict failed for {image_id or source}: {exc}"


def heat_mask_of(result: PredictionResult, labels: np.ndarray | None = None) -> np.ndarray | None:
    """Where ``result``'s heat maps show: its cells once found, else the image's foreground.

    ``labels`` are the cells about to be stored in ``result.labels`` (default: those).
    """
    cells = result.labels if labels is None else labels
    invert = result.entry.spec.input.invert
    return heat_mask(result.image.data, result.cam_factor, labels=cells, invert=invert)


def compute_cam(result: PredictionResult, class_index: int) -> tuple[int, R.HeatImage]:
    """Worker: the heat map of one more class, from the stored network output, ready to draw."""
    assert result.predictor is not None and result.prediction.activations is not None
    maps = result.predictor.activation_maps(
        result.prediction.activations, [class_index], result.cam_factor, heat_mask_of(result)
    )
    return class_index, R.prepare_heat(maps[class_index])


def store_prediction(store: AnnotationStore, result: PredictionResult) -> None:
    """Write a prediction's model labels (image and cells) and its cell mask, in one commit."""
    task, pred = result.entry.spec.task.name, result.prediction
    with store.transaction():
        store.add_image(result.source, result.image.image_id, result.image.data.shape)
        store.set_model_labels(
            result.source, task, pred.probabilities, pred.predicted, pred.model_id
        )
        if result.labels is not None:
            store.set_cell_mask(result.source, result.labels)
            for cell, p in result.cells.items():
                store.set_model_labels(
                    result.source, task, p.probabilities, p.predicted, p.model_id, cell=cell
                )


def read_source(source: str) -> Any:
    """Read the image at ``source`` (an ``ImageData``), or say why it cannot be read."""
    try:
        return read_image(source)
    except ImageReadError as exc:
        return L.read_error_message(exc)
