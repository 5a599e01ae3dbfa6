"""Synthetic HPA-like fields: determinism, ground truth, per-class spatial statistics, files."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from napari_hpa.core.image.synth import fields as synth
from napari_hpa.core.tasks import HPA28_CLASSES, HPA_CHANNELS

SIZE = 160  # small, clean fields keep the statistics sharp and the tests fast


def _boundary(lab: np.ndarray) -> np.ndarray:
    mx, mn = ndi.maximum_filter(lab, 3), ndi.minimum_filter(lab, 3)
    return (lab > 0) & ((mx != lab) | (mn != lab))


def _stats(f: synth.SynthField) -> dict[str, float]:
    """Spatial statistics of the protein channel against the ground-truth masks."""
    p = f.image[1].astype(np.float64)
    cell, nuc = f.cell_mask > 0, f.nucleus_mask > 0
    tot = p.sum()
    edge_d = ndi.distance_transform_edt(~_boundary(f.cell_mask))
    nuc_d = ndi.distance_transform_edt(~_boundary(f.nucleus_mask))
    r_eq = np.sqrt(cell.sum() / len(np.unique(f.cell_mask[cell])) / np.pi)
    v = np.sort(p[cell])[::-1]
    gy, gx = np.gradient(ndi.gaussian_filter(p, 1.0))
    coh = []
    for i in np.unique(f.cell_mask[cell]):
        m = f.cell_mask == i
        jxx, jyy, jxy = (gx[m] ** 2).sum(), (gy[m] ** 2).sum(), (gx[m] * gy[m]).sum()
        coh.append(np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy + 1e-12))
    return {
        "nuc": p[nuc].sum() / tot,  # share of signal inside nuclei
        "nring": p[nuc_d <= 2.5].sum() / tot,  # share at nucleus outlines
        "edge": p[cell & (edge_d <= 1.5)].mean() / (p[cell & (edge_d > 0.2 * r_eq)].mean() + 1e-9),
        "band": p[edge_d < 0.2 * r_eq].sum() / tot,  # share in the cell-edge band
        "a50": np.searchsorted(np.cumsum(v), 0.5 * v.sum()) / cell.sum(),  # area with half the mass
        "hi": (p > 0.5 * p.max()).sum() / cell.sum(),  # bright area
        "r_mt": np.corrcoef(p[cell], f.image[0][cell])[0, 1],
        "r_er": np.corrcoef(p[cell], f.image[3][cell])[0, 1],
        "coh": float(np.mean(coh)),  # gradient orientation coherence (fibres ~1)
    }


def _blobs_per_nucleus(f: synth.SynthField, rel: float) -> float:
    p = f.image[1]
    nuc = f.nucleus_mask > 0
    n_blobs = ndi.label((p > rel * np.percentile(p[nuc], 99.5)) & nuc)[1]
    return n_blobs / len(np.unique(f.nucleus_mask[nuc]))


def _golgi_offset(f: synth.SynthField) -> float:
    """Median distance (in nucleus radii) from nucleus centre to the cell's signal centroid."""
    p = f.image[1]
    out = []
    for i in np.unique(f.nucleus_mask[f.nucleus_mask > 0]):
        nm, cm = f.nucleus_mask == i, f.cell_mask == i
        if nm.sum() < 30 or p[cm].sum() == 0:
            continue
        ny, nx = ndi.center_of_mass(nm)
        sy, sx = ndi.center_of_mass(np.where(cm, p, 0))
        out.append(np.hypot(sy - ny, sx - nx) / np.sqrt(nm.sum() / np.pi))
    return float(np.median(out))


# class -> checks on _stats (clean field); every supported class has a row
EXPECT = {
    0: lambda s: s["nuc"] > 0.9,
    1: lambda s: s["nring"] > 0.9 and s["nuc"] < 0.85,
    2: lambda s: s["nuc"] > 0.9 and s["hi"] < 0.03,
    4: lambda s: s["nuc"] > 0.9 and s["hi"] < 0.1,
    5: lambda s: s["nuc"] > 0.9 and s["a50"] < 0.03,
    6: lambda s: s["r_er"] > 0.85 and s["nuc"] < 0.35,
    7: lambda s: s["nuc"] < 0.35 and s["a50"] < 0.05 and s["r_er"] < 0.4,
    9: lambda s: s["nuc"] < 0.1 and s["a50"] < 0.25 and s["r_mt"] < 0.5,
    11: lambda s: s["nuc"] < 0.3 and s["r_mt"] < 0.4 and s["coh"] < 0.4,
    12: lambda s: s["coh"] > 0.55,
    13: lambda s: s["nuc"] < 0.05 and s["band"] > 0.45 and s["edge"] > 1.3,
    14: lambda s: s["r_mt"] > 0.85,
    19: lambda s: s["nuc"] < 0.1 and s["hi"] < 0.01,
    20: lambda s: s["nuc"] < 0.1 and s["a50"] < 0.1,
    21: lambda s: s["nuc"] < 0.05 and s["edge"] > 8,
    22: lambda s: s["nuc"] < 0.05 and s["edge"] > 4,
    23: lambda s: s["nuc"] < 0.1 and s["a50"] < 0.2 and s["r_mt"] < 0.5,
    24: lambda s: s["nuc"] < 0.1 and s["hi"] < 0.02,
    25: lambda s: s["nuc"] < 0.1 and s["a50"] > 0.2 and 0.8 < s["edge"] < 2.5,
}


def test_every_supported_class_has_an_expectation():
    assert set(EXPECT) == set(synth.SUPPORTED_CLASSES)
    assert all(0 <= c < len(HPA28_CLASSES) for c in synth.SUPPORTED_CLASSES)
    required = {0, 1, 2, 6, 7, 12, 14, 21, 23, 25}
    assert required <= set(synth.SUPPORTED_CLASSES)


@pytest.mark.parametrize("cls", synth.SUPPORTED_CLASSES)
@pytest.mark.parametrize("seed", [0, 1])
def test_class_pattern_statistics(cls: int, seed: int):
    f = synth.make_field(SIZE, classes=[cls], n_labels=1, seed=seed, noise=0.0)
    assert f.labels == [cls]
    s = _stats(f)
    assert EXPECT[cls](s), f"{HPA28_CLASSES[cls]}: {s}"


def test_distinct_shapes_of_nuclear_patterns():
    speck = [synth.make_field(SIZE, classes=[4], n_labels=1, seed=k, noise=0) for k in range(2)]
    nucleoli = [synth.make_field(SIZE, classes=[2], n_labels=1, seed=k, noise=0) for k in range(2)]
    # nucleoli: 1-4 spots per nucleus; speckles: many
    assert all(0.5 <= _blobs_per_nucleus(f, 0.4) <= 4.5 for f in nucleoli)
    assert all(_blobs_per_nucleus(f, 0.4) >= 5 for f in speck)


def test_golgi_sits_on_one_side_of_the_nucleus():
    for seed in (0, 1):
        golgi = synth.make_field(SIZE, classes=[7], n_labels=1, seed=seed, noise=0)
        cyto = synth.make_field(SIZE, classes=[25], n_labels=1, seed=seed, noise=0)
        assert _golgi_offset(golgi) > 0.85 and _golgi_offset(cyto) < 0.7


def test_cell_junctions_only_where_cells_touch():
    f = synth.make_field(SIZE, classes=[22], n_labels=1, seed=3, noise=0)
    lab, p = f.cell_mask, f.image[1]
    inside = lab > 0
    mx = ndi.maximum_filter(lab, 3)
    mn_nb = ndi.minimum_filter(np.where(inside, lab, lab.max() + 1), 3)
    contact = inside & ((mx > lab) | (mn_nb < lab))
    free = _boundary(lab) & ~ndi.binary_dilation(contact, iterations=3)
    assert contact.sum() > 20
    assert p[contact].mean() > 3 * p[free].mean()


@pytest.mark.parametrize(
    ("cls", "check"),
    [
        (0, lambda s: s["nuc"] > 0.5),
        (21, lambda s: s["edge"] > 3),
        (25, lambda s: s["nuc"] < 0.2),
        (14, lambda s: s["r_mt"] > 0.6),
        (6, lambda s: s["r_er"] > 0.6),
    ],
)
def test_patterns_survive_noise(cls, check):
    for seed in range(3):
        f = synth.make_field(128, classes=[cls], n_labels=1, seed=seed)
        bg = np.median(f.image[1][~ndi.binary_dilation(f.cell_mask > 0, iterations=4)])
        f.image[1] = np.clip(f.image[1] - bg, 0, None)
        s = _stats(f)
        assert check(s), (seed, s)


def test_shapes_dtypes_range_and_masks():
    f = synth.make_field(128, seed=1)
    assert f.image.shape == (4, 128, 128) and f.image.dtype == np.float32
    assert f.image.min() >= 0.0 and f.image.max() <= 1.0
    assert f.channel_names == HPA_CHANNELS
    for m in (f.cell_mask, f.nucleus_mask):
        assert m.shape == (128, 128) and m.dtype == np.int32
    nuc = f.nucleus_mask > 0
    assert nuc.any()
    assert np.array_equal(f.nucleus_mask[nuc], f.cell_mask[nuc])  # nucleus inside its cell
    ids = np.unique(f.cell_mask[f.cell_mask > 0])
    assert list(ids) == list(range(1, len(ids) + 1))
    assert set(f.cell_labels) == set(ids.tolist())
    assert all(ls == f.labels for ls in f.cell_labels.values())
    # every channel carries signal, brighter in cells than outside
    for ch in range(4):
        assert f.image[ch][f.cell_mask > 0].mean() > f.image[ch][f.cell_mask == 0].mean()
    # DAPI is a nuclear stain
    assert f.image[2][nuc].mean() > 3 * f.image[2][(f.cell_mask > 0) & ~nuc].mean()


def test_cell_counts_scale_with_size():
    counts = {s: [synth.make_field(s, seed=k).cell_mask.max() for k in range(3)] for s in (64, 256)}
    assert all(1 <= n <= 3 for n in counts[64])
    assert all(3 <= n <= 8 for n in counts[256])
    assert synth.make_field(128, n_cells=2, seed=0).cell_mask.max() == 2


def test_determinism():
    a, b = synth.make_field(96, seed=7), synth.make_field(96, seed=7)
    assert np.array_equal(a.image, b.image) and a.labels == b.labels
    assert np.array_equal(a.cell_mask, b.cell_mask)
    assert np.array_equal(a.nucleus_mask, b.nucleus_mask)
    c = synth.make_field(96, seed=8)
    assert not np.array_equal(a.image, c.image)


def test_make_dataset_is_deterministic_and_independent_of_n():
    short = list(synth.make_dataset(2, size=64, seed=5))
    long = list(synth.make_dataset(4, size=64, seed=5))
    for x, y in zip(short, long[:2], strict=True):
        assert x.seed == y.seed and np.array_equal(x.image, y.image)
    assert len({f.seed for f in long}) == 4
    other = next(synth.make_dataset(1, size=64, seed=6))
    assert other.seed != long[0].seed
    again = synth.make_field(64, seed=long[3].seed)
    assert np.array_equal(again.image, long[3].image)


def test_labels_respect_classes_and_counts():
    pool = [0, 7, 21, 23]
    seen = set()
    for k in range(12):
        f = synth.make_field(48, classes=pool, seed=k)
        assert 1 <= len(f.labels) <= 3 and set(f.labels) <= set(pool)
        assert f.labels == sorted(set(f.labels))
        assert f.label_names == [HPA28_CLASSES[c] for c in f.labels]
        seen.update(f.labels)
        single = synth.make_field(48, classes=pool, n_labels=1, seed=k)
        assert len(single.labels) == 1
        two = synth.make_field(48, classes=pool, n_labels=(2, 2), seed=k)
        assert len(two.labels) == 2
    assert seen == set(pool)
    assert synth.make_field(48, classes=[5], n_labels=(1, 3), seed=0).labels == [5]
    assert set(synth.make_field(48, seed=0).labels) <= set(synth.SUPPORTED_CLASSES)


def test_bad_arguments():
    with pytest.raises(ValueError):
        synth.make_field(48, classes=[3])  # not supported
    with pytest.raises(ValueError):
        synth.make_field(48, classes=[])
    with pytest.raises(ValueError):
        synth.make_field(48, n_labels=0)
    with pytest.raises(ValueError):
        synth.write_samples("/nonexistent-never-written", n=1, size=32, fmt="jpg")


def test_mixed_cells_union_is_image_label():
    for k in range(4):
        f = synth.make_field(160, classes=[0, 21, 23, 25], n_labels=3, n_cells=4, seed=k,
                             mixed_cells=True)  # fmt: skip
        union = sorted(set().union(*f.cell_labels.values()))
        assert union == f.labels
        assert all(ls and set(ls) <= set(f.labels) for ls in f.cell_labels.values())


def test_write_samples(tmp_path):
    out = synth.write_samples(tmp_path / "s", n=3, size=64, seed=2, classes=[0, 21, 23])
    assert out == tmp_path / "s"
    with open(out / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["Id"] for r in rows] == ["synth_0000", "synth_0001", "synth_0002"]
    expected = list(synth.make_dataset(3, size=64, seed=2, classes=[0, 21, 23]))
    for r, f in zip(rows, expected, strict=True):
        target = [int(t) for t in r["Target"].split()]
        assert target == f.labels == sorted(target)
        for ch, color in enumerate(synth.CHANNEL_COLORS):
            img = Image.open(out / f"{r['Id']}_{color}.png")
            assert img.mode == "L" and img.size == (64, 64)
            assert np.array_equal(np.asarray(img), synth.to_uint8(f.image[ch]))
    assert len(list(out.glob("*.png"))) == 12
    tif = synth.write_samples(tmp_path / "t", n=1, size=32, fmt="tif")
    assert sorted(p.name for p in tif.glob("*.tif")) == sorted(
        f"synth_0000_{c}.tif" for c in synth.CHANNEL_COLORS
    )


def test_compact_structure_stands_out_above_a_diffuse_one():
    """A protein in cytosol and at the centrosome: the centrosome dots are brighter than
    the cytosol (a dilute compartment), so the label can be seen, as in HPA images."""
    for seed in range(3):
        f = synth.make_field(SIZE, classes=[19, 25], n_labels=2, seed=seed, noise=0)
        assert f.labels == [19, 25]
        p, cyto = f.image[1], (f.cell_mask > 0) & (f.nucleus_mask == 0)
        assert np.percentile(p[cyto], 99.9) > 1.5 * np.median(p[cyto]), seed


def test_aggresome_is_one_large_blob_per_cell():
    for seed in range(2):
        f = synth.make_field(SIZE, classes=[24], n_labels=1, seed=seed, noise=0)
        p = f.image[1]
        blobs, n = ndi.label(p > 0.5 * p.max())
        sizes = np.bincount(blobs.ravel())[1:]
        assert n <= f.cell_mask.max() and sizes.max() >= 20, (seed, sizes)
