"""Match an image's channels to the channels a model expects.

Images arrive with channel names from the reader (HPA sets: ``microtubules``,
``protein``, ``nucleus``, ``er``; RGB files: ``red``, ``green``, ``blue``;
grayscale: ``gray``; unnamed TIFF channels: ``ch0`` ...). Models say in their
metadata which channels they read and which of those may be missing. This
module is the single place that decides how one maps onto the other, so the
GUI, the CLI, batch and training all agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ..tasks import HPA_CHANNELS, HPA_COLOR_TO_CHANNEL
from .data import ImageData


class ChannelMismatchError(ValueError):
    """The image lacks a channel the model needs."""


_RGB = ("red", "green", "blue")


def _canonical(name: str) -> str:
    lowered = name.strip().lower()
    return HPA_COLOR_TO_CHANNEL.get(lowered, lowered)


def _unnamed(names: Sequence[str]) -> bool:
    """Tell whether every channel is an unnamed plane ``ch0``, ``ch1`` ... (a bare TIFF)."""
    return bool(names) and all(n.startswith("ch") and n[2:].isdigit() for n in names)


def _example(model_channels: Sequence[str]) -> str:
    return ",".join(f"{c}={i}" for i, c in enumerate(model_channels))


def _surplus_message(image_channels: Sequence[str], model_channels: Sequence[str]) -> str:
    """Refuse to guess which of more unnamed planes than the model reads are which."""
    n, k = len(image_channels), len(model_channels)
    return (
        f"the image has {n} unnamed channels (planes 0-{n - 1}) and the model reads {k} "
        f"({', '.join(model_channels)}): which plane is which would be a guess; say it with "
        f"--channels {_example(model_channels)} (plane numbers from 0; in napari, choose the "
        "layers in the Predict panel)"
    )


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
        if tuple(img_names[:3]) == _RGB or _unnamed(img_names):
            if data.shape[0] < 3:
                raise ChannelMismatchError(
                    f"the model needs 3 RGB channels, the image has {data.shape[0]}"
                )
            if data.shape[0] > 3 and _unnamed(img_names):
                raise ChannelMismatchError(_surplus_message(image_channels, model_channels))
            return data[:3].astype(np.float32, copy=False)
        canon = [_canonical(n) for n in img_names]
        if all(c in canon for c in HPA_CHANNELS[:3]):
            return np.stack([data[canon.index(c)] for c in HPA_CHANNELS[:3]]).astype(np.float32)
        raise ChannelMismatchError(f"cannot map channels {list(image_channels)} onto an RGB model")

    canon = [_canonical(n) for n in img_names]
    wanted = [_canonical(n) for n in model_channels]
    optional_set = {_canonical(n) for n in optional}
    if _unnamed(img_names):  # unnamed planes (ch0, ch1 ...) by position, if that is no guess
        if data.shape[0] > len(wanted):
            raise ChannelMismatchError(_surplus_message(image_channels, model_channels))
        if data.shape[0] == len(wanted):
            return data.astype(np.float32, copy=False)
        required = [c for c in wanted if c not in optional_set]
        if data.shape[0] >= len(required) and wanted[: data.shape[0]] == required[: data.shape[0]]:
            planes = list(data) + [np.zeros((h, w), np.float32)] * (len(wanted) - data.shape[0])
            return np.stack(planes).astype(np.float32, copy=False)
        raise ChannelMismatchError(
            f"the model needs {len(wanted)} channels ({', '.join(model_channels)}), "
            f"the image has {data.shape[0]}; if some are there, say which plane is which "
            f"with --channels {_example(model_channels)}"
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
            "or choose a model that does without it, or say which plane is which with "
            f"--channels {_example(model_channels)}"
        )
    return np.stack(planes).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- --channels
class ChannelMapError(ValueError):
    """A ``--channels`` value that cannot be used; ``str(err)`` says why in one line."""


#: What :func:`parse_channel_map` gives: the model's channel name -> image plane
#: (its index from 0, or the name the reader gave it).
ChannelMap = dict[str, int | str]


def parse_channel_map(text: str, model_channels: Sequence[str]) -> ChannelMap:
    """Parse ``--channels protein=1,nucleus=0,...`` against the model's channels.

    The one parser of the option, for ``predict``, ``batch`` and ``evaluate``. Keys are
    the model's channel names (HPA colours are aliases: ``green`` = ``protein``);
    values are plane numbers from 0 or the image's own channel names (OME names,
    ``red``...). A model channel left out is missing: zeros if the model can do
    without it, else :func:`adapt_channels` says so.

    Raises
    ------
    ChannelMapError
        For a malformed pair, a key the model does not read, a key given twice or
        a negative plane number.
    """
    model = list(model_channels)
    by_name = {c.strip().lower(): c for c in model}
    by_name.update({_canonical(c): c for c in model})
    example = _example(model)
    out: ChannelMap = {}
    pairs = [part.strip() for part in str(text).split(",")]
    if not any(pairs):
        raise ChannelMapError(f"--channels is empty; give e.g. --channels {example}")
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ChannelMapError(
                f"--channels: {pair!r} is not CHANNEL=PLANE; give e.g. --channels {example}"
            )
        name = by_name.get(key.lower()) or by_name.get(_canonical(key))
        if name is None:
            raise ChannelMapError(
                f"--channels: the model has no channel {key!r}; it reads {', '.join(model)}"
            )
        if name in out:
            raise ChannelMapError(f"--channels: {name} is given twice")
        if value.lstrip("+-").isdigit():
            if int(value) < 0:
                raise ChannelMapError(f"--channels: {key}={value}: planes count from 0")
            out[name] = int(value)
        else:
            out[name] = value
    if tuple(by_name[c.strip().lower()] for c in model) == _RGB and len(out) != 3:
        raise ChannelMapError(f"--channels: an RGB model needs all three: e.g. {example}")
    return {c: out[c] for c in model if c in out}  # the model's order


def apply_channel_map(image: ImageData, mapping: ChannelMap | None) -> ImageData:
    """Return ``image`` with its planes renamed and ordered as ``mapping`` says.

    The result has one plane per mapped model channel, named by it, so that
    :func:`adapt_channels` matches by name (no guess by position). ``None`` or an
    empty map returns ``image`` itself.

    Raises
    ------
    ChannelMismatchError
        When a plane number is beyond the image's planes or a name is not one of its
        channels (the message names the image's planes).
    """
    if not mapping:
        return image
    names = [n.strip().lower() for n in image.channel_names]
    n = image.data.shape[0]
    planes = []
    for channel, plane in mapping.items():
        if isinstance(plane, int):
            if plane >= n:
                raise ChannelMismatchError(
                    f"--channels {channel}={plane}: the image has {n} plane(s), "
                    f"numbered 0-{n - 1} ({', '.join(image.channel_names)})"
                )
            planes.append(image.data[plane])
        elif plane.strip().lower() in names:
            planes.append(image.data[names.index(plane.strip().lower())])
        else:
            raise ChannelMismatchError(
                f"--channels {channel}={plane}: the image has no channel {plane!r} "
                f"(it has {', '.join(image.channel_names)}; or give a plane number)"
            )
    meta = {**image.metadata, "channel_map": dict(mapping)}
    return dataclasses.replace(
        image, data=np.stack(planes), channel_names=tuple(mapping), metadata=meta
    )
