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
import stat
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..tasks import HPA_CHANNELS
from .data import ImageData, ImageReadError
from .files import check_plane, long_name, open_image_file, path_problem, sniff_format
from .sources import HPA_COLORS, PROTEIN_COLOR, hpa_members, path_mode, split_hpa_name
from .tiff import read_tiff

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
#: Pillow's plugin for each format it decodes here (TIFF goes to tifffile).
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG"}


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
    too_long = long_name(p)
    if too_long:  # before any stat(): an over-long name makes every OS call fail
        raise ImageReadError(p, too_long)
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    work = WORK_PIXELS if work_pixels is None else int(work_pixels)
    if hpa_set:
        mode = path_mode(p)
        parts = split_hpa_name(p) if mode is not None and stat.S_ISREG(mode) else None
        if parts is not None:
            return _read_hpa(p.parent, parts[0], limit, work)
        if mode is None and not os.path.islink(p) and hpa_members(p.parent, p.name):
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
    """Decode one file to a raw ``(C, H, W)`` array of its own dtype, names and metadata.

    Only a regular file is opened (never a FIFO or a device: they would block), and
    only PNG, JPEG and TIFF content reaches a decoder, whatever the file's name.
    """
    mode = path_mode(p)
    if mode is None and os.path.islink(p):  # a link to nothing: "not found" would hide why
        raise ImageReadError(p, _dangling_reason(p))
    if mode is not None and stat.S_ISDIR(mode):
        raise ImageReadError(p, _folder_reason(p))
    with open_image_file(p) as fh:
        try:
            head = fh.read(16)
            fh.seek(0)
        except OSError as exc:
            raise ImageReadError(p, path_problem(p, exc)) from None
        fmt = sniff_format(p, head)
        try:
            if fmt == "tiff":
                raw, names, meta = read_tiff(p, fh, limit)
            else:
                raw, names, meta = _read_pil(p, fh, fmt, limit)
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


def _folder_reason(p: Path) -> str:
    """Why a folder is not an image: it is a folder, or one whose images cannot be listed.

    :func:`~.sources.find_images` gives an unreadable folder as a source of its own, so
    that reading it names the folder as an error instead of its images silently missing.
    """
    try:
        with os.scandir(p):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        return f"cannot read this folder ({why}), so the images in it were left out"
    return "is a folder, not an image file"


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


def _read_pil(
    p: Path, fh: BinaryIO, fmt: str, limit: int
) -> tuple[np.ndarray, tuple[str, ...], dict[str, Any]]:
    """Decode a PNG or JPEG with Pillow's plugin for ``fmt`` alone (no other plugin runs)."""
    from PIL import Image, UnidentifiedImageError

    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit  # our own check below applies the limit
    try:
        # convert() below gives a plain Image
        im: Image.Image = Image.open(fh, formats=[_PIL_FORMATS[fmt]])
    except UnidentifiedImageError:
        raise ImageReadError(p, f"not an image file: a damaged {fmt.upper()} header") from None
    except Image.DecompressionBombError:
        raise ImageReadError(p, f"image is too large (limit {limit} pixels)") from None
    with im:
        w, h = im.size
        check_plane(p, h, w, limit)
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
