"""The "Corrected labels" box of the Retrain widget: the database and the per-class counts.

Classes with too few corrected images are marked, with the warnings of
:func:`~napari_hpa.jobs.retrain.summarize` below the table.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ...jobs.retrain import MIN_IMAGES_PER_CLASS, DataSummary
from .._shared.fitted_label import FittedLabel
from .._shared.tooltips import tip


class CountsPanel(QGroupBox):
    """The database (with a … button to choose another), totals, counts per class, warnings.

    Only shows what it is given; the Retrain widget reads the database and
    connects :attr:`browse_button`.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Corrected labels", parent)
        self.db_label = QLabel("Database: none")
        self.db_label.setWordWrap(True)
        # A long path must not widen the dock: it is shortened, the tooltip has it all.
        self.db_label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.db_label.setMinimumWidth(60)
        self.db_label.setToolTip(tip("db"))
        self.db_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.browse_button = QToolButton()
        self.browse_button.setText("…")
        self.browse_button.setToolTip(tip("browse"))
        db_row = QHBoxLayout()
        db_row.addWidget(self.db_label, 1)
        db_row.addWidget(self.browse_button)
        self.counts_table = QTableWidget(0, 3)
        self.counts_table.setHorizontalHeaderLabels(["Class", "Images", "Cells"])
        self.counts_table.setToolTip(tip("counts"))
        compact_table(self.counts_table, 80)  # 3 rows; it scrolls, and a short dock needs room
        # At most 6 rows high: the spare height goes to the training plot, not to empty rows.
        self.counts_table.setMaximumHeight(150)
        self.totals_label = QLabel("")
        self.warning_label = FittedLabel("")
        self.warning_label.setStyleSheet("color: #f0b429;")
        data_layout = QVBoxLayout(self)
        data_layout.addLayout(db_row)
        data_layout.addWidget(self.totals_label)
        data_layout.addWidget(self.counts_table)
        data_layout.addWidget(self.warning_label)

    def show_db(self, db: Path | None) -> None:
        """Show the database's path (shortened; the tooltip has it all)."""
        if db:
            self.db_label.setToolTip(f"{db}\n\n{tip('db')}")
        self.db_label.setText(
            f"Database: {short_path(db)}"
            if db
            else "Database: none yet (correct some images in Annotate, or choose one)"
        )

    def show_summary(self, summary: DataSummary | None) -> None:
        """Fill the totals, the counts and the warnings (all empty when ``summary`` is None)."""
        table = self.counts_table
        table.setRowCount(0)
        if summary is None:
            self.totals_label.setText("")
            self.show_warning("")
            return
        self.totals_label.setText(
            f"{summary.n_images} corrected images, {summary.n_cells} corrected cells "
            f"(task {summary.task})"
        )
        table.setRowCount(len(summary.counts))
        warn = QColor(240, 180, 41)
        for row, count in enumerate(summary.counts):
            items = [QTableWidgetItem(count.name), _num_item(count.images), _num_item(count.cells)]
            for col, item in enumerate(items):
                if count.too_few:
                    item.setForeground(warn)
                    item.setToolTip(f"fewer than {MIN_IMAGES_PER_CLASS} corrected images")
                table.setItem(row, col, item)
        self.show_warning("\n".join(f"⚠ {w}" for w in summary.warnings))

    def show_warning(self, text: str) -> None:
        """Show ``text`` (may be several lines) under the counts, or nothing if empty."""
        self.warning_label.setText(text)


def short_path(path: Path, parts: int = 3) -> str:
    """Shorten a path to its last ``parts`` components, ``…/`` in front if there are more."""
    tail = Path(*path.parts[-parts:])
    return str(tail) if len(path.parts) <= parts else f"…/{tail}"


def compact_table(table: QTableWidget, min_height: int) -> None:
    """Read-only and unselectable, the first column stretched, compact rows."""
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.NoEditTriggers)
    table.setSelectionMode(QAbstractItemView.NoSelection)
    header = table.horizontalHeader()
    header.setSectionResizeMode(0, QHeaderView.Stretch)
    for col in range(1, table.columnCount()):
        header.setSectionResizeMode(col, QHeaderView.ResizeToContents)
    table.verticalHeader().setDefaultSectionSize(20)
    table.setMinimumHeight(min_height)


def _num_item(value: int) -> QTableWidgetItem:
    item = QTableWidgetItem(str(value))
    item.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter))
    return item
