from __future__ import annotations

import numpy as np
import pytest

from napari_hpa.core.image.channels import ChannelMismatchError, adapt_channels
from napari_hpa.core.tasks import HPA_CHANNELS


def _planes(n: int, h: int = 4, w: int = 5) -> np.ndarray:
    return np.stack([np.full((h, w), i + 1, np.float32) for i in range(n)])


def test_hpa_set_passes_through_in_model_order() -> None:
    data = _planes(4)
    out = adapt_channels(data, ("er", "nucleus", "protein", "microtubules"), HPA_CHANNELS)
    assert out[:, 0, 0].tolist() == [4, 3, 2, 1]


def test_rgb_composite_feeds_hpa_model_with_er_optional() -> None:
    out = adapt_channels(_planes(3), ("red", "green", "blue"), HPA_CHANNELS, optional=("er",))
    assert out.shape == (4, 4, 5)
    assert out[:, 0, 0].tolist() == [1, 2, 3, 0]


def test_missing_required_channel_is_named() -> None:
    with pytest.raises(ChannelMismatchError, match="er"):
        adapt_channels(_planes(3), ("red", "green", "blue"), HPA_CHANNELS)
    with pytest.raises(ChannelMismatchError, match="nucleus"):
        adapt_channels(_planes(1), ("gray",), HPA_CHANNELS, optional=("er",))


def test_gray_and_rgb_models() -> None:
    gray = adapt_channels(_planes(3), ("red", "green", "blue"), ("gray",))
    assert gray.shape == (1, 4, 5) and gray[0, 0, 0] == pytest.approx(2.0)
    rgb = adapt_channels(_planes(1), ("gray",), ("red", "green", "blue"))
    assert rgb.shape == (3, 4, 5)
    from_hpa = adapt_channels(_planes(4), HPA_CHANNELS, ("red", "green", "blue"))
    assert from_hpa[:, 0, 0].tolist() == [1, 2, 3]


def test_unnamed_channels_match_by_position() -> None:
    out = adapt_channels(_planes(4), ("ch0", "ch1", "ch2", "ch3"), HPA_CHANNELS)
    assert out[:, 0, 0].tolist() == [1, 2, 3, 4]
    out3 = adapt_channels(_planes(3), ("ch0", "ch1", "ch2"), HPA_CHANNELS, optional=("er",))
    assert out3[:, 0, 0].tolist() == [1, 2, 3, 0]
    with pytest.raises(ChannelMismatchError, match="needs 4"):
        adapt_channels(_planes(2), ("ch0", "ch1"), HPA_CHANNELS, optional=("er",))


def test_shape_checks() -> None:
    with pytest.raises(ChannelMismatchError):
        adapt_channels(np.zeros((4, 4), np.float32), ("gray",), ("gray",))
    with pytest.raises(ChannelMismatchError):
        adapt_channels(_planes(2), ("gray",), ("gray",))


def test_a_partial_hpa_set_reads_for_a_model_that_can_do_without_the_rest() -> None:
    """The reader gives a lone ``_green.png`` one ``protein`` channel: the bundled HPA
    model (everything but protein optional) reads it, a model needing more says what
    is missing and what the user can do, in words."""
    protein = _planes(1)
    out = adapt_channels(
        protein, ("protein",), HPA_CHANNELS, optional=("microtubules", "nucleus", "er")
    )
    assert out[:, 0, 0].tolist() == [0, 1, 0, 0]
    with pytest.raises(ChannelMismatchError) as info:
        adapt_channels(protein, ("protein",), HPA_CHANNELS, optional=("er",))
    message = str(info.value)
    assert "no microtubules or nucleus channel" in message and "can do without er" in message
    assert "choose a model that does without it" in message


# ---------------------------------------------------------------------------- issue 18, item 20
def test_more_unnamed_planes_than_the_model_reads_is_refused_with_a_map() -> None:
    """Seven unnamed planes are not taken as the model's first four (or an RGB model's
    three): the message says how to map them with --channels."""
    names = tuple(f"ch{i}" for i in range(7))
    with pytest.raises(ChannelMismatchError) as info:
        adapt_channels(_planes(7), names, HPA_CHANNELS, optional=("er",))
    message = str(info.value)
    assert "7 unnamed channels" in message and "reads 4" in message
    assert "--channels microtubules=0,protein=1,nucleus=2,er=3" in message
    with pytest.raises(ChannelMismatchError, match="--channels red=0,green=1,blue=2"):
        adapt_channels(_planes(4), names[:4], ("red", "green", "blue"))
    # as many planes as channels stays positional: that is no guess
    assert adapt_channels(_planes(3), names[:3], ("red", "green", "blue")).shape == (3, 4, 5)


def test_parse_channel_map_against_the_model() -> None:
    """The one parser of --channels: model names (HPA colours as aliases), plane numbers or
    image channel names, in the model's order; every mistake is one line."""
    from napari_hpa.core.image.channels import ChannelMapError, parse_channel_map

    assert parse_channel_map(" nucleus=0, protein = 1 ,red=ch3", HPA_CHANNELS) == {
        "microtubules": "ch3",
        "protein": 1,
        "nucleus": 0,
    }
    assert parse_channel_map("blue=2,green=0,red=1", ("red", "green", "blue")) == {
        "red": 1,
        "green": 0,
        "blue": 2,
    }
    for text, message in (
        ("", "is empty"),
        ("protein", "is not CHANNEL=PLANE"),
        ("protein=", "is not CHANNEL=PLANE"),
        ("dna=0", "the model has no channel 'dna'"),
        ("protein=1,green=2", "protein is given twice"),
        ("protein=-1", "planes count from 0"),
    ):
        with pytest.raises(ChannelMapError, match=message):
            parse_channel_map(text, HPA_CHANNELS)
    with pytest.raises(ChannelMapError, match="needs all three"):
        parse_channel_map("green=1", ("red", "green", "blue"))


def test_apply_channel_map_renames_and_orders_planes() -> None:
    from napari_hpa.core.image.channels import apply_channel_map, parse_channel_map
    from napari_hpa.core.image.data import ImageData

    image = ImageData(_planes(7), tuple(f"ch{i}" for i in range(7)), (), "x", "x.tif")
    mapped = apply_channel_map(image, parse_channel_map("nucleus=0,protein=4", HPA_CHANNELS))
    assert mapped.channel_names == ("protein", "nucleus")
    assert mapped.data[:, 0, 0].tolist() == [5, 1] and mapped.metadata["channel_map"]
    out = adapt_channels(
        mapped.data, mapped.channel_names, HPA_CHANNELS, ("microtubules", "nucleus", "er")
    )
    assert out[:, 0, 0].tolist() == [0, 5, 1, 0]
    assert apply_channel_map(image, None) is image
    with pytest.raises(ChannelMismatchError, match="7 plane"):
        apply_channel_map(image, {"protein": 7})
    with pytest.raises(ChannelMismatchError, match="no channel 'gfp'"):
        apply_channel_map(image, {"protein": "gfp"})
