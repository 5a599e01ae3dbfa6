"""The images that Annotate's Next and Previous image walk: the current image's folder."""

from __future__ import annotations

from pathlib import Path

from ...core.image.io import ImageReadError
from ...core.image.sources import find_images


def folder_images(source: str | None) -> list[str]:
    """List the images of ``source``'s folder, sorted; none for layers not from a file."""
    if not source or source.startswith("layer:"):
        return []
    try:
        return find_images(Path(source).parent, recursive=False)
    except ImageReadError:
        return []
