"""Issue 18, round two's follow-ups in the CLI: class names from ``model.json`` never reach
the terminal raw, an ``OSError`` that leaves a command is one line (exit 2), and ``sample``
on a full disk leaves nothing.

Real model folders, real subprocesses with stdout on ``/dev/full`` or a closed pipe, a real
tmpfs (full, or remounted read-only) where the machine can mount one.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import write_tiny_model

from napari_hpa.cli import main
from napari_hpa.core.atomic import TMP_PREFIX
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.model import registry
from napari_hpa.core.model.architectures import build_model
from napari_hpa.core.model.checkpoint import InputSpec, ModelSpec, save_model
from napari_hpa.core.tasks import HPA_CHANNELS, make_task

#: Class names a shared model.json may hold: a screen clear, a forged row, a bidi override.
EVIL = ["clear\x1b[2J\x1b[H", "row\nFORGED\t1.00", "back\rspace", "\u202eright"]
RAW = ("\x1b", "\r", "\u202e", "FORGED\t")


def _evil_model(root: Path, name: str = "evil", version: int = 1) -> Path:
    task = make_task(EVIL, "multilabel", HPA_CHANNELS, "evil4")
    spec = ModelSpec(
        name=name,
        version=version,
        arch="small_cnn",
        arch_kwargs={"width": 4, "depth": 2},
        task=task,
        input=InputSpec(channels=list(HPA_CHANNELS), size=32, optional_channels=["er"]),
    )
    torch.manual_seed(0)
    return save_model(build_model("small_cnn", 4, 4, width=4, depth=2), spec, root)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_samples(tmp_path_factory.mktemp("imgs"), n=2, size=64, seed=4)


def _clean(*texts: str) -> None:
    for text in texts:
        for raw in RAW:
            assert raw not in text, repr(text)


# ----------------------------------------------------------------------------- 1: printable
def test_predict_prints_class_names_escaped(images: Path, tmp_path: Path, capsys) -> None:
    model = _evil_model(tmp_path)
    rc = main(["predict", str(images), "--model", str(model), "--device", "cpu", "--top", "4"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    _clean(out, err)
    lines = out.splitlines()
    assert len(lines) == 2 and all(line.count("\t") == 2 for line in lines)  # one row per image
    assert "clear\\x1b[2J\\x1b[H" in out and "row\\nFORGED\\t1.00" in out and "\\u202eright" in out


def test_evaluate_prints_class_names_escaped(images: Path, tmp_path: Path, capsys) -> None:
    model = _evil_model(tmp_path)
    labels = tmp_path / "labels.csv"
    labels.write_text("Id,Target\nsynth_0000,Nucleoplasm\nsynth_0001,0\n")  # not a class here
    base = ["evaluate", "--data", str(images), "--model", str(model), "--device", "cpu"]
    rc = main([*base, "--labels", str(labels)])
    out, err = capsys.readouterr()
    assert rc == 2
    _clean(out, err)
    assert len(err.strip().splitlines()) == 1 and "unknown class" in err
    assert "clear\\x1b[2J" in err  # the known classes, named escaped
    labels.write_text("Id,Target\nsynth_0000,0 1\nsynth_0001,3\n")
    rc = main([*base, "--labels", str(labels)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    _clean(out, err)
    assert out.splitlines()[-1].startswith("macro_f1=")


def test_batch_and_predict_escape_what_settings_json_says(
    images: Path, tmp_path: Path, capsys
) -> None:
    """No --model: the note names the model chosen in napari (settings.json), now gone."""
    _evil_model(registry.user_models_dir(), name=registry.DEFAULT_MODEL_NAMES[0], version=99)
    settings = registry.user_home() / "settings.json"
    settings.write_text(json.dumps({"preferred_model": "gone\x1b[2J\nFORGED\t@1"}))
    out_csv = tmp_path / "r.csv"
    for argv in (
        ["batch", str(images), "--out", str(out_csv), "--device", "cpu"],
        ["predict", str(images), "--device", "cpu"],
    ):
        rc = main([*argv, *(["--workers", "1", "--quiet"] if argv[0] == "batch" else [])])
        out, err = capsys.readouterr()
        assert rc == 0, err
        _clean(out, err)
        assert "gone\\x1b[2J\\nFORGED\\t@1" in err
    assert len(out_csv.read_text(encoding="utf-8").splitlines()) == 3  # the table holds them


# ----------------------------------------------------------------------------- 2: OSError
def _napari_hpa(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napari_hpa", *args], stderr=subprocess.PIPE, env=os.environ, **kw
    )


def _one_line(err: bytes, command: str, *needles: str) -> None:
    text = err.decode()
    assert "Traceback" not in text and "Exception ignored" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"napari-hpa {command}: error: "), text
    for needle in needles:
        assert needle in lines[0], text


def test_a_full_disk_behind_stdout_is_one_line(images: Path, tmp_path: Path) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    model = write_tiny_model(tmp_path)
    for args in (
        ("models", "--json"),
        ("predict", str(images), "--model", str(model), "--device", "cpu"),
    ):
        with open("/dev/full", "w") as full:
            done = _napari_hpa(*args, stdout=full)
        assert done.returncode == 2
        _one_line(done.stderr, args[0], "the standard output", "No space left on device")


def test_a_closed_pipe_behind_stdout_is_one_line() -> None:
    write_tiny_model(registry.user_models_dir())
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_hpa", "models"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # `napari-hpa models | head -0`
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 2
    _one_line(err, "models", "the standard output", "Broken pipe")


def test_an_os_error_names_the_file_or_its_folder(tiny_tmpfs: Path, tmp_path: Path) -> None:
    """Real errors from a read-only tmpfs and a rename onto a folder."""
    from napari_hpa.cli import os_error_line

    done = subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot remount read-only: {done.stderr.decode().strip()}")
    with pytest.raises(OSError) as err:
        (tiny_tmpfs / f"{TMP_PREFIX}table-x.csv").write_text("")
    assert err.value.errno == errno.EROFS
    line = os_error_line(err.value)
    assert line == f"{tiny_tmpfs} (a temporary file there): Read-only file system"
    with pytest.raises(OSError) as err:
        (tiny_tmpfs / "out.csv").write_text("")
    assert os_error_line(err.value) == f"{tiny_tmpfs / 'out.csv'}: Read-only file system"
    (tmp_path / "a").write_text("a")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    with pytest.raises(OSError) as err:
        os.rename(tmp_path / "a", tmp_path / "d")
    assert os_error_line(err.value) == f"{tmp_path / 'a'} -> {tmp_path / 'd'}: Is a directory"


# ----------------------------------------------------------------------------- 3: sample
def test_sample_on_a_full_disk_leaves_nothing(tiny_tmpfs: Path, capsys) -> None:
    out = tiny_tmpfs / "samples"
    rc = main(["sample", str(out), "--n", "20", "--size", "256"])
    _o, err = capsys.readouterr()
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "No space left on device" in err
    assert list(out.iterdir()) == []  # before: the sets that fitted, and no labels.csv
    rc = main(["sample", str(out), "--n", "1", "--size", "32"])  # room for a small one
    assert rc == 0, capsys.readouterr().err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rc = main(["sample", str(out), "--n", "1", "--size", "32", "--seed", "5"])
    _o, err = capsys.readouterr()
    assert rc == 2 and "nothing was overwritten" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
