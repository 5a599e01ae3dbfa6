"""The npe2 reader, writer and sample data (napari-hpa's manifest contributions)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from reliability_counts import record_bad_input

from napari_hpa import _reader, _sample_data
from napari_hpa._writer import write_labels
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.image.writers import write_hpa_set, write_image
from napari_hpa.layers import META

NEEDS_DISPLAY = pytest.mark.skipif(
    sys.platform.startswith("linux") and not os.environ.get("DISPLAY"),
    reason="needs a display: run under xvfb-run",
)


@pytest.fixture(scope="module")
def hpa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_samples(tmp_path_factory.mktemp("hpa"), n=2, size=128, seed=2)


def _read(path: Path | str) -> list[tuple]:
    reader = _reader.get_reader(str(path))
    assert reader is not None, path
    return reader(str(path))


def test_hpa_set_is_four_additive_layers(hpa_dir: Path) -> None:
    layers = _read(hpa_dir / "synth_0000_green.png")
    assert [kw["name"] for _, kw, _ in layers] == ["microtubules", "protein", "nucleus", "ER"]
    assert [kw["colormap"] for _, kw, _ in layers] == ["red", "green", "blue", "yellow"]
    assert {kw["blending"] for _, kw, _ in layers} == {"additive"}
    assert {t for _, _, t in layers} == {"image"}
    m = layers[1][1]["metadata"][META]
    assert m["channel"] == "protein" and m["source"] == str(hpa_dir / "synth_0000")
    assert layers[0][0].shape == (128, 128) and layers[0][0].dtype == np.float32


def test_hpa_id_and_folder_open_the_set(hpa_dir: Path, notes: list) -> None:
    assert len(_read(hpa_dir / "synth_0001")) == 4
    layers = _read(hpa_dir)  # a folder of sets: the first one, and a note about the rest
    assert layers[0][1]["metadata"][META]["image_id"] == "synth_0000"
    assert any("2 images" in msg for _, msg in notes)


def test_rgb_gray_and_ome_tiff(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (3, 40, 50), dtype=np.uint8)
    write_image(tmp_path / "rgb.jpg", rgb)
    layers = _read(tmp_path / "rgb.jpg")
    assert [kw["name"] for _, kw, _ in layers] == ["red", "green", "blue"]
    assert [kw["colormap"] for _, kw, _ in layers] == ["red", "green", "blue"]

    write_image(tmp_path / "gray.png", rgb[:1])
    ((data, kw, kind),) = _read(tmp_path / "gray.png")
    assert kind == "image" and kw["name"] == "gray" and kw["colormap"] == "gray"

    ome = rng.random((4, 30, 30)).astype(np.float32)
    write_image(
        tmp_path / "x.ome.tif", ome, channel_names=["microtubules", "protein", "nucleus", "er"]
    )
    layers = _read(tmp_path / "x.ome.tif")
    assert [kw["colormap"] for _, kw, _ in layers] == ["red", "green", "blue", "yellow"]
    np.testing.assert_allclose(layers[3][0], ome[3])


@contextlib.contextmanager
def _no_hang(seconds: float = 10.0) -> Iterator[None]:
    """Fail instead of hanging: SIGALRM interrupts a blocking ``open`` (of a FIFO)."""

    def fire(signum: int, frame: object) -> None:
        raise TimeoutError(f"blocked for {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_and_over_long_names_are_refused_with_the_reason(tmp_path: Path, notes) -> None:
    """Issue 18, items 12 and 16: a bare FIFO ``x.png`` and paths with a name over 255 bytes
    are napari-hpa's to refuse, at once, with one notification naming the path and the
    reason (before: the FIFO was left to napari's own reader, which blocks on it, and an
    over-long name raised OSError out of ``get_reader``)."""
    fifo = tmp_path / "bare.png"
    os.mkfifo(fifo)
    long_dir = tmp_path / ("x" * 300)
    cases = [
        ("fifo_png", fifo, "not a regular file: it is a FIFO (named pipe)"),
        ("name_over_255", tmp_path / f"{'x' * 300}.png", "file name is too long (304 bytes"),
        ("name_over_255_folder", long_dir, "file name is too long (300 bytes"),
        ("name_over_255_parent", long_dir / "a.png", "file name is too long (300 bytes"),
    ]
    for kind, path, reason in cases:
        notes.clear()
        try:
            with _no_hang():
                reader = _reader.get_reader(str(path))
                assert reader is not None, path
                assert reader(str(path)) == _reader.NOTHING
            (message,) = [m for n, m in notes if n == "show_error"]
            assert reason in message and str(path) in message, message
        except BaseException:
            record_bad_input(kind, "reader", ok=False)
            raise
        record_bad_input(kind, "reader", ok=True)
    assert _reader.get_reader(str(tmp_path / "absent.png")) is None  # nothing there: not ours


def test_unsupported_paths_get_no_reader(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    assert _reader.get_reader(str(tmp_path / "notes.txt")) is None
    assert _reader.get_reader(str(tmp_path / "missing.png")) is None
    assert _reader.get_reader(str(tmp_path)) is None  # a folder without images


def test_broken_inputs_notify_and_add_nothing(tmp_path: Path, notes: list) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert _read(tmp_path / "broken.png") == _reader.NOTHING
    assert notes[-1][0] == "show_error" and "broken.png" in notes[-1][1]

    planes = np.zeros((4, 32, 32), np.float32)
    write_hpa_set(tmp_path, "cut", planes)
    (tmp_path / "cut_green.png").unlink()  # no protein (a set without yellow reads as 3)
    assert _read(tmp_path / "cut_red.png") == _reader.NOTHING
    assert "no protein channel" in notes[-1][1] and "cut" in notes[-1][1]


def test_label_writer_round_trip(tmp_path: Path) -> None:
    labels = np.zeros((20, 30), np.int32)
    labels[2:8, 3:9] = 7
    labels[10:15, 20:28] = 300
    [written] = write_labels(str(tmp_path / "cells"), labels, {"name": "cells"})
    assert written.endswith("cells.tif")
    back = tifffile.imread(written)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, labels)
    with pytest.raises(ValueError):
        write_labels(str(tmp_path / "f.tif"), labels.astype(float), {})


def test_bundled_sample_data() -> None:
    layers = _sample_data.synthetic_0()
    assert [kw["colormap"] for _, kw, _ in layers] == ["red", "green", "blue", "yellow"]
    assert layers[0][0].shape == (512, 512)
    assert len(_sample_data.synthetic_1()) == 4


def test_real_sample_from_env(hpa_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_sample_data.REAL_SAMPLE_ENV, str(hpa_dir / "synth_0001"))
    assert len(_sample_data.real_hpa()) == 4
    monkeypatch.setenv(_sample_data.REAL_SAMPLE_ENV, str(hpa_dir / "nothing_here"))
    with pytest.raises(Exception, match="nothing_here"):
        _sample_data.real_hpa()


def test_manifest_is_valid() -> None:
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_distribution("napari-hpa")
    widgets = {w.display_name for w in manifest.contributions.widgets}
    assert widgets == {"Predict", "Annotate", "Retrain", "Batch"}
    assert manifest.contributions.readers[0].accepts_directories
    # the activation hook that makes napari-hpa napari's reader of HPA files and OME-TIFF
    assert manifest.on_activate == "napari_hpa._reader_preference:activate"


@pytest.mark.gui
@NEEDS_DISPLAY
def test_viewer_opens_hpa_set(make_napari_viewer, hpa_dir: Path, notes: list) -> None:
    viewer = make_napari_viewer()
    viewer.open(str(hpa_dir / "synth_0000_blue.png"), plugin="napari-hpa")
    assert [lyr.name for lyr in viewer.layers] == ["microtubules", "protein", "nucleus", "ER"]
    assert [lyr.colormap.name for lyr in viewer.layers] == ["red", "green", "blue", "yellow"]
    assert {lyr.blending for lyr in viewer.layers} == {"additive"}
    # a second member file of the same set (as when four files are dropped) adds nothing
    viewer.open(str(hpa_dir / "synth_0000_red.png"), plugin="napari-hpa")
    assert len(viewer.layers) == 4
    # a broken file: a notification, no exception, no layer, the viewer still works
    (hpa_dir / "junk.tif").write_bytes(b"II*\x00garbage")
    viewer.open(str(hpa_dir / "junk.tif"), plugin="napari-hpa")
    assert len(viewer.layers) == 4
    assert any("junk.tif" in msg for kind, msg in notes if kind == "show_error")
    (hpa_dir / "junk.tif").unlink()
    viewer.open_sample("napari-hpa", "synthetic_1")
    assert len(viewer.layers) == 8


def _channels(viewer) -> list[str]:
    return [lyr.metadata[META]["channel"] for lyr in viewer.layers]


@pytest.mark.gui
@NEEDS_DISPLAY
def test_members_of_partial_sets_open_once(make_napari_viewer, tmp_path: Path) -> None:
    """The members of a 1- to 3-channel set open it once; a plain RGB file opens each time."""
    viewer = make_napari_viewer()
    planes = np.random.default_rng(1).integers(0, 255, (4, 32, 32), dtype=np.uint8)
    write_hpa_set(tmp_path, "s", planes)
    (tmp_path / "s_yellow.png").unlink()
    members = [str(tmp_path / f"s_{c}.png") for c in ("red", "green", "blue")]
    viewer.open(members, plugin="napari-hpa")  # as napari calls the reader for a drop of three
    assert [lyr.name for lyr in viewer.layers] == ["microtubules", "protein", "nucleus"]

    kaggle = tmp_path / "kaggle"
    kaggle.mkdir()
    write_image(kaggle / "lone_green.png", planes[1:2])
    viewer.open([str(kaggle / "lone_green.png")] * 2, plugin="napari-hpa")
    assert [lyr.name for lyr in viewer.layers][3:] == ["lone"]  # a Kaggle green alone: once

    # The set's files changed on disk (yellow in place of red): as many channels are open
    # as the set has, but not the same ones, so a member opens the set again.
    write_image(tmp_path / "s_yellow.png", planes[3:])
    (tmp_path / "s_red.png").unlink()
    viewer.open(str(tmp_path / "s_green.png"), plugin="napari-hpa")
    assert _channels(viewer)[4:] == ["protein", "nucleus", "er"]

    write_image(tmp_path / "photo.png", planes[:3])  # RGB: a file of its own, each time
    viewer.open([str(tmp_path / "photo.png")] * 2, plugin="napari-hpa")
    assert _channels(viewer)[7:] == ["red", "green", "blue"] * 2
