"""Write images: a file, an HPA channel set, or an image's activation maps (never another's).

:func:`write_image`, :func:`write_hpa_set` and :func:`write_maps`; every file is written
beside its target and renamed over it (``core/atomic``).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path
from .data import ImageReadError
from .files import NAME_MAX, open_image_file
from .sources import HPA_COLORS

#: The end of every activation-map file name.
MAPS_SUFFIX = "_cam.tif"
#: Names tried for one image's maps (``x_cam.tif``, ``x-2_cam.tif`` ...) before giving up.
MAX_NAME_TRIES = 10000


def _to_uint8(data: np.ndarray) -> np.ndarray:
    arr = np.asarray(data)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind not in "fb":
        raise ValueError(f"expected float in [0, 1] or uint8 data, got {arr.dtype}")
    return np.round(np.clip(arr.astype(np.float32), 0, 1) * 255).astype(np.uint8)


def write_hpa_set(
    folder: str | os.PathLike, image_id: str, data: np.ndarray, fmt: str = "png"
) -> tuple[Path, ...]:
    """Write (4, H, W) data as 8-bit ``<id>_red.<fmt>`` ... ``_yellow``; return the paths."""
    arr = np.asarray(data)
    if arr.ndim != 3 or arr.shape[0] != 4:
        raise ValueError(f"an HPA set needs (4, H, W) data, got shape {arr.shape}")
    fmt = fmt.lower().lstrip(".")
    if fmt not in ("png", "tif", "tiff", "jpg", "jpeg"):
        raise ValueError(f"unsupported HPA file format {fmt!r}")
    paths = tuple(Path(folder) / f"{image_id}_{c}.{fmt}" for c in HPA_COLORS)
    for plane, path in zip(_to_uint8(arr), paths, strict=True):
        write_image(path, plane[None])
    return paths


def write_image(
    path: str | os.PathLike, data: np.ndarray, channel_names: Iterable[str] | None = None
) -> Path:
    """Write (C, H, W) data: TIFF keeps the dtype (axes ``CYX``; OME names if given).

    PNG/JPEG take 1 (gray) or 3 (RGB) channels, uint8/uint16 or float in [0, 1]
    (written 8-bit; single-channel uint16 PNG stays 16-bit). The file is written
    beside the target and renamed over it (:func:`~napari_hpa.core.atomic.atomic_path`).
    """
    from PIL import Image

    path, arr = Path(path), np.asarray(data)
    arr = arr[None] if arr.ndim == 2 else arr
    if arr.ndim != 3:
        raise ValueError(f"expected (C, H, W) data, got shape {arr.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        arr = arr.astype(np.float32) if arr.dtype == np.float64 else arr
        names = list(channel_names or [])
        meta = {"axes": "CYX", **({"Channel": {"Name": names}} if names else {})}
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, arr, photometric="minisblack", metadata=meta, ome=bool(names))
        return path
    if arr.shape[0] not in (1, 3):
        raise ValueError(f"{path.suffix} files take 1 or 3 channels, got {arr.shape[0]}")
    if arr.shape[0] == 1 and arr.dtype == np.uint16 and path.suffix.lower() == ".png":
        img = Image.fromarray(arr[0])
    else:
        u8 = (arr >> 8).astype(np.uint8) if arr.dtype == np.uint16 else _to_uint8(arr)
        img = Image.fromarray(u8[0] if u8.shape[0] == 1 else np.moveaxis(u8, 0, -1))
    is_jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    options: dict[str, Any] = {"quality": 95} if is_jpeg else {}
    fmt = "JPEG" if is_jpeg else None  # the temporary name's suffix says the rest
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt, **options)
    return path


def fit_name(stem: str, tail: str, limit: int = NAME_MAX) -> str:
    """Return ``stem + tail``, the stem shortened so the name fits ``limit`` bytes (UTF-8)."""
    room = limit - len(os.fsencode(tail))
    raw = os.fsencode(stem)
    if len(raw) <= room:
        return stem + tail
    return raw[: max(1, room)].decode("utf-8", "ignore") + tail


def maps_owner(path: Path) -> str | None:
    """Return the source a maps file of :func:`write_maps` records (None: not one of them)."""
    import tifffile

    try:
        with open_image_file(path) as fh, tifffile.TiffFile(fh) as tif:
            meta = tif.shaped_metadata
    except (ImageReadError, Exception):  # any other file (or none) is simply not ours
        return None
    owner = meta[0].get("source") if meta else None
    return owner if isinstance(owner, str) else None


def write_maps(
    folder: str | os.PathLike, stem: str, source: str, maps: np.ndarray, names: Sequence[str]
) -> Path:
    """Write ``maps`` (C, H, W) as ``<folder>/<stem>_cam.tif``; return the path written.

    The file records ``source`` (absolute), so a later run recognises its own maps
    and replaces them, and never another image's: two folders' ``x.png`` give
    ``x_cam.tif`` and ``x-2_cam.tif``, in any order and across runs. A new name is
    reserved with an exclusive create (two processes never take the same one), the
    file is written through a temporary file and a rename, and the name is cut to
    fit the file system's 255 bytes. ``OSError`` (a full disk, a read-only folder)
    is the caller's to report; nothing is left behind by it.
    """
    import tifffile

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    owner = os.path.abspath(source)
    base = Path(stem).name or "image"  # a name never leaves its folder
    for n in range(1, MAX_NAME_TRIES + 1):
        path = out / fit_name(base if n == 1 else f"{base}-{n}", MAPS_SUFFIX)
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            reserved = True
        except FileExistsError:
            if maps_owner(path) != owner:
                continue  # another image's maps (or not maps at all): left alone
            reserved = False
        break
    else:
        raise OSError(errno.EEXIST, f"no free name for the maps of {source}", str(out))
    stack = np.asarray(maps, np.float32)
    meta = {"axes": "CYX", "Labels": list(names), "source": owner}
    try:
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, stack, metadata=meta, imagej=False)
    except BaseException:
        if reserved:
            path.unlink(missing_ok=True)
        raise
    return path
