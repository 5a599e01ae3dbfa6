"""A live training plot that never blocks the GUI: loss and validation macro F1 per epoch.

Drawing even a small matplotlib figure costs 100-300 ms of CPU on a busy
laptop (measured: 230 ms with a constrained layout, ~100 ms without, on 2
shared cores), far above the 100 ms a user notices. So the figure is not a
``FigureCanvasQTAgg`` drawn on the GUI thread: :func:`render_history` draws it
with the Agg backend in a napari thread worker, and :class:`TrainingPlot` (a
QLabel) shows the finished bitmap. Only the newest request is drawn; older ones
are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel, QSizePolicy

from .._shared.background import run_in_background

_TRAIN = "#4c9be8"
_VAL = "#f28e2b"
_F1 = "#59a14f"
_BG = "#262930"  # napari's dark theme
_FG = "#d0d0d0"


def render_history(
    history: Sequence[dict[str, Any]],
    epochs: int | None = None,
    parent_f1: float | None = None,
    size: tuple[int, int] = (340, 230),
    child_f1: float | None = None,
    message: str = "",
    dpi: int = 100,
) -> tuple[bytes, int, int]:
    """Draw the plot off-screen; returns RGBA bytes, width and height in pixels.

    ``history`` rows are dicts with ``epoch``, ``train_loss``, ``val_loss`` and
    ``val_macro_f1`` (None where missing); ``parent_f1`` and ``child_f1``, the two
    models' macro F1 on the held-out images, are drawn as a dotted line and a star.
    Safe to call from a worker thread: it uses its own Figure and Agg canvas, never pyplot.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    w, h = max(160, int(size[0])), max(120, int(size[1]))
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi, facecolor=_BG)
    canvas = FigureCanvasAgg(fig)
    # Fixed margins in pixels, so the axes do not jump when the numbers change.
    fig.subplots_adjust(left=46 / w, right=1 - 10 / w, bottom=30 / h, top=1 - 8 / h, hspace=0.12)
    ax_loss, ax_f1 = fig.subplots(2, 1, sharex=True)
    for a in (ax_loss, ax_f1):
        a.set_facecolor(_BG)
        a.tick_params(colors=_FG, labelsize=7, length=2, pad=2)
        a.grid(color="#3a3d45", linewidth=0.6)
        for spine in a.spines.values():
            spine.set_color("#6a6a6a")
    ax_loss.set_ylabel("loss", color=_FG, fontsize=8, labelpad=2)
    ax_f1.set_ylabel("macro F1", color=_FG, fontsize=8, labelpad=2)
    ax_f1.set_xlabel("epoch", color=_FG, fontsize=8, labelpad=1)
    ax_f1.set_ylim(0, 1)
    xs = [int(r["epoch"]) if r.get("epoch") is not None else i + 1 for i, r in enumerate(history)]
    for key, label, color, axis in (
        ("train_loss", "train", _TRAIN, ax_loss),
        ("val_loss", "validation", _VAL, ax_loss),
        ("val_macro_f1", "validation", _F1, ax_f1),
    ):
        pts = [
            (x, float(r[key])) for x, r in zip(xs, history, strict=True) if r.get(key) is not None
        ]
        if pts:
            axis.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                "-o",
                color=color,
                label=label,
                markersize=3,
                linewidth=1.4,
            )
    right = max(epochs or 0, max(xs, default=1))
    if parent_f1 is not None:
        ax_f1.axhline(
            parent_f1, color="#b0b0b0", linestyle=":", linewidth=1.2, label="parent, held out"
        )
    if child_f1 is not None:
        ax_f1.plot(
            [right],
            [child_f1],
            "*",
            color=_F1,
            markersize=9,
            markeredgecolor=_FG,
            markeredgewidth=0.6,
            label="new, held out",
        )
    ax_f1.set_xlim(0.5, right + 0.5)
    ax_f1.set_xticks(range(1, right + 1, max(1, right // 8)))
    for a in (ax_loss, ax_f1):
        if a.get_legend_handles_labels()[0]:
            a.legend(
                loc="best",
                fontsize=7,
                frameon=False,
                labelcolor=_FG,
                handlelength=1.2,
                borderaxespad=0.2,
            )
    if message:
        ax_loss.text(
            0.5,
            0.5,
            message,
            ha="center",
            va="center",
            color="#a0a0a0",
            fontsize=8,
            transform=ax_loss.transAxes,
        )
    canvas.draw()
    buf = canvas.buffer_rgba()
    return bytes(buf), int(buf.shape[1]), int(buf.shape[0])


class TrainingPlot(QLabel):
    """Shows the training curves; :meth:`set_history` returns at once, drawing happens off-thread.

    Attributes
    ----------
    history
        The rows last asked for (what the plot shows once drawn).
    renders
        How many bitmaps have been shown (tests wait on it).
    """

    def __init__(self, parent: Any = None, height_px: int = 230) -> None:
        super().__init__(parent)
        self.setMinimumHeight(height_px)
        self.setMinimumWidth(200)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setAlignment(Qt.AlignCenter)
        self.setStyleSheet(f"background-color: {_BG};")
        self.history: list[dict[str, Any]] = []
        self.renders = 0
        self._args: dict[str, Any] = {
            "epochs": None,
            "parent_f1": None,
            "child_f1": None,
            "message": "",
        }
        self._worker: Any = None  # the drawing in flight
        self._dirty = False
        self._closed = False
        self._resize_timer = QTimer(self)
        self._resize_timer.setSingleShot(True)
        self._resize_timer.setInterval(150)
        self._resize_timer.timeout.connect(self._request)

    @property
    def busy(self) -> bool:
        """True while a drawing is pending."""
        return self._worker is not None or self._dirty

    def clear(self, message: str = "") -> None:
        """Empty axes with an optional centred message."""
        self.history = []
        self._args = {"epochs": None, "parent_f1": None, "child_f1": None, "message": message}
        self._request()

    def set_history(
        self,
        history: Sequence[dict[str, Any]],
        epochs: int | None = None,
        parent_f1: float | None = None,
        child_f1: float | None = None,
    ) -> None:
        """Redraw from per-epoch rows, with the held-out scores when known."""
        self.history = [dict(r) for r in history]
        self._args = {"epochs": epochs, "parent_f1": parent_f1, "child_f1": child_f1, "message": ""}
        self._request()

    def _size(self) -> tuple[int, int]:
        ratio = self.devicePixelRatioF() if hasattr(self, "devicePixelRatioF") else 1.0
        w = self.width() if self.isVisible() else max(self.minimumWidth(), 340)
        return int(w * ratio), int(max(self.height(), self.minimumHeight()) * ratio)

    def _request(self) -> None:
        self._dirty = True
        if self._worker is None and not self._closed:
            self._start()

    def _start(self) -> None:
        self._dirty = False
        args = dict(self._args)
        self._worker = run_in_background(
            render_history,
            list(self.history),
            epochs=args["epochs"],
            parent_f1=args["parent_f1"],
            size=self._size(),
            child_f1=args["child_f1"],
            message=args["message"],
            done=self._on_drawn,
            errored=self._on_failed,
        )

    def _on_drawn(self, drawn: tuple[bytes, int, int]) -> None:
        if self._closed:
            return
        data, w, h = drawn
        image = QImage(data, w, h, 4 * w, QImage.Format_RGBA8888).copy()
        pixmap = QPixmap.fromImage(image)
        if hasattr(pixmap, "setDevicePixelRatio") and hasattr(self, "devicePixelRatioF"):
            pixmap.setDevicePixelRatio(self.devicePixelRatioF())
        self.setPixmap(pixmap)
        self.renders += 1
        self._next()

    def _on_failed(self, exc: BaseException) -> None:
        if self._closed:
            return
        self.setText(f"(plot unavailable: {exc})")  # a plot must never break the widget
        self._next()

    def _next(self) -> None:
        """End a drawing: draw the newest request if one came in meanwhile."""
        self._worker = None
        if self._dirty:
            self._start()

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        """Redraw at the new size once the resizing pauses (150 ms), not at every step."""
        super().resizeEvent(event)
        self._resize_timer.start()

    def shutdown(self) -> None:
        """Stop drawing (call when the widget closes); a drawing in flight is dropped."""
        self._closed = True
        self._resize_timer.stop()
