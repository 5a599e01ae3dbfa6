"""Write images: one file (:func:`write_image`) or an HPA channel set (:func:`write_hpa_set`)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .sources import HPA_COLORS


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
    (written 8-bit; single-channel uint16 PNG stays 16-bit).
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
        tifffile.imwrite(path, arr, photometric="minisblack", metadata=meta, ome=bool(names))
        return path
    if arr.shape[0] not in (1, 3):
        raise ValueError(f"{path.suffix} files take 1 or 3 channels, got {arr.shape[0]}")
    if arr.shape[0] == 1 and arr.dtype == np.uint16 and path.suffix.lower() == ".png":
        Image.fromarray(arr[0]).save(path)
        return path
    u8 = (arr >> 8).astype(np.uint8) if arr.dtype == np.uint16 else _to_uint8(arr)
    img = Image.fromarray(u8[0]) if u8.shape[0] == 1 else Image.fromarray(np.moveaxis(u8, 0, -1))
    options: dict[str, Any] = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    img.save(path, **options)
    return path
