"""Burnt-in white marks (HPA scale bars) are found on dark composites and blanked before tiling."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_data

from napari_hpa.core.image.io import read_image
from napari_hpa.core.image.marks import blank_marks, scale_bar_mask
from napari_hpa.core.model.checkpoint import InputSpec
from napari_hpa.core.model.tiles import prepare_tiles


def _dark(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.random((3, 300, 300)) * 0.3).astype(np.float32)
    x[1, 100:160, 100:160] += 0.6  # a bright stained cell, not white in every channel
    return x


def test_a_white_bar_on_a_dark_composite_is_found_and_only_it() -> None:
    x = _dark()
    x[:, 285:291, 200:280] = 1.0
    mask = scale_bar_mask(x)
    assert mask is not None
    ys, xs = np.nonzero(mask)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (283, 292, 198, 281)  # bar + 2-px rim
    assert not mask[100:160, 100:160].any()
    blanked = blank_marks(x)
    assert (blanked[:, mask] == 0).all() and np.array_equal(blanked[:, ~mask], x[:, ~mask])


@pytest.mark.parametrize(
    "case",
    ["two_channels_white", "square_not_bar", "bright_field", "gray", "huge_bar"],
)
def test_what_is_not_a_mark(case: str) -> None:
    x = _dark()
    if case == "two_channels_white":
        x[:2, 285:291, 200:280] = 1.0  # bright protein and microtubules: a stain, not a mark
    elif case == "square_not_bar":
        x[:, 200:230, 200:230] = 1.0
    elif case == "bright_field":  # H&E: near-white background with white lumens
        x = 1.0 - x
        x[:, 285:291, 200:280] = 1.0
    elif case == "gray":
        x = x[:1].copy()
        x[:, 285:291, 200:280] = 1.0
    else:  # more than 1 % of the image
        x[:, 250:280, 0:300] = 1.0
    assert blank_marks(x) is x


def test_tiles_never_show_the_bar() -> None:
    spec = InputSpec(channels=["red", "green", "blue"], size=64, fit=128, normalize="percentile")
    x = _dark(1)
    with_bar = x.copy()
    with_bar[:, 285:291, 200:280] = 1.0
    without = with_bar.copy()
    without[:, scale_bar_mask(with_bar)] = 0
    names = ["red", "green", "blue"]
    tiles, _ = prepare_tiles(with_bar, names, spec)
    expected, _ = prepare_tiles(without, names, spec)
    assert np.array_equal(tiles, expected)


def test_real_hpa_composites_lose_their_scale_bar_and_nothing_else() -> None:
    folder = shared_data("hpa_class_examples_composite") / "images"
    found = 0
    for path in sorted(folder.glob("*.jpg"))[:12]:
        data = read_image(path).data
        mask = scale_bar_mask(data)
        if mask is not None:
            assert not np.array_equal(blank_marks(data), data)
            found += 1
            ys, xs = np.nonzero(mask)
            h, w = data.shape[1:]
            assert ys.min() > 0.9 * h and xs.min() > 0.7 * w  # the lower-right corner
            assert mask.sum() < 0.005 * h * w
    assert found >= 10
    duloc = shared_data("hpa_duloc_single_cells") / "images"
    for path in sorted(duloc.glob("*_green.jpg"))[:5]:
        data = read_image(path).data
        assert blank_marks(data) is data
