"""The text napari-hpa writes on the canvas, over the image (the viewer's text overlay)."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QFont, QFontMetricsF

from .session import real_viewer

if TYPE_CHECKING:
    import napari

#: Point size of the canvas text.
FONT_SIZE = 9
#: The family napari draws canvas text in (Qt substitutes a like font where it is missing).
FONT_FAMILY = "Open Sans"
#: Pixels of the canvas width kept free: the overlay's offset from the edge and its box.
MARGIN_PX = 40
#: napari sizes canvas text at 96 dpi where Qt measures points at 72.
_DPI_RATIO = 96 / 72


def show_text(viewer: napari.Viewer, text: str | None, max_lines: int | None = None) -> None:
    """Show ``text`` at the canvas's top left (white on a box); None hides it.

    napari draws the overlay on one line per line of ``text``, however wide, so
    a long line ran off the canvas: each line is wrapped at spaces to the
    canvas width, and wrapped again when the canvas is resized. With
    ``max_lines`` the text ends with "…" after that many lines.

    Through ``viewer.canvas.overlays.text``: ``viewer.text_overlay`` is deprecated
    since napari 0.9 and warns (a toast in the viewer).
    """
    overlay = viewer.canvas.overlays.text
    fitter = _fitter(viewer)
    fitter.text, fitter.max_lines = text, max_lines
    if text is None:
        overlay.visible = False
        return
    overlay.font_size = FONT_SIZE
    overlay.color = "white"
    overlay.position = "top_left"
    overlay.box = True
    fitter.refit()
    overlay.visible = True


def fit_lines(text: str, width_px: float, max_lines: int | None = None) -> list[str]:
    """Wrap each line of ``text`` at spaces to ``width_px`` canvas pixels; elide the rest.

    A word wider than the canvas is cut with "…"; past ``max_lines`` lines the
    last one shown ends with "…".
    """
    metrics = QFontMetricsF(QFont(FONT_FAMILY, FONT_SIZE))
    room = max(1.0, width_px / _DPI_RATIO)  # in the font's own (72 dpi) units

    def fits(line: str) -> bool:
        return metrics.horizontalAdvance(line) <= room

    def elide(line: str) -> str:
        return metrics.elidedText(line, Qt.ElideRight, room)

    out: list[str] = []
    for given in text.split("\n"):
        if fits(given):  # kept as it is, its spaces too (Predict aligns its columns)
            out.append(given)
            continue
        line = ""
        for word in given.split(" "):
            trial = f"{line} {word}" if line else word
            if fits(trial):
                line = trial
            elif not line:
                line = elide(word)  # one word wider than the canvas
            else:
                out.append(line)
                line = word if fits(word) else elide(word)
        out.append(line)
    if max_lines is not None and len(out) > max_lines:
        last = out[max_lines - 1] + " …"
        out = [*out[: max_lines - 1], last if fits(last) else elide(last)]
    return out


class _Fitter:
    """The full text of one viewer's overlay, wrapped again when its canvas is resized."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = weakref.ref(viewer)
        self.text: str | None = None
        self.max_lines: int | None = None

    def refit(self, *_: Any) -> None:
        viewer = self.viewer()
        if viewer is None or self.text is None:
            return
        width = float(viewer.canvas.size[1]) - MARGIN_PX  # size is (height, width)
        lines = fit_lines(self.text, width, self.max_lines)
        viewer.canvas.overlays.text.text = "\n".join(lines)


# One per real viewer (the docks get proxies of it), dropped with the viewer. Held here:
# napari's events hold a bound method's object weakly.
_FITTERS: dict[int, _Fitter] = {}


def _fitter(viewer: napari.Viewer) -> _Fitter:
    real = real_viewer(viewer)
    key = id(real)
    fitter = _FITTERS.get(key)
    if fitter is None or fitter.viewer() is not real:
        fitter = _Fitter(real)
        real.canvas.events.size.connect(fitter.refit)
        _FITTERS[key] = fitter
        weakref.finalize(real, _drop, key, fitter)
    return fitter


def _drop(key: int, fitter: _Fitter) -> None:
    if _FITTERS.get(key) is fitter:
        del _FITTERS[key]
