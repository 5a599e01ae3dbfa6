"""Heat maps: seamless across tile borders, masked to the cells or the foreground (issue 17, 7).

The probabilities never see the pass that only the maps use.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_hpa.core.image.io import ImageData, read_image
from napari_hpa.core.model.heat import heat_mask, mask_map
from napari_hpa.core.model.predict import Predictor
from napari_hpa.core.model.registry import sample_data_dir
from napari_hpa.core.model.tiles import prepare_tiles
from napari_hpa.core.model.views import with_views

MODEL = "hpa28-efficientnet_lite0"  # 160-px tiles, the longer side resized to 320


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(MODEL, device="cpu")


@pytest.fixture(scope="module")
def field() -> ImageData:
    """The bundled 864 x 864 RGBY field: resized to 320, it is exactly 2 x 2 tiles."""
    return read_image(str(sample_data_dir() / "hpa_57_F11_1"))


def _steps(maps: dict[int, np.ndarray], axis: int) -> np.ndarray:
    return np.abs(np.diff(np.stack(list(maps.values())), axis=axis + 1))


def test_maps_have_no_seam_where_tiles_only_touch(predictor, field):
    """Across the tile border the map changes no more than it does inside a tile."""
    tiles, grid = predictor.prepare(field)
    assert grid.resized == (320, 320) and len(tiles) == 4  # tiles touch, no overlap
    pred = predictor.predict_one(field, keep_activations=True)
    maps = predictor.activation_maps(pred.activations, range(28))
    border = 432  # 160 of 320, in the 864-px image
    for axis in (0, 1):  # rows, then columns
        steps = _steps(maps, axis)
        at_border = np.take(steps, range(border - 3, border + 2), axis=axis + 1)
        inside = np.concatenate(
            [
                np.take(steps, range(8, border - 8), axis=axis + 1),
                np.take(steps, range(border + 8, 864 - 9), axis=axis + 1),
            ],
            axis=axis + 1,
        )
        # before the half-shifted tiles: 0.37 at the border, 0.012 inside
        assert at_border.max() <= inside.max(), (axis, at_border.max(), inside.max())


def test_probabilities_do_not_see_the_map_only_tiles(predictor, field):
    plain = predictor.predict_one(field)
    kept = predictor.predict_one(field, keep_activations=True)
    cams = predictor.predict_one(field, cam_classes=[0, 5])
    assert kept.activations is not None
    # the maps are one pass over the whole 320 x 320 image (10 x 10 cells), never scored
    assert kept.activations.maps.shape == (1, 28, 10, 10) and kept.activations.grid.scored == 4
    # the scored tiles are those of a plain prediction, run in the same batches
    tiles, _ = predictor.prepare(field)
    scored = with_views(tiles, predictor.spec.input.views)  # and their test-time views
    logits, _ = predictor.run_tiles(scored, with_cam=True)
    np.testing.assert_array_equal(kept.probabilities, predictor.to_probabilities(logits))
    np.testing.assert_array_equal(kept.probabilities, cams.probabilities)
    # the network's two heads (pooled maps, linear on pooled features) agree to rounding
    np.testing.assert_allclose(kept.probabilities, plain.probabilities, atol=1e-6)
    assert kept.predicted == plain.predicted
    np.testing.assert_allclose(
        predictor.predict_prepared([tiles])[0], plain.probabilities, atol=0, rtol=0
    )


def test_seamless_tiles_keep_the_scored_tiles_first():
    from napari_hpa.core.model.checkpoint import InputSpec

    spec = InputSpec(["protein"], size=32, fit=64)
    data = np.random.default_rng(0).random((1, 64, 128)).astype(np.float32)
    plain, grid = prepare_tiles(data, ["protein"], spec)
    more, wide = prepare_tiles(data, ["protein"], spec, seamless=True)
    assert grid.maps_only == 0 and grid.scored == len(plain) == 2
    np.testing.assert_array_equal(more[: wide.scored], plain)
    assert wide.origins[: wide.scored] == grid.origins
    assert set(wide.origins[wide.scored :]) == {(0, 16)}  # halfway between x = 0 and 32


def test_maps_are_masked_to_the_cells(predictor, field):
    """With cells, a map is NaN (drawn transparent) wherever no cell is."""
    labels = np.zeros(field.data.shape[1:], np.int32)
    labels[100:300, 200:500] = 1
    labels[600:700, 50:150] = 2
    mask = heat_mask(field.data, 4, labels=labels)
    assert mask is not None and mask.shape == (216, 216)
    pred = predictor.predict_one(field, keep_activations=True)
    maps = predictor.activation_maps(pred.activations, [0, 25], downsample=4, mask=mask)
    for m in maps.values():
        assert m.shape == (216, 216)
        assert np.isfinite(m[25:75, 50:125]).all() and np.isfinite(m[150:175, 13:37]).all()
        outside = np.ones(m.shape, bool)
        outside[25:75, 50:125] = outside[150:175, 12:38] = False
        assert np.isnan(m[outside]).all()
    with pytest.raises(ValueError, match="mask"):
        mask_map(np.zeros((4, 4), np.float32), np.ones((3, 4), bool))


def test_without_cells_the_mask_is_the_foreground():
    """A dark field with two bright cells; plankton: a dark object on white (``invert``)."""
    yy, xx = np.mgrid[:400, :400]
    blobs = ((yy - 120) ** 2 + (xx - 100) ** 2 < 50**2) | (
        (yy - 280) ** 2 + (xx - 300) ** 2 < 60**2
    )
    noise = np.random.default_rng(1).normal(0, 0.02, (400, 400))
    dark = np.clip(0.05 + 0.6 * blobs + noise, 0, 1).astype(np.float32)
    mask = heat_mask(np.stack([dark, dark * 0.5]), 2)
    assert mask is not None and mask.shape == (200, 200)
    small = blobs[::2, ::2]
    assert mask[small].mean() > 0.97 and not mask[~_grown(small, 4)].any()

    white = 1.0 - dark  # dark objects on a bright background
    assert heat_mask(white[None], 2, invert=True)[small].mean() > 0.97
    assert not heat_mask(white[None], 2, invert=True)[~_grown(small, 4)].any()
    assert heat_mask(np.zeros((1, 50, 50), np.float32)) is None  # flat: nothing to tell apart
    empty = np.zeros(dark.shape, np.int32)
    np.testing.assert_array_equal(heat_mask(dark[None], 2, labels=empty), mask)


def _grown(mask: np.ndarray, px: int) -> np.ndarray:
    from scipy import ndimage as ndi

    return ndi.binary_dilation(mask, iterations=px)
