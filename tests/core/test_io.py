"""Tests for napari_hpa.core.image.io: reading, finding and writing images (small files only)."""

from __future__ import annotations

import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import shared_data
from PIL import Image

from napari_hpa.core.image import io
from napari_hpa.core.image.io import ImageData, ImageReadError, read_image
from napari_hpa.core.image.sources import find_images, is_hpa_source, split_hpa_name
from napari_hpa.core.image.writers import write_hpa_set, write_image
from napari_hpa.core.tasks import HPA_CHANNELS

H, W = 12, 16


def _hpa(folder: Path, image_id: str = "img1", fmt: str = "png") -> np.ndarray:
    """Write an HPA set whose channel k has value 10*(k+1) everywhere; return the uint8 data."""
    data = np.stack([np.full((H, W), 10 * (k + 1), np.uint8) for k in range(4)])
    data[:, 0, 0] = 200  # not constant
    write_hpa_set(folder, image_id, data, fmt=fmt)
    return data


def _err(path, **kw) -> ImageReadError:
    with pytest.raises(ImageReadError) as info:
        read_image(path, **kw)
    return info.value


# ---------------------------------------------------------------------------- HPA sets
@pytest.mark.parametrize("member", ["red", "green", "blue", "yellow"])
def test_hpa_set_from_any_member(tmp_path: Path, member: str) -> None:
    raw = _hpa(tmp_path)
    img = read_image(tmp_path / f"img1_{member}.png")
    assert isinstance(img, ImageData)
    assert img.data.shape == (4, H, W) and img.data.dtype == np.float32
    assert img.channel_names == HPA_CHANNELS
    np.testing.assert_allclose(img.data, raw / 255.0, atol=1e-6)
    assert img.image_id == "img1"
    assert img.source == str(tmp_path / "img1")
    assert [p.name for p in img.paths] == [f"img1_{c}.png" for c in io.HPA_COLORS]


def test_hpa_set_from_id_and_tif_members(tmp_path: Path) -> None:
    raw = _hpa(tmp_path, "a_b_1", fmt="tif")
    img = read_image(tmp_path / "a_b_1")
    assert img.source == str(tmp_path / "a_b_1") and img.image_id == "a_b_1"
    np.testing.assert_allclose(img.data, raw / 255.0, atol=1e-6)
    assert is_hpa_source(tmp_path / "a_b_1") and is_hpa_source(tmp_path / "a_b_1_red.tif")
    assert not is_hpa_source(tmp_path / "nothing")


def test_split_hpa_name() -> None:
    assert split_hpa_name("x/57_F11_1_red.png") == ("57_F11_1", "red")
    assert split_hpa_name("a_Yellow.TIF") == ("a", "yellow")
    assert split_hpa_name("id_green.ome.tif") == ("id", "green")
    assert split_hpa_name("photo.png") is None
    assert split_hpa_name("x_purple.png") is None


def test_lone_green_file_is_one_protein_channel(tmp_path: Path) -> None:
    """A Kaggle ``<uuid>_green.png`` alone: the HPA model needs only the protein."""
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(tmp_path / "abc_green.png")
    for path in (tmp_path / "abc_green.png", tmp_path / "abc"):
        img = read_image(path)
        assert img.channel_names == ("protein",) and img.data.shape == (1, H, W)
        np.testing.assert_allclose(img.data, 7 / 255, atol=1e-6)
        assert img.source == str(tmp_path / "abc") and img.image_id == "abc"
        assert img.metadata["missing_channels"] == ["microtubules", "nucleus", "er"]
    single = read_image(tmp_path / "abc_green.png", hpa_set=False)  # the file's own pixels
    assert single.channel_names == ("gray",) and single.source == str(tmp_path / "abc_green.png")


def test_set_without_yellow_is_three_channels(tmp_path: Path) -> None:
    raw = _hpa(tmp_path)
    (tmp_path / "img1_yellow.png").unlink()
    img = read_image(tmp_path / "img1_blue.png")
    assert img.channel_names == ("microtubules", "protein", "nucleus")
    np.testing.assert_allclose(img.data, raw[:3] / 255.0, atol=1e-6)
    assert [p.name for p in img.paths] == ["img1_red.png", "img1_green.png", "img1_blue.png"]
    assert img.metadata["missing_channels"] == ["er"]


def test_set_without_protein_says_what_is_missing_in_words(tmp_path: Path) -> None:
    _hpa(tmp_path)
    (tmp_path / "img1_green.png").unlink()
    for path in (tmp_path / "img1_red.png", tmp_path / "img1"):
        err = _err(path)
        assert err.path == tmp_path / "img1" and str(err).startswith(str(tmp_path / "img1"))
        assert "no protein channel" in err.reason and "img1_green" in err.reason
        assert "found red, blue, yellow" in err.reason
        assert "hpa_set" not in str(err)  # an API argument is nothing a user can pass


def test_real_kaggle_green_and_duloc_set_without_yellow(tmp_path: Path) -> None:
    kaggle = shared_data("hpa_kaggle2018_single_channels") / "train_sample"
    green = sorted(kaggle.glob("*_green.png"))[0]
    img = read_image(green)
    assert img.channel_names == ("protein",) and img.data.shape == (1, 512, 512)
    assert img.data.max() > 0.1  # the real protein stain, not an empty plane
    duloc = shared_data("hpa_duloc_single_cells") / "images"
    for color in ("red", "green", "blue"):
        (tmp_path / f"cells_{color}.jpg").symlink_to(duloc / f"comb1_mixed_img0_{color}.jpg")
    img = read_image(tmp_path / "cells")
    assert img.channel_names == ("microtubules", "protein", "nucleus")
    assert img.data.shape == (3, 1536, 1536)
    with_er = read_image(duloc / "comb1_mixed_img0")
    np.testing.assert_array_equal(img.data, with_er.data[:3])


def test_hpa_channels_of_different_sizes(tmp_path: Path) -> None:
    _hpa(tmp_path)
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(tmp_path / "img1_blue.png")
    msg = str(_err(tmp_path / "img1"))
    assert "different sizes" in msg and "img1_blue.png 5x6" in msg
    assert f"img1_red.png {H}x{W}" in msg


def test_hpa_12bit_set_scaled_jointly(tmp_path: Path) -> None:
    for k, c in enumerate(io.HPA_COLORS):
        Image.fromarray(np.full((H, W), 1000 * (k + 1), np.uint16)).save(tmp_path / f"s_{c}.png")
    img = read_image(tmp_path / "s")
    assert img.metadata["bit_depth"] == 12
    expected = [1000 * k / 4095 for k in (1, 2, 3, 4)]
    np.testing.assert_allclose(img.data[:, 0, 0], expected, rtol=1e-5)


# ---------------------------------------------------------------------------- TIFF
def test_tiff_cyx_with_axes(tmp_path: Path) -> None:
    a = np.random.default_rng(0).integers(0, 255, (3, H, W), dtype=np.uint8)
    path = write_image(tmp_path / "cyx.tif", a)
    img = read_image(path)
    assert img.channel_names == ("ch0", "ch1", "ch2")
    np.testing.assert_allclose(img.data, a / 255.0, atol=1e-6)
    assert img.image_id == "cyx" and img.source == str(path)


def test_tiff_yxc_rgb_and_heuristic(tmp_path: Path) -> None:
    a = np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", a, photometric="rgb")
    img = read_image(tmp_path / "rgb.tif")
    assert img.channel_names == ("red", "green", "blue")
    np.testing.assert_allclose(img.data, np.moveaxis(a, -1, 0) / 255.0, atol=1e-6)
    # no axis metadata at all, last axis of 4 -> YXC
    b = np.random.default_rng(2).integers(0, 60000, (H, W, 4), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "bare.tif", b, photometric="minisblack", metadata=None)
    img = read_image(tmp_path / "bare.tif")
    assert img.data.shape == (4, H, W) and img.channel_names == ("ch0", "ch1", "ch2", "ch3")
    np.testing.assert_allclose(img.data, np.moveaxis(b, -1, 0) / 65535.0, atol=1e-6)


def test_tiff_yx_and_pages(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "yx.tif", np.full((H, W), 3, np.uint8))
    img = read_image(tmp_path / "yx.tif")
    assert img.data.shape == (1, H, W) and img.channel_names == ("gray",)
    c = np.zeros((2, H, W), np.uint8)
    c[1] = 255
    tifffile.imwrite(tmp_path / "pages.tif", c, photometric="minisblack", metadata=None)
    img = read_image(tmp_path / "pages.tif")
    assert img.data.shape == (2, H, W) and img.data[1].min() == 1.0


def test_tiff_zcyx_imagej_max_projection(tmp_path: Path) -> None:
    a = np.zeros((3, 2, H, W), np.uint8)
    a[0, 0] = 10
    a[2, 0] = 50
    a[1, 1] = 255
    tifffile.imwrite(tmp_path / "ij.tif", a, imagej=True, metadata={"axes": "ZCYX"})
    img = read_image(tmp_path / "ij.tif")
    assert img.data.shape == (2, H, W)
    np.testing.assert_allclose(img.data[:, 0, 0], [50 / 255, 1.0], atol=1e-6)
    assert img.metadata["z_projection"] == "max"


def test_ome_tiff_channel_names(tmp_path: Path) -> None:
    a = np.random.default_rng(3).random((2, 3, H, W)).astype(np.float32)
    tifffile.imwrite(
        tmp_path / "x.ome.tif",
        a,
        ome=True,
        metadata={"axes": "ZCYX", "Channel": {"Name": ["dapi", "gfp", "er"]}},
    )
    img = read_image(tmp_path / "x.ome.tif")
    assert img.channel_names == ("dapi", "gfp", "er") and img.image_id == "x"
    np.testing.assert_allclose(img.data, a.max(axis=0), atol=1e-6)
    path = write_image(tmp_path / "w.ome.tif", a[0], channel_names=["nucleus", "protein", "er"])
    assert read_image(path).channel_names == ("nucleus", "protein", "er")


# ---------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize(
    ("array", "expected_max", "bits"),
    [
        (np.array([[0, 255]], np.uint8), 1.0, 8),
        (np.array([[0, 65535]], np.uint16), 1.0, 16),
        (np.array([[0, 4095]], np.uint16), 1.0, 12),
        (np.array([[0, 2047]], np.uint16), 2047 / 4095, 12),
        (np.array([[0, 1000]], np.int32), 1000 / 4095, 12),
        (np.array([[False, True]]), 1.0, 1),
    ],
)
def test_integer_scaling(tmp_path: Path, array: np.ndarray, expected_max: float, bits: int) -> None:
    tifffile.imwrite(tmp_path / "d.tif", array)
    img = read_image(tmp_path / "d.tif")
    assert img.data.dtype == np.float32 and img.data.min() == 0.0
    assert img.data.max() == pytest.approx(expected_max, rel=1e-6)
    assert img.metadata["bit_depth"] == bits


def test_float_and_signed_scaling(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "f.tif", np.array([[0.25, 0.5]], np.float64))
    img = read_image(tmp_path / "f.tif")
    np.testing.assert_allclose(img.data[0], [[0.25, 0.5]])
    assert "rescaled" not in img.metadata
    tifffile.imwrite(tmp_path / "g.tif", np.array([[-2.0, 0.0, 6.0]], np.float32))
    img = read_image(tmp_path / "g.tif")
    np.testing.assert_allclose(img.data[0], [[0.0, 0.25, 1.0]])
    assert img.metadata["rescaled"] == (-2.0, 6.0)
    tifffile.imwrite(tmp_path / "i.tif", np.array([[-10, 10]], np.int16))
    np.testing.assert_allclose(read_image(tmp_path / "i.tif").data[0], [[0.0, 1.0]])


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.array([[np.nan, 1.0]], np.float32), "NaN"),
        (np.array([[np.inf, 1.0]], np.float32), "infinite"),
        (np.array([[1 + 1j, 0]], np.complex64), "unsupported pixel type complex64"),
    ],
)
def test_bad_values(tmp_path: Path, array: np.ndarray, words: str) -> None:
    tifffile.imwrite(tmp_path / "bad.tif", array)
    msg = str(_err(tmp_path / "bad.tif"))
    assert msg.startswith(str(tmp_path / "bad.tif") + ": ") and words in msg


# ---------------------------------------------------------------------------- PNG / JPEG
def test_png_modes(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    rgba = rng.integers(0, 255, (H, W, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    img = read_image(tmp_path / "rgba.png")
    assert img.channel_names == ("red", "green", "blue")
    np.testing.assert_allclose(img.data, np.moveaxis(rgba[..., :3], -1, 0) / 255.0, atol=1e-6)

    gray = rng.integers(0, 255, (H, W), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    img = read_image(tmp_path / "gray.png")
    assert img.channel_names == ("gray",) and img.metadata["bit_depth"] == 8

    pal = Image.fromarray(np.moveaxis(rgba[..., :3], -1, 0)[0]).convert("P")
    pal.putpalette([v for i in range(256) for v in (i, 0, 255 - i)])
    pal.save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png").channel_names == ("red", "green", "blue")

    g16 = np.array(rng.integers(0, 65535, (H, W)), np.uint16)
    g16[0, 0] = 65535
    Image.fromarray(g16).save(tmp_path / "g16.png")
    img = read_image(tmp_path / "g16.png")
    assert img.metadata["bit_depth"] == 16 and img.data.max() == 1.0

    Image.fromarray(gray > 100).save(tmp_path / "bw.png")
    assert set(np.unique(read_image(tmp_path / "bw.png").data)) <= {0.0, 1.0}


def test_jpeg_rgb_and_equal_channels(tmp_path: Path) -> None:
    gray = np.tile(np.linspace(0, 255, W, dtype=np.uint8), (H, 1))
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "g.jpg")
    img = read_image(tmp_path / "g.jpg")
    assert img.channel_names == ("gray",) and img.data.shape == (1, H, W)
    assert img.metadata["collapsed_gray"] is True
    colour = np.zeros((H, W, 3), np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour).save(tmp_path / "c.jpeg")
    img = read_image(tmp_path / "c.jpeg")
    assert img.channel_names == ("red", "green", "blue") and img.data[0].mean() > 0.7


# ---------------------------------------------------------------------------- errors
def test_error_cases(tmp_path: Path) -> None:
    msg = str(_err(tmp_path / "nope.png"))
    assert msg == f"{tmp_path / 'nope.png'}: file not found"
    (tmp_path / "empty.png").write_bytes(b"")
    assert "empty (0 bytes)" in str(_err(tmp_path / "empty.png"))
    (tmp_path / "text.png").write_text("hello, not an image\n")
    assert "not an image file" in str(_err(tmp_path / "text.png"))
    (tmp_path / "text.tif").write_text("hello")
    assert "not an image file" in str(_err(tmp_path / "text.tif"))
    assert "is a folder" in str(_err(tmp_path))

    noise = np.random.default_rng(5).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.png")
    blob = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(blob[: len(blob) // 2])
    err = _err(tmp_path / "cut.png")
    assert err.path == tmp_path / "cut.png" and "truncated" in err.reason
    write_image(tmp_path / "full.tif", np.moveaxis(noise, -1, 0))
    blob = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(blob[: len(blob) // 2])
    assert "truncated" in str(_err(tmp_path / "cut.tif"))

    with pytest.warns(UserWarning):
        tifffile.imwrite(tmp_path / "zero.tif", np.zeros((3, 0, 10), np.uint8))
    assert "zero-size dimension" in str(_err(tmp_path / "zero.tif"))


def test_too_large_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((2, H, W), np.uint8))
    for name in ("a.png", "a.tif"):
        msg = str(_err(tmp_path / name, max_pixels=100))
        assert "too large" in msg and f"{W}x{H}" in msg and "limit 100" in msg
    monkeypatch.setattr(io, "MAX_PIXELS", 10)
    assert "too large" in str(_err(tmp_path / "a.png"))


def test_huge_png_header_refused_without_decoding(tmp_path: Path) -> None:
    """A PNG whose header claims 30000x30000 pixels is refused from the header alone."""
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / "tiny.png")
    blob = bytearray((tmp_path / "tiny.png").read_bytes())
    blob[16:24] = struct.pack(">II", 30000, 30000)  # IHDR width, height
    blob[29:33] = struct.pack(">I", zlib.crc32(bytes(blob[12:29])))
    (tmp_path / "huge.png").write_bytes(bytes(blob))
    assert "too large" in str(_err(tmp_path / "huge.png"))


def test_error_pickles_and_is_value_error() -> None:
    err = ImageReadError("/x/y.png", "broken")
    assert isinstance(err, ValueError) and str(err) == f"{Path('/x/y.png')}: broken"
    back = pickle.loads(pickle.dumps(err))
    assert back.path == err.path and back.reason == "broken" and str(back) == str(err)


# ---------------------------------------------------------------------------- find_images
def test_find_images(tmp_path: Path) -> None:
    _hpa(tmp_path / "hpa", "s1")
    _hpa(tmp_path / "hpa", "s2", fmt="jpg")
    sub = tmp_path / "hpa" / "sub"
    write_image(sub / "deep.tif", np.zeros((1, 4, 4), np.uint8))
    write_image(tmp_path / "hpa" / ".hidden.png", np.zeros((1, 4, 4), np.uint8))
    write_image(tmp_path / "hpa" / ".cache" / "x.png", np.zeros((1, 4, 4), np.uint8))
    (tmp_path / "hpa" / "notes.txt").write_text("x")
    write_image(tmp_path / "hpa" / "photo.PNG", np.zeros((3, 4, 4), np.uint8))
    if hasattr(os, "symlink"):
        os.symlink(tmp_path / "hpa", sub / "loop")  # must not be followed

    hpa = tmp_path / "hpa"
    expected = [str(hpa / "photo.PNG"), str(hpa / "s1"), str(hpa / "s2"), str(sub / "deep.tif")]
    assert find_images(hpa) == sorted(expected)
    assert find_images([hpa], recursive=False) == sorted(expected[:3])
    assert find_images(str(hpa), glob="*.tif") == [str(sub / "deep.tif")]
    # explicit members, ids, duplicates and wildcards all collapse to the same sources
    again = find_images([hpa / "s1_red.png", hpa / "s1", hpa / "s1_blue.png", str(hpa / "s2_*")])
    assert again == [str(hpa / "s1"), str(hpa / "s2")]
    with pytest.raises(ImageReadError, match="no such file"):
        find_images([tmp_path / "missing"])
    for source in find_images(hpa):
        assert read_image(source).data.ndim == 3


# ---------------------------------------------------------------------------- real data
def test_real_hpa_field() -> None:
    folder = shared_data("hpa_public_4ch_examples") / "images"
    img = read_image(folder / "57_F11_1_green.png")
    assert img.data.shape == (4, 1728, 1728) and img.channel_names == HPA_CHANNELS
    assert img.source == str(folder / "57_F11_1") and 0.0 <= img.data.min() < img.data.max() <= 1.0
    partial = read_image(folder / "383_D2_1")  # only green and blue in the source
    assert partial.channel_names == ("protein", "nucleus")
    assert partial.data.shape == (2, 2048, 2048)


def test_real_plankton_jpeg_is_gray() -> None:
    folder = shared_data("plankton_ndsb2015") / "images"
    first = next(p for d in sorted(folder.iterdir()) if d.is_dir() for p in sorted(d.glob("*.jpg")))
    img = read_image(first)
    assert img.channel_names == ("gray",) and img.data.shape[0] == 1


# ---------------------------------------------------------------------------- issue 18
@pytest.mark.parametrize("compression", ["lzw", "zlib", "jpeg"])
def test_compressed_tiffs_round_trip(tmp_path: Path, compression: str) -> None:
    """Item 18: LZW (the most common), Deflate and JPEG-in-TIFF decode (imagecodecs)."""
    rng = np.random.default_rng(18)
    if compression == "jpeg":  # lossy: a smooth RGB image, compared within JPEG's error
        yy, xx = np.mgrid[0:64, 0:64]
        rgb = np.stack([yy * 4, xx * 4, (yy + xx) * 2], axis=-1).astype(np.uint8)
        tifffile.imwrite(tmp_path / "j.tif", rgb, photometric="rgb", compression="jpeg")
        img = read_image(tmp_path / "j.tif")
        assert img.channel_names == ("red", "green", "blue")
        assert np.abs(img.data - np.moveaxis(rgb, -1, 0) / 255).max() < 0.08
        return
    raw = rng.integers(0, 65535, (3, 40, 50), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", raw, compression=compression)
    img = read_image(tmp_path / "c.tif")
    np.testing.assert_array_equal(np.rint(img.data * 65535).astype(np.uint16), raw)


def test_imagecodecs_is_a_dependency_and_its_absence_is_named(tmp_path: Path) -> None:
    """Item 18: pyproject lists imagecodecs; without it, an LZW TIFF says what to install
    (not 'corrupt'). The absence is real: a child process where it cannot be imported."""
    import subprocess
    import sys

    import tomllib

    meta = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert any(
        d.replace(" ", "").startswith("imagecodecs>=") for d in meta["project"]["dependencies"]
    )
    tifffile.imwrite(tmp_path / "lzw.tif", np.zeros((8, 8), np.uint8), compression="lzw")
    code = (
        "import sys; sys.modules['imagecodecs'] = None\n"
        "from napari_hpa.core.image.io import read_image, ImageReadError\n"
        "try: read_image(sys.argv[1])\n"
        "except ImageReadError as e: print(e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "lzw.tif")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "compressed with LZW" in done.stdout and "pip install imagecodecs" in done.stdout


def test_time_lapse_reads_only_its_first_frame(tmp_path: Path) -> None:
    """Item 15: a 400-frame OME-TIFF (TCYX) gives frame 0, decoding 2 of its 800 pages,
    with a peak well under one tenth of the movie (measured with tracemalloc)."""
    import tracemalloc

    rng = np.random.default_rng(15)
    movie = rng.integers(0, 4000, (400, 2, 64, 64), dtype=np.uint16)  # 6.6 MB
    names = {"Channel": {"Name": ["dapi", "gfp"]}}
    tifffile.imwrite(
        tmp_path / "movie.ome.tif", movie, ome=True, metadata={"axes": "TCYX", **names}
    )
    tracemalloc.start()
    try:
        img = read_image(tmp_path / "movie.ome.tif")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    mb = f"peak {peak / 1e6:.1f} MB for a {movie.nbytes / 1e6:.1f} MB movie"
    assert peak < movie.nbytes / 10, mb
    np.testing.assert_allclose(img.data, movie[0] / 4095, atol=1e-6)
    assert img.channel_names == ("dapi", "gfp") and img.metadata["pages_read"] == 2
    assert img.metadata["time_points"] == 400


def test_z_stack_is_projected_page_by_page(tmp_path: Path) -> None:
    """Item 15: a TZCYX stack reads the first time point's Z planes only, max-projected."""
    rng = np.random.default_rng(16)
    stack = rng.integers(0, 4000, (3, 5, 2, 32, 32), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "tz.ome.tif", stack, ome=True, metadata={"axes": "TZCYX"})
    img = read_image(tmp_path / "tz.ome.tif")
    assert img.metadata["pages_read"] == 10 and img.metadata["z_projection"] == "max"
    np.testing.assert_allclose(img.data, stack[0].max(axis=0) / 4095, atol=1e-6)


def test_content_decides_the_decoder_not_the_name(tmp_path: Path) -> None:
    """Item 9: a JPEG named .png is read as JPEG; a PNG named .tif as PNG; content no
    documented decoder reads (here TGA, which Pillow would take) is refused."""
    rgb = np.random.default_rng(9).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png", format="JPEG")
    Image.fromarray(rgb).save(tmp_path / "scan.tif", format="PNG")
    assert read_image(tmp_path / "photo.png").metadata["format"] == "jpeg"
    assert read_image(tmp_path / "scan.tif").metadata["format"] == "png"
    Image.fromarray(rgb).save(tmp_path / "tga.png", format="TGA")
    err = _err(tmp_path / "tga.png")
    assert "not an image file" in err.reason and "PNG, JPEG or TIFF" in err.reason
