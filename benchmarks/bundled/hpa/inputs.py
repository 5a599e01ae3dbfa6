"""Network inputs made of the real images: image-level crops and single-cell tiles.

Cell tiles go through :func:`napari_hpa.core.model.tiles.prepare_cell`, the function
``Predictor.predict_cells`` uses, so a cell reaches the network in training as it does
in napari: segmented by ``core.image.cells.segment_image``, cropped by
``cell_crops`` (other cells and background at 0), padded to a square, resized to
the tile (``cell_fit="square"``: a cell fills the tile whatever its size in pixels).

Image-level crops follow the Predictor's ``prepare_tiles`` (percentile stretch,
longer side at ``FIT`` px, ``SIZE`` px tiles), with scale, D4 and channel-dropout
augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_hpa.core.image.cells import cell_crops, segment_image
from napari_hpa.core.image.channels import adapt_channels
from napari_hpa.core.image.io import ImageData
from napari_hpa.core.model.checkpoint import InputSpec
from napari_hpa.core.model.tiles import percentile_normalize, prepare_cell, resize
from napari_hpa.core.tasks import HPA_CHANNELS

from .sources import Item

SIZE = 160
FIT = 320
OPTIONAL = ["microtubules", "nucleus", "er"]
#: Composites are zoomed in (1-3 cells fill 820 px): they are segmented at 256 px.
SEGMENT_MAX_SIZE = {"composite": 256}
#: Cell crops are stored at most this wide (prepare_cell resizes them to SIZE anyway).
CELL_STORE = 2 * SIZE
ER = HPA_CHANNELS.index("er")
MT, NUC = HPA_CHANNELS.index("microtubules"), HPA_CHANNELS.index("nucleus")


def input_spec() -> InputSpec:
    """What the bundled model's ``model.json`` says about its input."""
    return InputSpec(
        channels=list(HPA_CHANNELS),
        size=SIZE,
        fit=FIT,
        optional_channels=list(OPTIONAL),
        mean=[0.5] * 4,
        std=[0.5] * 4,
        normalize="percentile",
        cell_fit="square",
        # the 8 D4 views of every tile and cell, averaged: chosen on validation folds of
        # the training items (benchmarks/hpa_inference_options.py, docs/benchmarks.md)
        views="d4",
    )


@dataclass
class Prepared:
    """An item's training material: a normalised view for crops, and its cells."""

    view: np.ndarray  # (4, h, w) in [0, 1], longer side 1.25 * FIT
    cells: list[np.ndarray]  # (4, h, w) raw model-channel crops, at most CELL_STORE wide


def mask_scale_bar(data: np.ndarray) -> np.ndarray:
    """Zero the white scale bar in the lower-right corner of a composite (a copy)."""
    out = data.copy()
    h, w = out.shape[1:]
    y0, x0 = int(h * 0.94), int(w * 0.78)
    corner = out[:, y0:, x0:]
    white = corner.min(axis=0) > 0.55
    if white.any():
        from scipy import ndimage as ndi

        white = ndi.binary_dilation(white, iterations=3)
        corner[:, white] = 0.0
    return out


def segment(image: ImageData, source: str) -> np.ndarray:
    """Cell labels as napari computes them (composites at their own, zoomed-in scale)."""
    if source in SEGMENT_MAX_SIZE:
        return segment_image(image, max_size=SEGMENT_MAX_SIZE[source])
    return segment_image(image)


def plausible_cells(labels: np.ndarray) -> list[int]:
    """Cell ids between 0.5 % and 70 % of the image (drops fragments and 'the whole field')."""
    areas = np.bincount(labels.ravel())
    total = labels.size
    return [i for i in range(1, len(areas)) if 0.005 * total < areas[i] < 0.7 * total]


def shrink(crop: np.ndarray, longest: int) -> np.ndarray:
    """Resize so the longer side is at most ``longest`` (a copy in float32)."""
    h, w = crop.shape[1:]
    if max(h, w) <= longest:
        return crop.astype(np.float32)
    s = longest / max(h, w)
    return resize(crop.astype(np.float32), (max(1, round(h * s)), max(1, round(w * s))))


def prepare(item: Item) -> Prepared:
    """Read, segment and crop one item (Kaggle images are protein-only: no cells)."""
    image = item.read()
    model = adapt_channels(image.data, image.channel_names, HPA_CHANNELS, OPTIONAL)
    if item.source == "composite":
        model = mask_scale_bar(model)
    view = shrink(percentile_normalize(model), round(1.25 * FIT))
    cells: list[np.ndarray] = []
    if item.source != "kaggle":
        labels = segment(image, item.source)
        keep = plausible_cells(labels)
        cells = [shrink(c, CELL_STORE) for _, c in cell_crops(model, labels, cells=keep)]
    return Prepared(view, cells)


def _dropout(c: np.ndarray, rng: np.random.Generator, er_live: bool, has_er: bool) -> None:
    """Channel dropout in place: protein-only, no microtubules or nucleus, and no ER."""
    r = rng.random()
    if r < 0.2:
        c[[MT, NUC]] = 0.0
    elif r < 0.3:
        c[int(rng.choice([MT, NUC]))] = 0.0
    if not er_live or (has_er and rng.random() < 0.4):
        c[ER] = 0.0


def image_crops(
    prep: Prepared, n: int, rng: np.random.Generator, source: str, er_live: bool
) -> np.ndarray:
    """``n`` augmented image-level tiles (n, 4, SIZE, SIZE), normalised as the network's input."""
    x = prep.view
    h, w = x.shape[1:]
    out = []
    for _ in range(n):
        scale = FIT * rng.uniform(0.8, 1.25) / max(h, w)
        target = (max(SIZE, round(h * scale)), max(SIZE, round(w * scale)))
        xr = resize(x, target)
        y0 = int(rng.integers(0, target[0] - SIZE + 1))
        x0 = int(rng.integers(0, target[1] - SIZE + 1))
        c = np.ascontiguousarray(d4(xr[:, y0 : y0 + SIZE, x0 : x0 + SIZE], rng))
        if source != "kaggle":
            _dropout(c, rng, er_live, source == "duloc")
        else:
            c[ER] = 0.0
        out.append(c)
    return (np.stack(out) - 0.5) / 0.5


def cell_tiles(
    prep: Prepared, per_cell: int, rng: np.random.Generator, source: str, er_live: bool
) -> np.ndarray:
    """Augmented tiles of every cell (``per_cell`` each), through ``prepare_cell``."""
    spec = input_spec()
    out = []
    for crop in prep.cells:
        for _ in range(per_cell):
            c = np.ascontiguousarray(d4(crop, rng))
            _dropout(c, rng, er_live, source == "duloc")
            out.append(prepare_cell(c, HPA_CHANNELS, spec)[0])
    return np.stack(out) if out else np.zeros((0, 4, SIZE, SIZE), np.float32)


def d4(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random rotation by 90 degrees and flip of a (C, H, W) array."""
    x = np.rot90(x, int(rng.integers(0, 4)), axes=(1, 2))
    return x[:, :, ::-1] if rng.random() < 0.5 else x
