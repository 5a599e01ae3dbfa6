"""Heat maps: the network's maps they are drawn from, and where they may show.

A class activation map is the network's evidence at every place of the tile, the
empty background included, and there it is often strongest (the network reads the
dark around a cell as much as the cell). A heat map is shown only where there is
something to classify: the segmented cells when there are any, else the stained
foreground that :func:`~napari_hpa.core.image.cell_scale.foreground` finds (the
segmenter's own threshold). :class:`Activations` keeps the network's maps of an image,
so a viewer draws any class later without running the network again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from ..image.cell_scale import downscale, foreground
from .tiles import TileGrid, resize

__all__ = ["Activations", "heat_mask", "mask_map", "place_whole_map"]

#: Smoothing (pixels at the map's size) before the foreground threshold.
FOREGROUND_SIGMA = 2.0
#: Threshold between the background and Otsu's level (0.5: the segmenter's, keeps dim rims).
FOREGROUND_FACTOR = 0.5
#: Holes in a fluorescence foreground up to this fraction of the image are filled (a dim
#: spot in a cell); larger ones are the background between cells and stay out.
SMALL_HOLE = 0.002


@dataclass
class Activations:
    """The network's class maps of one image, kept to draw heat maps later.

    With ``span`` set, ``maps`` is (1, K, h, w): one pass of the network over the
    whole resized image (fully convolutional), whose map covers ``span`` (y, x)
    pixels of the resized frame from its top left (more than ``grid.resized`` where
    the network's stride does not divide it). Without, ``maps`` are the logits maps
    (T, K, h, w) of the tiles that ``grid`` places. :meth:`~.predict.Predictor.activation_maps`
    turns any classes of them into maps at the image's size (or a fraction of it)
    without running the network again.
    """

    maps: np.ndarray
    grid: TileGrid
    span: tuple[int, int] | None = None


def heat_mask(
    data: np.ndarray,
    factor: int = 1,
    *,
    labels: np.ndarray | None = None,
    invert: bool = False,
) -> np.ndarray | None:
    """Return where a heat map of ``data`` (C, H, W) may show, at 1/``factor`` of its size.

    Parameters
    ----------
    data
        The image, (C, H, W) or (H, W), values in [0, 1].
    factor
        The maps' downsampling (``Predictor.activation_maps(downsample=...)``); the mask is
        (ceil(H / factor), ceil(W / factor)), the maps' shape.
    labels
        (H, W) cell labels: with any cell in them, the mask is the cells (a block of the
        map is in when any of its pixels is).
    invert
        The objects are dark on a bright background (the model's ``InputSpec.invert``:
        plankton), so the foreground is what is darker than the background.

    Returns
    -------
    np.ndarray | None
        A bool mask, or None when nothing can be told apart (a flat image, or no
        foreground found): then the whole map shows.
    """
    f = max(1, int(factor))
    if labels is not None and labels.any():
        return downscale((np.asarray(labels) > 0).astype(np.float32), f) > 0
    planes = np.asarray(data, np.float32)
    gray = downscale(planes.mean(axis=0) if planes.ndim == 3 else planes, f)
    if invert:
        gray = 1.0 - gray
    fg = foreground(gray, FOREGROUND_SIGMA, FOREGROUND_FACTOR)
    if fg is None or not fg.any():
        return None
    if invert:  # an outline on a bright field encloses the object: fill it all
        return np.asarray(ndi.binary_fill_holes(fg), bool)
    # a stain covers its objects; what it encloses beyond a speck is background between them
    holes, n = ndi.label(~fg)
    if n:
        sizes = np.bincount(holes.ravel())
        small = sizes <= SMALL_HOLE * fg.size
        small[0] = False
        fg = fg | small[holes]
    return fg


def mask_map(cam: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Return ``cam`` (float32) with NaN where ``mask`` is False: nothing is drawn there."""
    if cam.shape != mask.shape:
        raise ValueError(f"a {mask.shape} mask for a {cam.shape} map")
    return np.where(mask, cam, np.float32(np.nan)).astype(np.float32)


def place_whole_map(heat: torch.Tensor, grid: TileGrid, span: tuple[int, int]) -> np.ndarray:
    """Whole-image maps (1, K, h, w) -> (K, H, W) at ``grid.original``'s size.

    The map is drawn over the ``span`` it covers from the resized image's top left,
    cut to the resized image, then taken back through the pad to the original frame.
    Bicubic, not bilinear: a map is about 10 x 10 values, and bilinear drawing bends at
    each value, which shows as straight bright creases across a cell (seen at 1366 x 768
    on an HPA composite). Its overshoot is clipped by the caller.
    """
    up = F.interpolate(heat.float(), size=span, mode="bicubic", align_corners=False)[0]
    resized = np.ascontiguousarray(up[:, : grid.resized[0], : grid.resized[1]].numpy())
    top, bottom, left, right = grid.pad
    full = resize(resized, (grid.original[0] + top + bottom, grid.original[1] + left + right))
    return full[:, top : top + grid.original[0], left : left + grid.original[1]]
