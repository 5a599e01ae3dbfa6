"""Every bad input of ``tests/corpus.py`` through every path that takes it.

Paths: ``read_image``, the npe2 reader, ``napari-hpa predict`` (in-process per
kind, plus one real subprocess over all of them), ``napari-hpa batch`` (a real
subprocess over one folder holding every bad image and two good ones), label
loading and ``napari-hpa train``, model loading, ``napari-hpa models`` and the
plugin in a real viewer (run under xvfb-run). A kind expected to fail must be
refused with one message naming the file and the problem; one expected to work
must give finite results. Each kind x path is counted in ``reliability_counts``,
whose summary line pytest prints at the end.
"""

from __future__ import annotations

import csv
import ctypes
import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from corpus import GOOD_IMAGES, KINDS, BadInput, build_corpus, write_rgb_model
from helpers import batch_args
from reliability_counts import counted

from napari_hpa.cli import main
from napari_hpa.core.image import io
from napari_hpa.core.model.checkpoint import CheckpointError, load_model
from napari_hpa.core.model.registry import list_models, user_models_dir
from napari_hpa.core.train.data import DataError, load_csv

IMAGE_KINDS = [k for k, c in KINDS if c in ("image", "hpa_set")]
LABEL_KINDS = [k for k, c in KINDS if c == "labels"]
MODEL_KINDS = [k for k, c in KINDS if c == "model"]
#: All-black images: classified, with one warning line and no predicted class (issue 18, item 20).
BLANK_KINDS = {"all_zero", "huge_10000"}
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False
NEEDS_DISPLAY = pytest.mark.skipif(
    sys.platform.startswith("linux") and not os.environ.get("DISPLAY"),
    reason="needs a display: run under xvfb-run",
)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BadInput]:
    root = tmp_path_factory.mktemp("corpus")
    kinds = {k.kind: k for k in build_corpus(root)}
    yield kinds
    kinds["unreadable_file"].path.chmod(0o644)  # so pytest can clean up as a normal user


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rgb_model(tmp_path_factory.mktemp("model"))


def _root_reads_everything(bad: BadInput) -> None:
    if bad.kind == "unreadable_file" and ROOT:
        pytest.skip(
            "root reads mode-000 files; covered by the subprocess tests, which drop "
            "root's file-permission override"
        )


def _one_line_error(err: str, bad: BadInput, name: str | None = None) -> None:
    """``err`` is one line (no traceback) naming the file and saying what is wrong."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert (name or str(bad.path)) in lines[0], lines[0]
    assert bad.problem in lines[0].lower(), lines[0]


# ----------------------------------------------------------------------------- images
@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_read_image(corpus: dict[str, BadInput], kind: str) -> None:
    bad = corpus[kind]
    _root_reads_everything(bad)
    with counted(kind, "read_image"):
        if bad.expect == "error":
            with pytest.raises(io.ImageReadError) as info:
                io.read_image(bad.path)
            assert str(info.value).startswith(str(bad.path)), info.value
            assert bad.problem in info.value.reason.lower()
        else:
            image = io.read_image(bad.path)
            assert image.data.ndim == 3 and image.data.dtype == np.float32
            assert np.isfinite(image.data).all()
            assert image.data.min() >= 0.0 and image.data.max() <= 1.0
            if kind == "huge_10000":  # reduced on reading, not held at 10^8 px
                assert image.metadata["downscaled"] == 2
                assert image.data.shape[1] * image.data.shape[2] <= io.WORK_PIXELS


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_npe2_reader(corpus: dict[str, BadInput], kind: str, notes: list) -> None:
    from napari_hpa import _reader

    bad = corpus[kind]
    _root_reads_everything(bad)
    with counted(kind, "reader"):
        reader = _reader.get_reader(str(bad.path))
        assert reader is not None, "napari-hpa must take the file, to say what is wrong"
        layers = reader(str(bad.path))
        errors = [m for n, m in notes if n == "show_error"]
        if bad.expect == "error":
            assert layers == _reader.NOTHING
            assert len(errors) == 1 and str(bad.path) in errors[0], notes
            assert bad.problem in errors[0].lower()
        else:
            assert not errors and layers[0][0] is not None
            assert all(np.isfinite(data).all() for data, _, _ in layers)
            if kind == "huge_10000":
                assert any("reduced 2x" in m for _, m in notes), notes


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_predict_cli(
    corpus: dict[str, BadInput], model: Path, kind: str, tmp_path: Path, capsys
) -> None:
    bad = corpus[kind]
    _root_reads_everything(bad)
    out = tmp_path / "out.json"
    with counted(kind, "predict"):
        rc = main(
            ["predict", str(bad.path), "--model", str(model), "--device", "cpu", "--out", str(out)]
        )
        captured = capsys.readouterr()
        results = json.loads(out.read_text())["results"] if out.exists() else []
        if bad.expect == "error":
            assert rc == 2
            _one_line_error(captured.err, bad)
            assert results == []
        elif kind in BLANK_KINDS:
            assert rc == 0
            (line,) = captured.err.strip().splitlines()
            assert f"warning: {bad.path}: blank image" in line, captured.err
            (result,) = results
            assert result["predicted"] == [] and "blank image" in result["warning"]
        else:
            assert rc == 0 and captured.err == ""
            (result,) = results
            probs = list(result["probabilities"].values())
            assert len(probs) == 4 and all(np.isfinite(probs)) and result["predicted"]


def _drop_root_file_override() -> bool:
    """Run children without CAP_DAC_OVERRIDE/READ_SEARCH, so root meets mode 000 like a user.

    Returns True when a mode-000 file is unreadable to the children (not root, or
    the capabilities could be dropped).
    """
    if not ROOT:
        return True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    probe = subprocess.run(["true"], preexec_fn=lambda: _drop(libc), check=False)
    return probe.returncode == 0


def _drop(libc: ctypes.CDLL) -> None:
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _run_cli(args: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, bool]:
    """``python -m napari_hpa ARGS`` in a subprocess; also says if mode 000 bites there."""
    strict = _drop_root_file_override()
    preexec: Callable[[], None] | None = None
    if ROOT and strict:
        libc = ctypes.CDLL(None, use_errno=True)
        preexec = lambda: _drop(libc)  # noqa: E731
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, "-m", "napari_hpa", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        preexec_fn=preexec,
        check=False,
    )
    return proc, strict


def test_predict_subprocess_all_images(
    corpus: dict[str, BadInput], model: Path, tmp_path: Path
) -> None:
    """One real process over every image kind: no traceback, one line per bad input,
    the good ones classified, and the 10^8-pixel image in bounded memory."""
    kinds = [corpus[k] for k in IMAGE_KINDS]
    good = [corpus["unicode_name"].path.parent / GOOD_IMAGES[0]]
    out = tmp_path / "all.json"
    proc, strict = _run_cli(
        [
            "predict",
            *[str(k.path) for k in kinds],
            *map(str, good),
            "--model",
            str(model),
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
        timeout=300,
    )
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if ": warning: " not in line]
    warned = [line for line in proc.stderr.splitlines() if ": warning: " in line]
    assert len(warned) == len(BLANK_KINDS), proc.stderr
    results = {r["image"] for r in json.loads(out.read_text())["results"]}
    for bad in kinds:
        if bad.kind == "unreadable_file" and not strict:
            continue
        with counted(bad.kind, "predict (subprocess)"):
            mine = [line for line in lines if f"error: {bad.path}:" in line]
            if bad.expect == "error":
                assert len(mine) == 1, (bad.kind, proc.stderr)
                assert bad.problem in mine[0].lower(), mine[0]
                assert str(bad.path) not in results
            else:
                assert mine == [] and str(bad.path) in results, (bad.kind, proc.stderr)
    assert len(lines) == sum(k.expect == "error" for k in kinds) - (not strict)
    assert peak_mb < 3000, f"predicting the 10^8-pixel image peaked at {peak_mb:.0f} MB"


def test_batch_goes_past_every_bad_image(
    corpus: dict[str, BadInput], model: Path, tmp_path: Path
) -> None:
    """A real ``napari-hpa batch`` over the corpus folder (symlink loop included): exit 0,
    an ok row per good image, an error row with its message per bad one, no hang."""
    folder = corpus["empty_file"].path.parent
    out = tmp_path / "batch.csv"
    args = batch_args(folder, out, model)
    proc, strict = _run_cli(args, timeout=300)
    assert proc.returncode == 2, proc.stderr  # bad images: error rows, the run goes on, exit 2
    assert "Traceback" not in proc.stderr, proc.stderr
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    by_image = {r["image"]: r for r in rows}
    assert len(by_image) == len(rows), "each source once"
    for name in GOOD_IMAGES:
        row = by_image[str(folder / name)]
        assert row["status"] == "ok" and row["error"] == ""
    for kind in IMAGE_KINDS:
        bad = corpus[kind]
        if kind == "unreadable_file" and not strict:
            continue
        with counted(kind, "batch"):
            row = by_image[str(bad.path)]
            if bad.expect == "error":
                assert row["status"] == "error", row
                assert row["error"].startswith(str(bad.path)), row
                assert bad.problem in row["error"].lower(), row
            else:  # an all-black image: classified, a warning row without a class
                status = "warning" if kind in BLANK_KINDS else "ok"
                assert row["status"] == status and (status == "ok" or not row["predicted"]), row
                probs = [float(row[c]) for c in list(row)[2:6]]
                assert all(np.isfinite(probs)), row
    assert not any("/loop/" in r["image"] for r in rows), "the folder symlink loop was followed"
    # a re-run resumes: nothing new, nothing lost
    again, _ = _run_cli(args, timeout=120)
    assert again.returncode == 0 and f"{len(rows)} already in" in again.stdout
    with out.open(newline="", encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == len(rows)


# ----------------------------------------------------------------------------- labels
@pytest.mark.parametrize("kind", LABEL_KINDS)
def test_label_loading(corpus: dict[str, BadInput], kind: str) -> None:
    bad = corpus[kind]
    with counted(kind, "load_csv"):
        if bad.expect == "error":
            with pytest.raises(DataError) as info:
                load_csv(
                    bad.extra["data"],
                    bad.path,
                    bad.extra["task"],
                    channels=("red", "green", "blue"),
                )
            assert str(info.value).startswith(str(bad.path)), info.value
            assert bad.problem in str(info.value).lower()
        else:
            data = load_csv(bad.extra["data"], bad.path, bad.extra["task"])
            assert len(data.samples) == 4
            assert sorted(len(s.targets) for s in data.samples) == [0, 1, 1, 2]
            assert any("empty target" in w.lower() for w in data.warnings)


@pytest.mark.parametrize("kind", LABEL_KINDS)
def test_train_cli(corpus: dict[str, BadInput], kind: str, tmp_path: Path, capsys) -> None:
    bad = corpus[kind]
    argv = [
        "train",
        "--data",
        str(bad.extra["data"]),
        "--labels",
        str(bad.path),
        "--task",
        bad.extra["task"],
        "--channels",
        "rgb",
        "--epochs",
        "1",
        "--size",
        "32",
        "--width",
        "4",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--out-root",
        str(tmp_path),
        "--progress",
        "none",
        "--name",
        "rel",
    ]
    with counted(kind, "train"):
        rc = main(argv)
        captured = capsys.readouterr()
        if bad.expect == "error":
            assert rc == 2
            _one_line_error(captured.err, bad)
            assert not any(tmp_path.iterdir()), "nothing is written for refused labels"
        else:
            assert rc == 0, captured.err
            assert (Path(captured.out.strip()) / "model.safetensors").is_file()


# ----------------------------------------------------------------------------- models
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_load_model(corpus: dict[str, BadInput], kind: str) -> None:
    bad = corpus[kind]
    marker = bad.path.parents[1] / "pickle_ran"
    with counted(kind, "load_model"):
        with pytest.raises(CheckpointError) as info:
            load_model(bad.path)
        assert str(info.value).startswith(str(bad.path)), info.value
        assert bad.problem in str(info.value).lower()
        assert not marker.exists(), "a model file was unpickled"


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_predict_and_batch_with_broken_model(
    corpus: dict[str, BadInput], kind: str, tmp_path: Path, capsys
) -> None:
    bad = corpus[kind]
    image = str(corpus["unicode_name"].path)
    for path_name, argv in (
        ("predict", ["predict", image]),
        ("batch", ["batch", image, "--out", str(tmp_path / "r.csv"), "--quiet"]),
    ):
        with counted(kind, path_name):
            rc = main([*argv, "--model", str(bad.path), "--device", "cpu"])
            err = capsys.readouterr().err
            assert rc == 2
            _one_line_error(err, bad)
    assert not (tmp_path / "r.csv").exists()


def test_models_listing_survives_broken_folders(
    corpus: dict[str, BadInput], model: Path, capsys
) -> None:
    """Broken folders in the user's models folder: the good model is still listed; one with
    an unreadable model.json is reported by path; one with bad weights fails when loaded."""
    user = user_models_dir()
    user.mkdir(parents=True, exist_ok=True)
    shutil.copytree(model, user / model.name)
    for kind in MODEL_KINDS:
        shutil.copytree(corpus[kind].path, user / kind)
    problems: list[str] = []
    entries = {e.path.name: e for e in list_models(problems=problems)}
    assert model.name in entries
    rc = main(["models"])
    captured = capsys.readouterr()
    assert rc == 0 and "Traceback" not in captured.err
    assert "corpus-rgb" in captured.out
    for kind in MODEL_KINDS:
        bad = corpus[kind]
        with counted(kind, "models listing"):
            if kind in entries:  # model.json is fine: the weights are refused on loading
                with pytest.raises(CheckpointError, match="model.safetensors"):
                    load_model(entries[kind].path)
                assert entries[kind].name in captured.out
            else:
                mine = [p for p in problems if str(user / kind) in p]
                assert len(mine) == 1 and bad.problem in mine[0].lower(), problems
                shown = [line for line in captured.err.splitlines() if str(user / kind) in line]
                assert len(shown) == 1 and "skipped a broken model" in shown[0]


# ----------------------------------------------------------------------------- plugin
#: Not symlink_loop: napari's own ``viewer.open`` refuses a path whose ``exists()`` is
#: False before asking any plugin (``test_npe2_reader`` covers our side of it).
GUI_IMAGE_KINDS = (
    "empty_file",
    "truncated_png",
    "text_as_png",
    "nan_float",
    "complex_dtype",
    "hpa_no_protein",
    "hpa_size_mismatch",
)


@NEEDS_DISPLAY
@pytest.mark.gui
def test_plugin_bad_files_notify(
    make_napari_viewer, corpus: dict[str, BadInput], notes: list
) -> None:
    from napari_hpa import _reader

    viewer = make_napari_viewer()
    for kind in GUI_IMAGE_KINDS:
        bad = corpus[kind]
        with counted(kind, "plugin (viewer.open)"):
            before = len(notes)
            viewer.open(_reader.openable_path(bad.path), plugin="napari-hpa")
            new = notes[before:]
            assert len(viewer.layers) == 0
            assert [n for n, _ in new] == ["show_error"], new
            assert str(bad.path) in new[0][1] and bad.problem in new[0][1].lower()
    viewer.open(str(corpus["unicode_name"].path), plugin="napari-hpa")  # still usable
    assert [lyr.name for lyr in viewer.layers] == ["red", "green", "blue"]


@NEEDS_DISPLAY
@pytest.mark.gui
def test_plugin_broken_model_notifies(
    make_napari_viewer, qtbot, corpus: dict[str, BadInput], notes: list
) -> None:

    user = user_models_dir()
    kinds = ("model_weights_wrong_shape", "model_pickle_weights", "model_truncated_weights")
    for kind in kinds:
        shutil.copytree(corpus[kind].path, user / kind)
    viewer = make_napari_viewer()
    viewer.open(str(corpus["unicode_name"].path), plugin="napari-hpa")
    widget = viewer.window.add_plugin_dock_widget("napari-hpa", "Predict")[1]
    for kind in kinds:
        with counted(kind, "plugin (Predict widget)"):
            assert widget.select_model(str(user / kind))
            before = len(notes)
            widget.predict()
            qtbot.waitUntil(lambda: not widget.state.running, timeout=60_000)
            errors = [m for n, m in notes[before:] if n == "show_error"]
            assert len(errors) == 1, notes[before:]
            assert str(user / kind) in errors[0]
            assert corpus[kind].problem in errors[0].lower()
            assert widget.session.result is None


# ----------------------------------------------------------------------------- crash safety
CRASH_KINDS = ["annotations", "training", "model_write", "batch"]


def _sigkill_trials(kind: str, n: int, tmp_path: Path, seed: int) -> None:
    """``n`` real SIGKILLs at random points (tests/support/crash_trials.py says what is checked)."""
    from crash_trials import run_trials
    from reliability_counts import record_crash_trial

    results = run_trials(kind, n, tmp_path, seed=seed)
    for r in results:
        record_crash_trial(kind, r.survived, r.lost)
    assert len(results) == n
    failed = [f"trial {i}: {r.detail}" for i, r in enumerate(results) if not r.survived]
    assert not failed, failed
    assert sum(r.lost for r in results) == 0


@pytest.mark.parametrize("kind", CRASH_KINDS)
def test_sigkill_trials_lose_nothing(kind: str, tmp_path: Path) -> None:
    """6 real SIGKILLs per kind in the default run (the 10-minute budget); 20 more under slow."""
    _sigkill_trials(kind, 6, tmp_path, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", CRASH_KINDS)
def test_sigkill_trials_lose_nothing_20(kind: str, tmp_path: Path) -> None:
    """20 more real SIGKILLs per kind at other random points (``-m slow``)."""
    _sigkill_trials(kind, 20, tmp_path, seed=1)
