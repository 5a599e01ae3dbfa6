"""The reader face: :func:`read_image` turns a file or an HPA set into an :class:`ImageData`.

Sources (what names an image) and :func:`~.sources.find_images` are in
:mod:`.sources`, the writers in :mod:`.writers`; :class:`ImageData` and
:class:`ImageReadError` live in :mod:`.data` and are re-exported here, since every
caller of the reader needs them.

Conventions
-----------
* uint8 is divided by 255; uint16 by 65535, or by 4095 when the maximum is below
  4096 (12-bit camera data); other integers by ``2**bits - 1`` for the smallest of
  8/12/16/32/64 bits that holds the maximum (signed with negatives: min-max). A
  float image already in [0, 1] is kept, else min-max scaled. ``metadata`` records
  ``bit_depth`` and ``rescaled`` (the ``(min, max)`` used) where it applies.
* PNG/JPEG whose three colour planes are identical (grayscale saved as RGB) come
  back as one ``"gray"`` channel (``metadata["collapsed_gray"] = True``).
* Planes over :data:`WORK_PIXELS` are reduced by an integer factor on reading
  (``metadata["downscaled"]`` = factor, ``["original_shape"]`` = (H, W)); planes
  over :data:`MAX_PIXELS` are refused before decoding.
* Every failure is an :class:`ImageReadError`, never a decoder's own exception.
"""

from __future__ import annotations

import errno
import math
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from ..tasks import HPA_CHANNELS
from .data import ImageData, ImageReadError
from .sources import HPA_COLORS, PROTEIN_COLOR, hpa_members, split_hpa_name

__all__ = [
    "MAX_PIXELS",
    "WORK_PIXELS",
    "ImageData",
    "ImageReadError",
    "block_mean",
    "read_image",
    "scale_to_unit",
]

#: Largest accepted plane (H * W); larger images are refused before decoding.
MAX_PIXELS = 12000 * 12000
#: Largest plane kept at full resolution: larger ones are reduced on reading by the
#: smallest integer factor (block mean) that brings them under it. Every later step
#: (channel mapping, normalisation, resizing) makes full-size float copies, so an
#: unreduced 10^8-pixel plane would need several GB; models see a few hundred pixels.
WORK_PIXELS = 8192 * 8192
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _image_id(path: Path) -> str:
    return re.sub(r"\.ome$", "", path.stem, flags=re.I)  # x.ome.tif -> x


# ----------------------------------------------------------------------------- reading
def read_image(
    path: str | os.PathLike,
    *,
    hpa_set: bool = True,
    max_pixels: int | None = None,
    work_pixels: int | None = None,
) -> ImageData:
    """Read an image file or an HPA channel set.

    Parameters
    ----------
    path
        An image file, an HPA channel file (reads its whole set: the channel files
        that exist, of which the protein's ``_green`` is required), or ``<folder>/<id>``.
    hpa_set
        If False, an HPA-named file is read alone as a plain image (for code that
        wants the file's own pixels; users never need it).
    max_pixels
        Largest accepted H * W; default :data:`MAX_PIXELS`.
    work_pixels
        Larger planes are reduced by an integer factor; default :data:`WORK_PIXELS`,
        0 keeps full resolution.

    Raises
    ------
    ImageReadError
        For a missing, empty, truncated, non-image, too large or unsupported file,
        or an HPA set without its protein file or with channels of different sizes.
    """
    p = Path(path).expanduser()
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    work = WORK_PIXELS if work_pixels is None else int(work_pixels)
    if hpa_set:
        parts = split_hpa_name(p) if p.is_file() else None
        if parts is not None:
            return _read_hpa(p.parent, parts[0], limit, work)
        if not p.exists() and hpa_members(p.parent, p.name):
            return _read_hpa(p.parent, p.name, limit, work)
    raw, names, meta = _read_file(p, limit, work)
    data = scale_to_unit(raw, p, meta)
    return ImageData(data, names, (p,), _image_id(p), str(p), meta)


def _read_hpa(folder: Path, image_id: str, limit: int, work: int) -> ImageData:
    """Read the channel files of the set ``folder/image_id`` that exist.

    A partial set is read with the channels it has (a Kaggle ``<id>_green.png``
    alone is one ``protein`` channel; red/green/blue without yellow is three),
    because the models say which channels they can do without
    (``optional_channels``) and :func:`~.channels.adapt_channels` decides. Only the
    protein (green) file is required: it is what every HPA model classifies.
    ``metadata["missing_channels"]`` names the channels that were not there.
    """
    source = folder / image_id
    members = hpa_members(folder, image_id)
    colors = [c for c in HPA_COLORS if c in members]
    if PROTEIN_COLOR not in members:
        have = ", ".join(colors) or "none"
        raise ImageReadError(
            source,
            f"no protein channel: there is no {image_id}_{PROTEIN_COLOR} file "
            f"(found {have}), and the protein is what every HPA model classifies; "
            f"put the {PROTEIN_COLOR} file in the same folder",
        )
    names = tuple(HPA_CHANNELS[HPA_COLORS.index(c)] for c in colors)
    planes, metas = [], []
    for color in colors:
        raw, _, file_meta = _read_file(members[color], limit, work)
        if raw.shape[0] > 1:  # a colour-tinted channel file: its intensity is the max
            raw = raw.max(axis=0, keepdims=True)
            file_meta["tinted"] = True
        planes.append(raw[0])
        metas.append(file_meta)
    shapes = {c: planes[i].shape for i, c in enumerate(colors)}
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{members[c].name} {h}x{w}" for c, (h, w) in shapes.items())
        raise ImageReadError(source, f"HPA channels have different sizes: {detail}")
    missing = [n for n in HPA_CHANNELS if n not in names]
    meta: dict[str, Any] = {"format": "hpa", "channels": metas, "missing_channels": missing}
    if len({p.dtype for p in planes}) == 1:  # scale jointly: one bit depth for the set
        data = scale_to_unit(np.stack(planes), source, meta)
    else:
        data = np.concatenate(
            [scale_to_unit(planes[i][None], members[c], metas[i]) for i, c in enumerate(colors)]
        )
    paths = tuple(members[c] for c in colors)
    return ImageData(data, names, paths, image_id, str(source), meta)


def _read_file(
    p: Path, limit: int, work: int = 0
) -> tuple[np.ndarray, tuple[str, ...], dict[str, Any]]:
    """Decode one file to a raw ``(C, H, W)`` array of its own dtype, names and metadata."""
    if not p.exists():
        if p.is_symlink():  # exists() follows links: "not found" would hide the real cause
            raise ImageReadError(p, _dangling_reason(p))
        raise ImageReadError(p, "file not found")
    if p.is_dir():
        raise ImageReadError(p, "is a folder, not an image file")
    try:
        with open(p, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise ImageReadError(p, f"cannot open file ({exc.strerror or exc})") from None
    if not head:
        raise ImageReadError(p, "file is empty (0 bytes)")
    reader = _read_tiff if head in _TIFF_MAGIC else _read_pil
    try:
        raw, names, meta = reader(p, limit)
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(p, "not enough memory to decode the image") from None
    except Exception as exc:  # decoders raise many types; none may escape
        why = f"{type(exc).__name__}: {exc}"
        raise ImageReadError(
            p, f"cannot decode: truncated, corrupt or unsupported ({why})"
        ) from None
    if raw.ndim != 3 or 0 in raw.shape:
        raise ImageReadError(p, f"image has a zero-size dimension (shape {raw.shape})")
    h, w = raw.shape[1:]
    if work and h * w > work and raw.dtype.kind in "biuf":  # others are refused later
        factor = math.ceil(math.sqrt(h * w / work))
        while (h // factor) * (w // factor) > work:
            factor += 1
        if h // factor == 0 or w // factor == 0:
            raise ImageReadError(p, f"image is too elongated to reduce ({w}x{h})")
        meta.update(downscaled=factor, original_shape=(h, w))
        raw = block_mean(raw, factor)
    return raw, names, meta


def block_mean(raw: np.ndarray, factor: int) -> np.ndarray:
    """Reduce (C, H, W) by ``factor`` (mean of factor x factor blocks), keeping the dtype.

    Sums strided views into one output-sized float32 array (no full-size float
    copy); the last ``H % factor`` rows and ``W % factor`` columns are dropped.
    """
    c, h, w = raw.shape
    oh, ow = h // factor, w // factor
    acc = np.zeros((c, oh, ow), np.float32)
    for dy in range(factor):
        for dx in range(factor):
            acc += raw[:, dy : oh * factor : factor, dx : ow * factor : factor]
    acc /= factor * factor
    if raw.dtype.kind == "b":
        return acc >= 0.5
    if raw.dtype.kind in "ui":
        return np.rint(acc).astype(raw.dtype)
    return acc.astype(raw.dtype, copy=False)


def _dangling_reason(p: Path) -> str:
    """Why a symbolic link leads nowhere: a loop or a missing target."""
    try:
        p.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop so
        return "symbolic link loop (the link points back at itself)"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop (the link points back at itself)"
    return f"broken symbolic link (its target {os.readlink(p)!r} does not exist)"


def _check_plane(p: Path, h: int, w: int, limit: int) -> None:
    if h == 0 or w == 0:
        raise ImageReadError(p, f"image has a zero-size dimension ({h}x{w})")
    if h * w > limit:
        raise ImageReadError(
            p, f"image is too large: {w}x{h} = {h * w} pixels per plane, limit {limit}"
        )


def _read_pil(p: Path, limit: int) -> tuple[np.ndarray, tuple[str, ...], dict[str, Any]]:
    from PIL import Image, UnidentifiedImageError

    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit  # our own check below applies the limit
    try:
        im: Image.Image = Image.open(p)  # convert() below gives a plain Image
    except UnidentifiedImageError:
        raise ImageReadError(p, "not an image file (or an unsupported format)") from None
    except Image.DecompressionBombError:
        raise ImageReadError(p, f"image is too large (limit {limit} pixels)") from None
    with im:
        w, h = im.size
        _check_plane(p, h, w, limit)
        meta: dict[str, Any] = {"format": (im.format or "").lower(), "mode": im.mode}
        try:
            im.load()
        except OSError as exc:
            raise ImageReadError(p, f"file is truncated or corrupt ({exc})") from None
        mode = im.mode
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif mode in ("PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
            im = im.convert("RGBA" if mode in ("PA", "RGBa") else "RGB")
        arr = np.asarray(im)
        if mode.startswith("I;16"):
            arr = arr.astype(np.uint16)  # I;16B is big-endian
    if arr.ndim == 2:
        return arr[None], ("gray",), meta
    if arr.shape[2] == 2:  # LA: drop alpha
        return arr[None, :, :, 0], ("gray",), meta
    arr = np.moveaxis(arr[:, :, :3], -1, 0)
    if np.array_equal(arr[0], arr[1]) and np.array_equal(arr[0], arr[2]):
        meta["collapsed_gray"] = True
        return np.ascontiguousarray(arr[:1]), ("gray",), meta
    return np.ascontiguousarray(arr), ("red", "green", "blue"), meta


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


def _read_tiff(p: Path, limit: int) -> tuple[np.ndarray, tuple[str, ...], dict[str, Any]]:
    import tifffile

    with tifffile.TiffFile(p) as tif:
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
        _check_plane(p, shape[axes.index("Y")], shape[axes.index("X")], limit)
        rgb = getattr(tif.pages[0], "photometric", None) == tifffile.PHOTOMETRIC.RGB
        names = _ome_channel_names(tif.ome_metadata) if tif.is_ome else []
        if not names and tif.is_imagej:
            labels = (tif.imagej_metadata or {}).get("Labels")
            names = list(labels) if isinstance(labels, (list, tuple)) else []
        arr = series.asarray()
    meta: dict[str, Any] = {"format": "tiff", "axes": axes}
    arr, from_samples = _to_cyx(p, arr, axes, meta)
    if rgb and from_samples and arr.shape[0] in (3, 4):
        return arr[:3], ("red", "green", "blue"), meta
    c = arr.shape[0]
    if len(names) != c or not all(names) or len(set(names)) != c:
        names = [f"ch{i}" for i in range(c)] if c > 1 else ["gray"]
    return arr, tuple(str(n) for n in names), meta


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


def scale_to_unit(arr: np.ndarray, p: str | os.PathLike, meta: dict[str, Any]) -> np.ndarray:
    """Scale a raw array to float32 in [0, 1] by its dtype (see the module docstring)."""
    kind = arr.dtype.kind
    meta["dtype"] = str(arr.dtype)
    if kind == "b":
        meta["bit_depth"] = 1
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:  # the common case, on every image of a batch: one copy
        meta["bit_depth"] = 8
        out = arr.astype(np.float32)
        return np.divide(out, 255, out=out)
    if kind in "ui":
        lo, hi = int(arr.min()), int(arr.max())
        if kind == "i" and lo < 0:
            return _minmax(arr, lo, hi, meta)
        if arr.dtype.itemsize == 1:
            bits = 7
        elif arr.dtype.itemsize == 2:
            bits = 12 if hi < 4096 else (16 if kind == "u" else 15)
        else:
            bits = next(b for b in (8, 12, 16, 32, 64) if hi < 2**b)
        meta["bit_depth"] = bits
        return (arr.astype(np.float64 if bits > 24 else np.float32) / (2**bits - 1)).astype(
            np.float32
        )
    if kind == "f":
        if not np.isfinite(arr).all():
            raise ImageReadError(p, "image contains NaN or infinite values")
        fmin, fmax = float(arr.min()), float(arr.max())
        if fmin >= 0.0 and fmax <= 1.0:
            return arr.astype(np.float32)
        return _minmax(arr, fmin, fmax, meta)
    raise ImageReadError(p, f"unsupported pixel type {arr.dtype}")


def _minmax(arr: np.ndarray, lo: float, hi: float, meta: dict[str, Any]) -> np.ndarray:
    meta["rescaled"] = (lo, hi)
    if hi == lo:
        return np.clip(arr, 0, 1).astype(np.float32)
    return ((arr.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)
