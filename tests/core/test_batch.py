"""Core batch: rows and errors, resume after a torn write, cells, CAMs, Parquet, cancel, Dask."""

from __future__ import annotations

import csv
import importlib.util
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import make_screen, write_tiny_model

from napari_hpa.core.batch.cluster import run_chunk
from napari_hpa.core.batch.decode import ModelRef
from napari_hpa.core.batch.pipeline import ThreadTuner
from napari_hpa.core.batch.run import BatchError, BatchProgress, run_batch
from napari_hpa.core.batch.table import CsvWriter, Row, parts_dir, table_columns
from napari_hpa.core.image.channels import apply_channel_map, parse_channel_map
from napari_hpa.core.image.io import read_image
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.model.predict import Predictor
from napari_hpa.core.tasks import HPA28_CLASSES, HPA_CHANNELS


@pytest.fixture(scope="module")
def screen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_screen(tmp_path_factory.mktemp("screen"))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models"), fit=64)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("infer", ["workers", "main"])
def test_rows_errors_and_same_probabilities_as_predictor(
    screen: Path, model: Path, tmp_path: Path, infer: str
) -> None:
    """Both places the model can run (in the workers: CPU default; in this process,
    fed tiles by the workers: the GPU path) give the Predictor's own numbers."""
    out = tmp_path / "results.csv"
    seen: list[BatchProgress] = []
    summary = run_batch(
        screen,
        out,
        model,
        device="cpu",
        workers=1,
        batch_size=4,
        infer=infer,
        progress=seen.append,
    )
    assert summary.workers == 1
    rows = read_rows(out)
    assert list(rows[0]) == table_columns(HPA28_CLASSES, cells=False)
    assert len(rows) == 40 and len({r["image"] for r in rows}) == 40
    ok = [r for r in rows if r["status"] == "ok"]
    bad = {Path(r["image"]).name: r["error"] for r in rows if r["status"] == "error"}
    assert len(ok) == 37 and summary.ok == 37 and summary.errors == 3 and summary.done == 40
    assert set(bad) == {"synth_0037", "synth_0038", "notes.png"}
    assert "empty" in bad["synth_0037"] and "truncated" in bad["synth_0038"]
    assert "not an image" in bad["notes.png"]
    assert all(r["model"] == "tiny@1" for r in rows)
    # the same numbers as the one inference path
    predictor = Predictor(model, device="cpu")
    for r in ok[:3]:
        pred = predictor.predict_one(read_image(r["image"]))
        got = np.array([float(r[c]) for c in HPA28_CLASSES])
        np.testing.assert_allclose(got, pred.probabilities, atol=2e-6)
        assert r["predicted"] == " ".join(map(str, pred.predicted))
    # progress: monotonic, ends complete, corrupt files reported as they occur
    assert [p.done for p in seen] == sorted(p.done for p in seen)
    assert seen[-1].done == 40 and seen[-1].fraction == 1.0
    assert sum(len(p.recent_errors) for p in seen) == 3
    assert sum(summary.per_class_counts.values()) >= 37
    assert set(summary.per_class_counts) <= set(HPA28_CLASSES)


def test_resume_skips_done_and_repairs_a_torn_line(
    screen: Path, model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results.csv"
    first = sorted(str(p) for p in screen.glob("synth_000[0-4]_red.png"))
    run_batch(first, out, model, device="cpu", workers=0)
    assert len(read_rows(out)) == 5
    with open(out, "ab") as fh:  # a kill in the middle of a write
        fh.write(b"/some/image,tiny@1,0.1,0.2")
    summary = run_batch(screen, out, model, device="cpu", workers=0)
    assert summary.skipped == 5 and summary.done == 35
    images = [r["image"] for r in read_rows(out)]
    assert len(images) == 40 == len(set(images))
    assert b"/some/image" not in out.read_bytes()
    again = run_batch(screen, out, model, device="cpu", workers=0)
    assert again.done == 0 and again.skipped == 40 and len(read_rows(out)) == 40
    assert sum(again.per_class_counts.values()) == sum(summary.per_class_counts.values())


def test_cells_mode_and_torn_cell_block(model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cells"
    write_samples(folder, n=3, size=128, seed=3)
    out = tmp_path / "cells.csv"
    summary = run_batch(folder, out, model, device="cpu", workers=0, cells=True)
    rows = read_rows(out)
    assert list(rows[0])[:2] == ["image", "cell"]
    assert summary.done == 3 and summary.errors == 0
    per_image: dict[str, list[int]] = {}
    for r in rows:
        per_image.setdefault(r["image"], []).append(int(r["cell"]))
    assert len(per_image) == 3 and all(len(c) >= 1 for c in per_image.values())
    # a torn write of the last image's cell rows drops that whole image, which is redone
    last = rows[-1]["image"]
    data = out.read_bytes()
    out.write_bytes(data[:-5])
    again = run_batch(folder, out, model, device="cpu", workers=0, cells=True)
    assert again.done == 1 and again.skipped == 2
    rows2 = read_rows(out)
    assert sorted((r["image"], r["cell"]) for r in rows2) == sorted(
        (r["image"], r["cell"]) for r in rows
    )
    assert rows2[-1]["image"] == last


def test_cam_export_and_workers_pool(model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    write_samples(folder / "plateA", n=2, size=64, seed=1)
    write_samples(folder / "plateB", n=1, size=64, seed=2)
    cams = tmp_path / "cams"
    summary = run_batch(folder, tmp_path / "r.csv", model, device="cpu", workers=1, cam_dir=cams)
    assert summary.ok == 3
    files = sorted(p.relative_to(cams).as_posix() for p in cams.rglob("*.tif"))
    assert files == [
        "plateA/synth_0000_cam.tif",
        "plateA/synth_0001_cam.tif",
        "plateB/synth_0000_cam.tif",
    ]
    import tifffile

    rows = {
        Path(r["image"]).relative_to(folder).as_posix(): r for r in read_rows(tmp_path / "r.csv")
    }
    stack = tifffile.imread(cams / "plateA" / "synth_0000_cam.tif")
    n_pred = len(rows["plateA/synth_0000"]["predicted"].split())
    assert stack.shape[-2:] == (64, 64) and (stack.shape[0] if stack.ndim == 3 else 1) == n_pred


def test_parquet_output_resumes(screen: Path, model: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "results.parquet"
    first = sorted(str(p) for p in screen.glob("synth_001*_red.png"))
    run_batch(first, out, model, device="cpu", workers=0)
    summary = run_batch(screen, out, model, device="cpu", workers=0)
    assert summary.skipped == 10 and summary.done == 30
    table = pq.read_table(out)
    assert table.column_names == table_columns(HPA28_CLASSES, cells=False)
    images = table.column("image").to_pylist()
    assert len(images) == 40 == len(set(images))
    assert table.column("status").to_pylist().count("error") == 3
    assert not parts_dir(out).exists()


def test_cancel_stops_fast_and_leaves_a_resumable_table(model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    write_samples(folder, n=6, size=64, seed=5)
    for i in range(6, 60):  # cheap copies under new ids
        for c in ("red", "green", "blue", "yellow"):
            shutil.copy(folder / f"synth_{i % 6:04d}_{c}.png", folder / f"synth_{i:04d}_{c}.png")
    out = tmp_path / "r.csv"
    asked: list[float] = []

    def stop() -> bool:
        if asked:
            return True
        if len(read_rows(out)) >= 5:
            asked.append(time.perf_counter())
            return True
        return False

    summary = run_batch(folder, out, model, device="cpu", workers=1, batch_size=1, should_stop=stop)
    assert summary.cancelled and time.perf_counter() - asked[0] < 2.0
    rows = read_rows(out)
    assert 5 <= len(rows) < 60 and len(rows) == summary.done
    rest = run_batch(folder, out, model, device="cpu", workers=1)
    images = [r["image"] for r in read_rows(out)]
    assert rest.skipped == len(rows) and len(images) == 60 == len(set(images))


def test_user_errors(screen: Path, model: Path, tmp_path: Path) -> None:
    with pytest.raises(BatchError, match="no such"):
        run_batch(tmp_path / "missing", tmp_path / "r.csv", model, device="cpu")
    with pytest.raises(BatchError, match=r"\.csv or \.parquet"):
        run_batch(screen, tmp_path / "r.txt", model, device="cpu")
    with pytest.raises(BatchError, match="does not exist"):
        run_batch(screen, tmp_path / "nope" / "r.csv", model, device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BatchError, match="no images"):
        run_batch(empty, tmp_path / "r.csv", model, device="cpu")
    other = write_tiny_model(tmp_path / "m2", name="other")
    out = tmp_path / "r.csv"
    run_batch(sorted(screen.glob("synth_0000_red.png")), out, model, device="cpu", workers=0)
    with pytest.raises(BatchError, match="tiny@1"):
        run_batch(screen, out, other, device="cpu", workers=0)
    with pytest.raises(BatchError, match="other columns"):
        run_batch(screen, out, model, device="cpu", workers=0, cells=True)


def test_thread_tuner_keeps_the_faster_count() -> None:
    tuner = ThreadTuner([1, 2], phase=1.0, hold=10.0, min_batches=1)
    assert tuner.current == 2  # starts with torch's default (all cores)
    speed = {1: 30.0, 2: 10.0}  # images/s: one thread is faster (a busy machine)
    now, done, threads = 0.0, 0, tuner.current
    for _ in range(40):
        now += 0.5
        done += int(speed[threads] * 0.5)
        changed = tuner.update(now, done)
        if changed is not None:
            threads = changed
    assert threads == 1 == tuner.current
    assert {t for t, _ in tuner.history} == {1, 2}
    rates = dict(tuner.history)
    assert rates[1] > rates[2]
    assert ThreadTuner([2]).update(1.0, 5) is None  # one candidate: nothing to tune


def test_one_writer_per_table(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    first = CsvWriter(out, ("a", "b"), cells=False)
    try:
        with pytest.raises(BatchError, match="another batch"):
            CsvWriter(out, ("a", "b"), cells=False)
        first.write([Row("x", "m@1", np.array([0.25, 0.75], np.float32), [1])])
    finally:
        first.close()
    again = CsvWriter(out, ("a", "b"), cells=False)
    assert again.state.done == {"x"} and again.state.class_counts[1] == 1
    again.close()


def test_dask_local_cluster_gives_the_local_results(
    screen: Path, model: Path, tmp_path: Path
) -> None:
    distributed = pytest.importorskip("distributed")
    local = tmp_path / "local.csv"
    run_batch(screen, local, model, device="cpu", workers=0)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        out = tmp_path / "dask.csv"
        summary = run_batch(
            screen, out, model, device="cpu", scheduler=cluster.scheduler_address, chunk_size=8
        )
        assert summary.done == 40 and summary.errors == 3
        # resumes like a local run, and parts never duplicate rows
        again = run_batch(screen, out, model, device="cpu", scheduler=cluster.scheduler_address)
        assert again.done == 0 and again.skipped == 40
        if importlib.util.find_spec("pyarrow") is not None:  # parts merge into Parquet too
            pq_out = tmp_path / "dask.parquet"
            run_batch(screen, pq_out, model, device="cpu", scheduler=cluster.scheduler_address)
            import pyarrow.parquet as pq

            table = pq.read_table(pq_out)
            assert table.column_names == table_columns(HPA28_CLASSES, cells=False)
            assert sorted(table.column("image").to_pylist()) == sorted(
                r["image"] for r in read_rows(out)
            )
    a, b = read_rows(local), read_rows(out)
    assert list(a[0]) == list(b[0])
    by_image = {r["image"]: r for r in b}
    assert len(b) == 40 and set(by_image) == {r["image"] for r in a}
    for r in a:
        other = by_image[r["image"]]
        assert (r["status"], r["error"], r["model"]) == (
            other["status"],
            other["error"],
            other["model"],
        )
        if r["status"] == "ok":
            x = np.array([float(r[c]) for c in HPA28_CLASSES])
            y = np.array([float(other[c]) for c in HPA28_CLASSES])
            np.testing.assert_allclose(x, y, atol=1e-5)
    assert not parts_dir(out).exists()


def test_any_name_round_trips_through_a_record() -> None:
    """encode/decode is one to one, and a record of any name parses back as written."""
    import io
    import os
    import random

    from napari_hpa.core.batch.records import (
        complete_records,
        csv_record,
        decode_image,
        encode_image,
        parse_record,
    )

    rng = random.Random(0)
    alphabet = list('ab/,"\r\n\t ;:%') + ["file:", "ß", "细", os.fsdecode(b"\xff"), "\udce9"]
    names = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(3000)]
    records = []
    for name in names:
        text = encode_image(name)
        text.encode("utf-8")  # always valid UTF-8 (and a valid Parquet string)
        assert decode_image(text) == name
        records.append(csv_record([text, "m@1", "0.5", " x "]))
    blob = "".join(records).encode("utf-8")
    parsed = [parse_record(r) for _o, r in complete_records(io.BytesIO(blob))]
    assert [decode_image(p[0]) for p in parsed] == names
    assert all(p[1:] == ["m@1", "0.5", " x "] for p in parsed)


def test_channels_and_blank_images_in_workers_and_dask_tasks(model: Path, tmp_path: Path) -> None:
    """Issue 18, item 20: the ``--channels`` map travels to the decode workers (where the
    model runs: the CPU default) and into a Dask task (``run_chunk``), with the Predictor's
    own numbers; an all-black image is a ``warning`` row there, without a predicted class."""
    import tifffile

    folder = tmp_path / "seven"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(2):
        tifffile.imwrite(folder / f"s{i}.tif", rng.integers(0, 255, (7, 48, 48), np.uint8))
    tifffile.imwrite(folder / "black.tif", np.zeros((7, 48, 48), np.uint8))
    mapping = parse_channel_map("microtubules=2,protein=4,nucleus=0,er=6", HPA_CHANNELS)
    out = tmp_path / "r.csv"
    summary = run_batch(
        folder, out, model, device="cpu", workers=1, infer="workers", channels=mapping
    )
    assert (summary.ok, summary.warnings, summary.errors, summary.workers) == (2, 1, 0, 1)
    rows = {Path(r["image"]).name: r for r in read_rows(out)}
    black = rows["black.tif"]
    assert black["status"] == "warning" and black["predicted"] == ""
    assert black["error"].startswith(f"{folder / 'black.tif'}: blank image (every pixel is 0)")
    assert summary.warning_messages == [black["error"]]
    predictor = Predictor(model, device="cpu")
    for name in ("s0.tif", "s1.tif"):
        pred = predictor.predict_one(apply_channel_map(read_image(folder / name), mapping))
        got = np.array([float(rows[name][c]) for c in HPA28_CLASSES])
        np.testing.assert_allclose(got, pred.probabilities, atol=2e-6)
        assert rows[name]["status"] == "ok"
    sources = sorted(str(p) for p in folder.iterdir())
    ref = ModelRef.of(predictor)
    args = ("cpu", 4, "tiles", str(tmp_path / "parts"), HPA28_CLASSES, False, None, None)
    chunk = run_chunk(sources, ref, *args, mapping)
    assert (chunk.done, chunk.errors, chunk.warnings) == (3, 0, 1)
    parts = {Path(r["image"]).name: r for r in read_rows(Path(chunk.part))}
    assert parts["black.tif"]["status"] == "warning" and parts["black.tif"]["predicted"] == ""
    for name in ("s0.tif", "s1.tif"):
        x = np.array([float(parts[name][c]) for c in HPA28_CLASSES])
        y = np.array([float(rows[name][c]) for c in HPA28_CLASSES])
        np.testing.assert_allclose(x, y, atol=1e-5)


def test_a_model_that_overflows_gives_error_rows_never_nan_ok_rows(
    screen: Path, model: Path, tmp_path: Path
) -> None:
    """Finite but absurd weights (loadable) overflow to NaN: each image is an error row."""
    from safetensors.numpy import load_file, save_file

    blown = tmp_path / "blown"
    shutil.copytree(model, blown)
    weights = blown / "model.safetensors"
    tensors = {k: (v * 1e30 if v.dtype.kind == "f" else v) for k, v in load_file(weights).items()}
    save_file(tensors, weights)
    out = tmp_path / "results.csv"
    summary = run_batch(screen, out, blown, device="cpu", workers=1, batch_size=4, infer="main")
    rows = read_rows(out)
    assert not [r for r in rows if r["status"] == "ok"]
    nan_rows = [r for r in rows if "non-finite outputs" in r["error"]]
    assert len(nan_rows) == 37 and summary.ok == 0
    assert all(r["status"] == "error" and r["error"].startswith(r["image"]) for r in nan_rows)
