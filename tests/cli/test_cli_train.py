"""``napari-hpa train`` / ``evaluate`` end to end, signals and kill -9 included."""

from __future__ import annotations

import csv
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data

from napari_hpa.cli import main
from napari_hpa.core.image.synth import make_dataset, write_samples
from napari_hpa.core.image.writers import write_image
from napari_hpa.core.model.checkpoint import clean_partial_versions, read_spec

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    return write_samples(out, n=60, size=48, seed=21, classes=[0, 2, 23], n_labels=1)


def _train_args(synth: Path, root: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(synth), "--labels", str(synth / "labels.csv"),
            "--size", "48", "--width", "8", "--batch-size", "16", "--out-root", str(root),
            *extra]  # fmt: skip


def test_train_jsonl_then_evaluate_rgb_stems(synth: Path, tmp_path: Path, capsys) -> None:
    rc = main(_train_args(synth, tmp_path, "--task", "hpa28", "--epochs", "3", "--name",
                          "cli-tiny", "--progress", "jsonl", "--threshold-prior", "0",
                          "--pos-weight-max", "3"))  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    events = [json.loads(line) for line in out]  # every stdout line is one JSON object
    assert events[0]["event"] in ("loading", "start") and events[-1]["event"] == "done"
    model = Path(events[-1]["path"])
    assert model == tmp_path / "cli-tiny-v1" and read_spec(model).task.name == "hpa28"
    config = read_spec(model).training["config"]
    assert config["threshold_prior"] == 0 and config["pos_weight_max"] == 3

    # single RGB composites named by stem, one class each, Kaggle CSV
    rgb = tmp_path / "rgb"
    rows = [("Id", "Target")]
    for i, f in enumerate(make_dataset(12, 48, seed=99, classes=[0, 2, 23], n_labels=1)):
        write_image(rgb / f"cell{i:02d}.png", f.image[:3])
        rows.append((f"cell{i:02d}", str(f.labels[0])))
    with open(tmp_path / "rgb.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    rc = main(["evaluate", "--model", str(model), "--data", str(rgb), "--labels",
               str(tmp_path / "rgb.csv"), "--out", str(tmp_path / "eval")])  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    assert lines[-1].startswith("macro_f1=") and 0 <= float(lines[-1].split("=")[1]) <= 1
    assert any(line.startswith("top1_accuracy=") for line in lines)
    assert any(line.startswith("top3_accuracy=") for line in lines)
    first = next(i for i, line in enumerate(lines) if re.match(r"^\w+=", line))
    summary = json.loads("\n".join(lines[:first]))
    assert summary["n_samples"] == 12 and summary["model"] == "cli-tiny@1"
    assert (tmp_path / "eval" / "metrics.json").is_file()
    assert (tmp_path / "eval" / "predictions.csv").is_file()


def test_user_errors_exit_2_with_error_event(tmp_path: Path, capsys) -> None:
    rc = main(["train", "--data", str(tmp_path / "nope"), "--labels", str(tmp_path / "x.csv"),
               "--progress", "jsonl"])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 2
    assert json.loads(captured.out.splitlines()[-1])["event"] == "error"
    assert "Traceback" not in captured.err
    assert main(["evaluate", "--model", "no-such-model", "--data", str(tmp_path)]) == 2
    assert main(["train", "--labels", "x.csv"]) == 2


def test_search_over_a_name_it_cannot_search_is_one_line(synth: Path, tmp_path: Path, capsys):
    labels = str(synth / "labels.csv")
    rc = main(["train", "--data", str(synth), "--labels", labels, "--search", "4",
               "--search-over", "lr,colour", "--out-root", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--search-over: cannot search colour" in err
    assert not list(tmp_path.iterdir())  # refused before any data are read or folder made


class _Proc:
    """``python -m napari_hpa`` in a subprocess, with its stdout lines on a queue."""

    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "napari_hpa", *args]
        pipe = subprocess.PIPE
        self.p = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=pipe, stderr=pipe, text=True, start_new_session=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.p.stdout:  # type: ignore[union-attr]
            self.lines.put(line)

    def wait_for(self, event: str, timeout: float = 120) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                e = json.loads(self.lines.get(timeout=1))
            except queue.Empty:
                assert self.p.poll() is None, self.p.stderr.read()  # type: ignore[union-attr]
                continue
            if e["event"] == event:
                return e
        raise AssertionError(f"no {event} event within {timeout} s")

    def rest(self) -> list[dict]:
        out = []
        while not self.lines.empty():
            out.append(json.loads(self.lines.get()))
        return out


def test_kill_9_leaves_no_partial_version(synth: Path, tmp_path: Path) -> None:
    proc = _Proc(_train_args(synth, tmp_path, "--epochs", "200", "--name", "killed",
                             "--progress", "jsonl"))  # fmt: skip
    proc.wait_for("batch")
    proc.p.send_signal(signal.SIGKILL)
    proc.p.wait(timeout=30)
    assert not list(tmp_path.glob("killed-v*"))
    clean_partial_versions(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".tmp", "killed"))]


def test_sigterm_saves_best_so_far_and_reports_done(synth: Path, tmp_path: Path) -> None:
    """SIGTERM to the whole process group (as the job runner sends it), workers included."""
    proc = _Proc(_train_args(synth, tmp_path, "--epochs", "200", "--name", "stopped",
                             "--workers", "2", "--progress", "jsonl"))  # fmt: skip
    proc.wait_for("epoch")
    os.killpg(proc.p.pid, signal.SIGTERM)
    done = proc.wait_for("done", timeout=60)
    assert proc.p.wait(timeout=60) == 0
    assert done["cancelled"] is True and done["stopped_early"] is True
    folder = Path(done["path"])
    assert folder == tmp_path / "stopped-v1" and read_spec(folder).training["status"] == "cancelled"
    assert read_spec(folder).training["epochs_run"] < 200


def _kaggle_from_hpa_examples(src: Path, out: Path) -> Path:
    with open(src / "labels.csv") as fh, open(out, "w", newline="") as dst:
        writer = csv.writer(dst)
        writer.writerow(["Id", "Target"])
        for row in csv.DictReader(fh):
            writer.writerow([Path(row["file"]).stem, row["class_id"]])
    return out


def test_real_hpa_composites_train_and_evaluate(tmp_path: Path, capsys) -> None:
    src = shared_data("hpa_class_examples_composite")
    labels = _kaggle_from_hpa_examples(src, tmp_path / "kaggle.csv")
    rc = main(["train", "--data", str(src / "images"), "--labels", str(labels), "--task", "hpa28",
               "--size", "64", "--width", "8", "--epochs", "2", "--batch-size", "16",
               "--val-fraction", "0.3", "--crops-per-image", "2", "--crop-scale", "0.6,1",
               "--name", "real-tiny", "--out-root", str(tmp_path),
               "--progress", "none"])  # fmt: skip
    assert rc == 0
    model = tmp_path / "real-tiny-v1"
    spec = read_spec(model)
    assert spec.task.name == "hpa28" and spec.training["n_train"] + spec.training["n_val"] == 65
    capsys.readouterr()
    rc = main(["evaluate", "--model", str(model), "--data", str(src / "images"),
               "--labels", str(labels)])  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and lines[-1].startswith("macro_f1=")
    top3 = float(next(x for x in lines if x.startswith("top3_accuracy=")).split("=")[1])
    assert 0 <= top3 <= 1
    assert np.isfinite(float(lines[-1].split("=")[1]))
