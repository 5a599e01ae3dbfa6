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
