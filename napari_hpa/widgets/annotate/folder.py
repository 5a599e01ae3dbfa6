"""The images that Annotate's Next and Previous image walk in file order: the image's folder."""

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


def next_in(sources: list[str], source: str, offset: int) -> str | None:
    """Return the image ``offset`` places from ``source`` in ``sources``; None past an end.

    Past an end a notification says it is the folder's first or last image.
    """
    from napari.utils.notifications import show_info

    i = sources.index(source) + offset
    if not 0 <= i < len(sources):
        show_info(f"This is the {'last' if offset > 0 else 'first'} image of the folder.")
        return None
    return sources[i]
