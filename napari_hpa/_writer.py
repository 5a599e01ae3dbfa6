"""npe2 writer: a Labels layer (the cells, or any label image) as a TIFF file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write label ``data`` to ``path`` as a zlib-compressed TIFF; return the written path.

    Labels are stored as uint16 when they fit (most tools read it), else uint32.

    Parameters
    ----------
    path
        Destination; ``.tif`` is added when it has no TIFF suffix.
    data
        (H, W) or (Z, H, W) integer labels, 0 = background.
    meta
        The layer's attributes (``name`` is stored as the TIFF description).
    """
    import tifffile

    out = Path(path)
    if out.suffix.lower() not in (".tif", ".tiff"):
        out = out.with_name(out.name + ".tif")
    arr = np.asarray(data)
    if arr.dtype.kind not in "iub":
        raise ValueError(f"labels must be integers, got {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError("labels must not be negative")
    top = int(arr.max()) if arr.size else 0
    arr = arr.astype(np.uint16 if top < 2**16 else np.uint32, copy=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(
        out,
        arr,
        compression="zlib",
        photometric="minisblack",
        description=str(meta.get("name", "labels")),
        metadata=None,
    )
    return [str(out)]
