"""Match an image's channels to the channels a model expects.

Images arrive with channel names from the reader (HPA sets: ``microtubules``,
``protein``, ``nucleus``, ``er``; RGB files: ``red``, ``green``, ``blue``;
grayscale: ``gray``; unnamed TIFF channels: ``ch0`` ...). Models say in their
metadata which channels they read and which of those may be missing. This
module is the single place that decides how one maps onto the other, so the
GUI, the CLI, batch and training all agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..tasks import HPA_CHANNELS, HPA_COLOR_TO_CHANNEL


class ChannelMismatchError(ValueError):
    """The image lacks a channel the model needs."""


_RGB = ("red", "green", "blue")


def _canonical(name: str) -> str:
    lowered = name.strip().lower()
    return HPA_COLOR_TO_CHANNEL.get(lowered, lowered)


def adapt_channels(
    data: np.ndarray,
    image_channels: Sequence[str],
    model_channels: Sequence[str],
    optional: Sequence[str] = (),
) -> np.ndarray:
    """Return ``data`` (C, H, W) rearranged to the model's channel order.

    Rules, in order:

    * a gray model averages all image channels;
    * an RGB model takes R, G, B (a gray image is replicated, an HPA set gives
      microtubules, protein, nucleus as on proteinatlas.org composites);
    * otherwise channels are matched by name, with HPA colour names
      (red/green/blue/yellow) as aliases of the HPA channel names; unnamed
      channels (``ch0``...) are matched by position;
    * a missing channel listed in ``optional`` becomes zeros, any other missing
      channel raises :class:`ChannelMismatchError`.
    """
    if data.ndim != 3:
        raise ChannelMismatchError(f"expected a (C, H, W) array, got shape {data.shape}")
    if data.shape[0] != len(image_channels):
        raise ChannelMismatchError(
            f"image has {data.shape[0]} planes but {len(image_channels)} channel names"
        )
    model_channels = tuple(model_channels)
    img_names = [c.strip().lower() for c in image_channels]
    h, w = data.shape[1:]

    if model_channels == ("gray",):
        if img_names == ["gray"]:
            return data.astype(np.float32, copy=False)
        return data.mean(axis=0, keepdims=True, dtype=np.float32)

    if model_channels == _RGB:
        if len(img_names) == 1:
            return np.repeat(data[:1], 3, axis=0).astype(np.float32, copy=False)
        if tuple(img_names[:3]) == _RGB or all(n.startswith("ch") for n in img_names):
            if data.shape[0] < 3:
                raise ChannelMismatchError(
                    f"the model needs 3 RGB channels, the image has {data.shape[0]}"
                )
            return data[:3].astype(np.float32, copy=False)
        canon = [_canonical(n) for n in img_names]
        if all(c in canon for c in HPA_CHANNELS[:3]):
            return np.stack([data[canon.index(c)] for c in HPA_CHANNELS[:3]]).astype(np.float32)
        raise ChannelMismatchError(f"cannot map channels {list(image_channels)} onto an RGB model")

    canon = [_canonical(n) for n in img_names]
    wanted = [_canonical(n) for n in model_channels]
    optional_set = {_canonical(n) for n in optional}
    positional = all(n.startswith("ch") and n[2:].isdigit() for n in img_names)
    if positional:
        if data.shape[0] >= len(wanted):
            return data[: len(wanted)].astype(np.float32, copy=False)
        required = [c for c in wanted if c not in optional_set]
        if data.shape[0] >= len(required) and wanted[: data.shape[0]] == required[: data.shape[0]]:
            planes = list(data) + [np.zeros((h, w), np.float32)] * (len(wanted) - data.shape[0])
            return np.stack(planes).astype(np.float32, copy=False)
        raise ChannelMismatchError(
            f"the model needs {len(wanted)} channels ({', '.join(model_channels)}), "
            f"the image has {data.shape[0]}"
        )
    planes = []
    missing = []
    for name in wanted:
        if name in canon:
            planes.append(data[canon.index(name)])
        elif name in optional_set:
            planes.append(np.zeros((h, w), np.float32))
        else:
            missing.append(name)
    if missing:
        spare = [n for n in model_channels if _canonical(n) in optional_set]
        without = f", and can do without {' and '.join(spare)}" if spare else ""
        raise ChannelMismatchError(
            f"the image has no {' or '.join(missing)} channel, which the model needs "
            f"(the image has {', '.join(image_channels)}; the model reads "
            f"{', '.join(model_channels)}{without}); add the missing channel "
            "or choose a model that does without it"
        )
    return np.stack(planes).astype(np.float32, copy=False)
