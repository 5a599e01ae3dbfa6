"""Annotate's keys and clicks on napari's canvas: 1-9, undo/redo, Esc, a click on a cell.

Keys are bound on the viewer and on napari-hpa's own layers (a layer's own keys
win over the viewer's while it is selected), each handler marked so that a
closed Annotate dock removes exactly its own.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import napari

#: The number keys that toggle the classes shown at ranks 1-9.
NUMBER_KEYS = tuple(str(i) for i in range(1, 10))
#: A press and release this far apart (screen pixels) is a drag, not a click.
DRAG_PX = 4


def bind_keys(target: Any, actions: dict[str, Callable[[], Any]]) -> None:
    """Bind each napari key name of ``actions`` on ``target`` (the viewer or a layer)."""
    for key, action in actions.items():

        def handler(_target: Any, _action: Callable[[], Any] = action) -> None:
            _action()

        handler.napari_hpa = True  # type: ignore[attr-defined]
        target.bind_key(key, handler, overwrite=True)


def unbind_keys(targets: Iterable[weakref.ref]) -> None:
    """Remove the keys :func:`bind_keys` set on the targets that are still alive."""
    for ref in targets:
        target = ref()
        if target is None:
            continue
        for key, func in list(target.keymap.items()):
            if getattr(func, "napari_hpa", False):
                del target.keymap[key]


def click_callback(
    select_at: Callable[[Any], Any],
) -> Callable[[napari.Viewer, Any], Iterator[None]]:
    """Make a mouse-drag callback that calls ``select_at(world position)`` on a click.

    A drag is no click, and only in pan/zoom (or pick) mode of the active layer: a
    click that paints or draws in another layer is not a selection.
    """

    def on_click(viewer: napari.Viewer, event: Any) -> Iterator[None]:
        if getattr(event, "button", 1) != 1 or getattr(event, "modifiers", ()):
            return
        active = viewer.layers.selection.active
        if getattr(active, "mode", "pan_zoom") not in ("pan_zoom", "pick"):
            return
        start = np.asarray(getattr(event, "pos", (0, 0)), float)
        dragged = False
        yield
        while event.type == "mouse_move":
            dragged = dragged or np.hypot(*(np.asarray(event.pos, float) - start)) > DRAG_PX
            yield
        if not dragged:
            select_at(event.position)

    return on_click
