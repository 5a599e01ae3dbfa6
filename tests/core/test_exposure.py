"""Tests for napari_hpa.core.image.exposure: blank and saturated images (issue 18, item 20)."""

from __future__ import annotations

import numpy as np

from napari_hpa.core.image.exposure import exposure_problem
from napari_hpa.core.tasks import HPA_CHANNELS

RGB = ("red", "green", "blue")


def _noise(c: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((c, 16, 16)).astype(np.float32)


def test_blank_images() -> None:
    assert "blank image (every pixel is 0)" in exposure_problem(np.zeros((3, 8, 8)), RGB)
    uniform = np.stack([np.full((8, 8), v, np.float32) for v in (0.1, 0.2, 0.3)])
    assert exposure_problem(uniform, RGB) is None  # one colour (or a 1x1 image) is a value
    hpa = _noise(4)
    hpa[1] = 0.25  # the protein plane, the one that is classified
    assert "blank protein channel (every pixel is 0.25)" in exposure_problem(hpa, HPA_CHANNELS)


def test_saturated_images() -> None:
    assert "saturated image (every pixel is 1)" in exposure_problem(np.ones((1, 8, 8)), ["gray"])
    burnt = _noise(4)
    burnt[1, :12] = 1.0  # 75 % of the protein plane at the top of the scale
    message = exposure_problem(burnt, HPA_CHANNELS)
    assert "saturated image (75% of the pixels of the protein channel" in message


def test_images_with_signal_pass() -> None:
    assert exposure_problem(_noise(3), RGB) is None
    sparse = np.zeros((4, 16, 16), np.float32)
    sparse[:, 3, 4] = 0.7  # a dim field with one bright spot is an image, not a blank
    assert exposure_problem(sparse, HPA_CHANNELS) is None
    half_empty = _noise(3)
    half_empty[2] = 0  # an RGB image with no blue is common
    assert exposure_problem(half_empty, RGB) is None


def _plankton_images() -> list:
    """The first image of every other plankton class: 61 real ISIIS bright-field images."""
    from conftest import shared_data

    root = shared_data("plankton_ndsb2015") / "images"
    return [sorted(d.glob("*.jpg"))[0] for d in sorted(root.iterdir())[::2]]


def test_bright_field_background_is_not_saturation() -> None:
    """A bright-field model (``invert``: dark objects on white) sees most of every good
    image at 1.0: the plankton images are not called saturated, but one value everywhere
    is still blank, and an image mostly at 0 (the clipped end there) is saturated."""
    from napari_hpa.core.image.io import read_image

    images = [read_image(p) for p in _plankton_images()]
    flagged = [im.source for im in images if exposure_problem(im.data, im.channel_names, True)]
    assert flagged == []
    # the fluorescence rule would call most of them saturated: that is why invert matters
    fluorescence = [im for im in images if exposure_problem(im.data, im.channel_names)]
    assert len(fluorescence) > len(images) // 2
    white, black = np.ones((1, 40, 40), np.float32), np.zeros((1, 40, 40), np.float32)
    assert "blank image (every pixel is 1)" in exposure_problem(white, ["gray"], invert=True)
    assert "blank image (every pixel is 0)" in exposure_problem(black, ["gray"], invert=True)
    mostly_black = _noise(1)
    mostly_black[0, :12] = 0.0
    message = exposure_problem(mostly_black, ["gray"], invert=True)
    assert "saturated image (75% of the pixels of the image are at 0" in message
    rgb_white = np.ones((3, 40, 40), np.float32)  # an RGB file: R=G=B, as these JPEGs are
    assert "blank image" in exposure_problem(rgb_white, RGB, invert=True)
