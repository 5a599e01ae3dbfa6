"""Turn an image into network input tiles, the same way for training and prediction.

Prediction, batch and training all call :func:`prepare_tiles`, so a model sees
at prediction time exactly what it saw while learning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..image.channels import adapt_channels
from ..image.marks import blank_marks
from .checkpoint import InputSpec


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one image lie, to stitch activation maps back together.

    ``resized`` is the (h, w) of the image after resizing; tiles of ``size``
    start at ``origins`` (y, x) in that resized frame. The last ``maps_only`` of
    them are the half-shifted tiles that :func:`prepare_tiles` adds with
    ``seamless=True``: they smooth the stitched maps and are never scored, so
    the probabilities come from the first :attr:`scored` tiles alone.
    """

    original: tuple[int, int]
    resized: tuple[int, int]
    size: int
    origins: tuple[tuple[int, int], ...]
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right added by pad_square
    maps_only: int = 0

    @property
    def scored(self) -> int:
        """How many tiles (the first ones) the image's probabilities are the mean of."""
        return len(self.origins) - self.maps_only


def percentile_normalize(data: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Stretch each channel so its ``low``..``high`` percentiles map to 0..1."""
    out = np.empty(data.shape, np.float32)
    for c, plane in enumerate(data):
        sample = plane[:: max(1, plane.shape[0] // 256), :: max(1, plane.shape[1] // 256)]
        lo, hi = (float(v) for v in np.percentile(sample, [low, high]))
        scale = hi - lo if hi - lo > 1e-6 else 1.0
        # in place and in float32: three passes over the plane, no temporaries (batch decode cost)
        o = out[c]
        np.subtract(plane, np.float32(lo), out=o)
        np.multiply(o, np.float32(1.0 / scale), out=o)
        np.clip(o, 0.0, 1.0, out=o)
    return out


def pad_to_square(data: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Pad (C, H, W) to a square with each channel's border median, centred.

    Returns the square and the pad (top, bottom, left, right), which the tile grid
    keeps to map the model's maps back onto the image.
    """
    _, h, w = data.shape
    if h == w:
        return data, (0, 0, 0, 0)
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    pad = (top, side - h - top, left, side - w - left)
    border = np.concatenate([data[:, 0, :], data[:, -1, :], data[:, :, 0], data[:, :, -1]], axis=1)
    fill = np.median(border, axis=1).astype(np.float32)
    out = np.empty((data.shape[0], side, side), np.float32)
    out[:] = fill[:, None, None]
    out[:, top : top + h, left : left + w] = data
    return out, pad


def _tile_origins(length: int, size: int) -> list[int]:
    if length <= size:
        return [0]
    n = math.ceil(length / size)
    step = (length - size) / (n - 1)
    return [round(i * step) for i in range(n)]


def _with_midpoints(origins: list[int]) -> list[int]:
    """Add, between each two origins, one halfway: the grid shifted by half a step."""
    out = [origins[0]]
    for a, b in zip(origins, origins[1:], strict=False):
        out += [(a + b) // 2, b]
    return out


def resize(data: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Antialiased bilinear resize of (C, H, W) float32 to ``shape``."""
    if tuple(data.shape[1:]) == tuple(shape):
        return data.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None]
    antialias = shape[0] < data.shape[1] or shape[1] < data.shape[2]
    out = F.interpolate(t, size=shape, mode="bilinear", align_corners=False, antialias=antialias)
    return out[0].numpy()


def prepare_tiles(
    data: np.ndarray,
    channel_names: Sequence[str],
    spec: InputSpec,
    *,
    whole: bool = False,
    seamless: bool = False,
) -> tuple[np.ndarray, TileGrid]:
    """Network input tiles (T, C, size, size) float32 for one (C, H, W) image.

    Steps: blank burnt-in white marks (:mod:`~napari_hpa.core.image.marks`); match
    channels to the model; invert and pad to a square if the
    model asks; normalise; resize (the longer side to ``spec.fit``, or the
    whole image to one tile when ``fit`` is None or ``whole`` is True); cut
    into ``size`` tiles that overlap just enough to cover the image; apply
    mean/std.

    ``seamless`` appends, for activation maps only, the tiles of a grid shifted
    by half a step: a network's map is least reliable at a tile's edge (its
    receptive field is cut there), and where tiles only touch (an image whose
    resized side is a multiple of ``size``) nothing else covers that edge, so the
    stitched map jumps. With the shifted tiles every edge between two tiles lies
    in another tile's centre, where :func:`stitch_maps` weighs it most. The first
    ``grid.scored`` tiles are exactly those of ``seamless=False``.
    """
    # burnt-in scale bars of a composite: the network never saw them (training blanked them)
    x = adapt_channels(blank_marks(data), channel_names, spec.channels, spec.optional_channels)
    original = (int(x.shape[1]), int(x.shape[2]))
    if spec.invert:
        x = 1.0 - x
    pad = (0, 0, 0, 0)
    if spec.pad_square:
        x, pad = pad_to_square(x)
    if spec.normalize == "percentile":
        x = percentile_normalize(x)
    size = spec.size
    h, w = x.shape[1:]
    if spec.fit is None or whole:
        target = (size, size)
    else:
        scale = spec.fit / max(h, w)
        target = (max(size, round(h * scale)), max(size, round(w * scale)))
    x = resize(x, target)
    mean = np.asarray(spec.mean, np.float32)[:, None, None]
    std = np.asarray(spec.std, np.float32)[:, None, None]
    x = (x - mean) / std
    ys, xs = _tile_origins(target[0], size), _tile_origins(target[1], size)
    origins = [(y, xo) for y in ys for xo in xs]
    scored = len(origins)
    if seamless:
        taken = set(origins)
        grid = [(y, xo) for y in _with_midpoints(ys) for xo in _with_midpoints(xs)]
        origins += [o for o in grid if o not in taken]
    tiles = np.stack([x[:, y : y + size, xo : xo + size] for y, xo in origins]).astype(np.float32)
    return tiles, TileGrid(original, target, size, tuple(origins), pad, len(origins) - scored)


def prepare_cell(crop: np.ndarray, channel_names: Sequence[str], spec: InputSpec) -> np.ndarray:
    """Return the network's one input tile (1, C, size, size) for one cell's crop.

    The crop is what :func:`~napari_hpa.core.image.cells.cell_crops` returns
    (other cells and background set to 0). With ``spec.cell_fit == "square"``
    it is padded with zeros to a square before it is resized, so the cell keeps
    its shape and fills the tile whatever its size in pixels: training crops
    go through this same function, so a cell reaches the network as the
    training cells did. ``"stretch"`` (older models) resizes the crop as it is.
    """
    if spec.cell_fit != "square":
        return prepare_tiles(crop, channel_names, spec, whole=True)[0]
    x = np.asarray(crop, np.float32)
    if x.ndim == 2:
        x = x[None]
    x = adapt_channels(x, channel_names, spec.channels, spec.optional_channels)
    h, w = x.shape[1:]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    square = np.zeros((x.shape[0], side, side), np.float32)
    square[:, top : top + h, left : left + w] = x
    return prepare_tiles(square, spec.channels, spec, whole=True)[0]


def blend_window(size: int) -> np.ndarray:
    """(size, size) weights that fall off towards a tile's edges (a flat top, linear ramps).

    Overlapping tiles are averaged with these weights, so each tile's edge (where its
    receptive field is cut) hands over smoothly to its neighbour's centre instead of
    leaving a seam. Weights never reach 0, so a pixel covered by one tile keeps its value.
    The floor is per axis (the window is the outer product of two ramps): along the
    image's own edge, where every covering tile is at its edge too, the tiles then keep
    their ratio of weights instead of all falling to one floor and jumping.
    """
    ramp = max(1, size // 4)
    r = np.minimum(1.0, (np.arange(size, dtype=np.float32) + 0.5) / ramp)
    r = np.maximum(np.minimum(r, r[::-1]), 0.02)
    return np.outer(r, r).astype(np.float32)


def stitch_maps(maps: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Stitch per-tile maps (T, K, h, w) into (K, H, W) at the original image's size.

    Overlaps are blended with :func:`blend_window`.
    """
    t, k, mh, mw = maps.shape
    size = grid.size
    tile_maps = F.interpolate(
        torch.from_numpy(maps.astype(np.float32)),
        size=(size, size),
        mode="bilinear",
        align_corners=False,
    ).numpy()
    window = blend_window(size)
    acc = np.zeros((k, *grid.resized), np.float32)
    weight = np.zeros(grid.resized, np.float32)
    for (y, x), m in zip(grid.origins, tile_maps, strict=False):
        acc[:, y : y + size, x : x + size] += m * window
        weight[y : y + size, x : x + size] += window
    acc /= np.maximum(weight, 1e-6)[None]
    top, bottom, left, right = grid.pad
    padded_shape = (grid.original[0] + top + bottom, grid.original[1] + left + right)
    full = resize(acc, padded_shape)
    return full[:, top : top + grid.original[0], left : left + grid.original[1]]
