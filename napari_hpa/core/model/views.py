"""Test-time views: the flips and rotations of a tile whose answers the Predictor averages.

A cell, or a field of cells, has no up or left: the same protein seen rotated or mirrored
is the same location. Averaging the probabilities of a tile's views (``model.json``
``input.views``) makes an answer steadier than that of one view. It was measured on
validation folds before it was turned on for a bundled model (docs/benchmarks.md,
"HPA inference options"). Every view has the tile's own shape, so the views of a
batch are stacked, not resized.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_View = Callable[[np.ndarray], np.ndarray]


def _transpose(x: np.ndarray) -> np.ndarray:
    return np.swapaxes(x, -1, -2)


_FLIPS: tuple[_View, ...] = (
    lambda x: x,
    lambda x: x[..., ::-1],
    lambda x: x[..., ::-1, :],
    lambda x: x[..., ::-1, ::-1],
)


def _transposed(flip: _View) -> _View:
    def view(x: np.ndarray) -> np.ndarray:
        return flip(_transpose(x))

    return view


_D4: tuple[_View, ...] = _FLIPS + tuple(_transposed(flip) for flip in _FLIPS)
_VIEWS: dict[str, tuple[_View, ...]] = {"none": _FLIPS[:1], "flip4": _FLIPS, "d4": _D4}
#: The view modes ``model.json`` may name.
VIEW_MODES = tuple(_VIEWS)


def view_count(mode: str) -> int:
    """How many views of each tile ``mode`` scores (1 for ``"none"``)."""
    return len(_VIEWS[mode])


def with_views(tiles: np.ndarray, mode: str) -> np.ndarray:
    """Tiles (N, C, H, W) -> their views (N * V, C, H, W), view by view.

    The first N rows are the tiles themselves, so a caller that also wants the
    tiles' activation maps takes them from those rows. Views of a non-square tile
    under ``"d4"`` would change its shape, so they are refused.
    """
    views = _VIEWS[mode]
    if len(views) == 1:
        return tiles
    if mode == "d4" and tiles.shape[-1] != tiles.shape[-2]:
        raise ValueError(f"d4 views need square tiles, not {tiles.shape[-2:]}")
    return np.ascontiguousarray(np.concatenate([view(tiles) for view in views]))
