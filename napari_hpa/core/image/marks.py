"""Burnt-in scale bars: found before segmenting, and blanked before the network sees an image.

The Human Protein Atlas shows every image with a white scale bar drawn into its
pixels, and users open those images. White in every channel, a bar would be a
bright "nucleus" with a bright "body" to the segmentation, and a saturated
structure in the protein channel to the network, which was trained with the bars
blanked. :func:`scale_bar_mask` finds one; :func:`blank_marks` sets it to 0 for the
tiling that every prediction path shares, on dark (fluorescence) composites only:
a bright-field image (H&E, plankton) is mostly near-white, and its white is tissue.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: A pixel is "white" (a burnt-in scale bar or text) when every channel is above this.
WHITE_LEVEL = 0.6
#: A fluorescence image: its median is below this share of its maximum.
DARK_MEDIAN = 0.25
#: Pixels of halo around a bar that go too (JPEG blurs its edge).
HALO = 2


def scale_bar_mask(data: np.ndarray) -> np.ndarray | None:
    """Pixels of a burnt-in scale bar: a thin, straight, white bar near the top or bottom.

    Every HPA composite has one (lower right). White in every channel, it would be a
    bright "nucleus" with a bright "body", so it must go before segmenting. Only a
    filled bar at least 4 times as long as it is thick, at most 3 % of the image thick
    and in the outer fifth of the rows counts, so a bright cell is never taken for one.

    Parameters
    ----------
    data
        (C, H, W) image in [0, 1], C >= 2 (one channel cannot tell white from bright).

    Returns
    -------
    np.ndarray or None
        (H, W) bool mask, grown by 2 px for the JPEG halo; None when there is no bar.
    """
    if data.ndim != 3 or data.shape[0] < 2:
        return None
    h, w = data.shape[1:]
    white = data.min(axis=0) > WHITE_LEVEL
    if not white.any():
        return None
    rows, cols = np.flatnonzero(white.any(axis=1)), np.flatnonzero(white.any(axis=0))
    r0, c0 = max(0, int(rows[0]) - HALO), max(0, int(cols[0]) - HALO)  # label only there
    window = (slice(r0, int(rows[-1]) + 1 + HALO), slice(c0, int(cols[-1]) + 1 + HALO))
    lab, n = ndi.label(white[window])
    bar = np.zeros((h, w), dtype=bool)
    inner = bar[window]
    thin_max = max(2.0, 0.03 * min(h, w))
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        bh, bw = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        thick, long = min(bh, bw), max(bh, bw)
        area = int((lab[sl] == i).sum())
        centre = r0 + (sl[0].start + sl[0].stop) / 2
        near_edge = centre < 0.2 * h or centre > 0.8 * h
        if (
            thick <= thin_max
            and long >= 4 * thick
            and long >= 0.03 * max(h, w)
            and area >= 0.6 * bh * bw
            and near_edge
        ):
            grown = tuple(slice(max(0, s.start - HALO), s.stop + HALO) for s in sl)
            inner[grown] |= ndi.binary_dilation(lab[grown] == i, iterations=HALO)
    if not bar.any():
        return None
    return bar


def blank_marks(data: np.ndarray) -> np.ndarray:
    """Return ``data`` with its scale bar set to 0 (a copy only if it has one).

    Only a dark-background image of 3 or more channels qualifies: a fluorescence
    composite, not a bright-field image or a lone channel.
    """
    x = np.asarray(data)
    if x.ndim != 3 or x.shape[0] < 3 or x.size == 0:
        return data
    top = float(np.max(x))
    step = max(1, int(np.sqrt(x[0].size / 250_000)))  # the median of ~250k pixels is enough
    if not np.isfinite(top) or float(np.median(x[:, ::step, ::step])) > DARK_MEDIAN * top:
        return data
    bar = scale_bar_mask(x)
    if bar is None:
        return data
    out = np.array(x, copy=True)
    out[:, bar] = 0
    return out
