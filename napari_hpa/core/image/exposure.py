"""Blank and saturated images: no signal to classify, so no answer to trust.

A model gives probabilities for any input, an all-black one too ("Centrosome
0.51"). :func:`exposure_problem` says, in one line, when an image has nothing a
model could read: one value everywhere (blank, or saturated at 1.0), or the protein
plane constant or mostly at the top of its scale. The CLI prints it as a warning and
gives no predicted class; the Predict dock shows it beside the result.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: A plane with at least this share of its pixels at the maximum (1.0) is saturated.
SATURATED_FRACTION = 0.5
_PROTEIN = "protein"


def _value(v: float) -> str:
    return f"{v:.3g}"


def exposure_problem(data: np.ndarray, channel_names: Sequence[str]) -> str | None:
    """Return why ``data`` (C, H, W) in [0, 1] holds no usable signal, or None if it does.

    Checks the whole image for a single value, and the ``protein`` plane (of an HPA
    set, or mapped by name; every plane when there is none: an RGB file's green is
    not necessarily a protein) for a constant value or :data:`SATURATED_FRACTION` of
    its pixels at 1.0.
    """
    arr = np.asarray(data)
    if arr.ndim != 3 or arr.size == 0:
        return None
    names = [n.strip().lower() for n in channel_names]
    lo = arr.min(axis=(1, 2))
    hi = arr.max(axis=(1, 2))
    flat = lo == hi
    if flat.all() and (lo == lo[0]).all():  # one value everywhere (a uniform colour is not)
        word = "saturated" if lo[0] >= 1.0 else "blank"
        return (
            f"{word} image (every pixel is {_value(float(lo[0]))}): nothing to classify, "
            "the probabilities mean nothing"
        )
    if _PROTEIN in names and arr[0].size > 1:  # the plane the model classifies
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
