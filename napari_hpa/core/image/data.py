"""What reading an image gives (:class:`ImageData`) or why it failed (:class:`ImageReadError`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class ImageReadError(ValueError):
    """An image could not be read; ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(path, reason)
        self.path = Path(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(eq=False)
class ImageData:
    """One image: ``data`` (C, H, W) float32 in [0, 1] and where it came from."""

    data: np.ndarray
    channel_names: tuple[str, ...]
    paths: tuple[Path, ...]
    image_id: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)
