"""Result layers: class activation maps, the cells, and the selected cell.

What is costly (downsampling maps, the cells' features table and colormap) is
prepared in the worker by the ``prepare_*`` / ``*_cams`` functions; the
``show_*`` functions run on the main thread and only hand ready data to napari.
"""

from __future__ import annotations

import colorsys
import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ...layers import META, meta

if TYPE_CHECKING:
    import napari

CAM_NAME = "CAM"
CELLS_NAME = "cells"
SELECTED_NAME = "selected cell"
#: Activation maps are shown at most this many pixels wide (they are smooth anyway).
CAM_MAX_SIZE = 512
#: The cells layer is shown at most this many pixels wide: napari recomputes the outlines
#: on the main thread at every redraw (about 4x faster at 1024 than at 2048 px). The full
#: resolution mask is kept in the result, the annotations database and the exports.
CELLS_MAX_SIZE = 1024


# ----------------------------------------------------------------------------- worker side
def class_colors(count: int) -> np.ndarray:
    """(count, 4) RGBA colours, bright and well apart (golden-ratio hues)."""
    out = np.ones((count, 4), np.float32)
    for i in range(count):
        hue = (0.07 + i * 0.618034) % 1.0
        out[i, :3] = colorsys.hsv_to_rgb(hue, 0.55 if i % 2 else 0.8, 1.0)
    return out


def cam_factor(shape: Sequence[int]) -> int:
    """Downsampling factor that brings an image to at most :data:`CAM_MAX_SIZE`."""
    return max(1, math.ceil(max(shape[-2:]) / CAM_MAX_SIZE))


@dataclass
class CellsDisplay:
    """The cells layer's data, ready for napari (built in the worker).

    ``data`` is the label image subsampled by ``factor`` (nearest neighbour);
    ``boxes`` are the cells' bounding boxes in the full-resolution labels.
    """

    data: np.ndarray
    factor: int
    features: Any  # pandas.DataFrame
    colormap: Any  # napari DirectLabelColormap
    boxes: dict[int, tuple[slice, slice]]


def cell_features(cells: dict[int, Any]) -> dict[str, Any]:
    """Build the cells layer's features table: what hovering over a cell shows."""
    ids = sorted(cells)
    top = [cells[c].top(1)[0] for c in ids]
    return {
        "index": np.asarray(ids, dtype=np.int64),
        "top_class": [name for name, _ in top],
        "probability": np.round([p for _, p in top], 3),
        "classes": [", ".join(cells[c].predicted_names) or "-" for c in ids],
    }


def cells_colormap(cells: dict[int, Any], n_classes: int) -> Any:
    """Each cell in the colour of its top class (see :func:`class_colors`)."""
    from napari.utils.colormaps import DirectLabelColormap

    palette = class_colors(n_classes)
    colors: dict[Any, Any] = {None: np.zeros(4, np.float32), 0: np.zeros(4, np.float32)}
    for cell, pred in cells.items():
        colors[int(cell)] = palette[int(np.argmax(pred.probabilities))]
    return DirectLabelColormap(color_dict=colors)


def prepare_cells(labels: np.ndarray, cells: dict[int, Any], n_classes: int) -> CellsDisplay:
    """Prepare the cells layer: labels, features table, colormap and the cells' boxes.

    The labels are at most :data:`CELLS_MAX_SIZE` wide and of the smallest integer
    type: napari maps colours through a table as long as the type's range.
    """
    import pandas as pd
    from scipy import ndimage as ndi

    factor = max(1, math.ceil(max(labels.shape) / CELLS_MAX_SIZE))
    small = labels[factor // 2 :: factor, factor // 2 :: factor] if factor > 1 else labels
    top = int(labels.max(initial=0))
    dtype = np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.uint32
    boxes = {i: sl for i, sl in enumerate(ndi.find_objects(labels), start=1) if sl is not None}
    return CellsDisplay(
        np.ascontiguousarray(small, dtype=dtype),
        factor,
        pd.DataFrame(cell_features(cells)),
        cells_colormap(cells, n_classes),
        boxes,
    )


# ----------------------------------------------------------------------------- main thread
def find_layer(viewer: napari.Viewer, kind: str) -> Any:
    """Return the napari-hpa layer of ``kind`` ("cells", "cam", "selected-cell"), or None."""
    return next((lyr for lyr in viewer.layers if meta(lyr).get("kind") == kind), None)


def _placement(ref: Any, factor: float = 1, offset: Sequence[float] = (0, 0)) -> dict[str, Any]:
    """Return the scale and translate that put data over the image layer ``ref``.

    The data is downsampled by ``factor`` and starts at pixel ``offset``.
    """
    if ref is None:
        scale, translate = np.ones(2), np.zeros(2)
    else:
        scale = np.asarray(ref.scale[-2:], float)
        translate = np.asarray(ref.translate[-2:], float)
    return {
        "scale": tuple(scale * factor),
        "translate": tuple(translate + scale * (np.asarray(offset) + (factor - 1) / 2.0)),
    }


@contextlib.contextmanager
def _quiet(layer: Any) -> Iterator[None]:
    """Apply several changes to a layer with one redraw (napari's refresh blocker)."""
    block = getattr(layer, "_block_refresh", None)
    with block() if block is not None else contextlib.nullcontext():
        yield
    layer.refresh()


@contextlib.contextmanager
def _keep_active(viewer: napari.Viewer) -> Iterator[None]:
    """Adding a layer selects it; put the user's selection back."""
    active = viewer.layers.selection.active
    yield
    if active is not None and active in viewer.layers:
        viewer.layers.selection.active = active


def show_cam(
    viewer: napari.Viewer, cam: np.ndarray, factor: int, class_name: str, source: str, ref: Any
) -> Any:
    """Show (or update) the activation-map layer: inferno, additive, half transparent.

    The map's own range is stretched over the colormap, so the places that
    speak most for the class glow and the rest stays dark.
    """
    layer = find_layer(viewer, "cam")
    name = f"{CAM_NAME}: {class_name}"
    placement = _placement(ref, factor)
    md = {META: {"kind": "cam", "source": source, "class": class_name}}
    lo, hi = (float(v) for v in np.percentile(cam, (1.0, 99.8)))
    limits = (lo, max(hi, lo + 1e-3))
    if layer is None:
        return viewer.add_image(
            cam,
            name=name,
            colormap="inferno",
            blending="additive",
            opacity=0.5,
            contrast_limits=limits,
            interpolation2d="linear",
            metadata=md,
            **placement,
        )
    with _quiet(layer):
        layer.data = cam
        layer.scale, layer.translate = placement["scale"], placement["translate"]
        layer.metadata = md
        layer.contrast_limits_range = limits
        layer.contrast_limits = limits
        layer.visible = True
    layer.name = name
    return layer


def show_cells(viewer: napari.Viewer, display: CellsDisplay, source: str, ref: Any) -> Any:
    """Show (or update) the ``cells`` Labels layer, outlined in each cell's top-class colour."""
    layer = find_layer(viewer, "cells")
    md = {META: {"kind": "cells", "source": source, "factor": display.factor}}
    placement = _placement(ref, display.factor)  # each display pixel covers a block
    if layer is None:
        from napari.layers import Labels

        layer = Labels(
            display.data,
            name=CELLS_NAME,
            features=display.features,
            colormap=display.colormap,
            opacity=0.9,
            metadata=md,
            **placement,
        )
        layer.contour = 1 if display.factor > 1 else 2
        viewer.layers.append(layer)
        return layer
    with _quiet(layer):
        layer.data = display.data
        layer.features = display.features
        layer.colormap = display.colormap
        layer.scale, layer.translate = placement["scale"], placement["translate"]
        layer.contour = 1 if display.factor > 1 else 2
        layer.metadata = md
        layer.visible = True
    return layer


def show_selected(
    viewer: napari.Viewer,
    labels: np.ndarray,
    box: tuple[slice, slice] | None,
    cell: int | None,
    source: str,
    ref: Any,
) -> Any:
    """Outline the selected cell in white: a small Labels layer over its bounding box."""
    layer = find_layer(viewer, "selected-cell")
    if cell is None or box is None:
        if layer is not None:
            layer.visible = False
        return layer
    from napari.utils.colormaps import DirectLabelColormap

    crop = np.where(labels[box] == cell, 1, 0).astype(np.uint8)
    placement = _placement(ref, 1, (box[0].start, box[1].start))
    md = {META: {"kind": "selected-cell", "source": source, "cell": int(cell)}}
    white = DirectLabelColormap(color_dict={None: np.zeros(4), 0: np.zeros(4), 1: np.ones(4)})
    if layer is None:
        with _keep_active(viewer):
            layer = viewer.add_labels(
                crop, name=SELECTED_NAME, colormap=white, opacity=1.0, metadata=md, **placement
            )
            layer.contour = 2
        return layer
    with _quiet(layer):
        layer.data = crop
        layer.translate, layer.scale = placement["translate"], placement["scale"]
        layer.metadata = md
        layer.visible = True
    return layer
