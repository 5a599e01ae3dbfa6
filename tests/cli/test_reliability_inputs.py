"""Issue 18, the inputs: what predict, batch, evaluate and the reader do with hostile images
and outputs (items 6, 8, 9, 12, 15, 16, 18 and 20).

Real files throughout: a real FIFO (and a symlink to one), PostScript/BMP/GIF content
named ``.png``, an unreadable folder (in a child process without root's file-permission
override), two folders with the same image id, 7-plane TIFFs, all-black and saturated
images, a real 64 KiB tmpfs for the full disk and its read-only remount (both skip where
the machine cannot mount). Most cases run the CLI in this process; a hang would be caught
by :func:`no_hang` (SIGALRM interrupts a blocking ``open``). One real ``batch`` process
covers the unreadable folder and the FIFOs together. Each bad input is counted in
``reliability_counts`` (the summary line pytest prints).
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from corpus import write_rgb_model
from helpers import write_tiny_model
from PIL import Image
from reliability_counts import counted

from napari_hpa.cli import main

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
LONG = "x" * 300  # one name over the 255 bytes file systems allow
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n"


# ----------------------------------------------------------------------------- helpers
class Hang(Exception):
    """Raised by :func:`no_hang` when the block took too long (it was blocked)."""


@contextlib.contextmanager
def no_hang(seconds: float = 20.0) -> Iterator[None]:
    """Fail instead of hanging: SIGALRM interrupts a blocking call (``open`` of a FIFO)."""

    def fire(signum: int, frame: object) -> None:
        raise Hang(f"blocked for {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _png(path: Path, arr: np.ndarray | None = None, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr is None:
        arr = np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``napari-hpa ARGV`` in this process; return (exit code, stdout, stderr)."""
    with no_hang():
        rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _one_line(err: str, *must: str) -> str:
    """``err`` is one line (no traceback) holding every string of ``must``."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for text in must:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def _rows(table: Path) -> dict[str, dict[str, str]]:
    with table.open(newline="", encoding="utf-8") as fh:
        return {r["image"]: r for r in csv.DictReader(fh)}


def _drop(libc: ctypes.CDLL) -> None:
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _as_user() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes a child meet mode bits like a user (None: not needed)."""
    if not ROOT:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        subprocess.run(["true"], preexec_fn=lambda: _drop(libc), check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("running as root and cannot drop CAP_DAC_OVERRIDE: mode 000 reads fine")
    return lambda: _drop(libc)


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rgb_model(tmp_path_factory.mktemp("rgb-model"))


@pytest.fixture(scope="module")
def hpa_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model of the four HPA channels (ER optional)."""
    return write_tiny_model(tmp_path_factory.mktemp("hpa-model"), name="tiny4", fit=64)


def _predict(model: Path, *args: str) -> list[str]:
    return ["predict", *args, "--model", str(model), "--device", "cpu"]


def _batch(model: Path, folder: Path, out: Path, *args: str) -> list[str]:
    return [
        "batch",
        str(folder),
        *("--out", str(out), "--model", str(model), "--device", "cpu"),
        *("--workers", "0", "--quiet", *args),
    ]


# ----------------------------------------------------------------------------- 9: formats
def _foreign_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Files named ``.png``/``.tif`` whose content is another format Pillow would decode."""
    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, tuple[Path, str]] = {}
    (folder / "cell.png").write_bytes(EPS)
    made["postscript_as_png"] = (folder / "cell.png", "postscript")
    rgb = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for fmt, name in (("BMP", "bmp.png"), ("GIF", "gif.png"), ("WEBP", "webp.tif")):
        Image.fromarray(rgb).save(folder / name, format=fmt)
        made[f"{fmt.lower()}_as_image"] = (folder / name, fmt.lower())
    return made


def test_other_pillow_formats_are_refused_by_content(
    tmp_path: Path, rgb_model: Path, capsys, notes
) -> None:
    """Item 9: PostScript (Ghostscript), BMP, GIF, WebP named as images never reach a decoder:
    predict, batch and the reader refuse each with one line naming the file and its content."""
    from napari_hpa import _reader

    folder = tmp_path / "foreign"
    files = _foreign_files(folder)
    good = _png(folder / "good.png")
    for kind, (path, content) in files.items():
        with counted(kind, "predict"):
            rc, _, err = _cli(_predict(rgb_model, str(path)), capsys)
            assert rc == 2
            line = _one_line(err, str(path), "napari-hpa reads only PNG, JPEG and TIFF")
            assert content in line.lower()
        with counted(kind, "reader"):
            notes.clear()
            with no_hang():
                layers = _reader.get_reader(str(path))(str(path))
            assert layers == _reader.NOTHING
            (msg,) = [m for n, m in notes if n == "show_error"]
            assert str(path) in msg and content in msg.lower()
    out = tmp_path / "r.csv"
    rc, _, _ = _cli(_batch(rgb_model, folder, out), capsys)
    rows = _rows(out)
    assert rc == 2 and rows[str(good)]["status"] == "ok"  # error rows: exit 2
    for kind, (path, content) in files.items():
        with counted(kind, "batch"):
            row = rows[str(path)]
            assert row["status"] == "error" and row["error"].startswith(str(path))
            assert content in row["error"].lower()


def test_postscript_never_reaches_ghostscript(tmp_path: Path) -> None:
    """Item 9: Pillow's EPS plugin (the one that runs Ghostscript) is never asked to open it."""
    from PIL import EpsImagePlugin

    from napari_hpa.core.image.io import ImageReadError, read_image

    seen: list[object] = []
    original = EpsImagePlugin.EpsImageFile._open
    EpsImagePlugin.EpsImageFile._open = lambda self: seen.append(self) or original(self)
    try:
        (tmp_path / "cell.png").write_bytes(EPS)
        with counted("postscript_as_png", "read_image"):
            with pytest.raises(ImageReadError, match="PostScript"):
                read_image(tmp_path / "cell.png")
            assert seen == []
    finally:
        EpsImagePlugin.EpsImageFile._open = original


# ----------------------------------------------------------------------------- 12: FIFOs
def _fifos(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "pipe")
    (folder / "link.png").symlink_to("pipe")  # a symlink named x.png that leads to a FIFO
    os.mkfifo(folder / "bare.png")
    os.mkfifo(folder / "fifo_green.png")  # an HPA-named FIFO
    return {
        "fifo_symlink_png": folder / "link.png",
        "fifo_png": folder / "bare.png",
        "fifo_hpa_member": folder / "fifo_green.png",
    }


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifos_never_block_predict_batch_or_the_reader(
    tmp_path: Path, rgb_model: Path, capsys, notes
) -> None:
    """Item 12: a FIFO behind ``x.png`` (a symlink, a bare FIFO, an HPA channel name) is
    refused at once, with one line naming it; the good image beside it is classified."""
    from napari_hpa import _reader
    from napari_hpa.core.image.io import ImageReadError, read_image

    folder = tmp_path / "fifos"
    fifos = _fifos(folder)
    good = _png(folder / "good.png")
    for kind, path in fifos.items():
        with counted(kind, "read_image"), no_hang(10), pytest.raises(ImageReadError, match="FIFO"):
            read_image(path)
        with counted(kind, "predict"):
            rc, _, err = _cli(_predict(rgb_model, str(path)), capsys)
            assert rc == 2
            _one_line(err, str(path), "not a regular file", "FIFO")
    with counted("fifo_symlink_png", "reader"):
        notes.clear()
        link = fifos["fifo_symlink_png"]
        with no_hang(10):
            layers = _reader.get_reader(str(link))(str(link))
        assert layers == _reader.NOTHING
        assert any(str(link) in m and "FIFO" in m for n, m in notes if n == "show_error"), notes
    out = tmp_path / "r.csv"
    rc, _, _ = _cli(_batch(rgb_model, folder, out), capsys)
    rows = _rows(out)
    assert rc == 2 and rows[str(good)]["status"] == "ok"  # error rows: exit 2
    for kind, path in fifos.items():
        with counted(kind, "batch"):
            row = rows[str(path)]
            assert row["status"] == "error" and "FIFO" in row["error"], row


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_real_batch_over_fifos_and_an_unreadable_folder(tmp_path: Path, rgb_model: Path) -> None:
    """Items 6 and 12 in one real ``napari-hpa batch`` process (120 s limit: it would hang
    forever on the FIFO before the fix), run without root's file-permission override: the
    unreadable subfolder is an error row that names it, the FIFOs are error rows, the good
    images are classified, exit code 0 with the errors counted."""
    preexec = _as_user()
    folder = tmp_path / "screen"
    fifos = _fifos(folder)
    good = [_png(folder / "good.png"), _png(folder / "ok" / "fine.png", seed=2)]
    locked = folder / "locked"
    _png(locked / "hidden_from_us.png", seed=3)
    locked.chmod(0)
    out = tmp_path / "r.csv"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "napari_hpa", *_batch(rgb_model, folder, out)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            preexec_fn=preexec,
            check=False,
        )
    finally:
        locked.chmod(0o755)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    rows = _rows(out)
    with counted("unreadable_subfolder", "batch (subprocess)"):
        row = rows[str(locked)]
        assert row["status"] == "error", row
        assert "cannot read this folder" in row["error"] and "Permission denied" in row["error"]
        assert str(locked) in proc.stderr and "error(s)" in proc.stdout
        assert " 0 error(s)" not in proc.stdout
    for kind, path in fifos.items():
        with counted(kind, "batch (subprocess)"):
            assert rows[str(path)]["status"] == "error" and "FIFO" in rows[str(path)]["error"]
    assert all(rows[str(g)]["status"] == "ok" for g in good)


def test_an_unreadable_folder_is_a_source_that_names_itself(tmp_path: Path) -> None:
    """Item 6, the core: ``find_images`` gives an unreadable folder as a source of its own and
    reading it says so (a child process without root's override, no torch: fast)."""
    preexec = _as_user()
    folder = tmp_path / "screen"
    _png(folder / "a.png")
    locked = folder / "sub"
    _png(locked / "b.png")
    locked.chmod(0)
    code = (
        "import sys\n"
        "from napari_hpa.core.image.sources import find_images\n"
        "from napari_hpa.core.image.io import read_image, ImageReadError\n"
        "for s in find_images(sys.argv[1], glob='*.tif'):\n"
        "    try: read_image(s)\n"
        "    except ImageReadError as e: print(e)\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(folder)],
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=preexec,
            check=False,
        )
    finally:
        locked.chmod(0o755)
    with counted("unreadable_subfolder", "find_images"):
        assert proc.returncode == 0, proc.stderr
        line = _one_line(proc.stdout, str(locked), "cannot read this folder")
        assert "left out" in line  # a glob that matches nothing visible still names it


# ----------------------------------------------------------------------------- 8: CAM files
def test_predict_cam_never_overwrites_another_images_maps(
    tmp_path: Path, rgb_model: Path, capsys
) -> None:
    """Item 8: two folders' ``x.png`` get two map files, each recording its image; a re-run
    replaces each image's own file and writes no third; the JSON says which file is whose."""
    a, b = _png(tmp_path / "a" / "x.png", seed=1), _png(tmp_path / "b" / "x.png", seed=2)
    out = tmp_path / "out" / "r.json"
    with counted("same_id_two_folders", "predict --cam"):
        for order in ([a, b], [b, a]):
            rc, _, err = _cli(
                _predict(rgb_model, *map(str, order), "--cam", "--out", str(out)), capsys
            )
            assert rc == 0, err
            cams = sorted((tmp_path / "out" / "r_cams").iterdir())
            assert [c.name for c in cams] == ["x-2_cam.tif", "x_cam.tif"]
            from napari_hpa.core.image.writers import maps_owner  # after: fails on old code too

            owners = {maps_owner(c) for c in cams}
            assert owners == {os.path.abspath(a), os.path.abspath(b)}
            results = json.loads(out.read_text())["results"]
            for r in results:
                assert maps_owner(Path(r["cam"])) == os.path.abspath(r["image"])
        # a stray file of the same name (someone else's) is left alone too
        stray = tmp_path / "c" / "x.png"
        _png(stray, seed=3)
        before = {c.name: c.read_bytes() for c in cams}
        rc, _, _ = _cli(_predict(rgb_model, str(stray), "--cam", "--out", str(out)), capsys)
        assert rc == 0
        after = sorted((tmp_path / "out" / "r_cams").iterdir())
        assert [c.name for c in after] == ["x-2_cam.tif", "x-3_cam.tif", "x_cam.tif"]
        assert {c.name: c.read_bytes() for c in after if c.name in before} == before


def test_cam_names_fit_the_file_system(tmp_path: Path) -> None:
    """Item 16: an image id near 255 bytes still gets a maps file (its name is cut to fit)."""
    from napari_hpa.core.image.writers import maps_owner, write_maps

    with counted("long_image_id", "write_maps"):
        path = write_maps(tmp_path, "é" * 126, "/a/b", np.zeros((1, 4, 4), np.float32), ["c"])
        assert len(os.fsencode(path.name)) <= 255 and path.name.endswith("_cam.tif")
        assert maps_owner(path) == "/a/b"


# ----------------------------------------------------------------------------- 20: channels
def _seven_planes(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    tifffile.imwrite(path, rng.integers(0, 255, (7, 48, 48), dtype=np.uint8))
    return path


def test_seven_unnamed_planes_are_refused_with_how_to_map_them(
    tmp_path: Path, hpa_model: Path, capsys
) -> None:
    """Item 20: a 7-plane TIFF is not classified as its first four planes: one line says how
    to map them; ``--channels`` maps them, and a bad map is one line too."""
    tif = _seven_planes(tmp_path / "seven.tif")
    with counted("unnamed_7_planes", "predict"):
        rc, out, err = _cli(_predict(hpa_model, str(tif)), capsys)
        assert rc == 2 and out == ""
        _one_line(err, str(tif), "7 unnamed channels", "--channels microtubules=0,protein=1")
    rc, out, err = _cli(_predict(hpa_model, str(tif), "--channels", "protein=4,nucleus=0"), capsys)
    assert rc == 2  # this model needs microtubules: leaving it out is refused, not zeroed
    _one_line(err, "no microtubules channel")
    mapping = "microtubules=2,protein=4,nucleus=0,er=6"
    rc, out, err = _cli(_predict(hpa_model, str(tif), "--channels", mapping), capsys)
    assert rc == 0 and err == "" and out.startswith(str(tif))
    for kind, bad, message in (
        ("channels_bad_syntax", "protein", "is not CHANNEL=PLANE"),
        ("channels_unknown_name", "protien=1", "the model has no channel 'protien'"),
        ("channels_plane_out_of_range", "microtubules=0,protein=9,nucleus=1", "has 7 plane(s)"),
    ):
        with counted(kind, "predict --channels"):
            rc, _, err = _cli(_predict(hpa_model, str(tif), "--channels", bad), capsys)
            assert rc == 2
            _one_line(err, message)


def test_evaluate_takes_channels_and_warns_on_blank_images(
    tmp_path: Path, hpa_model: Path, capsys
) -> None:
    """Item 20: ``evaluate --channels`` maps 7-plane TIFFs (refused without it), and an
    all-black image is named in a warning."""
    data = tmp_path / "data"
    for name in ("a", "b"):
        _seven_planes(data / f"{name}.tif")
    tifffile.imwrite(data / "black.tif", np.zeros((7, 48, 48), np.uint8))
    labels = tmp_path / "labels.csv"
    labels.write_text("Id,Target\na,0\nb,1\nblack,2\n", encoding="utf-8")
    argv = ["evaluate", "--model", str(hpa_model), "--data", str(data), "--labels", str(labels)]
    with counted("unnamed_7_planes", "evaluate"):
        rc, _, err = _cli([*argv, "--device", "cpu"], capsys)
        assert rc == 2 and "Traceback" not in err
        (line,) = [x for x in err.splitlines() if "error:" in x]  # beside black.tif's warning
        assert "7 unnamed channels" in line and "--channels microtubules=0" in line
    mapping = "microtubules=2,protein=4,nucleus=0,er=6"
    with counted("all_black", "evaluate"):
        rc, out, err = _cli([*argv, "--device", "cpu", "--channels", mapping], capsys)
        assert rc == 0 and out.strip().splitlines()[-1].startswith("macro_f1=")
        (line,) = [x for x in err.splitlines() if "black.tif" in x]
        assert line.startswith("warning:") and "blank image" in line


def test_blank_and_saturated_images_get_no_confident_answer(
    tmp_path: Path, rgb_model: Path, capsys
) -> None:
    """Item 20: all-black, all-white and mostly saturated images are classified but warned
    about in one line naming the file, and given no predicted class (stdout, CSV, JSON)."""
    cases = {
        "all_black": (np.zeros((40, 40, 3), np.uint8), "blank image"),
        "all_white": (np.full((40, 40, 3), 255, np.uint8), "saturated image"),
        "mostly_saturated": (np.full((40, 40, 3), 255, np.uint8), "saturated image"),
    }
    cases["mostly_saturated"][0][:10] = 17
    for kind, (arr, word) in cases.items():
        path = _png(tmp_path / f"{kind}.png", arr)
        with counted(kind, "predict"):
            rc, out, err = _cli(_predict(rgb_model, str(path)), capsys)
            assert rc == 0
            _one_line(err, f"warning: {path}: {word}")
            assert out.startswith(f"{path}\t[]\tno answer: {word}"), out
            js = tmp_path / f"{kind}.json"
            rc, _, err = _cli(_predict(rgb_model, str(path), "--out", str(js)), capsys)
            (result,) = json.loads(js.read_text())["results"]
            assert rc == 0 and result["predicted"] == [] and word in result["warning"]
    normal = _png(tmp_path / "normal.png")
    rc, out, err = _cli(_predict(rgb_model, str(normal)), capsys)
    assert rc == 0 and err == "" and "\t[]\t" not in out


# ----------------------------------------------------------------------------- 16: names, outputs
def test_over_long_names_are_one_line(tmp_path: Path, rgb_model: Path, capsys, notes) -> None:
    """Item 16: a path with a name over 255 bytes, for predict (exit 2), batch (a folder
    argument: exit 2) and read_image, is one line naming it; predict goes on with the rest."""
    from napari_hpa.core.image.io import ImageReadError, read_image

    good = _png(tmp_path / "good.png")
    long_file, long_dir = tmp_path / f"{LONG}.png", tmp_path / LONG
    with counted("name_over_255", "read_image"), pytest.raises(ImageReadError, match="too long"):
        read_image(long_file)
    with counted("name_over_255", "predict"):
        rc, out, err = _cli(_predict(rgb_model, str(long_file), str(good)), capsys)
        assert rc == 2 and out.startswith(str(good))
        _one_line(err, str(long_file), "file name is too long", "255")
    with counted("name_over_255", "batch"):
        rc, _, err = _cli(_batch(rgb_model, long_dir, tmp_path / "r.csv"), capsys)
        assert rc == 2
        _one_line(err, str(long_dir), "file name is too long")
    with counted("name_over_255", "predict --out"):
        rc, _, err = _cli(_predict(rgb_model, str(good), "--out", str(long_dir / "r.csv")), capsys)
        assert rc == 2
        _one_line(err, "file name is too long")


def test_out_where_a_folder_is_expected(tmp_path: Path, rgb_model: Path, capsys) -> None:
    """Item 16: ``--out`` under an existing file, or a file where a folder goes, is one
    line naming the file, exit 2, before any model is loaded or image read."""
    good = _png(tmp_path / "good.png")
    a_file = tmp_path / "results"
    a_file.write_text("keep me\n")
    cases = [
        ("out_under_a_file", _predict(rgb_model, str(good), "--out", str(a_file / "r.csv"))),
        ("out_is_a_folder", _predict(rgb_model, str(good), "--out", str(tmp_path))),
        ("out_under_a_file", _batch(rgb_model, tmp_path, a_file / "r.csv")),
        ("cam_is_a_file", _batch(rgb_model, tmp_path, tmp_path / "r.csv", "--cam", str(a_file))),
        (
            "out_is_a_file",
            ["evaluate", "--model", str(rgb_model), "--data", str(tmp_path), "--out", str(a_file)],
        ),
    ]
    for kind, argv in cases:
        with counted(kind, argv[0]):
            rc, out, err = _cli([*argv, "--model", "no-such-model"], capsys)  # checked first
            assert rc == 2 and out == ""
            _one_line(err, str(a_file if "file" in kind else tmp_path))
            assert "no-such-model" not in err
    assert a_file.read_text() == "keep me\n"
    assert not (tmp_path / "r.csv").exists()


def _fill(mnt: Path) -> None:
    """Fill the tmpfs to the last byte."""
    with contextlib.suppress(OSError), open(mnt / "filler", "wb") as fh:
        while True:
            fh.write(b"\0" * 4096)
            fh.flush()


def test_full_disk_outputs(tiny_tmpfs: Path, tmp_path: Path, rgb_model: Path, capsys) -> None:
    """Item 16: ``predict --out``, ``predict --cam``, ``batch`` and ``evaluate --out`` on a
    full disk (a real 64 KiB tmpfs) end with one line naming the file, exit 2, and the
    previous result file intact."""
    images = tmp_path / "imgs"
    for i in range(3):
        _png(images / f"i{i}.png", seed=i)
    labels = tmp_path / "labels.csv"
    labels.write_text("Id,Target\ni0,0\ni1,1\ni2,2\n", encoding="utf-8")
    old = tiny_tmpfs / "r.json"
    old.write_text('{"results": [], "errors": ["the previous run"]}')
    (tiny_tmpfs / "eval").mkdir()
    _fill(tiny_tmpfs)
    cases = [
        ("full_disk", _predict(rgb_model, str(images), "--out", str(old)), str(old)),
        ("full_disk", _predict(rgb_model, str(images), "--out", str(old), "--cam"), "r_cams"),
        ("full_disk", _batch(rgb_model, images, tiny_tmpfs / "b.csv"), "b.csv"),
        (
            "full_disk",
            [
                *("evaluate", "--model", str(rgb_model), "--data", str(images)),
                *("--labels", str(labels), "--out", str(tiny_tmpfs / "eval"), "--device", "cpu"),
            ],
            "eval",
        ),
    ]
    for kind, argv, name in cases:
        with counted(kind, f"{argv[0]} ({name})"):
            rc, _, err = _cli(argv, capsys)
            assert rc == 2, err
            _one_line(err, name, "No space left on device")
    assert json.loads(old.read_text())["errors"] == ["the previous run"]
    assert not [p for p in tiny_tmpfs.rglob(".tmp-*")], "temporary files left behind"


def test_read_only_outputs(tiny_tmpfs: Path, tmp_path: Path, rgb_model: Path, capsys) -> None:
    """Item 16: a read-only output folder (the tmpfs remounted read-only, which binds root
    too) is one line, exit 2, found before any image is classified."""
    images = tmp_path / "imgs"
    _png(images / "i0.png")
    (tiny_tmpfs / "eval").mkdir()
    done = subprocess.run(
        ["mount", "-o", "remount,ro", str(tiny_tmpfs)], capture_output=True, check=False
    )
    if done.returncode:
        pytest.skip(f"cannot remount the tmpfs read-only: {done.stderr.decode().strip()}")
    try:
        cases = [
            _predict(rgb_model, str(images), "--out", str(tiny_tmpfs / "r.csv")),
            _predict(rgb_model, str(images), "--cam"),  # cams/ in a read-only working folder
            _batch(rgb_model, images, tiny_tmpfs / "b.csv"),
            ["evaluate", "--data", str(images), "--out", str(tiny_tmpfs / "eval")],
        ]
        cwd = os.getcwd()
        os.chdir(tiny_tmpfs)
        try:
            for argv in cases:
                with counted("read_only_output", argv[0]):
                    rc, out, err = _cli([*argv, "--model", "no-such-model"], capsys)
                    assert rc == 2 and out == ""
                    _one_line(err, "Read-only file system")
        finally:
            os.chdir(cwd)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tiny_tmpfs)], check=False)
