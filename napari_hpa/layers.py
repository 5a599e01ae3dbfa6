"""Image layers of napari-hpa: an image in as channel layers, and back out for a model.

Shared by the reader, the sample data and the widgets. Nothing here imports Qt
or napari at run time (the result layers, CAM and cells, are drawn by
``widgets/_shared/results.py``).

Every layer napari-hpa makes carries ``layer.metadata["napari_hpa"]``: for image
channels ``{"kind": "channel", "source", "image_id", "channel", "channels",
"paths"}``, so Predict can rebuild the image whatever the layer is called; for
results ``{"kind": "cam" | "cells" | "selected-cell", "source"}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .core.image.io import ImageData, ImageReadError, scale_to_unit
from .core.tasks import HPA_CHANNELS, HPA_COLOR_TO_CHANNEL

if TYPE_CHECKING:
    import napari

META = "napari_hpa"
#: Colormap of each known channel name (HPA names and their colour aliases).
CHANNEL_COLORMAPS: dict[str, str] = {
    "microtubules": "red",
    "protein": "green",
    "nucleus": "blue",
    "er": "yellow",
    "red": "red",
    "green": "green",
    "blue": "blue",
    "yellow": "yellow",
    "gray": "gray",
    "dapi": "blue",
}
_CYCLE = ("magenta", "green", "cyan", "yellow", "red", "blue")

LayerDataTuple = tuple[Any, dict[str, Any], str]


# ----------------------------------------------------------------------------- names
#: Stain names that layers opened elsewhere often carry.
STAIN_ALIASES: dict[str, str] = {
    "dapi": "nucleus",
    "hoechst": "nucleus",
    "dna": "nucleus",
    "nuclei": "nucleus",
    "tubulin": "microtubules",
    "endoplasmic reticulum": "er",
}


def canonical(name: str) -> str:
    """Lower-case channel name with aliases resolved (red -> microtubules, DAPI -> nucleus)."""
    lowered = str(name).strip().lower()
    lowered = STAIN_ALIASES.get(lowered, lowered)
    return HPA_COLOR_TO_CHANNEL.get(lowered, lowered)


def display_name(channel: str) -> str:
    """Layer name of a channel: ``er`` is shown as ``ER``."""
    return "ER" if channel == "er" else channel


def channel_colormap(name: str, index: int, count: int) -> str:
    """Colormap for channel ``name`` (HPA colours), cycling for unknown names.

    A lone channel is gray, unless it is an HPA channel (a Kaggle ``_green.png``
    alone is the protein, in the green of every HPA view).
    """
    if count == 1:
        return CHANNEL_COLORMAPS[name] if name in HPA_CHANNELS else "gray"
    return CHANNEL_COLORMAPS.get(str(name).lower(), _CYCLE[index % len(_CYCLE)])


def read_error_message(exc: ImageReadError, name_chars: int = 28) -> str:
    """Word the notification for an image that cannot be read: the reason on line one.

    napari's toast shows the first line only, elided to about 50 characters, so
    it says ``Cannot open <file name>: <reason>`` with a long file name shortened
    in the middle; the full path follows on the second line (the expanded toast).
    """
    name = exc.path.name
    if len(name) > name_chars:
        half = (name_chars - 1) // 2
        name = f"{name[:half]}…{name[-half:]}"
    return f"Cannot open {name}: {exc.reason}\n{exc.path}"


def meta(layer: Any) -> dict[str, Any]:
    """Return the napari-hpa metadata of a layer (empty dict for foreign layers)."""
    value = getattr(layer, "metadata", {}).get(META, {})
    return value if isinstance(value, dict) else {}


def _display_limits(plane: np.ndarray) -> tuple[float, float]:
    sample = plane[:: max(1, plane.shape[0] // 256), :: max(1, plane.shape[1] // 256)]
    hi = float(np.percentile(sample, 99.9)) if sample.size else 1.0
    return 0.0, max(hi, 0.05)


def image_layer_data(image: ImageData) -> list[LayerDataTuple]:
    """Layer data tuples for an image: one image layer per channel.

    Several channels are blended additively, each in its colour (HPA: microtubules
    red, protein green, nucleus blue, ER yellow; RGB files: red, green, blue); a
    single channel is one layer named after the image (gray, or its HPA colour).
    """
    names = tuple(image.channel_names)
    common = {
        "source": image.source,
        "image_id": image.image_id,
        "channels": list(names),
        "paths": [str(p) for p in image.paths],
    }
    out: list[LayerDataTuple] = []
    for i, name in enumerate(names):
        plane = image.data[i]
        kwargs = {
            "name": display_name(name) if len(names) > 1 else image.image_id,
            "colormap": channel_colormap(name, i, len(names)),
            "blending": "additive" if len(names) > 1 else "translucent",
            "contrast_limits": _display_limits(plane),
            "metadata": {META: {"kind": "channel", "channel": name, "index": i, **common}},
        }
        out.append((plane, kwargs, "image"))
    return out


# ----------------------------------------------------------------------------- channels
@dataclass(frozen=True, eq=False)
class ChannelChoice:
    """One plane a model channel can be read from: an image layer, or a colour of an RGB layer."""

    layer: Any
    index: int | None = None  # colour plane of an RGB layer

    @property
    def label(self) -> str:
        """What the channel combos show: the layer's name, and the colour of an RGB plane."""
        if self.index is None:
            return str(self.layer.name)
        return f"{self.layer.name} [{'RGBA'[self.index]}]"

    def names(self) -> list[tuple[int, str]]:
        """Names this plane answers to, best first: (rank, canonical name)."""
        keys: list[tuple[int, str]] = []
        if self.index is not None:
            keys.append((0, canonical(("red", "green", "blue", "alpha")[self.index])))
            return keys
        channel = meta(self.layer).get("channel")
        if channel:
            keys.append((0, canonical(channel)))
        name = str(self.layer.name).split(" [")[0].strip()
        keys.append((1, canonical(name)))
        keys.append((1, canonical(name.rsplit(" ", 1)[-1])))
        cmap = getattr(getattr(self.layer, "colormap", None), "name", "")
        if cmap:
            keys.append((2, canonical(cmap)))
        return keys

    def plane(self) -> np.ndarray:
        """Return the 2-D plane (a view, no copy); for RGB layers the chosen colour."""
        data = np.asarray(self.layer.data)
        if self.index is not None:
            data = data[..., self.index]
        while data.ndim > 2:  # stacks: the first plane (napari-hpa classifies 2-D images)
            data = data[0]
        return data


def channel_choices(layers: Sequence[Any]) -> list[ChannelChoice]:
    """Planes that can feed a model: image layers napari-hpa did not make itself."""
    out: list[ChannelChoice] = []
    for layer in layers:
        if type(layer).__name__ != "Image" or meta(layer).get("kind", "channel") != "channel":
            continue
        if getattr(layer, "rgb", False):
            out += [ChannelChoice(layer, i) for i in range(3)]
        else:
            out.append(ChannelChoice(layer))
    return out


#: Special choice for gray models on multichannel images: the mean of the image's channels.
AVERAGE = "average of the image's channels"


def auto_assign(
    model_channels: Sequence[str], choices: Sequence[ChannelChoice]
) -> dict[str, ChannelChoice | str | None]:
    """Pick a plane for each model channel by metadata, layer name, then colormap.

    Layers of the most recently added image win. A gray model on an image with
    several channels gets :data:`AVERAGE` (``core.channels`` averages them too).
    """
    out: dict[str, ChannelChoice | str | None] = {}
    ordered = list(reversed(choices))  # newest layers first
    if ordered:  # prefer the newest image's own channels
        newest = meta(ordered[0].layer).get("source")
        ordered.sort(key=lambda c: meta(c.layer).get("source") != newest)
    for channel in model_channels:
        want = canonical(channel)
        best: tuple[int, ChannelChoice] | None = None
        for choice in ordered:
            for rank, key in choice.names():
                if key == want and (best is None or rank < best[0]):
                    best = (rank, choice)
        out[channel] = best[1] if best else None
    if tuple(model_channels) == ("gray",) and out["gray"] is None and choices:
        out["gray"] = AVERAGE
    return out


def layer_source(layer: Any) -> str:
    """Return the source of the image a layer shows (what :func:`image_source` names it)."""
    return image_source([ChannelChoice(layer)])[0]


def image_source(choices: Sequence[ChannelChoice]) -> tuple[str, str]:
    """``(source, image_id)`` of the image the chosen planes come from."""
    for choice in choices:
        m = meta(choice.layer)
        if m.get("source"):
            return str(m["source"]), str(m.get("image_id") or m["source"])
    if not choices:
        return "", ""
    layer = choices[0].layer
    path = getattr(getattr(layer, "source", None), "path", None)
    return (str(path) if path else f"layer:{layer.name}"), str(layer.name)


def build_image(
    planes: dict[str, np.ndarray], source: str, image_id: str, average: bool = False
) -> ImageData:
    """Build an :class:`ImageData` from planes named by model channel (call it in a worker).

    Planes are scaled to float32 [0, 1] like the reader does (by dtype). With
    ``average`` the planes are the image's channels and are averaged to one
    ``gray`` channel.

    Raises
    ------
    ValueError
        If the planes have different shapes.
    """
    shapes = {name: tuple(p.shape) for name, p in planes.items()}
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{n} {s[0]}x{s[1]}" for n, s in shapes.items())
        raise ValueError(f"the chosen layers have different sizes: {detail}")
    scaled = [to_unit(p) for p in planes.values()]
    if average:
        data = np.mean(scaled, axis=0, dtype=np.float32)[None]
        names: tuple[str, ...] = ("gray",)
    else:
        data = np.stack(scaled).astype(np.float32, copy=False)
        names = tuple(planes)
    return ImageData(data, names, (), image_id, source, {"from_layers": True})


def to_unit(plane: np.ndarray) -> np.ndarray:
    """Scale a layer plane to float32 in [0, 1], with the reader's dtype conventions."""
    arr = np.asarray(plane)
    if arr.dtype == np.float32 and arr.size and arr.min() >= 0.0 and arr.max() <= 1.0:
        return arr
    return scale_to_unit(arr[None], "layer", {})[0]


def replace_image(viewer: napari.Viewer, image: ImageData) -> list[Any]:
    """Show ``image`` in place of the napari-hpa image layers (Next / Previous image).

    Layers of the same channels are updated in place (they keep the user's
    contrast and visibility); others are removed and added. Result layers of
    the previous image are removed.
    """
    old = [lyr for lyr in viewer.layers if meta(lyr).get("kind") == "channel"]
    clear_results(viewer)
    new = image_layer_data(image)
    by_channel = {meta(lyr).get("channel"): lyr for lyr in old}
    reusable = len(old) == len(new) and all(
        kw["metadata"][META]["channel"] in by_channel for _, kw, _ in new
    )
    layers = []
    if reusable:
        for data, kw, _ in new:
            layer = by_channel[kw["metadata"][META]["channel"]]
            layer.data = data
            layer.metadata = kw["metadata"]
            layer.contrast_limits = kw["contrast_limits"]
            layers.append(layer)
        viewer.reset_view()
        return layers
    for layer in old:
        viewer.layers.remove(layer)
    for data, kw, _ in new:
        layers.append(viewer.add_image(data, **kw))
    viewer.reset_view()
    return layers


def clear_results(viewer: napari.Viewer, keep_source: str | None = None) -> None:
    """Remove CAM, cells and selected-cell layers (of any image but ``keep_source``)."""
    for layer in list(viewer.layers):
        m = meta(layer)
        if m.get("kind") in ("cam", "cells", "selected-cell") and m.get("source") != keep_source:
            viewer.layers.remove(layer)


def channel_layer_of(viewer: napari.Viewer, source: str) -> Any:
    """Return the first napari-hpa channel layer that shows ``source``, or None."""
    for layer in viewer.layers:
        m = meta(layer)
        if m.get("kind") == "channel" and m.get("source") == source:
            return layer
    return None
