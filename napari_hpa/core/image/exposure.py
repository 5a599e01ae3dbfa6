"""Blank and saturated images: no signal to classify, so no answer to trust.

A model gives probabilities for any input, an all-black one too ("Centrosome
0.51"). :func:`exposure_problem` says, in one line, when an image has nothing a
model could read: every plane constant (blank), or the protein plane constant or
mostly at the top of its scale (saturated). The CLI prints it as a warning and
gives no predicted class; the Predict dock shows it beside the result.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..tasks import HPA_COLOR_TO_CHANNEL

#: A plane with at least this share of its pixels at the maximum (1.0) is saturated.
SATURATED_FRACTION = 0.5
_PROTEIN = "protein"


def _value(v: float) -> str:
    return f"{v:.3g}"


def exposure_problem(data: np.ndarray, channel_names: Sequence[str]) -> str | None:
    """Return why ``data`` (C, H, W) in [0, 1] holds no usable signal, or None if it does.

    Checks every plane for a constant value, and the protein plane (``protein``, or
    ``green`` for an HPA set's colour name; every plane when none is named so) for a
    constant value or :data:`SATURATED_FRACTION` of its pixels at 1.0.
    """
    arr = np.asarray(data)
    if arr.ndim != 3 or arr.size == 0:
        return None
    names = [HPA_COLOR_TO_CHANNEL.get(n.strip().lower(), n.strip().lower()) for n in channel_names]
    lo = arr.min(axis=(1, 2))
    hi = arr.max(axis=(1, 2))
    flat = lo == hi
    if flat.all():
        values = sorted({_value(float(v)) for v in lo})
        which = f"every pixel is {values[0]}" if len(values) == 1 else "every plane is constant"
        word = "saturated" if bool((lo >= 1.0).all()) else "blank"
        return f"{word} image ({which}): nothing to classify, the probabilities mean nothing"
    if _PROTEIN in names:  # the plane the model classifies
        i = names.index(_PROTEIN)
        if flat[i]:
            word = "saturated" if lo[i] >= 1.0 else "blank"
            return (
                f"{word} {channel_names[i]} channel (every pixel is {_value(float(lo[i]))}): "
                "nothing to classify, the probabilities mean nothing"
            )
        share = float(np.mean(arr[i] >= 1.0))
        where = f"the {channel_names[i]} channel"
    else:
        share = min(float(np.mean(plane >= 1.0)) for plane in arr)
        where = "every channel" if arr.shape[0] > 1 else "the image"
    if share >= SATURATED_FRACTION:
        return (
            f"saturated image ({share:.0%} of the pixels of {where} are at the maximum): "
            "the probabilities mean little"
        )
    return None
