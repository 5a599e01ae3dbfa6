"""The text napari-hpa writes on the canvas, over the image (the viewer's text overlay)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import napari


def show_text(viewer: napari.Viewer, text: str | None) -> None:
    """Show ``text`` at the canvas's top left (white on a box); None hides it.

    Through ``viewer.canvas.overlays.text``: ``viewer.text_overlay`` is deprecated
    since napari 0.9 and warns (a toast in the viewer).
    """
    overlay = viewer.canvas.overlays.text
    if text is None:
        overlay.visible = False
        return
    overlay.font_size = 9
    overlay.color = "white"
    overlay.position = "top_left"
    overlay.box = True
    overlay.text = text
    overlay.visible = True
