"""The Predict dock's "Channels" box: which image layer feeds each channel of the model.

One combo per model channel, filled with the viewer's image planes and
assigned from the layers' metadata, names and colours (:func:`layers.auto_assign`);
a channel the user picked by hand is kept when layers come and go. It reads the
chosen planes for a prediction, or says why it cannot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QWidget

from ... import layers as L
from ...core.model.registry import ModelEntry
from .._shared.scrolling import narrow_combo
from .._shared.session import PredictState
from .._shared.tooltips import tip

NONE_LABEL = "(none)"

#: What :meth:`ChannelBox.collect` gives for a prediction: planes by model channel,
#: the choices they came from, and whether a gray model averages the image's channels.
Collected = tuple[dict[str, np.ndarray], list[L.ChannelChoice], bool]


class ChannelBox(QGroupBox):
    """The channel assignment of the Predict dock, kept in ``state.assignment``.

    Parameters
    ----------
    state
        The dock's state: ``assignment`` (model channel -> choice) and ``manual``
        (channels picked by hand) are read and written here.
    """

    def __init__(self, state: PredictState, parent: QWidget | None = None) -> None:
        super().__init__("Channels", parent)
        self.state = state
        self.setToolTip(tip("channels"))
        self.form = QFormLayout(self)
        self._combos: dict[str, QComboBox] = {}
        self._choices: dict[str, list[Any]] = {}

    def rebuild(self, entry: ModelEntry | None, layers: Sequence[Any]) -> None:
        """One combo per channel of ``entry``, filled with ``layers``' planes, auto-assigned."""
        while self.form.rowCount():
            self.form.removeRow(0)
        self._combos.clear()
        self._choices.clear()
        if entry is None:
            return
        choices = L.channel_choices(list(layers))
        auto = L.auto_assign(entry.spec.input.channels, choices)
        optional = set(entry.spec.input.optional_channels)
        gray = tuple(entry.spec.input.channels) == ("gray",)
        for channel in entry.spec.input.channels:
            options: list[Any] = [None] + ([L.AVERAGE] if gray and len(choices) > 1 else [])
            options += choices
            combo = QComboBox()
            narrow_combo(combo, 10)
            for opt in options:
                combo.addItem(
                    NONE_LABEL if opt is None else opt if isinstance(opt, str) else opt.label
                )
            previous = self.state.assignment.get(channel)
            keep = channel in self.state.manual and index_of(options, previous) is not None
            pick = previous if keep else auto.get(channel)
            combo.setCurrentIndex(index_of(options, pick) or 0)
            combo.currentIndexChanged.connect(lambda i, c=channel: self._on_picked(c, i))
            self._combos[channel] = combo
            self._choices[channel] = options
            self.state.assignment[channel] = options[combo.currentIndex()]
            label = channel + (" (optional)" if channel in optional else "")
            self.form.addRow(label, combo)
        for stale in set(self.state.assignment) - set(entry.spec.input.channels):
            del self.state.assignment[stale]

    def _on_picked(self, channel: str, index: int) -> None:
        self.state.manual.add(channel)
        self.state.assignment[channel] = self._choices[channel][index]

    def collect(self, entry: ModelEntry | None, layers: Sequence[Any]) -> Collected | str:
        """Planes (views, no copies) per model channel, or the reason they cannot be had."""
        if entry is None:
            return "No model selected: train or install a model, then press ↻."
        optional = set(entry.spec.input.optional_channels)
        planes: dict[str, np.ndarray] = {}
        used: list[L.ChannelChoice] = []
        choices = L.channel_choices(list(layers))
        if not choices:
            return "No image layers: open an image first (File > Open, or drag it in)."
        missing = []
        for channel in entry.spec.input.channels:
            pick = self.state.assignment.get(channel)
            if pick == L.AVERAGE:
                source_id = L.meta(choices[-1].layer).get("source")
                same = [c for c in choices if L.meta(c.layer).get("source") == source_id]
                return {f"c{i}": c.plane() for i, c in enumerate(same)}, same, True
            if pick is None:
                if channel not in optional:
                    missing.append(channel)
                continue
            planes[channel] = pick.plane()
            used.append(pick)
        if missing:
            return (
                f"{entry.id} needs the channel(s) {', '.join(missing)}, but no image layer "
                "is chosen for them: pick one under Channels, or choose a model that "
                "reads this image's channels."
            )
        return planes, used, False


def index_of(options: list[Any], value: Any) -> int | None:
    """Position of ``value`` among a combo's options (choices match by layer and plane)."""
    for i, opt in enumerate(options):
        if opt is value or (isinstance(opt, str) and opt == value):
            return i
        if (
            isinstance(opt, L.ChannelChoice)
            and isinstance(value, L.ChannelChoice)
            and opt.layer is value.layer
            and opt.index == value.index
        ):
            return i
    return None
