"""Corrections the annotations database could not take (a full disk): kept, shown, retried.

Every toggle is written at once. When a write fails after the database was opened
(the disk filled up, the share went away), the correction stays in the dock: the
checkbox keeps the user's value, marked "not saved", and it is written, in order,
with the next change that can be saved. No Qt here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PendingLabel:
    """One user value not yet in the database."""

    source: str
    task: str
    cell: int
    class_index: int
    value: bool


class Unsaved:
    """The corrections waiting for the database, oldest first (one per class and level)."""

    def __init__(self) -> None:
        self.items: list[PendingLabel] = []

    def __len__(self) -> int:
        return len(self.items)

    def add(self, label: PendingLabel) -> None:
        """Keep ``label``; it replaces an older value of the same class, image and cell."""
        key = (label.source, label.task, label.cell, label.class_index)
        self.items = [p for p in self.items if (p.source, p.task, p.cell, p.class_index) != key] + [
            label
        ]

    def flush(self, store: Any) -> int:
        """Write what is waiting, in order; return how many were written.

        Raises what the store raises (one of ``database.STORE_ERRORS``); what was not
        written stays.
        """
        written = 0
        while self.items:
            p = self.items[0]
            store.set_user_label(p.source, p.task, p.class_index, p.value, cell=p.cell)
            self.items.pop(0)
            written += 1
        return written

    def overlay(
        self, source: str | None, task: str, cell: int, effective: set[int]
    ) -> tuple[set[int], set[int]]:
        """Return ``effective`` with the waiting values applied, and their classes."""
        shown, waiting = set(effective), set()
        for p in self.items:
            if (p.source, p.task, p.cell) == (source, task, cell):
                (shown.add if p.value else shown.discard)(p.class_index)
                waiting.add(p.class_index)
        return shown, waiting
