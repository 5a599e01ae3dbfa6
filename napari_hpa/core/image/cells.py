"""Cell segmentation with scikit-image: nucleus seeds + watershed on the cell channels.

No deep model: nuclei are found by Otsu thresholding of the (smoothed) nucleus channel and
split with a distance-transform watershed; cells grow from the nuclei by a watershed on the
inverted, smoothed cell-body signal (microtubules + ER), restricted to a foreground mask
thresholded below Otsu. Every cell keeps the label id of its nucleus. Images are
segmented at a resolution chosen from the image itself (the size of its nuclei, see
:mod:`.cell_scale`, which also finds burnt-in scale bars) and the labels upsampled with
nearest neighbour.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.feature import peak_local_max
from skimage.segmentation import expand_labels, watershed

from .cell_scale import (
    below_otsu,
    downscale,
    foreground,
    normalize,
    nucleus_is_empty,
    nucleus_radius,
    otsu,
    upsample,
    working_factor,
)
from .marks import scale_bar_mask

__all__ = ["segment_nuclei", "segment_cells", "segment_image", "cell_crops", "cell_properties"]

#: Channel names (lower case) read as the nucleus stain, in order of preference.
NUCLEUS_NAMES: tuple[str, ...] = ("nucleus", "nuclei", "dapi", "hoechst", "dna", "blue")
#: Channel names (lower case) summed into the cell-body signal.
BODY_NAMES: tuple[str, ...] = ("microtubules", "tubulin", "er", "cytoplasm", "red", "yellow")


def _remove_small(mask: np.ndarray, min_size_frac: float, rel_median: float = 0.15) -> np.ndarray:
    """Drop components smaller than a fraction of the image and of the median component."""
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    areas = np.bincount(lab.ravel())
    areas[0] = 0
    min_size = max(8.0, min_size_frac * mask.size)
    big = areas[1:][areas[1:] >= min_size]
    if big.size:
        min_size = max(min_size, rel_median * float(np.median(big)))
    keep = areas >= min_size
    keep[0] = False
    return keep[lab]


def segment_nuclei(
    nucleus: np.ndarray,
    *,
    sigma: float = 2.0,
    min_size_frac: float = 5e-5,
    threshold_factor: float = 0.6,
    split: bool = True,
    split_ratio: float = 0.5,
    merge_ratio: float = 0.75,
) -> np.ndarray:
    """Segment nuclei in a nucleus-stain image.

    Parameters
    ----------
    nucleus
        (H, W) image of any numeric dtype.
    sigma
        Gaussian smoothing (pixels) before thresholding.
    min_size_frac
        Objects smaller than this fraction of the image (or 15 % of the median nucleus) go.
    threshold_factor
        Threshold = background + factor * (Otsu - background); < 1 keeps dim rims, 1 = Otsu.
    split
        Split touching nuclei with a distance-transform watershed.
    split_ratio
        Minimum distance between nucleus centres, in median nucleus radii.
    merge_ratio
        Split parts are merged back when their neck is wider than this fraction of the
        thinner part (distance-transform saddle / peak); 1 never merges.

    Returns
    -------
    np.ndarray
        (H, W) int32 labels, 0 = background, nuclei numbered 1..N. All zeros for a flat image.
    """
    nucleus = np.asarray(nucleus)
    if nucleus.ndim != 2:
        raise ValueError(f"nucleus image must be 2-D, got shape {nucleus.shape}")
    empty = np.zeros(nucleus.shape, dtype=np.int32)
    img = normalize(nucleus)
    if img is None:
        return empty
    smooth = ndi.gaussian_filter(img, sigma) if sigma > 0 else img
    thr = otsu(smooth)
    if thr is None:
        return empty
    mask = smooth > below_otsu(smooth, thr, threshold_factor)
    # A "foreground" covering most of the image means noise or a flat field, not nuclei.
    if mask.mean() > 0.9:
        return empty
    mask = _remove_small(ndi.binary_fill_holes(mask), min_size_frac)
    lab, n = ndi.label(mask)
    if n == 0:
        return empty
    if not split:
        return lab.astype(np.int32)
    areas = np.bincount(lab.ravel())[1:]
    radius = math.sqrt(float(np.median(areas)) / math.pi)
    dist = ndi.distance_transform_edt(mask)
    dist = ndi.gaussian_filter(dist, max(1.0, 0.1 * radius))
    min_dist = max(2, int(round(split_ratio * radius)))
    peaks = peak_local_max(
        dist, min_distance=min_dist, threshold_abs=0.3 * radius, labels=lab, exclude_border=False
    )
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    # Components without a peak (small or thin) keep one marker each.
    has_peak = np.zeros(n + 1, dtype=bool)
    has_peak[lab[tuple(peaks.T)]] = True
    missing = np.flatnonzero(~has_peak[1:]) + 1
    for k, pos in enumerate(ndi.maximum_position(dist, lab, missing) if missing.size else []):
        markers[pos] = len(peaks) + 1 + k
    out = watershed(-dist, markers, mask=mask)
    if merge_ratio < 1:
        # Each region holds its marker, placed at (about) the region's distance maximum.
        peak = np.zeros(int(markers.max()) + 1)
        where = np.nonzero(markers)
        peak[markers[where]] = dist[where]
        out = _merge_necks(out, dist, peak, merge_ratio)
    return _relabel(out)


def _merge_necks(labels: np.ndarray, dist: np.ndarray, peak: np.ndarray, ratio: float):
    """Merge adjacent regions whose shared boundary is nearly as thick as the regions."""
    n = int(labels.max())
    if n < 2:
        return labels
    keys, vals = [], []
    for a, b, da, db in (
        (labels[:, :-1], labels[:, 1:], dist[:, :-1], dist[:, 1:]),
        (labels[:-1], labels[1:], dist[:-1], dist[1:]),
    ):
        edge = (a != b) & (a > 0) & (b > 0)
        lo, hi = np.minimum(a[edge], b[edge]), np.maximum(a[edge], b[edge])
        keys.append(lo.astype(np.int64) * (n + 1) + hi)
        vals.append(np.minimum(da[edge], db[edge]))
    key, val = np.concatenate(keys), np.concatenate(vals)
    if key.size == 0:
        return labels
    order = np.argsort(key, kind="stable")
    key, val = key[order], val[order]
    uniq, start = np.unique(key, return_index=True)
    saddle = np.maximum.reduceat(val, start)
    a, b = np.divmod(uniq, n + 1)
    merge = saddle >= ratio * np.minimum(peak[a], peak[b])
    graph = coo_matrix((np.ones(int(merge.sum())), (a[merge], b[merge])), shape=(n + 1, n + 1))
    comp = connected_components(graph, directed=False)[1] + 1
    comp[0] = 0  # background is never merged: its component holds only itself
    return comp.astype(np.int32)[labels]


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber labels to 1..N keeping their order."""
    ids = np.unique(labels)
    ids = ids[ids != 0]
    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, dtype=np.int32)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return lut[labels]


def segment_cells(
    nucleus: np.ndarray,
    cell_body: np.ndarray | None = None,
    *,
    nuclei: np.ndarray | None = None,
    sigma: float = 2.0,
    body_sigma: float | None = None,
    threshold_factor: float = 0.5,
    grow: float | None = None,
    max_reach: float | None = 3.0,
    min_cell_frac: float = 0.2,
    exclude_border: bool = False,
) -> np.ndarray:
    """Segment cells from nucleus seeds.

    Parameters
    ----------
    nucleus, cell_body
        (H, W) nucleus stain and cell-body signal (e.g. microtubules + ER). Without a body
        signal the cells are the nuclei grown by ``grow`` pixels.
    nuclei
        Precomputed nucleus labels (skips :func:`segment_nuclei`, ``sigma`` is then unused).
    body_sigma
        Smoothing of the body signal; default 15 % of the median nucleus radius (>= 2).
    threshold_factor
        Body foreground = above background + factor * (Otsu - background); < 1 keeps dim edges.
    grow
        Growth (pixels) of nuclei that have no body; default the median nucleus radius.
    max_reach
        A cell reaches at most this many median nucleus radii beyond its nucleus, so regions
        without a stained nucleus are not all swallowed by a neighbour (None = no limit).
    min_cell_frac
        Cells smaller than this fraction of the median cell area are dropped (fragments).
    exclude_border
        Drop cells touching the image border.

    Returns
    -------
    np.ndarray
        (H, W) int32 labels; each cell has the label id of its nucleus.
    """
    nucleus = np.asarray(nucleus)
    if nuclei is None:
        nuclei = segment_nuclei(nucleus, sigma=sigma)
    nuclei = np.asarray(nuclei, dtype=np.int32)
    if not nuclei.any():
        return np.zeros(nuclei.shape, dtype=np.int32)
    areas = np.bincount(nuclei.ravel())[1:]
    radius = math.sqrt(float(np.median(areas[areas > 0])) / math.pi)
    grow_px = float(radius if grow is None else grow)
    body = None if cell_body is None else normalize(np.asarray(cell_body))
    if body is None:
        cells = expand_labels(nuclei, distance=grow_px)
    else:
        bs = body_sigma if body_sigma is not None else max(2.0, 0.15 * radius)
        smooth = ndi.gaussian_filter(body, bs)
        thr = otsu(smooth)
        if thr is None:
            cells = expand_labels(nuclei, distance=grow_px)
        else:
            fg = smooth > below_otsu(smooth, thr, threshold_factor)
            fg = ndi.binary_fill_holes(fg | (nuclei > 0))
            if max_reach is not None:
                fg &= ndi.distance_transform_edt(nuclei == 0) <= max_reach * radius
            cells = watershed(-smooth, nuclei, mask=fg)
            # Nuclei that found (almost) no body: give them a grown nucleus instead.
            cell_area = np.bincount(cells.ravel(), minlength=len(areas) + 1)[1:]
            bare = np.flatnonzero((areas > 0) & (cell_area < 1.3 * areas)) + 1
            if bare.size:
                grown = expand_labels(np.where(np.isin(nuclei, bare), nuclei, 0), grow_px)
                free = (cells == 0) & (grown > 0)
                cells[free] = grown[free]
    cells = cells.astype(np.int32, copy=False)
    return _clean_cells(cells, min_cell_frac, exclude_border)


def _clean_cells(cells: np.ndarray, min_cell_frac: float, exclude_border: bool) -> np.ndarray:
    """Drop tiny cells and, optionally, cells touching the image border."""
    area = np.bincount(cells.ravel())
    area[0] = 0
    present = area > 0
    if not present.any():
        return cells
    drop = present & (area < min_cell_frac * float(np.median(area[present])))
    if exclude_border:
        edge = np.concatenate([cells[0], cells[-1], cells[:, 0], cells[:, -1]])
        drop[np.unique(edge)] = True
    drop[0] = False
    if drop.any():
        cells = np.where(drop[cells], 0, cells).astype(np.int32)
    return cells


def _drop_smaller(cells: np.ndarray, min_area: float) -> np.ndarray:
    """Cells of fewer than ``min_area`` pixels removed (fragments of a nucleus's texture)."""
    area = np.bincount(cells.ravel())
    drop = area < min_area
    drop[0] = False
    return np.where(drop[cells], 0, cells).astype(np.int32) if drop.any() else cells


def _foreground_label(img: np.ndarray) -> np.ndarray:
    """One label over the thresholded foreground, or the whole image if that fails."""
    whole = np.ones(img.shape, dtype=np.int32)
    fg = foreground(img, 2.0, 0.5)
    if fg is None:
        return whole
    mask = ndi.binary_closing(fg, iterations=3)
    mask = _remove_small(ndi.binary_fill_holes(mask), 1e-3, rel_median=0.0)
    frac = float(mask.mean())
    if frac < 0.01 or frac > 0.99:
        return whole
    return mask.astype(np.int32)


def _body_cells(body: np.ndarray, min_cell_frac: float = 0.2) -> np.ndarray:
    """Cells as the parts of the cell-body foreground (for a field without nucleus stain).

    The foreground is split where it narrows (cells joined by a thin bridge), not
    where cells touch along a wide border: without nuclei, that is the best one can
    do, and far better than one label over everything. Parts under 0.5 % of the
    image or ``min_cell_frac`` of the median part are fragments.
    """
    empty = np.zeros(body.shape, dtype=np.int32)
    fg = foreground(body, 2.0, 0.5)
    if fg is None:
        return empty
    mask = ndi.binary_closing(fg, iterations=3)
    mask = ndi.binary_fill_holes(ndi.binary_opening(mask, iterations=2))
    if mask.mean() > 0.95:
        return empty
    mask = _remove_small(mask, 5e-3, rel_median=min_cell_frac)
    # Cells joined by a thin bridge are split where the foreground narrows, as touching
    # nuclei are (segment_nuclei on the mask itself: distance transform + watershed).
    return segment_nuclei(mask.astype(np.float32), sigma=0, min_size_frac=5e-3)


def segment_image(
    image: Any,
    channel_names: Sequence[str] | None = None,
    *,
    max_size: int = 1024,
    auto_scale: bool = True,
    **kwargs: Any,
) -> np.ndarray:
    """Segment the cells of a multichannel image, at a resolution read from the image.

    Parameters
    ----------
    image
        An ``ImageData`` (uses ``.data`` and ``.channel_names``), or a (C, H, W) / (H, W) array.
    channel_names
        Names of the channels (case-insensitive); required for arrays with C > 1. The nucleus
        is ``nucleus``/``dapi``/``blue``; the body is the sum of ``microtubules``/``red`` and
        ``er``/``yellow`` (whichever exist). The protein channel is never used.
    max_size
        Segment at a resolution whose longer side is at most this (integer block-mean
        downscaling); labels are upsampled with nearest neighbour. ``0`` = no limit.
    auto_scale
        Also reduce the image until a typical nucleus has about 25 px
        (:func:`.cell_scale.working_factor`), so that a zoomed-in field is not cut into
        fragments of nucleus texture. False keeps exactly what ``max_size`` gives.
    **kwargs
        Passed to :func:`segment_cells`; pixel sizes there are at the working resolution.

    Returns
    -------
    np.ndarray
        (H, W) int32 labels, 0 = background. A burnt-in scale bar
        (:func:`.marks.scale_bar_mask`) is never part of a cell. Without a nucleus
        channel (gray images, H&E) one label covers the foreground, or the whole image
        when no foreground is found; with a nucleus channel that holds no stain (HPA
        composites of a nuclear protein) the cells are the cell-body foreground's
        connected parts.
    """
    if hasattr(image, "data") and not isinstance(image, np.ndarray):
        if channel_names is None:
            channel_names = tuple(getattr(image, "channel_names", ()))
        data = np.asarray(image.data)
    else:
        data = np.asarray(image)
    if data.ndim == 2:
        data = data[None]
        channel_names = tuple(channel_names or ("gray",))[:1]
    if data.ndim != 3:
        raise ValueError(f"expected (C, H, W) or (H, W) data, got shape {data.shape}")
    if channel_names is None:
        channel_names = ("gray",) if len(data) == 1 else tuple(f"ch{i}" for i in range(len(data)))
    if len(channel_names) != data.shape[0]:
        raise ValueError(f"{len(channel_names)} channel names for {data.shape[0]} channels")
    shape = (int(data.shape[1]), int(data.shape[2]))
    names = [str(n).strip().lower() for n in channel_names]
    nuc_idx = [names.index(n) for n in NUCLEUS_NAMES if n in names]
    # RGB composites: red = microtubules (green is the protein); RGBY adds yellow = ER.
    body_idx = [names.index(n) for n in BODY_NAMES if n in names and names.index(n) not in nuc_idx]
    if not nuc_idx:
        f = working_factor(shape, max_size, None)
        return upsample(_foreground_label(downscale(data.mean(axis=0), f)), f, shape)
    bar = scale_bar_mask(data)
    nucleus, bodies = data[nuc_idx[0]], [data[i] for i in body_idx]
    if bar is not None:
        nucleus, bodies = np.where(bar, 0, nucleus), [np.where(bar, 0, b) for b in bodies]
    if nucleus_is_empty(nucleus, bodies):
        f = max(working_factor(shape, max_size, None), math.ceil(max(shape) / 256))
        summed = np.stack([downscale(b, f) for b in bodies]).sum(axis=0, dtype=np.float32)
        labels = _body_cells(summed, kwargs.get("min_cell_frac", 0.2))
    else:
        radius = nucleus_radius(nucleus) if auto_scale else None
        f = working_factor(shape, max_size, radius)
        normalized = [normalize(downscale(b, f)) for b in bodies]
        parts = [p for p in normalized if p is not None]
        body = np.stack(parts).sum(axis=0, dtype=np.float32) if parts else None
        labels = segment_cells(downscale(nucleus, f), body, **kwargs)
        if radius is not None:  # a quarter of a typical nucleus is no cell, even at the border
            labels = _drop_smaller(labels, 0.25 * math.pi * (radius / f) ** 2)
    labels = upsample(labels, f, shape)
    if bar is not None:
        labels[bar] = 0
    return labels


def _objects(labels: np.ndarray) -> list:
    """``ndi.find_objects`` of the positive labels ([] when there are none)."""
    if labels.size == 0 or labels.max() <= 0:
        return []
    lab = labels if labels.min() >= 0 else np.maximum(labels, 0)
    return ndi.find_objects(lab.astype(np.int32, copy=False))


def cell_properties(labels: np.ndarray) -> dict[int, dict[str, Any]]:
    """Area, centroid and bounding box of every cell.

    Returns
    -------
    dict
        ``{cell: {"area": int, "centroid": (y, x), "bbox": (r0, c0, r1, c1)}}``, bbox
        end-exclusive, sorted by cell id.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}")
    objects = _objects(labels)
    flat = np.maximum(labels.ravel(), 0).astype(np.intp)
    n = len(objects) + 1
    area = np.bincount(flat, minlength=n)
    rows, cols = np.indices(labels.shape, dtype=np.float64)
    sy = np.bincount(flat, weights=rows.ravel(), minlength=n)
    sx = np.bincount(flat, weights=cols.ravel(), minlength=n)
    out: dict[int, dict[str, Any]] = {}
    for i, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        out[i] = {
            "area": int(area[i]),
            "centroid": (float(sy[i] / area[i]), float(sx[i] / area[i])),
            "bbox": (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop),
        }
    return out


def cell_crops(
    data: np.ndarray,
    labels: np.ndarray,
    pad: int = 8,
    mask_background: bool = True,
    cells: Iterable[int] | None = None,
) -> list[tuple[int, np.ndarray]]:
    """Bounding-box crop of every cell.

    Parameters
    ----------
    data, labels
        (C, H, W) or (H, W) image and its (H, W) cell labels.
    pad
        Pixels added on each side of the bounding box (clipped at the image border).
    mask_background
        Set every pixel outside the cell (background and other cells) to 0.
    cells
        Only these cell ids (default all, sorted).

    Returns
    -------
    list of (cell, crop)
        ``crop`` has the dimensionality of ``data``: (C, h, w) or (h, w).
    """
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.shape[-2:] != labels.shape:
        raise ValueError(f"labels {labels.shape} do not match image {data.shape}")
    wanted = None if cells is None else {int(c) for c in cells}
    h, w = labels.shape
    out: list[tuple[int, np.ndarray]] = []
    for i, sl in enumerate(_objects(labels), start=1):
        if sl is None or (wanted is not None and i not in wanted):
            continue
        r0, r1 = max(0, sl[0].start - pad), min(h, sl[0].stop + pad)
        c0, c1 = max(0, sl[1].start - pad), min(w, sl[1].stop + pad)
        crop = data[..., r0:r1, c0:c1].copy()
        if mask_background:
            crop[..., labels[r0:r1, c0:c1] != i] = 0
        out.append((i, crop))
    return out
