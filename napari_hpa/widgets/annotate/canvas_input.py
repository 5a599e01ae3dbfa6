"""Annotate's keys and clicks: 1-9, undo/redo and Esc on the canvas and the class list.

On napari's canvas, keys are bound on the viewer and on napari-hpa's own layers
(a layer's own keys win over the viewer's while it is selected), each handler
marked so that a closed Annotate dock removes exactly its own. On the class
list, :class:`NumberKeys` takes 1-9 itself: a Qt shortcut does not fire there
when napari's window is not the active one (no window manager, a remote
desktop) or when something else in the window binds the same key, and the list
would use the key to search its items instead.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import QShortcut, QWidget

from .._shared.session import session_for

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


def remove_input(
    targets: Iterable[weakref.ref], viewer: napari.Viewer, on_click: Any, dock: QWidget
) -> None:
    """Remove what a closed Annotate dock had set: keys, click callback, session entry."""
    session_for(viewer).remove_dock(dock)
    unbind_keys(targets)
    if on_click in viewer.mouse_drag_callbacks:
        viewer.mouse_drag_callbacks.remove(on_click)


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


def add_shortcuts(
    dock: QWidget,
    on_rank: Callable[[int], Any],
    undo: Callable[[], Any],
    redo: Callable[[], Any],
) -> None:
    """Give ``dock`` (and its children, with the focus) keys 1-9, Ctrl+Z and Ctrl+Shift+Z."""
    context = Qt.WidgetWithChildrenShortcut
    for key in NUMBER_KEYS:
        QShortcut(QKeySequence(key), dock, partial(on_rank, int(key) - 1), context=context)
    QShortcut(QKeySequence.Undo, dock, undo, context=context)
    QShortcut(QKeySequence("Ctrl+Shift+Z"), dock, redo, context=context)


def number_rank(event: Any) -> int | None:
    """Return 0-8 for an unmodified key 1-9 (main row or keypad), else None."""
    key = event.key()
    modifiers = event.modifiers() & ~Qt.KeypadModifier
    if modifiers != Qt.NoModifier or not Qt.Key_1 <= key <= Qt.Key_9:
        return None
    return int(key - Qt.Key_1)


class NumberKeys(QObject):
    """Event filter that gives keys 1-9 on ``target`` to ``on_rank(0-8)``.

    It accepts the shortcut-override of those keys, so no shortcut takes them, and
    handles the key press that follows, so the list does not search with it.
    """

    def __init__(self, target: QWidget, on_rank: Callable[[int], Any]) -> None:
        super().__init__(target)
        self._on_rank = on_rank
        target.installEventFilter(self)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        """Take the number keys; let every other event through."""
        kind = event.type()
        if kind not in (QEvent.ShortcutOverride, QEvent.KeyPress):
            return False
        rank = number_rank(event)
        if rank is None:
            return False
        if kind == QEvent.KeyPress:
            self._on_rank(rank)
        event.accept()
        return True
