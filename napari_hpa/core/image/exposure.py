"""Blank and saturated images: no signal to classify, so no answer to trust.

A model gives probabilities for any input, an all-black one too ("Centrosome
0.51"). :func:`exposure_problem` says, in one line, when an image has nothing a
model could read: one value everywhere (blank, or saturated at 1.0), or the protein
plane constant or mostly at the top of its scale. The CLI prints it as a warning and
gives no predicted class; ``batch`` writes a ``warning`` row; the Predict dock shows it
beside the result.

Which end of the scale is "saturated" depends on the model. Fluorescence (the HPA
models) is dark where there is nothing, so most of an image at 1.0 is clipped. A
bright-field model (its input spec says ``invert``: dark objects on white, the bundled
plankton model) sees a white background in every good image (three quarters of a
typical plankton image is at 1.0), so there it is most of an image at 0.0 that is
clipped, and a bright background is normal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: A plane with at least this share of its pixels at the clipped end is saturated.
SATURATED_FRACTION = 0.5
_PROTEIN = "protein"


def _value(v: float) -> str:
    return f"{v:.3g}"


def exposure_problem(
    data: np.ndarray, channel_names: Sequence[str], invert: bool = False
) -> str | None:
    """Return why ``data`` (C, H, W) in [0, 1] holds no usable signal, or None if it does.

    Checks the whole image for a single value, and the ``protein`` plane (of an HPA
    set, or mapped by name; every plane when there is none: an RGB file's green is
    not necessarily a protein) for a constant value or :data:`SATURATED_FRACTION` of
    its pixels clipped.

    Parameters
    ----------
    data, channel_names
        The image as read (after any ``--channels`` map) and its planes' names.
    invert
        The model's ``InputSpec.invert`` (bright field: dark objects on a bright
        background). Then a mostly white image is normal and the clipped end is 0.0;
        a single value everywhere is blank, whichever it is.
    """
    arr = np.asarray(data)
    if arr.ndim != 3 or arr.size == 0:
        return None
    names = [n.strip().lower() for n in channel_names]
    lo = arr.min(axis=(1, 2))
    hi = arr.max(axis=(1, 2))
    flat = lo == hi
    if flat.all() and (lo == lo[0]).all():  # one value everywhere (a uniform colour is not)
        word = "saturated" if lo[0] >= 1.0 and not invert else "blank"
        return (
            f"{word} image (every pixel is {_value(float(lo[0]))}): nothing to classify, "
            "the probabilities mean nothing"
        )
    clipped = 0.0 if invert else 1.0
    if _PROTEIN in names and arr[0].size > 1:  # the plane the model classifies
        i = names.index(_PROTEIN)
        if flat[i]:
            word = "saturated" if lo[i] >= 1.0 and not invert else "blank"
            return (
                f"{word} {channel_names[i]} channel (every pixel is {_value(float(lo[i]))}): "
                "nothing to classify, the probabilities mean nothing"
            )
        share = _share(arr[i], clipped)
        where = f"the {channel_names[i]} channel"
    else:
        share = min(_share(plane, clipped) for plane in arr)
        where = "every channel" if arr.shape[0] > 1 else "the image"
    if share >= SATURATED_FRACTION:
        end = "at 0, black, on a bright-field model" if invert else "at the maximum"
        return (
            f"saturated image ({share:.0%} of the pixels of {where} are {end}): "
            "the probabilities mean little"
        )
    return None


def _share(plane: np.ndarray, clipped: float) -> float:
    """Share of ``plane``'s pixels at the ``clipped`` end of the scale (0.0 or 1.0)."""
    return float(np.mean(plane <= 0.0)) if clipped <= 0.0 else float(np.mean(plane >= 1.0))
