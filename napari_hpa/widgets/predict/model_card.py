"""A window with a model's card: what it is for, how it was trained, how well it did.

A user who just trained a model with ``napari-hpa train`` (or is choosing between
bundled ones) reads its ``README.md`` and looks at its confusion matrix and
training curves here, next to the model picker, instead of hunting for the
folder. The files are read by :func:`~napari_hpa.core.model.registry.read_card`.
Under the tabs, "Export to bioimage.io…" (:mod:`.model_card_export`) writes the model
as a bioimage.io package.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtGui import QPixmap
from qtpy.QtWidgets import (
    QDialog,
    QLabel,
    QScrollArea,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from ...core.model.registry import ModelEntry
from .model_card_export import ExportBar

#: Figures wider than this are scaled down to it (the card window stays on screen).
MAX_FIGURE_WIDTH = 760


class ModelCardDialog(QDialog):
    """Non-modal window: one tab for the card's text, one per report figure, and Export."""

    def __init__(self, entry: ModelEntry, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.entry = entry
        self.setWindowTitle(f"Model card: {entry.id}")
        self.resize(820, 640)
        card = entry.card()
        self.tabs = QTabWidget()
        self.text = QTextBrowser()
        self.text.setOpenExternalLinks(True)
        if card.text is not None:
            self.text.setMarkdown(card.text)
        else:
            self.text.setPlainText(
                f"{entry.id} has no model card (README.md) in {entry.path}.\n\n"
                f"Task {entry.spec.task.name}: {entry.spec.task.num_classes} classes; "
                f"channels {', '.join(entry.spec.input.channels)}."
            )
        self.tabs.addTab(self.text, "Model card")
        self.figures: dict[str, QLabel] = {}
        for title, path in card.figures:
            label = QLabel()
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            pixmap = QPixmap(str(path))
            if pixmap.isNull():
                label.setText(f"could not read {path}")
            else:
                if pixmap.width() > MAX_FIGURE_WIDTH:
                    pixmap = pixmap.scaledToWidth(
                        MAX_FIGURE_WIDTH, Qt.TransformationMode.SmoothTransformation
                    )
                label.setPixmap(pixmap)
            scroll = QScrollArea()
            scroll.setWidget(label)
            scroll.setWidgetResizable(True)
            self.tabs.addTab(scroll, title)
            self.figures[title] = label
        self.export = ExportBar(entry, self)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        layout.addWidget(self.export)
