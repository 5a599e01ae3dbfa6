"""What the Predict dock writes about a result: its status line and the canvas text.

Plain text from a :class:`~napari_hpa.widgets._shared.session.PredictionResult`
(no Qt); :func:`~napari_hpa.widgets._shared.canvas_text.show_text` puts it on the canvas.
:class:`StatusLine` also warns once per result, with a napari notification, that a
blank or saturated image has no answer.
"""

from __future__ import annotations

from .._shared.session import PredictionResult
from .._shared.wording import counted

#: Classes listed on the canvas (the most probable first).
OVERLAY_LINES = 5


def status_text(result: PredictionResult) -> str:
    """``<image>: <predicted classes> · <n> cells · <seconds> s on <backend>``.

    The backend is said because ``auto`` chooses it (by measurement, on a CPU).
    """
    pred = result.prediction
    names = [pred.classes[c] for c in result.order() if c in set(pred.predicted)]
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return (
        f"{result.image.image_id}: {shown or 'nothing'}"
        + (f" · {counted(len(result.cells), 'cell')}" if result.labels is not None else "")
        + f" · {sum(result.timings.values()):.1f} s"
        + (f" on {result.predictor.backend}" if result.predictor is not None else "")
    )


def overlay_text(result: PredictionResult, lines: int = OVERLAY_LINES) -> str:
    """Write the image and model, then the ``lines`` most probable classes (✓ = predicted)."""
    pred = result.prediction
    out = [f"{result.image.image_id} · {pred.model_id}"]
    chosen = set(pred.predicted)
    for c in result.order()[:lines]:
        mark = "✓" if c in chosen else "  "
        out.append(f"{mark} {pred.classes[c]}  {pred.probabilities[c]:.2f}")
    more = len(chosen - set(result.order()[:lines]))
    if more:
        out.append(f"   + {more} more predicted")
    return "\n".join(out)


class StatusLine:
    """The Predict dock's status line, which warns once per result of a blank image."""

    def __init__(self) -> None:
        self._warned: PredictionResult | None = None

    def text(self, result: PredictionResult, no_nucleus: bool = False) -> str:
        """``[Warning: <image>: <problem>. ]<status_text>[ · no cells ...]``.

        The problem (blank or saturated, ``result.exposure``) was measured in the
        worker; the first time a result is shown with one, it is also a notification.
        """
        problem = result.exposure
        if problem and self._warned is not result:
            from napari.utils.notifications import show_warning

            show_warning(f"{result.image.image_id}: {problem}")
        self._warned = result
        warning = f"Warning: {result.image.image_id}: {problem}. " if problem else ""
        note = " · no cells: the image has no nucleus channel" if no_nucleus else ""
        return warning + status_text(result) + note
