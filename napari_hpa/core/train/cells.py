"""Cells as training samples: the segmented cells of corrected images, with their labels.

A user corrects images, and cells, in Annotate; napari classifies each cell from its own
crop (``Predictor.predict_cells``). Training on the whole images alone teaches the
network whole fields at the image's scale, not single cells at theirs. So every
corrected image whose cell mask is stored in the annotations database adds up to
:data:`MAX_CELLS_PER_IMAGE` samples, one per cell: the cell's own corrected labels where
the user gave them, else the image's (the weak labels of the HPA 2021 single-cell
challenge). A cell reaches the network through :func:`~napari_hpa.core.model.tiles.prepare_cell`,
the function the Predictor uses, so it is trained as it is predicted.

A cell sample's ``source`` is the image's source with ``#cell=<id>`` appended
(:func:`cell_key`); its ``group`` is the image's source, so an image and its cells stay
on one side of the validation split.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..image.cells import cell_crops
from ..image.io import read_image
from ..model.checkpoint import InputSpec
from ..model.tiles import prepare_cell

#: More cells of one image add little but time (a field may hold a hundred).
MAX_CELLS_PER_IMAGE = 16
_KEY = re.compile(r"^(?P<source>.+)#cell=(?P<cell>[1-9][0-9]*)$")


def cell_key(source: str, cell: int) -> str:
    """Return the training source of one cell of ``source``."""
    return f"{source}#cell={int(cell)}"


def split_cell_key(key: str) -> tuple[str, int] | None:
    """Return ``(image source, cell)`` of a cell sample's source, or None for an image."""
    m = _KEY.match(key)
    return (m["source"], int(m["cell"])) if m else None


def pick_cells(cells: list[int], limit: int = MAX_CELLS_PER_IMAGE) -> list[int]:
    """Up to ``limit`` of an image's cells, spread evenly over its ids (deterministic)."""
    if len(cells) <= limit:
        return list(cells)
    at = np.linspace(0, len(cells) - 1, limit).round().astype(int)
    return [cells[i] for i in dict.fromkeys(at.tolist())]


class CellViews:
    """Cell tiles of images, read once per image; the masks come from the database.

    ``view(key, spec)`` returns the tile as the Predictor makes it, before the
    network's mean and std (the training dataset applies those after augmenting).
    The last image's tiles are kept: a cache fills the cells of one image in a row.
    """

    def __init__(self, db: str | Path) -> None:
        self.db = Path(db)
        self._source: str | None = None
        self._tiles: dict[int, np.ndarray] = {}

    def view(self, key: str, spec: InputSpec) -> np.ndarray:
        """Return the (C, size, size) float32 tile of the cell ``key``.

        Raises
        ------
        ValueError
            The cell is not in the stored mask (a mask replaced since the labels).
        """
        parsed = split_cell_key(key)
        if parsed is None:
            raise ValueError(f"{key}: not a cell sample")
        source, cell = parsed
        if source != self._source:
            self._tiles = self._load(source, spec)
            self._source = source
        if cell not in self._tiles:
            raise ValueError(f"{source}: cell {cell} is not in the stored cell mask")
        return self._tiles[cell]

    def _load(self, source: str, spec: InputSpec) -> dict[int, np.ndarray]:
        from ..labels.store import open_readonly

        with open_readonly(self.db) as store:
            mask = store.cell_mask(source)
        if mask is None:
            raise ValueError(f"{source}: no cell mask stored in {self.db}")
        image = read_image(source)
        if image.data.shape[1:] != mask.shape:
            raise ValueError(
                f"{source}: the stored cell mask is {mask.shape[1]}x{mask.shape[0]}, "
                f"the image {image.data.shape[2]}x{image.data.shape[1]}"
            )
        raw = replace(spec, mean=[0.0] * len(spec.channels), std=[1.0] * len(spec.channels))
        return {
            cell: prepare_cell(crop, image.channel_names, raw)[0]
            for cell, crop in cell_crops(image.data, mask)
        }
