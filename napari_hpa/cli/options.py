"""Options several commands share: ``--channels`` and ``--backend`` (predict, batch, evaluate).

The parsing itself is :func:`~napari_hpa.core.image.channels.parse_channel_map`, one
function for all three commands (and anything else that maps channels); here are
only the option's help and its errors as one line.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..core.image.channels import ChannelMap, ChannelMapError, parse_channel_map
from ..core.model.backends import BACKEND_CHOICES
from . import UserError


def add_channels_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--channels CHANNEL=PLANE,...`` to a command's parser."""
    parser.add_argument(
        "--channels",
        default=None,
        metavar="MAP",
        help="which image plane is which model channel, e.g. protein=1,nucleus=0,"
        "microtubules=2 (plane numbers from 0, or the image's channel names); needed when "
        "an image's unnamed planes do not match the model's channels one to one. Channels "
        "left out are missing (zeros where the model can do without them)",
    )


def channel_map(text: str | None, model_channels: Sequence[str]) -> ChannelMap | None:
    """Parse ``--channels`` for a model reading ``model_channels`` (None: not given)."""
    if text is None:
        return None
    try:
        return parse_channel_map(text, model_channels)
    except ChannelMapError as exc:
        raise UserError(str(exc)) from None


def add_backend_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--backend auto|torch|onnxruntime|openvino`` to a command's parser."""
    parser.add_argument(
        "--backend",
        default="auto",
        choices=BACKEND_CHOICES,
        help="what runs the network: auto (default: on a CPU the fastest installed of "
        "OpenVINO and ONNX Runtime, exported once and checked against torch; torch on a "
        "GPU), or one of them by name. A runtime that fails falls back to torch with a "
        "warning",
    )
