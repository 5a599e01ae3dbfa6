"""The "Result" box of the Retrain widget: the new version against its parent.

Both are scored on the same held-out corrected images (see
:mod:`napari_hpa.jobs.compare`); the table lists the macro F1 and then the
classes, the biggest changes first.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QGroupBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from ...core.model import registry
from ...jobs.compare import Comparison
from .._shared.fitted_label import FittedLabel
from .._shared.tooltips import tip
from .counts_panel import compact_table


class ComparePanel(QGroupBox):
    """A headline and the parent-vs-new F1 table; a placeholder until a run ends.

    It keeps its place (and size) when empty: showing a result must not resize
    the dock, and with it napari's canvas.
    """

    PLACEHOLDER = (
        "When a run ends, the new version and its parent are compared here on "
        "the same held-out corrected images."
    )

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Result", parent)
        self.headline = FittedLabel("", min_lines=3)  # grows when the text needs more
        self.compare_table = QTableWidget(0, 4)
        self.compare_table.setHorizontalHeaderLabels(["Class", "Parent F1", "New F1", "Change"])
        self.compare_table.setToolTip(tip("compare"))
        compact_table(self.compare_table, 140)
        result_layout = QVBoxLayout(self)
        result_layout.addWidget(self.headline)
        result_layout.addWidget(self.compare_table)

    def clear(self) -> None:
        """Back to the placeholder."""
        self.compare_table.setRowCount(0)
        self.headline.setText(self.PLACEHOLDER)

    @property
    def has_result(self) -> bool:
        """True once a new version is shown (with or without its comparison)."""
        return self.headline.text() != self.PLACEHOLDER

    def show_new_version(self, child: registry.ModelEntry) -> None:
        """Show a new version without a comparison (yet)."""
        self.compare_table.setRowCount(0)
        self.headline.setText(f"New version {child.id} (parent {child.spec.parent}).")

    def show_comparison(self, comp: Comparison) -> None:
        """Show the headline and the F1 table of a finished comparison."""
        table = self.compare_table
        table.setRowCount(0)
        self.headline.setText(comp.headline())
        rows = [("macro F1", comp.parent_macro_f1, comp.child_macro_f1, comp.delta, None)]
        # Classes absent from the held-out images and unchanged say nothing: left out.
        shown = [r for r in comp.rows if r.support or (r.delta or 0) != 0]
        order = sorted(shown, key=lambda r: (r.delta is None, -(abs(r.delta or 0))))
        rows += [(r.name, r.parent_f1, r.child_f1, r.delta, r.support) for r in order]
        table.setRowCount(len(rows))
        green, red = QColor(89, 161, 79), QColor(225, 87, 89)
        for i, (name, pf, cf_, delta, support) in enumerate(rows):
            label = name if support is None else f"{name} ({support})"
            cells = [QTableWidgetItem(label), _f1_item(pf), _f1_item(cf_), _delta_item(delta)]
            for col, item in enumerate(cells):
                if delta is not None and abs(delta) > 0.01 and col == 3:
                    item.setForeground(green if delta > 0 else red)
                table.setItem(i, col, item)
        table.item(0, 0).setToolTip("mean F1 over the classes (the project's macro F1)")


def _f1_item(value: float | None) -> QTableWidgetItem:
    item = QTableWidgetItem("–" if value is None else f"{value:.3f}")
    item.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter))
    return item


def _delta_item(value: float | None) -> QTableWidgetItem:
    text = "–" if value is None else f"{value:+.3f}"
    item = QTableWidgetItem(text)
    item.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter))
    return item
