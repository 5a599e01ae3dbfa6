"""The Annotate dock's class list: one checkable row per class, most probable first."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QListWidget, QListWidgetItem


def fill_checklist(
    rows: QListWidget,
    classes: Sequence[str],
    order: Sequence[int],
    probs: np.ndarray | None,
    effective: set[int],
    user: dict[int, bool],
    model: set[int],
    waiting: set[int],
) -> None:
    """Fill ``rows`` (signals blocked): the number key, class, probability and origin.

    ``effective`` are checked; ``user`` classes are the user's own (bold, "yours"),
    ``waiting`` ones are the user's too but not yet in the database ("not saved").
    """
    rows.blockSignals(True)
    rows.clear()
    for rank, c in enumerate(order):
        key = f"[{rank + 1}] " if rank < 9 else "      "
        p = "" if probs is None or probs[c] < 0 else f"  {probs[c]:.2f}"
        mine = "  ✎ not saved" if c in waiting else "  ✎ yours" if c in user else ""
        item = QListWidgetItem(f"{key}{classes[c]}{p}{mine}")
        item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
        item.setCheckState(Qt.Checked if c in effective else Qt.Unchecked)
        item.setData(Qt.UserRole, int(c))
        origin = "yours" if c in user or c in waiting else "model"
        says = "yes" if c in model else "no"
        item.setToolTip(f"{classes[c]}: model says {says}; shown: {origin}")
        if c in user or c in waiting:
            font = item.font()
            font.setBold(True)
            item.setFont(font)
        rows.addItem(item)
    rows.blockSignals(False)
