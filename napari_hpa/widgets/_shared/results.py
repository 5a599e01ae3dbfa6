"""Result layers: class activation maps, the cells, and the selected cell.

Everything that reads every pixel (a heat map's colour limits and masked pixels,
the cells' subsampled labels and their outlines, the features table and colormap)
is prepared in the worker by the ``prepare_*`` functions; the ``show_*`` functions
run on the main thread and only hand ready arrays to napari.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
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


#: Class colours are this light (OKLab L): they outline cells on a dark field.
CLASS_LIGHTNESS = (0.6, 0.92)
#: The heat layer's contrast limits: its data is stretched to them in the worker.
HEAT_LIMITS = (0.0, 1.0)
#: The heat map's colormap, (position, RGBA): transparent at the low end (and so where
#: the map is masked), then violet, magenta-red and orange, more opaque as it rises.
#: Saturated, mid-light colours drawn over the image (translucent, not additive) show
#: on a black fluorescence field and on plankton's white background alike.
HEAT_COLORS = (
    (0.0, (0.35, 0.0, 0.7, 0.0)),
    (0.3, (0.35, 0.0, 0.7, 0.0)),
    (0.55, (0.6, 0.1, 0.85, 0.5)),
    (0.8, (0.95, 0.1, 0.4, 0.75)),
    (1.0, (1.0, 0.6, 0.0, 0.9)),
)

#: Linear sRGB -> cone responses -> OKLab (Ottosson 2020).
_RGB_TO_LMS = np.array(
    [
        [0.4122214708, 0.5363325363, 0.0514459929],
        [0.2119034982, 0.6806995451, 0.1073969566],
        [0.0883024619, 0.2817188376, 0.6299787005],
    ]
)
_LMS_TO_OKLAB = np.array(
    [
        [0.2104542553, 0.7936177850, -0.0040720468],
        [1.9779984951, -2.4285922050, 0.4505937099],
        [0.0259040371, 0.7827717662, -0.8086757660],
    ]
)


# ----------------------------------------------------------------------------- worker side
def oklab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB in [0, 1] -> OKLab (..., 3): distances in it follow perceived ones."""
    c = np.asarray(rgb, np.float64)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return np.cbrt(lin @ _RGB_TO_LMS.T) @ _LMS_TO_OKLAB.T


@functools.lru_cache(maxsize=8)
def _palette(count: int) -> np.ndarray:
    grid = np.linspace(0.0, 1.0, 16)
    candidates = np.array(list(itertools.product(grid, grid, grid)))
    lab = oklab(candidates)
    light = (lab[:, 0] >= CLASS_LIGHTNESS[0]) & (lab[:, 0] <= CLASS_LIGHTNESS[1])
    candidates, lab = candidates[light], lab[light]
    chosen = [int(np.argmax(np.hypot(lab[:, 1], lab[:, 2])))]  # the most saturated first
    nearest = np.linalg.norm(lab - lab[chosen[0]], axis=1)
    for _ in range(count - 1):
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        nearest = np.minimum(nearest, np.linalg.norm(lab - lab[pick], axis=1))
    out = np.ones((count, 4), np.float32)
    out[:, :3] = candidates[chosen[:count]]
    return out


def class_colors(count: int) -> np.ndarray:
    """(count, 4) RGBA colours, light and as far apart as they can be, for any count.

    Each colour is the light sRGB colour farthest (in OKLab) from those chosen before it
    (Glasbey's method), so no two classes share a hue family: with hues at fixed steps,
    Nucleoli, Nuclear bodies and Lysosomes came out as three near-identical greens.
    """
    return _palette(max(0, int(count))).copy()


def cam_factor(shape: Sequence[int]) -> int:
    """Downsampling factor that brings an image to at most :data:`CAM_MAX_SIZE`."""
    return max(1, math.ceil(max(shape[-2:]) / CAM_MAX_SIZE))


@dataclass
class HeatImage:
    """A heat map ready to draw (made in the worker by :func:`prepare_heat`).

    ``data`` is the map stretched to [0, 1] between ``limits`` (its 1st and 99.8th
    percentiles inside the mask), 0 where it is masked: the layer's contrast limits
    stay (0, 1), so showing another map sets only its data (a contrast-limits change
    is another round of napari events and a thumbnail, on the main thread).
    """

    data: np.ndarray
    limits: tuple[float, float]


@dataclass
class CellsDisplay:
    """The cells layer's data, ready for napari (built in the worker).

    ``data`` is the label image subsampled by ``factor`` (nearest neighbour), with
    each cell's outline already drawn in: a cell's inside keeps its id (hovering
    it shows its classes), its outline is the id + ``offset``, and the colormap
    draws only the outlines. napari would otherwise find the outlines itself, on
    the main thread, at every redraw (``Labels.contour``: 45 ms at 1024 px).
    ``boxes`` are the cells' bounding boxes in the full-resolution labels.
    """

    data: np.ndarray
    factor: int
    features: Any  # pandas.DataFrame
    colormap: Any  # napari DirectLabelColormap
    boxes: dict[int, tuple[slice, slice]]
    #: Added to a cell's id on its outline (see :func:`cell_of`).
    offset: int = 0
    #: Class index -> its colour, for the classes that are some cell's top class.
    top_colors: dict[int, np.ndarray] = field(default_factory=dict)
    #: Class name -> its heat map masked to these cells (at ``heat_factor``): the map
    #: shown before the cells were found was masked to the foreground and is redrawn.
    heat: dict[str, HeatImage] = field(default_factory=dict)
    heat_factor: int = 1


def cell_features(cells: dict[int, Any], offset: int = 0) -> dict[str, Any]:
    """Build the cells layer's features table: what hovering over a cell shows.

    With ``offset``, each cell has a second row for its outline's value (id + offset).
    """
    ids = sorted(cells)
    top = [cells[c].top(1)[0] for c in ids]
    rows = {
        "index": np.asarray(ids, dtype=np.int64),
        "top_class": [name for name, _ in top],
        "probability": np.round([p for _, p in top], 3),
        "classes": [", ".join(cells[c].predicted_names) or "-" for c in ids],
    }
    if not offset:
        return rows
    out: dict[str, Any] = {k: list(v) * 2 for k, v in rows.items()}
    out["index"] = np.concatenate([rows["index"], rows["index"] + offset])
    out["probability"] = np.asarray(out["probability"])
    return out


def cells_colormap(cells: dict[int, Any], n_classes: int, offset: int = 0) -> Any:
    """Each cell in the colour of its top class (see :func:`class_colors`).

    With ``offset`` only the outlines (id + offset) are coloured; the insides are clear.
    """
    from napari.utils.colormaps import DirectLabelColormap

    palette = class_colors(n_classes)
    clear = np.zeros(4, np.float32)
    colors: dict[Any, Any] = {None: clear, 0: clear}
    for cell, pred in cells.items():
        color = palette[int(np.argmax(pred.probabilities))]
        if offset:
            colors[int(cell)] = clear
            colors[int(cell) + offset] = color
        else:
            colors[int(cell)] = color
    return DirectLabelColormap(color_dict=colors)


def outline(labels: np.ndarray, thickness: int, offset: int) -> np.ndarray:
    """Return ``labels`` with each cell's outline set to its id + ``offset``.

    The outline is what napari's ``Labels.contour = thickness`` draws (its
    ``get_contours``: the pixels whose neighbourhood holds another value).
    """
    from scipy import ndimage as ndi

    near = ndi.generate_binary_structure(2, 1)
    thick = ndi.iterate_structure(near, thickness).astype(bool)
    edge = ndi.grey_dilation(labels, footprint=near) != ndi.grey_erosion(labels, footprint=thick)
    edge &= labels > 0
    out = labels.copy()
    out[edge] += offset
    return out


def prepare_cells(labels: np.ndarray, cells: dict[int, Any], n_classes: int) -> CellsDisplay:
    """Prepare the cells layer: outlined labels, features table, colormap, the cells' boxes.

    The labels are at most :data:`CELLS_MAX_SIZE` wide and of the smallest integer
    type that holds the outlines' values: napari maps colours through a table as
    long as the type's range.
    """
    import pandas as pd
    from scipy import ndimage as ndi

    factor = max(1, math.ceil(max(labels.shape) / CELLS_MAX_SIZE))
    small = labels[factor // 2 :: factor, factor // 2 :: factor] if factor > 1 else labels
    top = int(labels.max(initial=0))
    offset = top
    most = top + offset
    dtype = np.uint8 if most < 2**8 else np.uint16 if most < 2**16 else np.uint32
    drawn = outline(np.ascontiguousarray(small, dtype=dtype), cell_outline(factor), offset)
    boxes = {i: sl for i, sl in enumerate(ndi.find_objects(labels), start=1) if sl is not None}
    palette = class_colors(n_classes)
    tops = {int(np.argmax(p.probabilities)) for p in cells.values()}
    return CellsDisplay(
        drawn,
        factor,
        pd.DataFrame(cell_features(cells, offset)),
        cells_colormap(cells, n_classes, offset),
        boxes,
        offset,
        {c: palette[c] for c in tops},
    )


def cell_outline(factor: int) -> int:
    """Return the outline's thickness in display pixels (thinner where they are coarser)."""
    return 1 if factor > 1 else 2


def cell_of(layer: Any, value: Any) -> int | None:
    """Return the cell id of a value of the cells layer (inside or outline); None: none."""
    if value is None or int(value) <= 0:
        return None
    offset = int(meta(layer).get("offset", 0))
    v = int(value)
    return v - offset if offset and v > offset else v


def prepare_heat(cam: np.ndarray) -> HeatImage:
    """Return a map ready to draw (in the worker): stretched to [0, 1], 0 where masked.

    NaN (masked: no cell, no foreground) becomes 0, which the colormap draws
    transparent. The stretch is from the 1st to the 99.8th percentile of the rest, so
    the colours span what the map says inside the cells, not over the background.
    """
    shown = np.isfinite(cam)
    values = cam[shown]
    if values.size:
        lo, hi = (float(v) for v in np.percentile(values, (1.0, 99.8)))
    else:
        lo, hi = 0.0, 1.0
    hi = max(hi, lo + 1e-3)
    data = np.where(shown, (cam - np.float32(lo)) / np.float32(hi - lo), np.float32(0))
    return HeatImage(np.clip(data, 0.0, 1.0).astype(np.float32), (lo, hi))


def prepare_heats(maps: dict[int, np.ndarray]) -> dict[int, HeatImage]:
    """Prepare several maps (class index -> map) with :func:`prepare_heat`."""
    return {c: prepare_heat(m) for c, m in maps.items()}


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


def _placed(layer: Any, placement: dict[str, Any]) -> bool:
    """Tell whether ``layer`` already has the scale and translate of ``placement``."""
    return np.allclose(layer.scale[-2:], placement["scale"]) and np.allclose(
        layer.translate[-2:], placement["translate"]
    )


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


@functools.lru_cache(maxsize=1)
def heat_colormap() -> Any:
    """Return the heat maps' napari colormap (:data:`HEAT_COLORS`)."""
    from napari.utils.colormaps import Colormap

    return Colormap(
        colors=[c for _, c in HEAT_COLORS],
        controls=[p for p, _ in HEAT_COLORS],
        name="napari-hpa heat",
    )


def show_cam(
    viewer: napari.Viewer, heat: HeatImage, factor: int, class_name: str, source: str, ref: Any
) -> Any:
    """Show (or update) the activation-map layer, over the image, transparent where masked.

    The colormap (:func:`heat_colormap`) is transparent at its low end and the layer is
    drawn translucent, not additive: adding light to a white background (plankton)
    shows nothing, and where the map is NaN or low, the image shows through unchanged.
    """
    layer = find_layer(viewer, "cam")
    name = f"{CAM_NAME}: {class_name}"
    placement = _placement(ref, factor)
    md = {
        META: {
            "kind": "cam",
            "source": source,
            "class": class_name,
            "factor": factor,
            "limits": heat.limits,  # the map's values at 0 and 1 of the data
        }
    }
    if layer is None:
        return viewer.add_image(
            heat.data,
            name=name,
            colormap=heat_colormap(),
            blending="translucent",
            opacity=1.0,
            contrast_limits=HEAT_LIMITS,
            interpolation2d="linear",
            metadata=md,
            **placement,
        )
    with _quiet(layer):
        layer.data = heat.data
        # each of these is a round of napari events (layer extents, dims): only on change
        if not _placed(layer, placement):
            layer.scale, layer.translate = placement["scale"], placement["translate"]
        layer.metadata = md
        if layer.colormap.name != heat_colormap().name:
            layer.colormap = heat_colormap()
        if layer.blending != "translucent":
            layer.blending = "translucent"
        if tuple(layer.contrast_limits_range) != HEAT_LIMITS:
            layer.contrast_limits_range = HEAT_LIMITS
        if tuple(layer.contrast_limits) != HEAT_LIMITS:
            layer.contrast_limits = HEAT_LIMITS
        if not layer.visible:
            layer.visible = True
    if layer.name != name:
        layer.name = name
    return layer


def show_cells(viewer: napari.Viewer, display: CellsDisplay, source: str, ref: Any) -> Any:
    """Show (or update) the ``cells`` Labels layer, outlined in each cell's top-class colour.

    A heat map of the same image drawn before the cells were found is redrawn masked
    to the cells (``display.heat``).
    """
    cam = find_layer(viewer, "cam")
    if cam is not None and meta(cam).get("source") == source:
        shown = meta(cam).get("class")
        if shown in display.heat:
            show_cam(viewer, display.heat[shown], display.heat_factor, shown, source, ref)
    layer = find_layer(viewer, "cells")
    md = {
        META: {
            "kind": "cells",
            "source": source,
            "factor": display.factor,
            "offset": display.offset,
        }
    }
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
        layer.contour = 0  # the outlines are in the data (prepare_cells)
        viewer.layers.append(layer)
        return layer
    with _quiet(layer):
        layer.data = display.data
        layer.features = display.features
        layer.colormap = display.colormap
        if not _placed(layer, placement):
            layer.scale, layer.translate = placement["scale"], placement["translate"]
        if layer.contour:
            layer.contour = 0
        layer.metadata = md
        if not layer.visible:
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
