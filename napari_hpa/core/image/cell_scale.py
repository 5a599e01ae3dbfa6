"""A field's first look before segmenting: its scale bar, its nucleus size, its working scale.

Also the intensity statistics :mod:`.cells` shares (robust normalisation, Otsu).
:mod:`.cells` segments at one working resolution. A fixed one fails both ways: the HPA
composites (820 px, one to three cells) are zoomed in so far that at full size the nucleus
stain's texture falls apart into a hundred specks, while a 1728-px RGBY field of a dozen
cells is fine at half size. So the scale is read from the image: the nucleus channel's
foreground gives the size of a typical nucleus, and the image is reduced until that
nucleus has about :data:`TARGET_NUCLEUS_RADIUS` pixels, the size :func:`.cells.segment_cells`
is tuned for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

__all__ = [
    "below_otsu",
    "downscale",
    "normalize",
    "nucleus_is_empty",
    "nucleus_radius",
    "otsu",
    "subsample",
    "upsample",
    "working_factor",
]

#: Median nucleus radius (pixels) to segment at. segment_cells' smoothing, seed spacing
#: and fragment filters work for radii of about 10 to 60 px; the HPA composites come out
#: best near 25 (their nuclei have about 100 px at full size).
TARGET_NUCLEUS_RADIUS = 25.0
#: The working image keeps at least this many pixels on its longer side, whatever the
#: nuclei seem to measure (a wrong estimate must not shrink the image to nothing).
MIN_WORKING_SIDE = 128
#: Longer side (pixels) of the reduced copy the nucleus size is measured on: coarse enough
#: that a nucleus's texture does not split it, fine enough for nuclei of 5 px and up.
SURVEY_SIDE = 384
#: A nucleus channel whose bright end (99.5th percentile) is below this fraction of the
#: cell-body channels' holds no nuclear stain: some HPA composites paint a nuclear
#: protein's green over the blue, and what is left of the blue is JPEG noise.
EMPTY_NUCLEUS_RATIO = 0.25


def subsample(img: np.ndarray, n: int = 512) -> np.ndarray:
    """Strided subsample of about ``n`` x ``n`` pixels (fast statistics)."""
    return img[:: max(1, img.shape[0] // n), :: max(1, img.shape[1] // n)]


def normalize(img: np.ndarray) -> np.ndarray | None:
    """Float32 copy scaled to [0, 1] by robust percentiles; ``None`` if the image is flat."""
    img = np.asarray(img, dtype=np.float32)
    if not np.isfinite(img).all():
        img = np.nan_to_num(img, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = np.percentile(subsample(img, 256), (0.5, 99.8))
    if hi - lo <= 1e-6:
        lo, hi = float(img.min()), float(img.max())
        if hi - lo <= 1e-6:
            return None
    out = (img - lo) / (hi - lo)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def otsu(img: np.ndarray) -> float | None:
    """Otsu threshold on a subsample, ``None`` when the image has a single grey level."""
    sample = subsample(img)
    if float(sample.max()) - float(sample.min()) <= 1e-6:
        return None
    return float(threshold_otsu(sample))


def below_otsu(img: np.ndarray, threshold: float, factor: float) -> float:
    """``background + factor * (threshold - background)``, background = median below it.

    A factor below 1 keeps the dim rims of nuclei and cells that Otsu cuts off.
    """
    sample = subsample(img)
    below = sample[sample <= threshold]
    bg = float(np.median(below)) if below.size else 0.0
    return bg + factor * (threshold - bg)


def foreground(img: np.ndarray, sigma: float, factor: float) -> np.ndarray | None:
    """Return the mask of a smoothed, normalised image above ``factor`` of its Otsu level.

    None for a flat image (nothing to threshold). The nucleus scale, a stain-free
    field's foreground and its cell bodies all start from this mask.
    """
    norm = normalize(img)
    if norm is None:
        return None
    smooth = ndi.gaussian_filter(norm, sigma)
    thr = otsu(smooth)
    if thr is None:
        return None
    return smooth > below_otsu(smooth, thr, factor)


def downscale(img: np.ndarray, f: int) -> np.ndarray:
    """Block mean by an integer factor (edges padded by repetition), as float32."""
    if f <= 1:
        return img.astype(np.float32, copy=False)
    h, w = img.shape
    ph, pw = (-h) % f, (-w) % f
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw)), mode="edge")
    out = np.zeros((img.shape[0] // f, img.shape[1] // f), dtype=np.float32)
    for dy in range(f):
        for dx in range(f):
            out += img[dy::f, dx::f]
    out *= 1.0 / (f * f)
    return out


def upsample(labels: np.ndarray, f: int, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour upsampling by an integer factor, cropped to ``shape``."""
    if f <= 1:
        return labels
    big = np.repeat(np.repeat(labels, f, axis=0), f, axis=1)
    return np.ascontiguousarray(big[: shape[0], : shape[1]])


def nucleus_radius(nucleus: np.ndarray, side: int = SURVEY_SIDE) -> float | None:
    """Radius (full-resolution pixels) of a typical nucleus, from the foreground components.

    Measured on a copy reduced to about ``side`` pixels, where a nucleus's texture no
    longer splits it. "Typical" is the area-weighted median: the nucleus the median
    foreground pixel belongs to, so specks of noise weigh nothing. Touching nuclei
    count as one, which overestimates by at most about 1.4x.

    Returns
    -------
    float or None
        None for a flat or foreground-filled channel (nothing to measure).
    """
    f0 = max(1, math.ceil(max(nucleus.shape) / side))
    mask = foreground(downscale(nucleus, f0), 1.0, 0.6)
    if mask is None:
        return None
    if mask.mean() > 0.9:
        return None
    lab, n = ndi.label(ndi.binary_fill_holes(mask))
    if n == 0:
        return None
    areas = np.sort(np.bincount(lab.ravel())[1:].astype(np.float64))
    areas = areas[areas >= max(4.0, 2e-4 * mask.size)]
    if areas.size == 0:
        return None
    weighted = areas[np.searchsorted(np.cumsum(areas) / areas.sum(), 0.5)]
    return math.sqrt(float(weighted) / math.pi) * f0


def working_factor(shape: tuple[int, int], max_size: int, radius: float | None) -> int:
    """Return the integer reduction to segment at.

    At least what ``max_size`` asks (the longer side at most ``max_size``; 0 = no
    limit); coarser when the nuclei have more than :data:`TARGET_NUCLEUS_RADIUS`
    pixels there, but never below :data:`MIN_WORKING_SIDE` pixels.
    """
    longest = max(shape)
    f = max(1, math.ceil(longest / max_size)) if max_size else 1
    if radius is not None and radius > 0:
        by_size = min(int(radius // TARGET_NUCLEUS_RADIUS), max(1, longest // MIN_WORKING_SIDE))
        f = max(f, by_size)
    return f


def nucleus_is_empty(nucleus: np.ndarray, bodies: Sequence[np.ndarray]) -> bool:
    """Tell whether the nucleus channel holds no stain beside the cell-body channels.

    Compares the bright ends (99.5th percentiles) of channels read on one scale (a
    composite, or an HPA set scaled jointly); without a body channel there is nothing
    to compare, and the nucleus channel is taken as it is.
    """
    if not bodies:
        return False
    top = max(float(np.percentile(subsample(b), 99.5)) for b in bodies)
    if top <= 0:
        return False
    return float(np.percentile(subsample(nucleus), 99.5)) < EMPTY_NUCLEUS_RATIO * top
