"""The background job runner: states, events, log, cancel timing, locks, recovery, retrain setup."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import wait_for_job_event
from helpers import write_tiny_model

from napari_hpa.core.image.sources import find_images
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.labels.store import AnnotationStore
from napari_hpa.core.model import preferences as settings
from napari_hpa.core.model import registry
from napari_hpa.jobs.compare import ClassDelta, Comparison, compare_models, worse_because
from napari_hpa.jobs.job import started_ago_s
from napari_hpa.jobs.retrain import (
    HOLDOUT_FILE,
    SNAPSHOT_FILE,
    TRAIN_DB_FILE,
    RetrainRequest,
    holdout_split,
    snapshot_db,
    start_retrain,
    summarize,
)
from napari_hpa.jobs.runner import (
    CANCEL_LIMIT_S,
    Job,
    JobError,
    JobLockedError,
    JobManager,
    Progress,
    epoch_metrics,
    job_alive,
    pid_alive,
    python_command,
)

FAKE_TRAINER = """
import json, sys, time
def emit(**e):
    print(json.dumps(e), flush=True)
delay = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
outcome = sys.argv[2] if len(sys.argv) > 2 else "done"
print("some library chatter", flush=True)
print("a warning on stderr", file=sys.stderr, flush=True)
emit(event="start", total_epochs=2, n_train=4, n_val=2, n_batches=2)
for epoch in (1, 2):
    for b in (1, 2):
        emit(event="batch", epoch=epoch, batch=b, n_batches=2, loss=1.0 / epoch)
        time.sleep(delay)
    emit(event="epoch", epoch=epoch, train_loss=1.0 / epoch, val_loss=1.2 / epoch,
         val_macro_f1=0.3 * epoch, elapsed_s=epoch, eta_s=2 - epoch)
if outcome == "error":
    emit(event="error", message="CUDA error: out of memory")
    sys.exit(2)
if outcome == "crash":
    sys.exit(3)
emit(event="done", model_id="m@2", path="/nowhere/m-v2", status="completed",
     metrics={"macro_f1": 0.6})
"""


@pytest.fixture()
def fake(tmp_path: Path) -> Path:
    script = tmp_path / "fake_trainer.py"
    script.write_text(textwrap.dedent(FAKE_TRAINER))
    return script


def _cmd(script: Path, delay: float = 0.0, outcome: str = "done") -> list[str]:
    return [sys.executable, str(script), str(delay), outcome]


# ------------------------------------------------------------------ state machine
def test_job_runs_to_done_and_keeps_its_folder(tmp_path: Path, fake: Path) -> None:
    manager = JobManager(tmp_path / "jobs")
    job = manager.create("m")
    assert job.state == "queued" and job.poll() == []
    job.start(_cmd(fake))
    assert job.state == "running" and job.pid and job.pid != os.getpid()
    seen: list[dict] = []
    job.on_event(lambda _job, event: seen.append(event))
    assert job.wait(30) == "done"
    kinds = [e["event"] for e in job.events]
    assert kinds == ["start", "batch", "batch", "epoch", "batch", "batch", "epoch", "done"]
    assert [e["event"] for e in seen] == kinds
    assert job.record.result_model == "m@2" and job.record.result_path == "/nowhere/m-v2"
    assert job.progress.fraction == 1.0 and job.eta_s == 0.0
    assert [h["val_macro_f1"] for h in job.progress.history] == [0.3, 0.6]
    assert job.record.returncode == 0 and job.record.started and job.record.finished
    log = job.log_text()
    assert "a warning on stderr" in log and "some library chatter" in log
    record = json.loads((job.folder / "job.json").read_text())
    assert record["state"] == "done" and record["result_model"] == "m@2"
    assert record["command"][1] == str(fake)
    lines = (job.folder / "events.jsonl").read_text().splitlines()
    assert [json.loads(x)["event"] for x in lines] == kinds
    with pytest.raises(JobError, match="only a queued job"):
        job.start(_cmd(fake))
    assert job.cancel() == "done"  # cancelling a finished job changes nothing


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        ("error", "CUDA error: out of memory"),
        ("crash", "exited with code 3: a warning on stderr"),
    ],
)
def test_failures_give_the_reason(tmp_path: Path, fake: Path, outcome: str, message: str) -> None:
    job = JobManager(tmp_path / "jobs").start(_cmd(fake, 0.0, outcome), "m")
    assert job.wait(30) == "failed"
    assert message in (job.record.error or "")


def test_a_command_that_cannot_start_fails_cleanly(tmp_path: Path) -> None:
    manager = JobManager(tmp_path / "jobs")
    with pytest.raises(JobError, match="could not start"):
        manager.start([str(tmp_path / "no-such-program")], "m")
    assert manager.list_jobs()[0].state == "failed"
    manager.start([sys.executable, "-c", "pass"], "m").wait(30)  # the lock was released


def test_progress_and_eta_from_events() -> None:
    p = Progress()
    p.update({"event": "start", "total_epochs": 4, "n_batches": 10}, 1.0)
    assert p.fraction == 0 and p.eta_s is None
    p.update({"event": "batch", "epoch": 1, "batch": 5, "n_batches": 10}, 10.0)
    assert p.fraction == pytest.approx(0.125)
    assert p.eta_s == pytest.approx(70.0)
    p.update(
        {
            "event": "epoch",
            "epoch": 1,
            "train_loss": 0.5,
            "val_loss": 0.6,
            "val_macro_f1": 0.4,
            "elapsed_s": 20.0,
            "eta_s": 60.0,
        }
    )
    assert p.fraction == pytest.approx(0.25) and p.eta_s == 60.0
    assert p.history == [{"epoch": 1, "train_loss": 0.5, "val_loss": 0.6, "val_macro_f1": 0.4}]
    nested = epoch_metrics(
        {"epoch": 2, "metrics": {"loss": 0.3}, "val": {"loss": 0.2, "macro_f1": 0.7}}
    )
    assert nested == {"epoch": 2, "train_loss": 0.3, "val_loss": 0.2, "val_macro_f1": 0.7}


def _epochs_of_60_s(p: Progress, eta_at_3: float = 180.0) -> None:
    p.update({"event": "start", "total_epochs": 6, "n_batches": 4})
    for epoch in (1, 2, 3):
        p.update({"event": "batch", "epoch": epoch, "batch": 4, "n_batches": 4})
        eta = 60.0 * (6 - epoch) if epoch < 3 else eta_at_3
        p.update({"event": "epoch", "epoch": epoch, "elapsed_s": 60.0 * epoch, "eta_s": eta})


def test_eta_between_epochs_comes_from_the_epoch_timings() -> None:
    """Issue 17, defect 10: batch events carry no time, and a napari reopened during the run
    passes the seconds since it began to watch (0.5 s here): the ETA was ~0 s at epoch 4/6."""
    p = Progress()
    _epochs_of_60_s(p)
    p.update({"event": "batch", "epoch": 4, "batch": 3, "n_batches": 4}, 0.5)
    assert p.fraction == pytest.approx(3.75 / 6)
    assert p.eta_s == pytest.approx(135.0)  # 60 s an epoch, 2.25 epochs left
    limited = Progress()  # a time limit ends the run sooner: the trainer's ETA bounds it
    _epochs_of_60_s(limited, eta_at_3=30.0)
    limited.update({"event": "batch", "epoch": 4, "batch": 1, "n_batches": 4}, 0.5)
    assert limited.eta_s == pytest.approx(30.0)


def test_a_job_read_back_knows_when_it_started(tmp_path: Path, fake: Path) -> None:
    """The clock of a job read from disk starts at its recorded start, not at the reading."""
    manager = JobManager(tmp_path / "jobs")
    job = manager.start(_cmd(fake, 0.0), "m")
    job.wait(30)
    record = json.loads((job.folder / "job.json").read_text())
    started = datetime.now(timezone.utc) - timedelta(seconds=100)
    record["started"] = started.isoformat(timespec="seconds")
    (job.folder / "job.json").write_text(json.dumps(record))
    reread = JobManager(tmp_path / "jobs").get(job.id)
    assert started_ago_s(reread.record) == pytest.approx(100.0, abs=2.0)
    assert started_ago_s(JobManager(tmp_path / "jobs").create("n").record) == 0.0  # queued


# ------------------------------------------------------------------ locks
def test_one_job_per_model(tmp_path: Path, fake: Path) -> None:
    manager = JobManager(tmp_path / "jobs")
    first = manager.start(_cmd(fake, 0.3), "tiny")
    with pytest.raises(JobLockedError, match="already running"):
        manager.start(_cmd(fake), "tiny")
    # Another session (a second manager on the same folder) is refused too.
    with pytest.raises(JobLockedError):
        JobManager(tmp_path / "jobs").create("tiny")
    other = manager.start(_cmd(fake), "other-model")  # other models are free
    assert other.wait(30) == "done"
    assert first.wait(30) == "done"
    manager.start(_cmd(fake), "tiny").wait(30)


def test_a_stale_lock_is_taken_over(tmp_path: Path, fake: Path) -> None:
    manager = JobManager(tmp_path / "jobs")
    job = manager.start(_cmd(fake, 5.0), "tiny")
    os.killpg(job.pid, 9)  # the job dies without anyone noticing
    job._proc.wait()
    fresh = JobManager(tmp_path / "jobs")  # a new napari session
    second = fresh.start(_cmd(fake), "tiny")
    assert second.wait(30) == "done"
    assert fresh.get(job.id).state == "failed"


# ------------------------------------------------------------------ cancel
def _tiny_training_data(root: Path, n: int = 8) -> tuple[Path, Path]:
    images = write_samples(root / "images", n=n, size=32, seed=3, classes=[0, 23, 25], n_labels=1)
    return images, images / "labels.csv"


def _long_training(tmp_path: Path) -> list[str]:
    """The command of a 500-epoch fine-tuning of the tiny model (written now) on 8 images."""
    images, labels = _tiny_training_data(tmp_path)
    write_tiny_model(registry.user_models_dir(), size=32)
    return python_command(
        "train", "--data", images, "--labels", labels, "--base", "tiny", "--name", "tiny",
        "--epochs", "500", "--freeze-epochs", "0", "--patience", "0", "--batch-size", "2",
        "--device", "cpu", "--progress", "jsonl",
    )  # fmt: skip


def _assert_gone(job: Job) -> None:
    assert not pid_alive(job.pid)
    assert not job_alive(job.id)


def test_cancel_a_real_training_within_two_seconds(tmp_path: Path) -> None:
    command = _long_training(tmp_path)
    models = registry.user_models_dir()
    before = sorted(p.name for p in models.iterdir())
    job = JobManager().start(command, "tiny")
    wait_for_job_event(job, ("batch", "epoch"), "started", interval=0.1)
    t0 = time.monotonic()
    state = job.cancel()
    took = time.monotonic() - t0
    assert state == "cancelled"
    assert took < CANCEL_LIMIT_S, took
    _assert_gone(job)
    assert sorted(p.name for p in models.iterdir()) == before  # no new version, no .tmp-*
    assert json.loads((job.folder / "job.json").read_text())["state"] == "cancelled"


def test_cancel_while_starting_and_a_stubborn_process(tmp_path: Path) -> None:
    manager = JobManager(tmp_path / "jobs")
    # A process that ignores SIGTERM is killed after the grace period.
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)"
    )
    job = manager.start([sys.executable, "-c", code], "m")
    while "up" not in job.log_text():
        job.poll()
        time.sleep(0.05)
    t0 = time.monotonic()
    assert job.cancel() == "cancelled"
    assert time.monotonic() - t0 < CANCEL_LIMIT_S
    _assert_gone(job)
    queued = manager.create("n")
    assert queued.cancel() == "cancelled"


# ------------------------------------------------------------------ recovery
def test_recover_after_napari_closed_during_the_run(tmp_path: Path, fake: Path) -> None:
    """A job started by a process that exits at once (napari closed) still gets its result."""
    root = tmp_path / "jobs"
    starter = textwrap.dedent(f"""
        from napari_hpa.jobs.runner import JobManager
        job = JobManager({str(root)!r}).start({_cmd(fake, 0.2)!r}, "m")
        print(job.id)
    """)
    out = subprocess.run(
        [sys.executable, "-c", starter], capture_output=True, text=True, timeout=120, check=True
    )
    job_id = out.stdout.strip()
    manager = JobManager(root)
    assert manager.get(job_id).state == "running"
    deadline = time.monotonic() + 60
    while pid_alive(manager.get(job_id).pid):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    unseen = JobManager(root).recover()  # a fresh session
    assert [j.id for j in unseen] == [job_id]
    job = unseen[0]
    assert job.state == "done" and job.record.result_model == "m@2"
    assert len(job.progress.history) == 2
    job.manager.mark_seen(job)
    assert JobManager(root).recover() == []


def test_recover_after_the_runner_object_is_discarded(tmp_path: Path, fake: Path) -> None:
    root = tmp_path / "jobs"
    manager = JobManager(root)
    done_id = manager.start(_cmd(fake, 0.0), "a").id
    killed = manager.start(_cmd(fake, 5.0), "b")
    running_id = manager.start(_cmd(fake, 2.0), "c").id
    killed_id, killed_pid = killed.id, killed.pid
    time.sleep(0.5)
    os.killpg(killed_pid, 9)
    del manager, killed
    gc.collect()
    time.sleep(1.0)
    fresh = JobManager(root)
    unseen = {j.id: j for j in fresh.recover()}
    assert unseen[done_id].state == "done"
    assert unseen[killed_id].state == "failed"
    assert "without reporting a result" in (unseen[killed_id].record.error or "")
    running = fresh.get(running_id)
    assert running.state == "running" and running_id not in unseen
    assert running.wait(30) == "done"


# ------------------------------------------------------------------ retrain setup
def _corrected_db(root: Path, n: int = 10) -> tuple[Path, list[str]]:
    images = write_samples(root / "images", n=n, size=32, seed=5, classes=[0, 23, 25], n_labels=1)
    rows = [line.split(",") for line in (images / "labels.csv").read_text().splitlines()[1:]]
    labels = {i: [int(t) for t in target.split()] for i, target in rows}
    db = root / "annotations.sqlite"
    sources = find_images(images)
    with AnnotationStore(db) as store:
        for source in sources:
            store.set_user_labels(source, "hpa28", dict.fromkeys(labels[Path(source).name], True))
    return db, sources


def test_snapshot_split_and_summary(tmp_path: Path) -> None:
    db, sources = _corrected_db(tmp_path)
    copy = snapshot_db(db, tmp_path / "copy.sqlite")
    with AnnotationStore(copy) as store:
        assert len(store.corrected_images("hpa28")) == len(sources)
    items = [(s, {i % 3}) for i, s in enumerate(sources)]
    train, held = holdout_split(items, 28, 0.2, seed=1)
    assert len(held) == 2 and sorted(train + held) == list(range(len(sources)))
    assert holdout_split(items, 28, 0.2, seed=1) == (train, held)
    write_tiny_model(registry.user_models_dir())
    summary = summarize(db, registry.resolve_model("tiny").spec.task)
    assert summary.n_images == len(sources) and summary.can_train
    assert sum(c.images for c in summary.counts) == len(sources)
    assert summarize(tmp_path / "none.sqlite", registry.resolve_model("tiny").spec.task).error


def test_start_retrain_snapshots_and_holds_out(tmp_path: Path) -> None:
    db, sources = _corrected_db(tmp_path)
    write_tiny_model(registry.user_models_dir())
    manager = JobManager()
    job = start_retrain(RetrainRequest("tiny", db, holdout_fraction=0.3, device="cpu"), manager)
    try:
        assert job.state == "running"
        cmd = job.record.command
        assert cmd[:3] == [sys.executable, "-m", "napari_hpa"] and "--progress" in cmd
        assert cmd[cmd.index("--db") + 1] == str(job.folder / TRAIN_DB_FILE)
        assert "--freeze-bn" in cmd  # the presets keep the parent's batch-norm statistics
        holdout = json.loads((job.folder / HOLDOUT_FILE).read_text())
        held = [r["source"] for r in holdout["images"]]
        assert len(held) == 3
        with AnnotationStore(job.folder / TRAIN_DB_FILE) as store:
            trained = {s for s, _i, _l in store.corrected_images("hpa28")}
        assert trained.isdisjoint(held) and len(trained) == len(sources) - 3
        with AnnotationStore(job.folder / SNAPSHOT_FILE) as store:
            assert len(store.corrected_images("hpa28")) == len(sources)
        with pytest.raises(JobLockedError):
            start_retrain(RetrainRequest("tiny", db), manager)
    finally:
        assert job.cancel() == "cancelled"
    with pytest.raises(JobError, match="no model named"):
        start_retrain(RetrainRequest("nope", db), manager)


def test_compare_models_on_the_same_images(tmp_path: Path) -> None:
    images = write_samples(tmp_path / "im", n=4, size=32, seed=2, classes=[0, 25], n_labels=1)
    models = registry.user_models_dir()
    parent = write_tiny_model(models, version=1, seed=0)
    child = write_tiny_model(models, version=2, seed=1)
    rows = [line.split(",") for line in (images / "labels.csv").read_text().splitlines()[1:]]
    items = [(str(images / i), [int(t) for t in target.split()]) for i, target in rows]
    comp = compare_models(parent, child, items, device="cpu")
    assert comp.n_images == 4 and comp.parent == "tiny@1" and comp.child == "tiny@2"
    again = Comparison.from_dict(json.loads(json.dumps(comp.to_dict())))
    assert again.headline() == comp.headline()
    assert {r.verdict for r in comp.rows} <= {"better", "worse", "same", "n/a"}


def test_a_worse_version_says_why_when_the_training_data_show_it() -> None:
    """Worse on a class with 1 corrected training image: the headline names the class."""
    comp = Comparison(
        "m@1", "m@2", 12, 0.60, 0.50,
        rows=[ClassDelta("Cytosol", 6, 0.8, 0.5), ClassDelta("Nucleoli", 6, 0.4, 0.5)],
    )  # fmt: skip
    comp.reasons = worse_because(comp, {"Cytosol": 1, "Nucleoli": 9}, enough=3)
    assert comp.reasons == ["too few corrected images of Cytosol to learn it (1; 3 or more help)"]
    assert comp.headline().endswith("Likely why: " + comp.reasons[0] + ".")
    again = Comparison.from_dict(json.loads(json.dumps(comp.to_dict())))
    assert again.reasons == comp.reasons
    # enough images of the class that got worse: no reason is made up
    assert worse_because(comp, {"Cytosol": 5}, enough=3) == []
    # a better version says no "why"
    better = Comparison("m@1", "m@2", 12, 0.5, 0.6, reasons=["x"])
    assert "Likely why" not in better.headline()


def test_preferred_model_setting() -> None:
    assert settings.preferred_model() is None
    settings.set_preferred_model("tiny@2", task="hpa28")
    assert settings.preferred_model() == "tiny@2"
    assert settings.preferred_model("hpa28") == "tiny@2"
    assert settings.resolve_preferred() is None  # no such model on disk
    settings.set_preferred_model(None, task="hpa28")
    assert settings.preferred_model("hpa28") is None
    assert settings.settings_path().parent == registry.user_home()


def test_a_parent_whose_model_json_is_refused_is_a_job_error(tmp_path: Path) -> None:
    """Retrain on a damaged parent (input.std 0) says why in one line, never a traceback."""
    folder = write_tiny_model(tmp_path / "models")
    meta = json.loads((folder / "model.json").read_text())
    meta["input"]["std"] = [0.0] * len(meta["input"]["std"])
    (folder / "model.json").write_text(json.dumps(meta))
    db = tmp_path / "annotations.sqlite"
    AnnotationStore(db).close()
    with pytest.raises(JobError, match="std"):
        start_retrain(RetrainRequest(str(folder), db), JobManager(tmp_path / "jobs"))


def test_stop_early_by_the_stop_file_alone_keeps_the_best_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows has no graceful signal: there the stop file alone asks the trainer to stop.

    The signal is disabled here, so only the file can end the run, with its best epoch kept.
    """
    import napari_hpa.jobs.job as job_module

    signals: list[tuple] = []
    monkeypatch.setattr(job_module, "stop_job", lambda *a, **k: signals.append(a))
    job = JobManager().start(_long_training(tmp_path), "tiny")
    wait_for_job_event(job, ("epoch",), "finished an epoch")
    job.stop_early()
    assert (job.folder / "stop").is_file()
    assert job.wait(60) == "done", job.log_text()
    assert job.record.result_model and job.record.result_model.startswith("tiny@")
    assert Path(job.record.result_path).is_dir()
    done = [e for e in job.events if e.get("event") == "done"][-1]
    assert done["stopped_early"] is True
    epochs = [e for e in job.events if e.get("event") == "epoch"]
    assert len(epochs) < 500  # it stopped, long before its epochs ran out
    assert signals == ([(job.pid, job.id)] if os.name == "posix" else [])
