"""The Backend box of the Predict and Batch docks (what runs the network) and Predict's Device."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox

from ...core.model.backends import BACKEND_CHOICES, is_installed
from .tooltips import tip


def backend_box() -> QComboBox:
    """Return a combo of :data:`BACKEND_CHOICES`, ``auto`` first; missing runtimes greyed out.

    A greyed-out item says how to install it, rather than failing over to torch
    with a warning after the click.
    """
    box = QComboBox()
    box.setToolTip(tip("backend"))
    box.addItems(list(BACKEND_CHOICES))
    for row, name in enumerate(BACKEND_CHOICES):
        if name not in ("auto", "torch") and not is_installed(name):
            item = box.model().item(row)
            item.setEnabled(False)
            item.setToolTip(f"not installed: pip install {name} onnx")
    return box


def device_box() -> QComboBox:
    """Return the Predict dock's Device combo (auto, cpu, cuda); cuda greyed out without a GPU."""
    import torch

    box = QComboBox()
    box.setToolTip(tip("device"))
    box.addItems(["auto", "cpu", "cuda"])
    if not torch.cuda.is_available():
        item = box.model().item(2)
        item.setEnabled(False)
        item.setToolTip("no CUDA GPU found")
    return box
