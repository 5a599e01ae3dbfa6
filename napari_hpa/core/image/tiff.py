"""Reading (OME-)TIFF with tifffile: axes to (C, Y, X), and only the planes that are used.

A time-lapse gives its first time point and a Z stack its maximum projection. When
the pages of the file are the planes of its first series (the usual layout of
OME-TIFF, ImageJ and tifffile files), only the pages of the first time point are
decoded, one at a time, with Z projected as they come: a 600-frame movie costs one
frame of memory, not 600. Other layouts are read whole.
"""

from __future__ import annotations

import itertools
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .data import ImageReadError
from .files import check_plane

__all__ = ["read_tiff"]


def _guess_axes(shape: tuple[int, ...]) -> str:
    """Axes of an array without metadata: a small last axis (<= 4) is channels."""
    yxc = len(shape) in (3, 4) and shape[-1] <= 4 < shape[-3]
    return {2: "YX", 3: "YXC" if yxc else "CYX", 4: "ZYXC" if yxc else "ZCYX", 5: "TZCYX"}.get(
        len(shape), ""
    )


def _ome_channel_names(xml: str | None) -> list[str]:
    try:
        pixels = ET.fromstring(xml or "").find(".//{*}Pixels")
    except ET.ParseError:
        return []
    return [] if pixels is None else [c.get("Name", "") for c in pixels.findall("{*}Channel")]


def read_tiff(
    p: Path, fh: BinaryIO, limit: int
) -> tuple[np.ndarray, tuple[str, ...], dict[str, Any]]:
    """Decode the TIFF open as ``fh`` (named ``p``) to a raw ``(C, H, W)`` array."""
    import tifffile

    with tifffile.TiffFile(fh, name=p.name) as tif:
        if not tif.series:
            raise ImageReadError(p, "TIFF file holds no image")
        series = tif.series[0]
        shape = tuple(int(s) for s in series.shape)
        axes = str(series.axes).upper()
        if 0 in shape:
            raise ImageReadError(p, f"image has a zero-size dimension (shape {shape})")
        if len(axes) != len(shape) or "Y" not in axes or "X" not in axes:
            axes = _guess_axes(shape)
        elif not set(axes) & set("CSZT") and len(shape) > 2:
            # generic pages ('I', 'Q'): no real axis metadata, guess like a bare array
            axes = _guess_axes(shape) or axes
        if not axes:
            raise ImageReadError(p, f"cannot interpret a {len(shape)}-D TIFF (shape {shape})")
        check_plane(p, shape[axes.index("Y")], shape[axes.index("X")], limit)
        first = tif.pages[0]
        photometric = getattr(first, "photometric", None)
        # JPEG-in-TIFF stores RGB as YCbCr, and the JPEG decoder gives it back as RGB
        rgb = photometric == tifffile.PHOTOMETRIC.RGB or (
            photometric == tifffile.PHOTOMETRIC.YCBCR
            and getattr(first, "compression", None) == tifffile.COMPRESSION.JPEG
        )
        names = _ome_channel_names(tif.ome_metadata) if tif.is_ome else []
        if not names and tif.is_imagej:
            labels = (tif.imagej_metadata or {}).get("Labels")
            names = list(labels) if isinstance(labels, (list, tuple)) else []
        meta: dict[str, Any] = {"format": "tiff", "axes": axes}
        try:
            arr, used_axes = _read_used_planes(series, shape, axes, meta)
        except (ValueError, ModuleNotFoundError, ImportError) as exc:
            raise _codec_error(p, tif, exc) from None
    arr, from_samples = _to_cyx(p, arr, used_axes, meta)
    if rgb and from_samples and arr.shape[0] in (3, 4):
        return arr[:3], ("red", "green", "blue"), meta
    c = arr.shape[0]
    if len(names) != c or not all(names) or len(set(names)) != c:
        names = [f"ch{i}" for i in range(c)] if c > 1 else ["gray"]
    return arr, tuple(str(n) for n in names), meta


def _codec_error(p: Path, tif: Any, exc: BaseException) -> BaseException:
    """Name a missing decoder (tifffile's codecs come from imagecodecs) instead of 'corrupt'."""
    text = str(exc)
    if "imagecodecs" not in text and not isinstance(exc, ImportError):
        return exc  # a real decoding error: the caller reports it as such
    try:
        compression = tif.pages[0].compression.name
    except Exception:  # noqa: BLE001 - only for the message
        compression = "a compression"
    return ImageReadError(
        p,
        f"this TIFF is compressed with {compression}, and its decoder is not installed: "
        "pip install imagecodecs",
    )


def _read_used_planes(
    series: Any, shape: tuple[int, ...], axes: str, meta: dict[str, Any]
) -> tuple[np.ndarray, str]:
    """Decode the planes :func:`_to_cyx` keeps: the first T, every Z max-projected on the fly.

    Returns the array and its axes (``T`` and ``Z`` gone when read page by page).
    Falls back to the whole series when its pages are not its planes one to one.
    """
    pages = series.pages
    page_shape = tuple(int(s) for s in series.keyframe.shape)
    n_lead = len(shape) - len(page_shape)
    lead_axes, lead_shape = axes[:n_lead], shape[:n_lead]
    paged = (
        n_lead > 0
        and tuple(shape[n_lead:]) == page_shape
        and math.prod(lead_shape) == len(pages)
        and set(lead_axes) & set("TZ")
    )
    if not paged:
        meta["pages_read"] = len(pages)
        return series.asarray(), axes
    if "T" in lead_axes:
        meta["time_points"] = lead_shape[lead_axes.index("T")]
    if "Z" in lead_axes:
        meta["z_projection"] = "max"
    keep = [range(1) if a == "T" else range(n) for a, n in zip(lead_axes, lead_shape, strict=True)]
    out_dims = [n for a, n in zip(lead_axes, lead_shape, strict=True) if a not in "TZ"]
    out = np.empty((*out_dims, *page_shape), series.keyframe.dtype)
    filled: set[tuple[int, ...]] = set()
    read = 0
    for index in itertools.product(*keep):
        page = pages[int(np.ravel_multi_index(index, lead_shape))]
        plane = (
            page.asarray()
            if page is not None
            else np.zeros(page_shape, series.keyframe.dtype)  # a plane the file lacks
        )
        read += page is not None
        target = tuple(i for i, a in zip(index, lead_axes, strict=True) if a not in "TZ")
        if target in filled:
            np.maximum(out[target], plane, out=out[target])
        else:
            out[target] = plane
            filled.add(target)
    meta["pages_read"] = read
    rest = "".join(a for a in lead_axes if a not in "TZ") + axes[n_lead:]
    return out, rest


def _to_cyx(p: Path, arr: np.ndarray, axes: str, meta: dict[str, Any]) -> tuple[np.ndarray, bool]:
    """Rearrange a TIFF array with ``axes`` to (C, Y, X): Z max-projected, first T."""
    if "C" not in axes and "S" in axes:
        axes = axes.replace("S", "C")
    elif "C" not in axes:  # one unnamed axis (pages, 'Q', 'I') acts as channels
        extra = [a for a in axes if a not in "YXZT"]
        if extra:
            axes = axes.replace(extra[0], "C", 1)
    from_samples = "S" not in axes and "S" in meta["axes"]
    if "T" in axes:  # first time point
        arr, axes = np.take(arr, 0, axis=axes.index("T")), axes.replace("T", "")
    if "Z" in axes:
        meta["z_projection"] = "max"
        arr, axes = arr.max(axis=axes.index("Z")), axes.replace("Z", "")
    if "C" not in axes:
        arr, axes = arr[None], "C" + axes
    if sorted(axes) != ["C", "X", "Y"]:
        raise ImageReadError(p, f"unsupported TIFF axes {meta['axes']!r}")
    return np.ascontiguousarray(np.transpose(arr, [axes.index(a) for a in "CYX"])), from_samples
