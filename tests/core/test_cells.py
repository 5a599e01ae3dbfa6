"""Tests for core.image.cells: synthetic cells with known masks, and one real HPA field."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import shared_data

from napari_hpa.core.image.cell_scale import (
    TARGET_NUCLEUS_RADIUS,
    nucleus_radius,
    working_factor,
)
from napari_hpa.core.image.cells import (
    cell_crops,
    cell_properties,
    segment_cells,
    segment_image,
    segment_nuclei,
)
from napari_hpa.core.image.marks import scale_bar_mask

# (centre y, centre x, nucleus radii, cell radii, angle); cells 4 and 5 touch each other.
CELLS = [
    (50, 50, (11, 9), (30, 24), 0.3),
    (55, 160, (10, 12), (26, 32), -0.4),
    (60, 250, (12, 9), (28, 22), 1.0),
    (160, 60, (9, 12), (24, 34), 0.0),
    (160, 148, (10, 10), (30, 26), 0.7),
    (250, 150, (12, 9), (34, 22), 0.2),
    (240, 255, (9, 11), (25, 30), -0.9),
]


def _ellipse(shape, cy, cx, ry, rx, angle):
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    y, x = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * y + s * x, -s * y + c * x
    return (u / ry) ** 2 + (v / rx) ** 2  # < 1 inside


def synthetic(shape=(300, 310), seed=0, scale=1.0):
    """Nucleus + body images and the true cell labels (ids 1..N in CELLS order)."""
    rng = np.random.default_rng(seed)
    shape = (int(shape[0] * scale), int(shape[1] * scale))
    nucleus = np.zeros(shape, np.float32)
    body = np.zeros(shape, np.float32)
    truth = np.zeros(shape, np.int32)
    best = np.full(shape, np.inf, np.float32)
    for i, (cy, cx, nr, cr, ang) in enumerate(CELLS, start=1):
        cy, cx = cy * scale, cx * scale
        nr, cr = tuple(r * scale for r in nr), tuple(r * scale for r in cr)
        dn = _ellipse(shape, cy, cx, *nr, ang)
        dc = _ellipse(shape, cy, cx, *cr, ang)
        nucleus[dn < 1] = rng.uniform(0.5, 1.0)
        body = np.maximum(body, np.where(dc < 1, 0.6 - 0.3 * dc, 0))
        own = (dc < 1) & (dc < best)
        truth[own] = i
        best[own] = dc[own]
    texture = rng.uniform(0.7, 1.0, shape).astype(np.float32)
    nucleus = nucleus * texture + rng.normal(0, 0.03, shape).astype(np.float32)
    body = body * texture + rng.normal(0, 0.03, shape).astype(np.float32)
    return np.clip(nucleus, 0, 1), np.clip(body, 0, 1), truth


def match_iou(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    """IoU of every true cell with the predicted label that overlaps it most."""
    ious = []
    for t in range(1, int(truth.max()) + 1):
        tm = truth == t
        ids, counts = np.unique(pred[tm], return_counts=True)
        counts, ids = counts[ids > 0], ids[ids > 0]
        if ids.size == 0:
            ious.append(0.0)
            continue
        pm = pred == ids[np.argmax(counts)]
        ious.append(float((tm & pm).sum() / (tm | pm).sum()))
    return ious


def test_segment_nuclei_counts_and_splits_touching():
    nucleus, _, _ = synthetic()
    lab = segment_nuclei(nucleus)
    assert lab.dtype == np.int32 and lab.shape == nucleus.shape
    assert lab.max() == len(CELLS)
    # Two overlapping discs are split into two; one long ellipse stays whole.
    img = np.zeros((120, 200), np.float32)
    img[_ellipse(img.shape, 60, 60, 18, 18, 0) < 1] = 1
    img[_ellipse(img.shape, 60, 90, 18, 18, 0) < 1] = 1
    img[_ellipse(img.shape, 60, 160, 12, 30, 1.2) < 1] = 1
    lab = segment_nuclei(img)
    assert lab.max() == 3
    assert lab[60, 60] != lab[60, 90]


def test_segment_cells_matches_truth():
    nucleus, body, truth = synthetic()
    t0 = time.perf_counter()
    lab = segment_cells(nucleus, body)
    print(f"segment_cells {truth.shape}: {time.perf_counter() - t0:.3f}s")
    assert lab.dtype == np.int32
    assert len(np.unique(lab[lab > 0])) == len(CELLS)
    ious = match_iou(lab, truth)
    assert np.mean(ious) >= 0.7, ious
    assert min(ious) >= 0.5, ious
    # Each cell keeps the id of its nucleus.
    nuclei = segment_nuclei(nucleus)
    for i in range(1, nuclei.max() + 1):
        assert np.all(lab[nuclei == i] == i)


def test_segment_cells_without_body_grows_nuclei():
    nucleus, _, truth = synthetic()
    nuclei = segment_nuclei(nucleus)
    lab = segment_cells(nucleus, None)
    assert lab.max() == len(CELLS)
    assert (lab > 0).sum() > 2 * (nuclei > 0).sum()
    assert np.all(lab[nuclei > 0] == nuclei[nuclei > 0])


@pytest.mark.parametrize("fill", [0.0, 0.3])
def test_flat_images_give_no_cells(fill):
    img = np.full((128, 128), fill, np.float32)
    assert not segment_nuclei(img).any()
    assert not segment_cells(img, img).any()
    hpa = np.stack([img] * 4)
    assert not segment_image(hpa, ("microtubules", "protein", "nucleus", "er")).any()


def test_dim_image_still_segmented():
    nucleus, body, truth = synthetic()
    lab = segment_cells(nucleus * 0.004, body * 0.004)  # e.g. a 16-bit image read as [0, 1]
    assert np.mean(match_iou(lab, truth)) >= 0.7


def test_segment_image_channel_layouts():
    nucleus, body, truth = synthetic()
    protein = np.zeros_like(nucleus)
    hpa = np.stack([body, protein, nucleus, body * 0.8])
    lab = segment_image(hpa, ("microtubules", "protein", "nucleus", "er"))
    assert np.mean(match_iou(lab, truth)) >= 0.7
    # ImageData-like object, RGB composite without ER.
    rgb = SimpleNamespace(
        data=np.stack([body, protein, nucleus]), channel_names=("red", "green", "blue")
    )
    assert np.mean(match_iou(segment_image(rgb), truth)) >= 0.7
    # Nucleus only: grown nuclei, same count.
    assert segment_image(nucleus[None], ("DAPI",)).max() == len(CELLS)
    # Gray image: one label over the foreground, or the whole image when there is none.
    gray = segment_image(body, ("gray",))
    assert set(np.unique(gray)) == {0, 1}
    fg, true_fg = gray > 0, truth > 0
    assert (fg & true_fg).sum() / (fg | true_fg).sum() > 0.8
    assert np.all(segment_image(np.zeros((2, 40, 50)), ("gray", "x")) == 1)
    with pytest.raises(ValueError):
        segment_image(hpa, ("a", "b"))


def test_segment_image_downscaled_path():
    nucleus, body, truth = synthetic(scale=2.0)
    data = np.stack([body, nucleus])
    lab = segment_image(data, ("microtubules", "nucleus"), max_size=300)  # factor 3
    assert lab.shape == truth.shape
    assert len(np.unique(lab[lab > 0])) == len(CELLS)
    assert np.mean(match_iou(lab, truth)) >= 0.7


def test_cell_properties_and_crops():
    labels = np.zeros((50, 60), np.int32)
    labels[5:15, 10:30] = 3
    labels[30:50, 40:60] = 7
    props = cell_properties(labels)
    assert sorted(props) == [3, 7]
    assert props[3]["area"] == 200 and props[3]["bbox"] == (5, 10, 15, 30)
    assert props[7]["centroid"] == pytest.approx((39.5, 49.5))
    assert cell_properties(np.zeros((5, 5), np.int32)) == {}

    data = np.ones((2, 50, 60), np.float32)
    crops = dict(cell_crops(data, labels, pad=4))
    assert sorted(crops) == [3, 7]
    assert crops[3].shape == (2, 18, 28)
    assert crops[7].shape == (2, 24, 24)  # clipped at the border
    assert crops[3].sum() == 2 * 200  # only the cell's own pixels kept
    raw = dict(cell_crops(data[0], labels, pad=4, mask_background=False, cells=[7]))
    assert list(raw) == [7] and raw[7].shape == (24, 24) and raw[7].min() == 1
    assert cell_crops(data, np.zeros((50, 60), np.int32)) == []
    with pytest.raises(ValueError):
        cell_crops(data, labels[:10])


def test_real_hpa_field():
    folder = shared_data("hpa_public_4ch_examples") / "images"
    paths = [folder / f"57_F11_1_{c}.png" for c in ("red", "green", "blue", "yellow")]
    if not all(p.exists() for p in paths):
        pytest.skip("57_F11_1 channel images are absent")
    from PIL import Image

    data = np.stack([np.asarray(Image.open(p).convert("L"), np.float32) / 255 for p in paths])
    t0 = time.perf_counter()
    lab = segment_image(data, ("microtubules", "protein", "nucleus", "er"))
    elapsed = time.perf_counter() - t0
    n = len(np.unique(lab[lab > 0]))
    print(f"57_F11_1 {data.shape}: {n} cells in {elapsed:.2f}s")
    assert lab.shape == data.shape[1:]
    assert 9 <= n <= 13  # about 11 cells in this A-431 field
    areas = [p["area"] for p in cell_properties(lab).values()]
    assert min(areas) > 1000  # no specks
    assert (lab > 0).mean() < 0.8


# ------------------------------------------------------------- scale and scale bar
def test_scale_bar_is_found_and_a_bright_cell_is_not():
    data = np.zeros((3, 400, 400), np.float32)
    data[:, 380:386, 300:380] = 1.0  # a white bar, lower right, as on HPA composites
    data[:, 100:160, 100:160] = 0.9  # a bright square "cell": white too, but not a bar
    data[:, 20:26, 20:100] = 0.9  # a bar near the top
    mask = scale_bar_mask(data)
    assert mask is not None
    assert mask[383, 340] and mask[23, 60] and not mask[130, 130]
    assert not mask[200, 200] and mask.sum() < 2 * (6 * 80 + 2 * 6 * 80)
    assert scale_bar_mask(data[:1]) is None  # one channel cannot tell white from bright
    assert scale_bar_mask(np.zeros((3, 50, 50), np.float32)) is None


def test_working_scale_follows_the_nucleus_size():
    nucleus, _, _ = synthetic(scale=5.0)  # nuclei of about 50 px on a 1500-px image
    radius = nucleus_radius(nucleus)
    assert radius is not None and 40 < radius < 70
    assert working_factor(nucleus.shape, 1024, radius) == int(radius // TARGET_NUCLEUS_RADIUS)
    assert working_factor(nucleus.shape, 1024, 5.0) == 2  # never finer than max_size asks
    assert working_factor((820, 820), 1024, 10_000.0) == 820 // 128  # a floor on the size
    assert working_factor((820, 820), 0, None) == 1


def _composites() -> list:
    from napari_hpa.core.image.io import read_image

    folder = shared_data("hpa_class_examples_composite") / "images"
    return [(f.name, read_image(f)) for f in sorted(folder.glob("*.jpg"))]


def test_real_composites_segment_at_their_own_scale():
    """The zoomed-in HPA composites (1 to 13 cells on 820 px): no fragments of nucleus
    texture, no cell on the white scale bar, a plausible count on every image."""
    counts = {}
    for name, image in _composites():
        lab = segment_image(image)  # the default max_size, as napari calls it
        areas = np.bincount(lab.ravel())[1:]
        areas = areas[areas > 0]
        counts[name] = len(areas)
        assert 1 <= len(areas) <= 15, (name, len(areas))
        assert areas.min() > 0.01 * lab.size, (name, areas.min())  # no specks, no slivers
        h, w = lab.shape
        corner = (slice(int(0.9 * h), h), slice(int(0.7 * w), w))
        white = image.data[(slice(None), *corner)].min(axis=0) > 0.7
        assert not (lab[corner][white] > 0).any(), f"{name}: a cell on the scale bar"
    assert sum(1 <= n <= 5 for n in counts.values()) >= 58, counts  # 1-3 cells fill most
    assert sum(counts.values()) < 3 * len(counts), counts


def test_real_composites_without_nucleus_stain_are_not_one_blob():
    """Two composites whose blue is empty (the protein's green painted over it): the
    cells come from the microtubules' foreground, split where it narrows."""
    images = dict(_composites())
    for name, expected in (("13-1-a.jpg", 2), ("1-2-a.jpg", 2)):
        lab = segment_image(images[name])
        assert len(np.unique(lab[lab > 0])) == expected, name


def test_real_duloc_mosaics_keep_their_nine_cells():
    """Not a change: the DULoc 3 x 3 mosaics (one masked cell per tile) keep 8-10 cells
    each, as before the scale was read from the image."""
    from napari_hpa.core.image.io import read_image

    folder = shared_data("hpa_duloc_single_cells") / "images"
    ids = sorted({p.name.rsplit("_", 1)[0] for p in folder.glob("*_blue.jpg")})[::9]
    counts = [
        len(np.unique(lab[lab > 0])) for lab in (segment_image(read_image(folder / i)) for i in ids)
    ]
    assert all(8 <= n <= 10 for n in counts), counts
    assert sum(n == 9 for n in counts) >= len(counts) // 2, counts
