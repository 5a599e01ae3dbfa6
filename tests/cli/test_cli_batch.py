"""``napari-hpa batch``: exit codes, the summary, and kill -9 then resume in a real subprocess."""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import batch_args, make_screen, write_tiny_model

from napari_hpa.cli import main
from napari_hpa.core.image.synth import write_samples

REPO = Path(__file__).resolve().parents[2]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _live_group_members(pgid: int) -> list[int]:
    """Processes of a process group that still run (zombies excluded); Linux /proc."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_bytes().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            alive.append(int(stat.parent.name))
    return alive


def test_corrupt_images_are_error_rows_the_rest_goes_on_and_the_exit_code_is_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    screen = make_screen(tmp_path / "screen")
    model = write_tiny_model(tmp_path / "models", fit=64)
    out = tmp_path / "results.csv"
    args = ["batch", str(screen), "--out", str(out), "--model", str(model), "--device", "cpu"]
    assert main([*args, "--workers", "1", "--batch-size", "4"]) == 2  # a script sees it
    captured = capsys.readouterr()
    rows = read_rows(out)
    assert len(rows) == 40
    assert sum(r["status"] == "ok" for r in rows) == 37
    assert sum(r["status"] == "error" for r in rows) == 3
    assert "37 ok, 3 error(s)" in captured.out
    assert "3 image(s) could not be classified" in captured.err
    assert "notes.png" in captured.err and "img/s" in captured.err  # tqdm bar on stderr
    # a second run skips everything, the error rows too: nothing of this run failed
    assert main([*args, "--quiet"]) == 0
    assert "40 already in" in capsys.readouterr().out
    assert len(read_rows(out)) == 40


def test_user_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = write_tiny_model(tmp_path / "models")
    folder = tmp_path / "imgs"
    write_samples(folder, n=1, size=64)
    real = ["--model", str(model)]
    cases = [
        ([str(tmp_path / "missing"), "--out", str(tmp_path / "r.csv"), *real], "no such"),
        ([str(folder), "--out", str(tmp_path / "r.xlsx"), *real], ".csv or .parquet"),
        ([str(folder), "--out", str(tmp_path / "no" / "dir" / "r.csv"), *real], "does not exist"),
        ([str(folder), "--out", str(tmp_path / "r.csv"), "--model", "nonexistent"], "no model"),
    ]
    for argv, message in cases:
        assert main(["batch", *argv, "--device", "cpu", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.slow  # 16 s; test_reliability's SIGKILL trials cover losing nothing by default
def test_kill_9_then_resume_gives_every_image_once(tmp_path: Path) -> None:
    folder = tmp_path / "screen"
    write_samples(folder, n=8, size=64, seed=7)
    for i in range(8, 150):
        for c in ("red", "green", "blue", "yellow"):
            shutil.copy(folder / f"synth_{i % 8:04d}_{c}.png", folder / f"synth_{i:04d}_{c}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # an error row is done too
    model = write_tiny_model(tmp_path / "models", size=128)
    out = tmp_path / "results.csv"
    cmd = [sys.executable, "-m", "napari_hpa", *batch_args(folder, out, model, "--batch-size", "1")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 11:  # header + 10 rows
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the batch finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # the decode worker and the forkserver notice and exit on their own
        deadline = time.monotonic() + 15
        while _live_group_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _live_group_members(proc.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything left, whatever happened above
    killed = out.read_bytes()
    n_before = killed.count(b"\n") - 1
    assert 10 <= n_before < 151
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = read_rows(out)
    images = [r["image"] for r in rows]
    assert len(images) == 151 == len(set(images))
    assert sum(r["status"] == "error" for r in rows) == 1
    assert f"{n_before} already in" in done.stdout  # a torn last line was dropped and redone
