"""A word-wrapped label that is always as tall as its text.

QLabel with word wrap takes the height its layout gives it; in a squeezed dock
that can be fewer lines than the text needs, and the overflow is drawn over the
widget above (seen in the Retrain panel: the rare-class warning over the counts
table, the comparison headline cut after two and a half lines).
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QWidget


class FittedLabel(QLabel):
    """Word-wrapped, top-aligned, and exactly as tall as its text at its width.

    ``min_lines`` keeps room for that many lines even when the text is shorter
    (a placeholder that should not make the panel jump); an empty label with
    ``min_lines=0`` takes no height at all.
    """

    def __init__(self, text: str = "", min_lines: int = 0, parent: QWidget | None = None):
        super().__init__(text, parent)
        self.min_lines = min_lines
        self.setWordWrap(True)
        self.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self._fit()

    def setText(self, text: str) -> None:  # noqa: N802 (Qt's name)
        super().setText(text)
        self._fit()

    def _fit(self) -> None:
        width = max(self.width(), 100)  # before the first layout pass: a narrow guess
        needed = self.heightForWidth(width) if self.text() else 0
        floor = self.min_lines * self.fontMetrics().lineSpacing() + (4 if self.min_lines else 0)
        self.setFixedHeight(max(needed, floor))

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        self._fit()
