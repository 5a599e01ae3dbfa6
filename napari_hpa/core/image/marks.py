"""Burnt-in white marks (scale bars) on a dark fluorescence composite, found and blanked.

The Human Protein Atlas shows every image with a white scale bar drawn into its
pixels, and users open those images. White is every channel at once near its
brightest: a saturated bar in the protein channel that no stain put there. The
bundled HPA model was trained with those bars blanked, so a prediction blanks
them too (:func:`blank_marks`, called by the tiling every path shares).

Only composites of three or more channels on a dark background qualify: a
bright-field image (H&E, plankton) is mostly near-white, and its white holes are
tissue, not marks. A mark is a small, nearly rectangular, elongated component of
white pixels (an HPA scale bar is about 100 x 8 px at 820 px).
"""

from __future__ import annotations

import numpy as np

#: A pixel is white when every channel is at least this share of the image's maximum.
WHITE = 0.8
#: A fluorescence image: its median is below this share of its maximum.
DARK_MEDIAN = 0.25
#: A mark covers at most this share of the image, and at least MIN_PIXELS.
MAX_SHARE = 0.01
MIN_PIXELS = 12
#: A mark fills at least this share of its bounding box, which is this elongated.
MIN_FILL = 0.7
MIN_ELONGATION = 3.0
#: Pixels of rim around a mark that go too (JPEG blurs the bar's edge).
RIM = 2


def find_marks(data: np.ndarray) -> np.ndarray:
    """Return a (H, W) boolean mask of the burnt-in white marks of a (C, H, W) image.

    Empty (all False) for fewer than 3 channels or a bright background.
    """
    from scipy import ndimage as ndi

    x = np.asarray(data)
    empty = np.zeros(x.shape[-2:], bool)
    if x.ndim != 3 or x.shape[0] < 3 or x.size == 0:
        return empty
    top = float(np.max(x))
    if not np.isfinite(top) or top <= 0:
        return empty
    step = max(1, int(np.sqrt(x[0].size / 250_000)))  # the median of ~250k pixels is enough
    if float(np.median(x[:, ::step, ::step])) > DARK_MEDIAN * top:
        return empty
    white = np.min(x, axis=0) >= WHITE * top
    if not white.any():
        return empty
    rows, cols = np.flatnonzero(white.any(axis=1)), np.flatnonzero(white.any(axis=0))
    r0, c0 = max(0, rows[0] - RIM), max(0, cols[0] - RIM)  # label only where white is
    window = (slice(r0, rows[-1] + 1 + RIM), slice(c0, cols[-1] + 1 + RIM))
    labels, _ = ndi.label(white[window])
    mask = empty[window]
    limit = MAX_SHARE * white.size
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
        area = int((labels[box] == i).sum())
        if not MIN_PIXELS <= area <= limit:
            continue
        if area < MIN_FILL * h * w or max(h, w) < MIN_ELONGATION * min(h, w):
            continue
        # the mark with its anti-aliased (JPEG) rim: dilated within its own box
        grown = tuple(slice(max(0, b.start - RIM), b.stop + RIM) for b in box)
        mask[grown] |= ndi.binary_dilation(labels[grown] == i, iterations=RIM)
    return empty


def blank_marks(data: np.ndarray) -> np.ndarray:
    """Return ``data`` with its burnt-in white marks set to 0 (a copy only if there are any)."""
    mask = find_marks(data)
    if not mask.any():
        return data
    out = np.array(data, copy=True)
    out[:, mask] = 0
    return out
