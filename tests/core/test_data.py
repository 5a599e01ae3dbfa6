"""Training data sources, splitting, fingerprints and the input pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_hpa.core.image.io import read_image
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.image.writers import write_image
from napari_hpa.core.model.checkpoint import InputSpec
from napari_hpa.core.model.tiles import prepare_tiles
from napari_hpa.core.tasks import HPA_CHANNELS, get_task
from napari_hpa.core.train import augment as A
from napari_hpa.core.train.data import (
    DataError,
    Sample,
    build_task,
    data_fingerprint,
    load_annotations,
    load_csv,
    load_folder_per_class,
    read_label_csv,
    split,
    split_indices,
)


@pytest.fixture(scope="module")
def hpa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_samples(tmp_path_factory.mktemp("hpa"), n=12, size=32, seed=3, classes=[0, 2, 23])


def _rgb_folder(root: Path, n: int = 6, shape: tuple[int, int] = (24, 40)) -> Path:
    rng = np.random.default_rng(0)
    rows = ["Id,Target"]
    for i in range(n):
        write_image(root / "imgs" / f"img{i}.png", rng.random((3, *shape)).astype(np.float32))
        rows.append(f"img{i},{i % 3}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


# ----------------------------------------------------------------------------- sources
def test_load_csv_hpa_sets_with_builtin_task(hpa_dir: Path) -> None:
    data = load_csv(hpa_dir, hpa_dir / "labels.csv", "hpa28")
    assert data.task.name == "hpa28" and len(data.samples) == 12
    assert all(Path(s.source).parent == hpa_dir.resolve() for s in data.samples)
    assert read_image(data.samples[0].source).channel_names == HPA_CHANNELS
    assert {t for s in data.samples for t in s.targets} <= {0, 2, 23}


def test_load_csv_classes_from_labels_and_binary_task(hpa_dir: Path) -> None:
    data = load_csv(hpa_dir, hpa_dir / "labels.csv")
    assert data.task.channels == HPA_CHANNELS
    # numeric Kaggle ids without a task are the 28 HPA classes, by name (issue 18, item 19)
    assert data.task.name == "hpa28" and data.task.classes == get_task("hpa28").classes
    binary = load_csv(hpa_dir, hpa_dir / "labels.csv", ["Mitochondria"])
    assert binary.task.kind == "multilabel" and binary.task.classes == ("Mitochondria",)
    labels = dict(read_label_csv(hpa_dir / "labels.csv"))
    for s in binary.samples:
        assert (s.targets == (0,)) == ("23" in labels[Path(s.source).name])


def test_load_csv_single_files_by_stem_relative_path_and_missing(tmp_path: Path) -> None:
    root = _rgb_folder(tmp_path)
    with open(root / "labels.csv", "a") as fh:
        fh.write("imgs/img1.png,1\nnot-there,0\n")
    data = load_csv(root, root / "labels.csv", ["a", "b", "c"])
    assert data.task.kind == "multiclass" and data.task.channels == ("red", "green", "blue")
    assert len(data.samples) == 7  # 6 stems + the relative path; the missing Id is skipped
    assert any("not-there" in w for w in data.warnings)
    with pytest.raises(DataError, match="none of the"):
        (tmp_path / "other.csv").write_text("Id,Target\nnope,1\n")
        load_csv(root, tmp_path / "other.csv")
    with pytest.raises(DataError, match="Id,Target"):
        (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
        load_csv(root, tmp_path / "bad.csv")


def test_a_group_column_keeps_each_group_on_one_side(tmp_path: Path) -> None:
    """Tiles of one original (LC25000: 20 rotations and flips each) never straddle the split."""
    rng = np.random.default_rng(0)
    rows = ["file,label,group"]
    for g in range(12):
        for t in range(5):
            name = f"tile{g}_{t}.png"
            write_image(tmp_path / "imgs" / name, rng.random((3, 16, 16)).astype(np.float32))
            rows.append(f"{name},{'abc'[g % 3]},orig-{g}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    data = load_csv(tmp_path, tmp_path / "labels.csv", ["a", "b", "c"])
    assert {s.group for s in data.samples} == {f"orig-{g}" for g in range(12)}
    for seed in range(5):
        train, val = split(data, 0.25, seed)
        assert len(train) + len(val) == 60 and 0 < len(val) < 60
        assert not {s.group for s in train} & {s.group for s in val}
        assert {s.targets for s in val} == {(0,), (1,), (2,)}  # every class validated
    # without the column the same tiles are split one by one: groups straddle
    (tmp_path / "plain.csv").write_text("\n".join(r.rsplit(",", 1)[0] for r in rows) + "\n")
    plain = load_csv(tmp_path, tmp_path / "plain.csv", ["a", "b", "c"])
    assert all(s.group is None for s in plain.samples)
    train, val = split(plain, 0.25, 0)
    tile_group = {Path(s.source).name.split("_")[0] for s in train}
    assert tile_group & {Path(s.source).name.split("_")[0] for s in val}


def test_build_task_variants() -> None:
    task, t = build_task([["0"], ["2", "0"], []], "hpa28")
    assert task.name == "hpa28" and t == [(0,), (0, 2), ()]
    task, t = build_task([["cat"], ["dog"], ["cat"]], None)
    assert task.kind == "multiclass" and task.classes == ("cat", "dog") and t == [(0,), (1,), (0,)]
    task, t = build_task([["23"], ["0"]], ["Nucleoplasm", "Mitochondria"])  # HPA numbering
    assert t == [(1,), (0,)]
    task, t = build_task([["1"], ["0"]], ["x", "y"], kind="multilabel")
    assert task.kind == "multilabel"
    task, t = build_task([["0"], ["0", "1"]], get_task("bach4"))  # multiclass: 2 labels skipped
    assert t == [(0,), None]
    with pytest.raises(DataError, match="out of range"):
        build_task([["40"]], "hpa28")


def test_folder_per_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls in ("alpha", "beta"):
        for i in range(3):
            write_image(tmp_path / cls / f"{i}.png", rng.random((1, 16, 16)).astype(np.float32))
    data = load_folder_per_class(tmp_path)
    assert data.task.classes == ("alpha", "beta") and data.task.kind == "multiclass"
    assert data.task.channels == ("gray",)
    assert sorted(s.targets for s in data.samples) == [(0,)] * 3 + [(1,)] * 3
    with pytest.raises(DataError):
        load_folder_per_class(tmp_path / "alpha")


def test_annotation_database_source(tmp_path: Path, hpa_dir: Path) -> None:
    from napari_hpa.core.labels.store import AnnotationStore

    sources = [str(hpa_dir / f"synth_{i:04d}") for i in range(3)]
    db = tmp_path / "annotations.sqlite"
    with AnnotationStore(db) as store:
        store.set_model_labels(sources[0], "hpa28", [0.9] + [0.0] * 27, [0], "m@1")
        store.set_user_labels(sources[0], "hpa28", {0: False, 23: True})
        store.set_user_labels(sources[1], "hpa28", {2: True})
        store.set_model_labels(sources[2], "hpa28", [0.9] + [0.0] * 27, [0], "m@1")  # uncorrected
    data = load_annotations(db, get_task("hpa28"))
    got = {s.source: s.targets for s in data.samples}
    assert got == {sources[0]: (23,), sources[1]: (2,)}
    with pytest.raises(DataError):
        load_annotations(tmp_path / "missing.sqlite", get_task("hpa28"))


# ----------------------------------------------------------------------------- split, fingerprint
def test_split_multilabel_stratified_and_reproducible() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((300, 6)) < [0.5, 0.3, 0.1, 0.05, 0.03, 0.2]).astype(int)
    tr, va = split_indices(y, 0.2, seed=1)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 300
    assert abs(len(va) - 60) <= 2
    share = y[va].sum(0) / np.maximum(y.sum(0), 1)
    assert np.all(np.abs(share - 0.2) < 0.1)  # every class, even the rarest, near 20 %
    tr2, va2 = split_indices(y, 0.2, seed=1)
    assert np.array_equal(va, va2)
    assert not np.array_equal(va, split_indices(y, 0.2, seed=2)[1])


def test_split_multiclass_keeps_singletons_in_training() -> None:
    labels = np.array([0] * 10 + [1] * 5 + [2])
    y = np.eye(3, dtype=int)[labels]
    tr, va = split_indices(y, 0.2, seed=0, multilabel=False)
    assert 15 in tr and len(va) == 3
    assert set(labels[va]) == {0, 1}


def test_fingerprint_tracks_labels_and_files(hpa_dir: Path) -> None:
    s = [Sample(str(hpa_dir / "synth_0000"), (0,)), Sample(str(hpa_dir / "synth_0001"), (2,))]
    fp = data_fingerprint(s)
    assert fp == data_fingerprint(list(reversed(s)))
    assert fp != data_fingerprint([s[0], Sample(s[1].source, (23,))])
    f = hpa_dir / "synth_0000_red.png"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        assert fp != data_fingerprint(s)
    finally:
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))


# ----------------------------------------------------------------------------- pipeline
def test_d4_gives_eight_distinct_symmetries() -> None:
    x = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    outs = {A.d4_transform(x, k, f).tobytes() for k in range(4) for f in (False, True)}
    assert len(outs) == 8


def test_jitter_dropout_and_crop() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32)).astype(np.float32)
    x[3] = 0  # a missing channel stays blank under jitter
    j = A.intensity_jitter(x, rng, 1.0)
    assert j.min() >= 0 and j.max() <= 1 and not j[3].any() and not np.allclose(j[0], x[0])
    d = A.channel_dropout(x, np.random.default_rng(1), HPA_CHANNELS, {"microtubules": 1.0})
    assert not d[0].any() and np.array_equal(d[1], x[1])
    c = A.random_crop(x, rng, (16, 16), 8)
    assert c.shape == (4, 8, 8)
    with pytest.raises(ValueError):
        A.AugmentConfig(crop_scale=(0.8, 0.5))


@pytest.mark.parametrize(
    "spec",
    [
        InputSpec(
            list(HPA_CHANNELS),
            size=32,
            optional_channels=["er"],
            normalize="percentile",
            mean=[0.1, 0.2, 0.3, 0.4],
            std=[0.5, 0.5, 0.5, 0.5],
        ),
        InputSpec(["red", "green", "blue"], size=16, fit=40, pad_square=True),
    ],
)
def test_training_tensor_equals_prediction_tile(spec: InputSpec, tmp_path: Path) -> None:
    """Without augmentation a training input is exactly what prediction feeds the model."""
    rng = np.random.default_rng(0)
    data = rng.random((3, 30, 50)).astype(np.float32)
    names = ("red", "green", "blue")
    src = str(tmp_path / "x")
    cache = A.ImageCache(lambda s: A.base_view(data, names, spec), 2**30)
    aug = A.AugmentConfig(d4=False, strength=0.0)
    ds = A.TrainDataset([src], np.zeros((1, 2)), cache, spec, aug, train=False)
    x, _ = ds[0]
    tiles, _ = prepare_tiles(data, names, spec)
    if spec.fit is None:
        np.testing.assert_allclose(x.numpy(), tiles[0], atol=1e-6)
    else:  # a tile-sized window of the image exactly as prediction resizes it
        full = prepare_tiles(data, names, InputSpec(**{**spec.__dict__, "size": spec.fit}))[0][0]
        s = spec.size
        windows = [
            full[:, i : i + s, j : j + s]
            for i in range(spec.fit - s + 1)
            for j in range(spec.fit - s + 1)
        ]
        assert any(np.allclose(x.numpy(), w, atol=1e-6) for w in windows)


def test_cache_evicts_least_recently_used() -> None:
    arr = np.zeros((1, 10, 10), np.float32)  # 400 bytes
    loads = []

    def load(s: str) -> tuple[np.ndarray, float]:
        loads.append(s)
        return arr.copy(), 1.0

    cache = A.ImageCache(load, 1000)
    for s in "abc":
        cache.get(s)
    assert len(cache) == 2 and "a" not in cache and cache.nbytes <= 1000
    cache.get("b")
    assert loads == ["a", "b", "c"]


def test_loader_reproducible_with_and_without_workers(hpa_dir: Path) -> None:
    data = load_csv(hpa_dir, hpa_dir / "labels.csv", "hpa28")
    spec = InputSpec(list(HPA_CHANNELS), size=16, optional_channels=["er"])
    aug = A.AugmentConfig(crop_scale=(0.5, 1.0), channel_dropout={"er": 0.5})
    batches = []
    for workers in (0, 2):
        cache = A.make_cache(spec, 0.5, 2**26)
        sources = [s.source for s in data.samples]
        ds = A.TrainDataset(sources, data.targets_matrix(), cache, spec, aug, 2, seed=5)
        loader, sampler = A.make_loader(ds, 8, workers)
        sampler.set_epoch(1)
        batches.append([x for x, _ in loader])
    assert len(batches[0]) == len(batches[1]) == 3  # 12 images x 2 crops / 8
    for a, b in zip(batches[0], batches[1], strict=True):
        assert torch.equal(a, b)
