"""Issue 18, the inputs of ``napari-hpa batch``: ``--channels``, blank and saturated images
(fluorescence and bright field), and ``--cam`` over several folders (items 8 and 20).

Real files and the real CLI in this process (``--workers 0``, so each case is well under a
second once the model is loaded); the bundled plankton model on real plankton images from
../shared/data (skipped where that is absent). Each bad input is counted in
``reliability_counts`` (the summary line pytest prints).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import shared_data
from corpus import write_rgb_model
from helpers import write_tiny_model
from PIL import Image
from reliability_counts import counted

from napari_hpa.cli import main
from napari_hpa.core.image.writers import maps_owner

PLANKTON = "plankton121-efficientnet_lite0"
#: A --channels map of the 7-plane TIFFs below for a model of the four HPA channels.
SEVEN_MAP = "microtubules=2,protein=4,nucleus=0,er=6"


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``napari-hpa ARGV`` in this process; return (exit code, stdout, stderr)."""
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = int(exc.code or 0)
    out = capsys.readouterr()
    return rc, out.out, out.err


def batch(model: Path | str, paths: list[Path], out: Path, *args: str) -> list[str]:
    return [
        "batch",
        *map(str, paths),
        *("--out", str(out), "--model", str(model), "--device", "cpu"),
        *("--workers", "0", "--quiet", *args),
    ]


def rows(table: Path) -> dict[str, dict[str, str]]:
    with table.open(newline="", encoding="utf-8") as fh:
        return {r["image"]: r for r in csv.DictReader(fh)}


def png(path: Path, arr: np.ndarray | None = None, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr is None:
        arr = np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def warning_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "warning:" in line]


@pytest.fixture(scope="module")
def hpa_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model of the four HPA channels."""
    return write_tiny_model(tmp_path_factory.mktemp("hpa-model"), name="tiny4", fit=64)


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model of red, green and blue (the corpus's)."""
    return write_rgb_model(tmp_path_factory.mktemp("rgb-model"))


# ----------------------------------------------------------------------------- --channels
def _seven_planes(path: Path, seed: int = 7) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tifffile.imwrite(path, rng.integers(0, 255, (7, 48, 48), dtype=np.uint8))
    return path


def test_batch_channels_maps_seven_planes_like_predict(
    tmp_path: Path, hpa_model: Path, capsys
) -> None:
    """Item 20: ``batch`` over 7-plane TIFFs gives an error row per image that says how to
    map them; ``--channels`` maps them, with predict's own numbers; a map that does not fit
    one image is that image's error row; a malformed map is one line before any work."""
    folder = tmp_path / "seven"
    a, b = _seven_planes(folder / "a.tif", 1), _seven_planes(folder / "b.tif", 2)
    four = folder / "four.tif"  # fewer planes than the map needs: this one image fails
    tifffile.imwrite(four, np.random.default_rng(3).integers(0, 255, (4, 48, 48), np.uint8))
    out = tmp_path / "r.csv"
    with counted("unnamed_7_planes", "batch"):
        rc, _, err = run_cli(batch(hpa_model, [folder], out), capsys)
        assert rc == 2 and "Traceback" not in err, err  # two error rows: exit 2
        table = rows(out)
        for tif in (a, b):
            row = table[str(tif)]
            assert row["status"] == "error" and row["error"].startswith(str(tif))
            assert "7 unnamed channels" in row["error"] and "--channels" in row["error"]
        assert table[str(four)]["status"] == "ok"  # four planes: one to one, as before
    mapped = tmp_path / "mapped.csv"
    with counted("channels_plane_out_of_range", "batch --channels"):
        rc, _, err = run_cli(batch(hpa_model, [folder], mapped, "--channels", SEVEN_MAP), capsys)
        assert rc == 2, err  # four.tif's error row
        table = rows(mapped)
        assert table[str(four)]["status"] == "error"
        error = table[str(four)]["error"]  # (a 4-plane uint8 TIFF reads as RGB(A): 3 planes)
        assert error.startswith(f"{four}: --channels protein=4: the image has 3 plane(s)")
    js = tmp_path / "p.json"
    rc, _, err = run_cli(
        ["predict", str(a), str(b), "--model", str(hpa_model), "--device", "cpu"]
        + ["--channels", SEVEN_MAP, "--out", str(js)],
        capsys,
    )
    assert rc == 0, err
    classes = list(table[str(a)])[2:-3]  # image, model, the classes, predicted, status, error
    for result in json.loads(js.read_text())["results"]:
        row = table[result["image"]]
        assert row["status"] == "ok", row
        got = [float(row[c]) for c in classes]
        want = [result["probabilities"][c] for c in classes]
        np.testing.assert_allclose(got, want, atol=1e-5)
    for kind, bad, message in (
        ("channels_bad_syntax", "protein", "is not CHANNEL=PLANE"),
        ("channels_unknown_name", "protien=1", "the model has no channel 'protien'"),
    ):
        with counted(kind, "batch --channels"):
            nothing = tmp_path / f"{kind}.csv"
            rc, out_text, err = run_cli(
                batch(hpa_model, [folder], nothing, "--channels", bad), capsys
            )
            assert rc == 2 and not nothing.exists()
            lines = err.strip().splitlines()
            assert len(lines) == 1 and message in lines[0], err


# ----------------------------------------------------------------------------- blank images
def test_batch_blank_and_saturated_images_are_warning_rows(
    tmp_path: Path, rgb_model: Path, hpa_model: Path, capsys
) -> None:
    """Item 20: all-black, all-white and mostly saturated images get a ``warning`` row (the
    probabilities, no predicted class, the reason naming the file) and one ``warning:`` line
    each; a normal image beside them is ``ok``; a re-run skips them; no maps of them."""
    folder = tmp_path / "exposure"
    cases = {
        "all_black": (np.zeros((40, 40, 3), np.uint8), "blank image (every pixel is 0)"),
        "all_white": (np.full((40, 40, 3), 255, np.uint8), "saturated image (every pixel is 1)"),
        "mostly_saturated": (np.full((40, 40, 3), 255, np.uint8), "saturated image (75%"),
    }
    cases["mostly_saturated"][0][:10] = 17
    paths = {kind: png(folder / f"{kind}.png", arr) for kind, (arr, _) in cases.items()}
    normal = png(folder / "normal.png")
    out, cams = tmp_path / "r.csv", tmp_path / "cams"
    rc, stdout, err = run_cli(batch(rgb_model, [folder], out, "--cam", str(cams)), capsys)
    table = rows(out)
    assert rc == 0 and "Traceback" not in err, err
    assert "1 ok, 0 error(s), 3 blank or saturated (no class)" in stdout, stdout
    assert table[str(normal)]["status"] == "ok" and table[str(normal)]["error"] == ""
    warned = warning_lines(err)
    assert len(warned) == 3, err
    for kind, path in paths.items():
        with counted(kind, "batch"):
            row = table[str(path)]
            assert row["status"] == "warning" and row["predicted"] == "", row
            assert row["error"] == f"{path}: {cases[kind][1]}" or row["error"].startswith(
                f"{path}: {cases[kind][1]}"
            ), row
            assert all(np.isfinite(float(v)) for v in list(row.values())[2:-3])
            (line,) = [w for w in warned if f"{path}:" in w]
            assert line.startswith(f"napari-hpa batch: warning: {path}: {cases[kind][1]}")
    assert sorted(p.name for p in cams.iterdir()) == ["normal.png_cam.tif"]
    rc, stdout, err = run_cli(batch(rgb_model, [folder], out, "--cam", str(cams)), capsys)
    assert rc == 0 and "4 already in" in stdout and warning_lines(err) == []
    # per cell: one warning row for a blank HPA set, no cells made up
    for color in ("red", "green", "blue", "yellow"):
        png(tmp_path / "hpa" / f"dark_{color}.png", np.zeros((64, 64), np.uint8))
    cells = tmp_path / "cells.csv"
    with counted("all_black", "batch --cells"):
        rc, _, err = run_cli(batch(hpa_model, [tmp_path / "hpa"], cells, "--cells"), capsys)
        assert rc == 0, err
        (row,) = rows(cells).values()
        assert row["status"] == "warning" and row["cell"] == "" and row["predicted"] == ""
        assert len(warning_lines(err)) == 1


def _plankton(n: int = 3) -> list[Path]:
    """``n`` real bright-field images (dark plankton on white), one per class (the
    smallest file of its class, so that each is one quick tile)."""
    root = shared_data("plankton_ndsb2015") / "images"
    classes = sorted(root.iterdir())
    picked = classes[:: len(classes) // n][:n]
    return [min(sorted(d.glob("*.jpg")), key=lambda f: f.stat().st_size) for d in picked]


def test_bright_field_model_warns_only_on_blank_images(tmp_path: Path, capsys) -> None:
    """Item 20, bright field: the bundled plankton model (``invert``) gets no warning on real
    plankton images (white around the object is normal there, not saturation); an all-white
    and an all-black image are still blank: predict warns and batch writes warning rows."""
    images = _plankton()
    white = png(tmp_path / "white.png", np.full((60, 60), 255, np.uint8))
    black = png(tmp_path / "black.png", np.zeros((60, 60), np.uint8))
    rc, stdout, err = run_cli(
        ["predict", *map(str, images), str(white), str(black), "--model", PLANKTON]
        + ["--device", "cpu"],
        capsys,
    )
    assert rc == 0, err
    warned = warning_lines(err)
    assert [w for w in warned if "plankton" in w] == [], err
    for kind, path, value in (("bright_field_white", white, 1), ("bright_field_black", black, 0)):
        with counted(kind, "predict"):
            (line,) = [w for w in warned if f"{path}:" in w]
            assert f"blank image (every pixel is {value})" in line, line
    out = tmp_path / "r.csv"
    rc, stdout, err = run_cli(batch(PLANKTON, [*images, white, black], out), capsys)
    table = rows(out)
    assert rc == 0, err
    assert all(table[str(p)]["status"] == "ok" and table[str(p)]["predicted"] for p in images)
    for kind, path in (("bright_field_white", white), ("bright_field_black", black)):
        with counted(kind, "batch"):
            assert table[str(path)]["status"] == "warning"
            assert "blank image" in table[str(path)]["error"]
    assert len(warning_lines(err)) == 2, err
    # evaluate: the same images (linked, one folder per class) score without a warning
    data = tmp_path / "per-class"
    for image in images:
        (data / image.parent.name).mkdir(parents=True)
        (data / image.parent.name / image.name).symlink_to(image)
    rc, stdout, err = run_cli(
        ["evaluate", "--model", PLANKTON, "--data", str(data), "--folder-per-class"]
        + ["--device", "cpu"],
        capsys,
    )
    assert rc == 0 and stdout.strip().splitlines()[-1].startswith("macro_f1="), err
    assert warning_lines(err) == [], err


# ----------------------------------------------------------------------------- --cam
def test_batch_cam_over_two_folders_never_overwrites(
    tmp_path: Path, rgb_model: Path, capsys
) -> None:
    """Item 8 in batch: ``batch a b --cam DIR`` with ``x.png`` in both writes two map files,
    each recording its image; another run (a new table) replaces each image's own file; a
    third folder's ``x.png`` gets a third file and leaves the others byte for byte."""
    a, b = png(tmp_path / "a" / "x.png", seed=1), png(tmp_path / "b" / "x.png", seed=2)
    cams = tmp_path / "cams"
    with counted("same_id_two_folders", "batch --cam"):
        for i, order in enumerate(([a.parent, b.parent], [b.parent, a.parent])):
            out = tmp_path / f"r{i}.csv"
            rc, _, err = run_cli(batch(rgb_model, order, out, "--cam", str(cams)), capsys)
            assert rc == 0, err
            files = sorted(cams.iterdir())
            assert [f.name for f in files] == ["x.png-2_cam.tif", "x.png_cam.tif"]
            assert {maps_owner(f) for f in files} == {os.path.abspath(a), os.path.abspath(b)}
            assert not [f for f in cams.iterdir() if f.name.startswith(".tmp-")]
        before = {f.name: f.read_bytes() for f in files}
        c = png(tmp_path / "c" / "x.png", seed=3)
        rc, _, err = run_cli(batch(rgb_model, [c], tmp_path / "r3.csv", "--cam", str(cams)), capsys)
        assert rc == 0, err
        after = sorted(cams.iterdir())
        assert [f.name for f in after] == ["x.png-2_cam.tif", "x.png-3_cam.tif", "x.png_cam.tif"]
        assert maps_owner(cams / "x.png-3_cam.tif") == os.path.abspath(c)
        assert {f.name: f.read_bytes() for f in after if f.name in before} == before
