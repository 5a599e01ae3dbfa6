"""The class-probability table: sortable, with a bar per row proportional to the probability."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qtpy.QtCore import QModelIndex, QRect, Qt, Signal
from qtpy.QtGui import QColor, QIcon, QPainter, QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableWidget,
    QTableWidgetItem,
)

CLASS_COL, PROB_COL, PRED_COL = 0, 1, 2
_ROLE_VALUE = Qt.UserRole + 1  # numeric sort key
_ROLE_CLASS = Qt.UserRole + 2  # class index
_BAR = QColor(70, 130, 200, 150)
_BAR_PREDICTED = QColor(60, 180, 110, 170)


class _SortItem(QTableWidgetItem):
    """An item that sorts by its numeric value, not its text."""

    def __lt__(self, other: QTableWidgetItem) -> bool:  # noqa: D105
        a, b = self.data(_ROLE_VALUE), other.data(_ROLE_VALUE)
        if a is None or b is None:
            return super().__lt__(other)
        return a < b


class _BarDelegate(QStyledItemDelegate):
    """Paints a horizontal bar (probability x cell width) under the number."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        value = index.data(_ROLE_VALUE)
        if isinstance(value, float):
            predicted = bool(index.siblingAtColumn(PRED_COL).data(_ROLE_VALUE))
            rect: QRect = option.rect.adjusted(2, 3, -2, -3)
            rect.setWidth(max(1, int(rect.width() * min(max(value, 0.0), 1.0))))
            painter.save()
            painter.fillRect(rect, _BAR_PREDICTED if predicted else _BAR)
            painter.restore()
        super().paint(painter, option, index)


def swatch(rgba: Sequence[float], size: int = 10) -> QIcon:
    """Make a small square icon of a colour (the colour of a class's cells)."""
    pix = QPixmap(size, size)
    pix.fill(QColor.fromRgbF(*[float(v) for v in rgba[:3]], 1.0))
    return QIcon(pix)


class ProbabilityTable(QTableWidget):
    """Class, probability (with a bar) and predicted (yes/no), sorted by probability.

    Emits :attr:`class_selected` with the class index of the row the user picks.
    """

    class_selected = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(0, 3, parent)
        self.setHorizontalHeaderLabels(["Class", "Probability", "Predicted"])
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(20)
        header = self.horizontalHeader()
        header.setSectionResizeMode(CLASS_COL, QHeaderView.Stretch)
        header.setSectionResizeMode(PROB_COL, QHeaderView.Fixed)
        header.setSectionResizeMode(PRED_COL, QHeaderView.ResizeToContents)
        self.setColumnWidth(PROB_COL, 90)
        self.setItemDelegateForColumn(PROB_COL, _BarDelegate(self))
        self.setSortingEnabled(True)
        self.setAlternatingRowColors(False)
        self.itemSelectionChanged.connect(self._on_selection)
        self.setToolTip("Click a row to show where the model saw that class (activation map).")

    def set_probabilities(
        self,
        classes: Sequence[str],
        probabilities: np.ndarray,
        predicted: Sequence[int],
        colors: dict[int, Sequence[float]] | None = None,
    ) -> None:
        """Fill the table (sorted by decreasing probability); ``colors`` marks cell colours."""
        chosen = set(int(i) for i in predicted)
        colors = colors or {}
        self.blockSignals(True)
        self.setSortingEnabled(False)
        self.clearContents()
        self.setRowCount(len(classes))
        for row, (name, p) in enumerate(zip(classes, probabilities, strict=True)):
            item = _SortItem(name)
            item.setData(_ROLE_CLASS, row)
            item.setData(_ROLE_VALUE, name.lower())
            if row in colors:
                item.setIcon(swatch(colors[row]))
                item.setToolTip(f"{name}: cells with this top class are outlined in this colour")
            prob = _SortItem(f"{float(p):.3f}")
            prob.setData(_ROLE_VALUE, float(p))
            prob.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter))
            pred = _SortItem("yes" if row in chosen else "no")
            pred.setData(_ROLE_VALUE, int(row in chosen))
            pred.setTextAlignment(int(Qt.AlignCenter))
            if row in chosen:
                font = item.font()
                font.setBold(True)
                for it in (item, prob, pred):
                    it.setFont(font)
            self.setItem(row, CLASS_COL, item)
            self.setItem(row, PROB_COL, prob)
            self.setItem(row, PRED_COL, pred)
        self.setSortingEnabled(True)
        self.sortItems(PROB_COL, Qt.DescendingOrder)
        self.blockSignals(False)

    def set_colors(self, colors: dict[int, Sequence[float]]) -> None:
        """Mark the classes whose colour outlines cells (a swatch before the name)."""
        for row in range(self.rowCount()):
            item = self.item(row, CLASS_COL)
            c = self.class_at(row)
            if c in colors:
                item.setIcon(swatch(colors[c]))
                item.setToolTip(
                    f"{item.text()}: cells with this top class are outlined in this colour"
                )
            else:
                item.setIcon(QIcon())

    def class_at(self, row: int) -> int | None:
        """Return the class index shown in ``row`` (rows are sorted by probability)."""
        item = self.item(row, CLASS_COL)
        return None if item is None else int(item.data(_ROLE_CLASS))

    def row_of(self, class_index: int) -> int | None:
        """Return the row that shows ``class_index``, or None."""
        for row in range(self.rowCount()):
            if self.class_at(row) == class_index:
                return row
        return None

    def select_class(self, class_index: int) -> None:
        """Select the row of ``class_index`` (emits :attr:`class_selected`)."""
        row = self.row_of(class_index)
        if row is not None:
            self.selectRow(row)

    def selected_class(self) -> int | None:
        """Return the class index of the selected row, or None."""
        rows = {i.row() for i in self.selectedIndexes()}
        return self.class_at(min(rows)) if rows else None

    def _on_selection(self) -> None:
        c = self.selected_class()
        if c is not None:
            self.class_selected.emit(c)
