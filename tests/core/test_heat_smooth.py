"""A whole-image heat map is drawn smoothly: no straight creases at the map's samples."""

from __future__ import annotations

import numpy as np
import torch

from napari_hpa.core.model.heat import place_whole_map
from napari_hpa.core.model.tiles import TileGrid


def test_a_peaked_map_has_no_kink_along_rows_or_columns() -> None:
    # 10 x 10 values, as the bundled HPA model gives for its 320 x 320 input
    heat = torch.zeros(1, 1, 10, 10)
    heat[0, 0, 4, 4], heat[0, 0, 4, 5], heat[0, 0, 5, 4] = 1.0, 0.6, 0.3
    grid = TileGrid(original=(640, 640), resized=(320, 320), size=160, origins=((0, 0),))
    drawn = place_whole_map(heat, grid, span=(320, 320))[0]
    assert drawn.shape == (640, 640)
    for profile in (drawn[4 * 64 + 32], drawn[:, 4 * 64 + 32]):
        slope = np.abs(np.diff(profile))
        bend = np.abs(np.diff(profile, 2))
        # bilinear drawing bends at each sample by 0.7 of its steepest slope: a crease
        assert bend.max() < 0.2 * slope.max(), (bend.max(), slope.max())
    assert np.argmax(drawn[4 * 64 + 32]) // 64 == 4  # the peak stays where the map has it
