"""The review queue within one image: "Next cell" selects its cells least certain first.

After Next has chosen the image, the cells that teach most are those the model was
unsure of, and those that disagree with the image
(:func:`~napari_hpa.core.labels.review.rank_cells`, in the queue's order). Each press
selects the next cell not visited yet, so the checklist edits it, says why it was
chosen, and marks it reviewed in the annotations database.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from ...core.labels import review
from .._shared.tooltips import tip
from .database import STORE_ERRORS

if TYPE_CHECKING:
    from .widget import AnnotateWidget


class CellQueue(QWidget):
    """A "Next cell" button and the reason the selected cell was chosen.

    Parameters
    ----------
    dock
        The Annotate dock: its prediction (with cells), image and database.
    order
        Returns the queue's order key (``review.ORDERS``).
    """

    def __init__(self, dock: AnnotateWidget, order: Callable[[], str]) -> None:
        super().__init__()
        self.dock = dock
        self._order = order
        #: The cells visited, per image source.
        self.visited: dict[str, set[int]] = {}
        self.button = QPushButton("Next cell ▶")
        self.button.setToolTip(tip("queue_cell"))
        self.button.clicked.connect(self.next_cell)
        self.reason_label = QLabel("")
        self.reason_label.setWordWrap(True)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.button)
        row.addWidget(self.reason_label, 1)

    def ranked(self) -> list[review.ReviewItem]:
        """Return the shown image's cells in the queue's order (none without cell predictions)."""
        result = self.dock.session.result
        if result is None or result.source != self.dock.source or not result.cells:
            return []
        scored = review.Scored(
            result.source,
            result.prediction.probabilities,
            {c: p.probabilities for c, p in result.cells.items()},
        )
        return review.rank_cells(scored, result.entry.spec.task.classes, self._order())

    def next_cell(self) -> int | None:
        """Select the next cell not visited yet; return it (None: none left, or no cells)."""
        source = self.dock.source
        ranked = self.ranked()
        if not source or not ranked:
            self.reason_label.setText("Predict this image first: its cells have no prediction.")
            return None
        seen = self.visited.setdefault(source, set())
        item = next((i for i in ranked if i.cell not in seen), None)
        if item is None:
            self.reason_label.setText(f"All {len(ranked)} cells of this image were visited.")
            return None
        seen.add(item.cell)
        self.dock.session.select_cell(item.cell)
        store = self.dock.store
        if store is not None:
            # the walk goes on; the dock reports database failures on edits
            with contextlib.suppress(*STORE_ERRORS):
                store.mark_reviewed(source, self.dock.task.name, item.cell)
        self.reason_label.setText(f"Cell {item.cell} ({len(seen)} of {len(ranked)}): {item.reason}")
        return item.cell
