from __future__ import annotations

import numpy as np
import pytest

from napari_hpa.core.model.checkpoint import InputSpec
from napari_hpa.core.model.tiles import percentile_normalize, prepare_tiles, stitch_maps
from napari_hpa.core.tasks import HPA_CHANNELS


def _spec(**kw) -> InputSpec:
    return InputSpec(channels=list(HPA_CHANNELS), optional_channels=["er"], **kw)


def test_whole_image_resized_to_one_tile() -> None:
    data = np.random.default_rng(0).random((3, 100, 60)).astype(np.float32)
    tiles, grid = prepare_tiles(data, ("red", "green", "blue"), _spec(size=32))
    assert tiles.shape == (1, 4, 32, 32) and tiles.dtype == np.float32
    assert np.all(tiles[0, 3] == 0)  # missing optional ER is zeros
    assert grid.original == (100, 60)


def test_fit_then_tiles_cover_the_image() -> None:
    data = np.random.default_rng(0).random((4, 200, 100)).astype(np.float32)
    tiles, grid = prepare_tiles(data, HPA_CHANNELS, _spec(size=32, fit=80))
    assert grid.resized == (80, 40)
    assert tiles.shape[1:] == (4, 32, 32) and len(tiles) == len(grid.origins) == 3 * 2
    covered = np.zeros(grid.resized, bool)
    for y, x in grid.origins:
        covered[y : y + 32, x : x + 32] = True
    assert covered.all()


def test_stitch_maps_returns_original_resolution() -> None:
    data = np.zeros((4, 90, 70), np.float32)
    tiles, grid = prepare_tiles(data, HPA_CHANNELS, _spec(size=32, fit=64))
    maps = np.ones((len(tiles), 2, 4, 4), np.float32)
    maps[:, 1] = 0.25
    full = stitch_maps(maps, grid)
    assert full.shape == (2, 90, 70)
    np.testing.assert_allclose(full[0], 1.0, atol=1e-5)
    np.testing.assert_allclose(full[1], 0.25, atol=1e-5)


def test_mean_std_invert_and_pad_square() -> None:
    data = np.ones((1, 20, 40), np.float32)
    data[0, 5:15, 10:30] = 0.0  # a dark object on a bright background
    spec = InputSpec(
        channels=["gray"], size=16, invert=True, pad_square=True, mean=[0.5], std=[0.5]
    )
    tiles, grid = prepare_tiles(data, ("gray",), spec)
    assert grid.pad == (10, 10, 0, 0)
    t = tiles[0, 0]
    assert t.min() >= -1.0 - 1e-5 and t.max() <= 1.0 + 1e-5
    assert t[8, 8] > 0.9 and t[0, 8] < -0.9  # inverted object bright, padded border dark


def test_percentile_normalize_stretches_dim_channels() -> None:
    dim = np.random.default_rng(1).random((2, 64, 64)).astype(np.float32) * 0.05
    out = percentile_normalize(dim)
    assert out.max() == 1.0 and out.min() == 0.0


def test_stitched_maps_blend_across_tile_overlaps() -> None:
    """Two overlapping tiles with different maps: no jump at either tile's edge."""
    from napari_hpa.core.model.checkpoint import InputSpec

    spec = InputSpec(["protein"], size=64, fit=100)
    _, grid = prepare_tiles(np.random.default_rng(0).random((1, 50, 100)), ["protein"], spec)
    assert len(grid.origins) == 2  # 64-px tiles at x = 0 and x = 36
    maps = np.stack([np.zeros((1, 4, 4)), np.ones((1, 4, 4))]).astype(np.float32)
    row = stitch_maps(maps, grid)[0, 25]
    steps = np.abs(np.diff(row))
    assert row[0] == pytest.approx(0, abs=1e-3) and row[-1] == pytest.approx(1, abs=1e-3)
    # uniform averaging jumps by 0.5 where the second tile starts; blending ramps
    assert steps.max() < 0.1
