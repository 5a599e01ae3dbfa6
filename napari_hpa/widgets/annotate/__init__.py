"""The Annotate dock: correct image and cell labels, undo/redo, next image, export."""

from .widget import AnnotateWidget

__all__ = ["AnnotateWidget"]
