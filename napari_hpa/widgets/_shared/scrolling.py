"""Docks that fit a laptop screen: a body that scrolls vertically, combos that may be narrow.

A dock widget's minimum size is its layout's: the Retrain panel needed 975 px
of height and four docks stacked made napari's window 2762 px tall on a 768-px
screen (issue 17). Inside a :class:`ScrollBody` the controls keep their sizes
and scroll; the dock asks only for the body's minimum width (plus the scroll
bar) and a small height.
"""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, QSize, Qt
from qtpy.QtWidgets import QComboBox, QFrame, QScrollArea, QVBoxLayout, QWidget

#: The least height a dock asks for (its body scrolls below that).
MIN_DOCK_HEIGHT = 120


class ScrollBody(QScrollArea):
    """A frameless vertical scroll area around ``body``, as wide as the body needs."""

    def __init__(self, body: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.NoFrame)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarAsNeeded)
        self.setWidget(body)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        """Ask for the body's minimum width with room for the scroll bar, and a small height."""
        body = self.widget().minimumSizeHint()
        bar = self.verticalScrollBar().sizeHint().width()
        return QSize(body.width() + bar + 2 * self.frameWidth(), MIN_DOCK_HEIGHT)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        """Follow the body's layout: a wider row widens the dock (QScrollArea would not)."""
        if obj is self.widget() and event.type() == QEvent.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(obj, event)


def scroll_body(dock: QWidget) -> QWidget:
    """Give ``dock`` a scrolling body and return the body, to lay the controls out in.

    Parameters
    ----------
    dock
        The dock widget (it gets a margin-less layout holding the scroll area).

    Returns
    -------
    QWidget
        The widget inside the scroll area.
    """
    body = QWidget()
    outer = QVBoxLayout(dock)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(ScrollBody(body, dock))
    return body


def narrow_combo(combo: QComboBox, characters: int) -> None:
    """Let ``combo`` be as narrow as ``characters`` letters.

    By default a combo is as wide as its longest item: a long model name made the
    Predict dock 551 px wide.
    """
    combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(characters)
