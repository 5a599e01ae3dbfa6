"""Background jobs: a command in its own process, its state on disk.

A :class:`Job` runs one command (normally ``python -m napari_hpa train ...
--progress jsonl``) in a child process in a new session, so a crash, an
out-of-memory kill or a CUDA error in the child can never take napari down,
and a signal sent to the job reaches the child and its DataLoader workers.

Everything about a job lives in its folder ``<jobs root>/<job id>/``:

``job.json``
    The :class:`JobRecord`: command, state, timestamps, model name, pid,
    result model, last metrics; rewritten atomically on every change.
``stdout.txt``
    The child's raw standard output (a file, not a pipe: the child never
    blocks or dies of a broken pipe when napari is closed during the run).
``events.jsonl``
    The progress events parsed from the standard output, one JSON object a line.
``log.txt``
    The child's standard error plus any standard-output line that is not JSON.

Nothing here imports Qt: the GUI polls :meth:`Job.poll` from a timer, a
script may call :meth:`Job.wait`, and :meth:`JobManager.recover` reads the
folders back after a restart.

States: ``queued -> running -> done | failed | cancelled`` (``queued`` may
also go straight to ``failed`` or ``cancelled``); the last three are final.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from ..core import registry

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
STATES: tuple[JobState, ...] = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES: frozenset[str] = frozenset({"done", "failed", "cancelled"})
_TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "failed", "cancelled"}),
    "running": frozenset({"done", "failed", "cancelled"}),
    "done": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}

JOB_FILE = "job.json"
EVENTS_FILE = "events.jsonl"
LOG_FILE = "log.txt"
STDOUT_FILE = "stdout.txt"
#: Marks the lines of log.txt that came from standard output (not JSON events).
STDOUT_PREFIX = "[stdout] "
LOCK_DIR = "locks"
#: Seconds between SIGTERM and SIGKILL in :meth:`Job.cancel`.
CANCEL_GRACE_S = 0.8
#: Cancel never takes longer than this.
CANCEL_LIMIT_S = 2.0
#: Scheduling priority of job processes (Unix niceness): below the GUI's.
JOB_NICENESS = 10
#: A job queued this long by another session that never started it is abandoned.
QUEUED_STALE_S = 120.0

EventCallback = Callable[["Job", dict[str, Any]], None]


class JobError(RuntimeError):
    """A job that cannot be started, found or controlled; the message says why."""


class JobLockedError(JobError):
    """A job for the same model is already running."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _age_s(job: Job) -> float:
    try:
        created = datetime.fromisoformat(job.record.created)
    except ValueError:
        return float("inf")
    return (datetime.now(timezone.utc) - created).total_seconds()


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------ processes
def _proc_start_ticks(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (Linux), to tell reused pids apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    parts = stat.rsplit(")", 1)[1].split()
    return parts[0] if parts else None


def pid_alive(pid: int | None, start_ticks: int | None = None) -> bool:
    """True if process ``pid`` exists, is no zombie and (if known) started at ``start_ticks``."""
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        # Reap it if it is our own finished child (a dropped Popen leaves a zombie).
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if _proc_state(pid) in ("Z", "X"):
        return False
    if start_ticks is not None:
        now = _proc_start_ticks(pid)
        if now is not None and now != start_ticks:
            return False
    return True


def _signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid`` (the job and its workers)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # killpg(0) succeeds while zombies of the group remain; check /proc when we can.
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parts = stat.rsplit(")", 1)[1].split()
        if len(parts) > 2 and parts[2] == str(pgid) and parts[0] not in ("Z", "X"):
            return True
    return False


# ------------------------------------------------------------------ progress
@dataclass
class Progress:
    """What the events so far say about a training run.

    ``fraction`` is in [0, 1]; ``eta_s`` is None until it can be estimated.
    ``history`` holds one dict per finished epoch (the ``epoch`` events).
    """

    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    batches: int = 0
    fraction: float = 0.0
    eta_s: float | None = None
    elapsed_s: float = 0.0
    stage: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    last_metrics: dict[str, Any] = field(default_factory=dict)

    def update(self, event: dict[str, Any], t_since_start: float | None = None) -> None:
        """Fold one event into the progress."""
        kind = event_kind(event)
        num = _numbers(event)
        self.epochs = int(num.get("total_epochs", num.get("epochs", self.epochs)) or self.epochs)
        batches = num.get("batches", num.get("n_batches", num.get("steps", self.batches)))
        self.batches = int(batches or self.batches)
        if kind == "start":
            self.stage = "started"
        elif kind == "batch":
            self.stage = "training"
            self.epoch = int(num.get("epoch", self.epoch) or self.epoch)
            self.batch = int(num.get("batch", num.get("step", self.batch)) or self.batch)
        elif kind == "epoch":
            self.stage = "training"
            self.epoch = int(num.get("epoch", self.epoch) or self.epoch)
            self.batch = self.batches
            metrics = epoch_metrics(event)
            self.history.append(metrics)
            self.last_metrics = metrics
        elif kind == "done":
            self.stage = "done"
            self.fraction = 1.0
            self.eta_s = 0.0
        elif kind in ("stage", "status"):
            self.stage = str(event.get("stage", event.get("message", self.stage)))
        if kind != "done":
            self.fraction = self._fraction()
        elapsed = num.get("elapsed_s", num.get("elapsed", t_since_start))
        if elapsed is not None:
            self.elapsed_s = float(elapsed)
        eta = num.get("eta_s", num.get("eta"))
        if kind == "done":
            self.eta_s = 0.0
        elif eta is not None:
            self.eta_s = max(0.0, float(eta))
        elif self.fraction > 0.02 and self.elapsed_s > 0:
            self.eta_s = self.elapsed_s * (1.0 - self.fraction) / self.fraction

    def _fraction(self) -> float:
        if not self.epochs:
            return 0.0
        # Epochs may be counted from 0 or 1 in events; "epoch" events mean that epoch finished.
        done_epochs = len(self.history)
        within = self.batch / self.batches if self.batches else 0.0
        if done_epochs and self.batch >= self.batches:
            within = 0.0
        return float(min(1.0, (done_epochs + min(1.0, within)) / self.epochs))


def event_kind(event: dict[str, Any]) -> str:
    """The event's type: its ``event`` (or ``type``) field."""
    return str(event.get("event", event.get("type", "")))


def _numbers(event: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in event.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[key] = value
    return out


_METRIC_ALIASES = {
    "train_loss": ("train_loss", "loss", "training_loss"),
    "val_loss": ("val_loss", "valid_loss", "validation_loss"),
    "val_macro_f1": ("val_macro_f1", "macro_f1", "val_f1", "f1"),
}


def epoch_metrics(event: dict[str, Any]) -> dict[str, Any]:
    """``epoch``, ``train_loss``, ``val_loss``, ``val_macro_f1`` (None if absent) of an epoch event.

    The values may sit at the top level or in a ``metrics`` / ``val`` sub-dict.
    """
    pools: list[dict[str, Any]] = [event]
    for key in ("metrics", "val", "val_metrics", "train"):
        sub = event.get(key)
        if isinstance(sub, dict):
            pools.append(sub)
    out: dict[str, Any] = {"epoch": event.get("epoch")}
    for name, aliases in _METRIC_ALIASES.items():
        value = None
        for pool in pools:
            for alias in aliases:
                v = pool.get(alias)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    value = float(v)
                    break
            if value is not None:
                break
        out[name] = value
    # ``val.loss`` / ``val.macro_f1`` spelled inside a "val" dict.
    val = event.get("val")
    if isinstance(val, dict):
        if out["val_loss"] is None and isinstance(val.get("loss"), (int, float)):
            out["val_loss"] = float(val["loss"])
        if isinstance(val.get("macro_f1"), (int, float)):
            out["val_macro_f1"] = float(val["macro_f1"])
    return out


# ------------------------------------------------------------------ records
@dataclass
class JobRecord:
    """Everything in ``job.json``."""

    id: str
    kind: str
    model_name: str
    command: list[str] = field(default_factory=list)
    state: str = "queued"
    created: str = field(default_factory=_now)
    started: str | None = None
    finished: str | None = None
    pid: int | None = None
    pid_start_ticks: int | None = None
    returncode: int | None = None
    cancel_requested: bool = False
    error: str | None = None
    result_model: str | None = None
    result_path: str | None = None
    last_metrics: dict[str, Any] = field(default_factory=dict)
    stdout_offset: int = 0
    seen: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


# ------------------------------------------------------------------ jobs
class Job:
    """One background command and its folder.

    Create jobs with :meth:`JobManager.create` (or :meth:`JobManager.start`);
    a job read back from disk by :meth:`JobManager.get` can be polled and
    cancelled too, even by another napari session.
    """

    def __init__(self, folder: Path, record: JobRecord, manager: JobManager | None = None) -> None:
        self.folder = Path(folder)
        self.record = record
        self.manager = manager
        self.progress = Progress()
        self.events: list[dict[str, Any]] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._callbacks: list[EventCallback] = []
        self._t0 = time.monotonic()
        #: Niceness added to the job's process (0 = same priority as napari).
        self.nice = JOB_NICENESS
        #: Held by poll() and cancel(); poll() skips a turn instead of waiting for it.
        self._lock = threading.RLock()
        self._load_events()

    # -- paths and properties -------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.record.id

    @property
    def state(self) -> str:
        return self.record.state

    @property
    def is_final(self) -> bool:
        return self.record.state in FINAL_STATES

    @property
    def pid(self) -> int | None:
        return self.record.pid

    @property
    def eta_s(self) -> float | None:
        return self.progress.eta_s

    @property
    def log_path(self) -> Path:
        return self.folder / LOG_FILE

    @property
    def events_path(self) -> Path:
        return self.folder / EVENTS_FILE

    def log_text(self, max_chars: int = 200_000) -> str:
        """The log (standard error and non-JSON output), its last ``max_chars`` characters."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text[-max_chars:]

    def on_event(self, callback: EventCallback) -> None:
        """Call ``callback(job, event)`` for every new event (from :meth:`poll`'s thread)."""
        self._callbacks.append(callback)

    def __repr__(self) -> str:
        return f"Job({self.id!r}, {self.record.kind}, {self.record.model_name!r}, {self.state})"

    # -- persistence ----------------------------------------------------------------------------
    def save(self) -> None:
        _write_json_atomic(self.folder / JOB_FILE, asdict(self.record))

    def _load_events(self) -> None:
        if not self.events_path.is_file():
            return
        for line in self.events_path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                event = json.loads(line)
                if isinstance(event, dict):
                    self.events.append(event)
                    self.progress.update(event)

    def _set_state(self, state: str, error: str | None = None) -> None:
        if state == self.record.state:
            return
        if state not in _TRANSITIONS[self.record.state]:
            raise JobError(f"job {self.id}: cannot go from {self.record.state} to {state}")
        self.record.state = state
        if state == "running":
            self.record.started = _now()
        if state in FINAL_STATES:
            self.record.finished = _now()
            if error:
                self.record.error = error
        self.save()
        if state in FINAL_STATES and self.manager is not None:
            self.manager._release(self)

    # -- running ----------------------------------------------------------------------------------
    def start(self, command: Sequence[str] | None = None, env: dict[str, str] | None = None,
              cwd: str | Path | None = None) -> Job:
        """Start the command (``record.command`` unless given) in a new session."""
        if self.record.state != "queued":
            raise JobError(f"job {self.id} is {self.record.state}; only a queued job can start")
        if command is not None:
            self.record.command = [str(c) for c in command]
        if not self.record.command:
            raise JobError(f"job {self.id} has no command")
        child_env = dict(os.environ if env is None else env)
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        child_env["NAPARI_HPA_JOB_ID"] = self.id
        try:
            with open(self.folder / STDOUT_FILE, "ab") as out, open(self.log_path, "ab") as err:
                self._proc = subprocess.Popen(
                    self.record.command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    cwd=str(cwd) if cwd else None,
                    env=child_env,
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            self._set_state("failed", f"could not start {self.record.command[0]}: {exc}")
            raise JobError(self.record.error or str(exc)) from None
        self._t0 = time.monotonic()
        if self.nice:
            # A background job must not take the CPU from the GUI: lower its priority (its
            # DataLoader workers inherit it).
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(os.PRIO_PROCESS, self._proc.pid, self.nice)
        self.record.pid = self._proc.pid
        self.record.pid_start_ticks = _proc_start_ticks(self._proc.pid)
        self._set_state("running")
        return self

    def is_alive(self) -> bool:
        """True while the job's process runs."""
        if self._proc is not None:
            return self._proc.poll() is None
        return pid_alive(self.record.pid, self.record.pid_start_ticks)

    def _returncode(self) -> int | None:
        if self._proc is not None:
            return self._proc.poll()
        return None

    def _read_output(self) -> list[dict[str, Any]]:
        """Parse complete new lines of the child's output; JSON objects become events."""
        path = self.folder / STDOUT_FILE
        try:
            with path.open("rb") as fh:
                fh.seek(self.record.stdout_offset)
                chunk = fh.read()
        except OSError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        chunk = chunk[: end + 1]
        new: list[dict[str, Any]] = []
        stray: list[str] = []
        for raw in chunk.splitlines():
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            event = None
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    event = json.loads(line)
            if isinstance(event, dict):
                new.append(event)
            else:
                stray.append(line)
        if new:
            with self.events_path.open("a", encoding="utf-8") as fh:
                for event in new:
                    fh.write(json.dumps(event) + "\n")
        if stray:
            with self.log_path.open("a", encoding="utf-8") as fh:
                fh.write("".join(f"{STDOUT_PREFIX}{line}\n" for line in stray))
        self.record.stdout_offset += len(chunk)
        return new

    def _absorb(self, events: list[dict[str, Any]]) -> None:
        elapsed = time.monotonic() - self._t0
        for event in events:
            self.events.append(event)
            self.progress.update(event, elapsed)
            kind = event_kind(event)
            if kind == "epoch":
                self.record.last_metrics = {
                    k: v for k, v in event.items() if k not in ("event", "type")
                }
            elif kind == "done":
                self.record.result_model = _first_str(event, ("model", "model_id", "id", "result"))
                self.record.result_path = _first_str(event, ("path", "model_path", "folder"))
                if isinstance(event.get("metrics"), dict):
                    self.record.last_metrics = dict(event["metrics"])
            elif kind == "error":
                self.record.error = _first_str(event, ("message", "error", "reason")) or "error"

    def poll(self) -> list[dict[str, Any]]:
        """New events since the last call; updates the state when the process has ended.

        Cheap (a file read and a ``waitpid``) and never blocks: while another
        thread is cancelling the job it returns ``[]`` at once. Call it from a GUI timer.
        """
        if self.record.state == "queued" or not self._lock.acquire(blocking=False):
            return []
        try:
            new = self._poll_locked()
        finally:
            self._lock.release()
        for event in new:
            for callback in list(self._callbacks):
                callback(self, event)
        return new

    def _poll_locked(self) -> list[dict[str, Any]]:
        alive_before = self.is_alive() if not self.is_final else False
        new = self._read_output()
        self._absorb(new)
        if new:
            self.save()
        if not self.is_final and not alive_before:
            # The process had ended before we read: everything it wrote is in the file.
            new_tail = self._read_output()
            self._absorb(new_tail)
            new += new_tail
            self._finish(self._returncode())
        return new

    def _finish(self, returncode: int | None) -> None:
        """Decide the final state of an ended process from its exit code and events."""
        self.record.returncode = returncode
        kinds = {event_kind(e) for e in self.events}
        if self.record.cancel_requested:
            state, error = "cancelled", None
        elif "error" in kinds:
            state, error = "failed", self.record.error
        elif "done" in kinds and returncode in (0, None):
            state, error = "done", None
        elif returncode is None:
            state, error = "failed", "the job's process ended without reporting a result (killed?)"
        elif returncode < 0:
            sig = -returncode
            name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
            state, error = "failed", f"the job's process was killed by {name}" + (
                " (out of memory?)" if -returncode == signal.SIGKILL else ""
            )
        elif returncode != 0:
            error = f"the job's process exited with code {returncode}" + _log_hint(self)
            state = "failed"
        else:
            state, error = "done", None
        self._set_state(state, error)

    def wait(self, timeout: float | None = None, interval: float = 0.1) -> str:
        """Poll until the job ends or ``timeout`` seconds pass; returns the state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.poll()
            if self.is_final:
                return self.state
            if deadline is not None and time.monotonic() >= deadline:
                return self.state
            time.sleep(interval)

    def stop_early(self) -> None:
        """Ask the trainer to stop after the current batch and keep its best epoch (one SIGTERM).

        The job ends ``done`` with a model if an epoch had finished; use
        :meth:`cancel` to stop without keeping anything.
        """
        if self.record.state == "running" and self.record.pid and self.is_alive():
            self.record.meta["stopped_early"] = True
            self.save()
            _signal_group(self.record.pid, signal.SIGTERM)

    def cancel(self, grace: float = CANCEL_GRACE_S) -> str:
        """Stop the job and keep nothing; returns within :data:`CANCEL_LIMIT_S` seconds.

        Sends SIGTERM to the job's process group twice (``napari-hpa train``
        stops on the first and aborts at once on the second), then SIGKILL
        after ``grace`` seconds. Afterwards the process is gone, the state is
        ``cancelled`` and no new model version or ``.tmp-*`` folder of the job's
        model is left.
        """
        with self._lock:
            return self._cancel_locked(grace)

    def _cancel_locked(self, grace: float) -> str:
        if self.is_final:
            return self.state
        self.record.cancel_requested = True
        if self.record.state == "queued":
            self._set_state("cancelled")
            return self.state
        self.save()
        pid = self.record.pid
        t0 = time.monotonic()
        grace = min(grace, CANCEL_LIMIT_S - 0.5)

        def wait_until(limit: float) -> None:
            while self.is_alive() and time.monotonic() - t0 < limit:
                time.sleep(0.01)

        if pid and self.is_alive():
            if self.nice:
                # Let it exit at full speed (allowed for root only; harmless otherwise).
                with contextlib.suppress(OSError, AttributeError):
                    os.setpriority(os.PRIO_PROCESS, pid, 0)
            _signal_group(pid, signal.SIGTERM)
            wait_until(0.15)
            if self.is_alive():
                _signal_group(pid, signal.SIGTERM)
            wait_until(grace)
            if self.is_alive() or _group_alive(pid):
                _signal_group(pid, signal.SIGKILL)
            wait_until(CANCEL_LIMIT_S - 0.1)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=max(0.01, CANCEL_LIMIT_S - 0.05 - (time.monotonic() - t0)))
            self.record.returncode = self._proc.returncode
        self._absorb(self._read_output())
        self._discard_outputs()
        self._set_state("cancelled")
        return self.state

    def _discard_outputs(self) -> None:
        """Delete what a cancelled trainer left (``.tmp-<name>-v*``, a version saved on exit)."""
        import shutil

        root = Path(self.record.meta.get("models_dir") or registry.user_models_dir())
        if root.is_dir():
            for tmp in root.glob(f".tmp-{self.record.model_name}-v*"):
                shutil.rmtree(tmp, ignore_errors=True)
        path = self.record.result_path
        if path and self.record.kind == "train":
            folder = Path(path)
            if folder.parent.resolve() == root.resolve() and folder.name.startswith(
                f"{self.record.model_name}-v"
            ):
                shutil.rmtree(folder, ignore_errors=True)
            self.record.meta["discarded_model"] = self.record.result_model
            self.record.result_path = self.record.result_model = None


def _first_str(event: dict[str, Any], keys: Sequence[str]) -> str | None:
    for key in keys:
        value = event.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, dict):
            for sub in ("id", "path"):
                if isinstance(value.get(sub), str):
                    return value[sub]
    return None


def _log_hint(job: Job) -> str:
    lines = [ln.strip() for ln in job.log_text(20_000).splitlines() if ln.strip()]
    errors = [ln for ln in lines if not ln.startswith(STDOUT_PREFIX)]
    return f": {(errors or lines)[-1]}" if lines else ""


# ------------------------------------------------------------------ manager
class JobManager:
    """Creates, finds and recovers the jobs under one folder.

    Parameters
    ----------
    root
        The jobs folder; default ``registry.user_home() / "jobs"``.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else registry.user_home() / "jobs"
        self._jobs: dict[str, Job] = {}
        self._created: set[str] = set()

    # -- locks ----------------------------------------------------------------------------
    def _lock_path(self, model_name: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in model_name)
        return self.root / LOCK_DIR / f"{safe}.lock"

    def _acquire(self, model_name: str, job_id: str) -> None:
        path = self._lock_path(model_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._lock_holder(path)
                if holder is not None and not holder.is_final:
                    raise JobLockedError(
                        f"a job for model {model_name!r} is already {holder.state} "
                        f"(job {holder.id}, started "
                        f"{holder.record.started or holder.record.created}); "
                        "wait for it or cancel it first"
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(job_id)
            return
        raise JobLockedError(f"could not take the lock {path}")

    def _lock_holder(self, path: Path) -> Job | None:
        try:
            job_id = path.read_text().strip()
        except OSError:
            return None
        try:
            job = self.get(job_id)
        except JobError:
            return None
        if not job.is_final:
            job.poll()
        if job.state == "queued" and job_id not in self._created and _age_s(job) > QUEUED_STALE_S:
            return None  # its creator died before starting it
        return job

    def _release(self, job: Job) -> None:
        path = self._lock_path(job.record.model_name)
        try:
            if path.read_text().strip() == job.id:
                path.unlink()
        except OSError:
            pass

    # -- jobs -----------------------------------------------------------------------------
    def create(
        self, model_name: str, kind: str = "train", meta: dict[str, Any] | None = None
    ) -> Job:
        """A queued job with its folder, holding the lock of ``model_name``.

        Raises
        ------
        JobLockedError
            If a job for ``model_name`` is queued or running.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        job_id = datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self._acquire(model_name, job_id)
        folder = self.root / job_id
        folder.mkdir(parents=True)
        record = JobRecord(id=job_id, kind=kind, model_name=model_name, meta=dict(meta or {}))
        job = Job(folder, record, self)
        job.save()
        self._jobs[job_id] = job
        self._created.add(job_id)
        return job

    def start(self, command: Sequence[str], model_name: str, kind: str = "train",
              meta: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Job:
        """Create a job and start ``command``; see :meth:`create`."""
        job = self.create(model_name, kind, meta)
        try:
            return job.start(command, env=env)
        except JobError:
            raise

    def get(self, job_id: str) -> Job:
        """The job with this id (from memory, else read from its folder)."""
        if job_id in self._jobs:
            return self._jobs[job_id]
        folder = self.root / job_id
        try:
            data = json.loads((folder / JOB_FILE).read_text(encoding="utf-8"))
            record = JobRecord.from_dict(data)
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise JobError(f"{folder}: not a readable job ({exc})") from None
        job = Job(folder, record, self)
        self._jobs[job_id] = job
        return job

    def list_jobs(self) -> list[Job]:
        """All jobs in the folder, oldest first."""
        if not self.root.is_dir():
            return []
        jobs = []
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and (folder / JOB_FILE).is_file():
                with contextlib.suppress(JobError):
                    jobs.append(self.get(folder.name))
        return jobs

    def active(self, model_name: str | None = None) -> list[Job]:
        """Jobs still queued or running (for one model, or all)."""
        out = []
        for job in self.list_jobs():
            if not job.is_final:
                job.poll()
            if not job.is_final and (model_name is None or job.record.model_name == model_name):
                out.append(job)
        return out

    def recover(self) -> list[Job]:
        """Settle jobs left by an earlier session; return finished results not yet seen.

        A job whose process is gone gets its final state from ``events.jsonl``
        (and the rest of the output file): ``done`` with its result model, or
        ``failed`` with the reason. Jobs still running stay running (poll them).
        The returned jobs are ``done`` or ``failed`` and not marked
        :meth:`mark_seen`.
        """
        unseen = []
        for job in self.list_jobs():
            if job.state == "queued":
                if job.id not in self._created and _age_s(job) > QUEUED_STALE_S:
                    # Its creator died before starting it.
                    job._set_state("failed", "the job was never started (napari closed?)")
            elif job.state == "running":
                job.poll()
            if job.state in ("done", "failed") and not job.record.seen:
                unseen.append(job)
        return unseen

    def mark_seen(self, job: Job) -> None:
        """Remember that the user has seen this job's result (recover() skips it)."""
        job.record.seen = True
        job.save()


def python_command(*args: str) -> list[str]:
    """``[sys.executable, "-m", "napari_hpa", *args]``: the CLI in the running interpreter."""
    return [sys.executable, "-m", "napari_hpa", *[str(a) for a in args]]
