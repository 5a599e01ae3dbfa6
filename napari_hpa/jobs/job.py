"""One background job: a command in its own process, its state on disk.

A :class:`Job` runs one command (normally ``python -m napari_hpa train ...
--progress jsonl``) in a child process in a new session, so a crash, an
out-of-memory kill or a CUDA error in the child can never take napari down,
and stopping the job reaches the child and its DataLoader workers (found by the
job id in their environment, on every operating system).
Its folder and states are described in :mod:`.record`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.model import registry
from ..core.model.checkpoint import partial_versions
from ..core.process import JOB_ENV, job_alive, pid_alive, start_stamp, stop_job
from .progress import Progress, event_kind
from .record import (
    EVENTS_FILE,
    FINAL_STATES,
    JOB_FILE,
    LOG_FILE,
    STDOUT_FILE,
    STDOUT_PREFIX,
    STOP_ENV,
    STOP_FILE,
    TRANSITIONS,
    JobError,
    JobRecord,
    now_iso,
    write_json_atomic,
)

if TYPE_CHECKING:
    from .runner import JobManager

#: Seconds between SIGTERM and SIGKILL in :meth:`Job.cancel`.
CANCEL_GRACE_S = 0.8
#: Cancel never takes longer than this.
CANCEL_LIMIT_S = 2.0
#: Scheduling priority of job processes (Unix niceness): below the GUI's.
JOB_NICENESS = 10

EventCallback = Callable[["Job", dict[str, Any]], None]
#: Called once with the job when it reaches a final state (the manager frees its model's lock).
FinalCallback = Callable[["Job"], None]


class Job:
    """One background command and its folder.

    Create jobs with :meth:`JobManager.create` (or :meth:`JobManager.start`);
    a job read back from disk by :meth:`JobManager.get` can be polled and
    cancelled too, even by another napari session.

    Parameters
    ----------
    folder, record
        The job's folder and its ``job.json``.
    manager
        The manager that made it (so that a follow-up job lands in the same folder).
    on_final
        Called with the job when it reaches a final state; the job knows nothing of locks.
    """

    def __init__(
        self,
        folder: Path,
        record: JobRecord,
        manager: JobManager | None = None,
        on_final: FinalCallback | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.record = record
        self.manager = manager
        self.on_final = on_final
        self.progress = Progress()
        self.events: list[dict[str, Any]] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._callbacks: list[EventCallback] = []
        #: When the process started, on this process's monotonic clock (from the record
        #: for a job read back from disk: napari may have been closed since).
        self._t0 = time.monotonic() - started_ago_s(record)
        #: Niceness added to the job's process (0 = same priority as napari).
        self.nice = JOB_NICENESS
        #: Held by poll() and cancel(); poll() skips a turn instead of waiting for it.
        self._lock = threading.RLock()
        self._load_events()

    # -- paths and properties -------------------------------------------------------------
    @property
    def id(self) -> str:
        """The job's id, also its folder's name."""
        return self.record.id

    @property
    def state(self) -> str:
        """The recorded state (queued, running, or a final one)."""
        return self.record.state

    @property
    def is_final(self) -> bool:
        """True once the job has ended, whichever way; a final state never changes."""
        return self.record.state in FINAL_STATES

    @property
    def pid(self) -> int | None:
        """The process id, None before the start."""
        return self.record.pid

    @property
    def eta_s(self) -> float | None:
        """Seconds left by the progress events (None while unknown)."""
        return self.progress.eta_s

    @property
    def log_path(self) -> Path:
        """The log file: standard error and non-JSON output."""
        return self.folder / LOG_FILE

    @property
    def events_path(self) -> Path:
        """The JSON-lines file of the job's progress events."""
        return self.folder / EVENTS_FILE

    def log_text(self, max_chars: int = 200_000) -> str:
        """Return the log's last ``max_chars`` characters (empty if there is no log)."""
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
        """Write the record to the job's folder, atomically."""
        write_json_atomic(self.folder / JOB_FILE, asdict(self.record))

    def _load_events(self) -> None:
        if not self.events_path.is_file():
            return
        for line in self.events_path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                event = json.loads(line)
                if isinstance(event, dict):
                    self.events.append(event)
                    self.progress.update(event)

    def set_state(self, state: str, error: str | None = None) -> None:
        """Move to ``state`` and save; a final state calls ``on_final``.

        Raises :class:`JobError` for a transition that ``TRANSITIONS`` does not allow.
        """
        if state == self.record.state:
            return
        if state not in TRANSITIONS[self.record.state]:
            raise JobError(f"job {self.id}: cannot go from {self.record.state} to {state}")
        self.record.state = state
        if state == "running":
            self.record.started = now_iso()
        if state in FINAL_STATES:
            self.record.finished = now_iso()
            if error:
                self.record.error = error
        self.save()
        if state in FINAL_STATES and self.on_final is not None:
            self.on_final(self)

    # -- running ----------------------------------------------------------------------------------
    def start(
        self,
        command: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> Job:
        """Start the command (``record.command`` unless given) in a new session."""
        if self.record.state != "queued":
            raise JobError(f"job {self.id} is {self.record.state}; only a queued job can start")
        if command is not None:
            self.record.command = [str(c) for c in command]
        if not self.record.command:
            raise JobError(f"job {self.id} has no command")
        child_env = dict(os.environ if env is None else env)
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        child_env[JOB_ENV] = self.id  # how stop_job finds every process of this job
        child_env[STOP_ENV] = str(self.folder / STOP_FILE)
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
            self.set_state("failed", f"could not start {self.record.command[0]}: {exc}")
            raise JobError(self.record.error or str(exc)) from None
        self._t0 = time.monotonic()
        if self.nice:
            # A background job must not take the CPU from the GUI: lower its priority (its
            # DataLoader workers inherit it).
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(os.PRIO_PROCESS, self._proc.pid, self.nice)
        self.record.pid = self._proc.pid
        self.record.pid_start_ticks = start_stamp(self._proc.pid)
        self.set_state("running")
        return self

    def is_alive(self) -> bool:
        """Tell whether the job's process still runs."""
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
        """Return the new events since the last call; update the state if the process ended.

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
            state, error = (
                "failed",
                f"the job's process was killed by {name}"
                + (" (out of memory?)" if -returncode == getattr(signal, "SIGKILL", 9) else ""),
            )
        elif returncode != 0:
            error = f"the job's process exited with code {returncode}" + _log_hint(self)
            state = "failed"
        else:
            state, error = "done", None
        self.set_state(state, error)

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
        """Ask the trainer to stop after the current batch and keep its best epoch.

        The job's stop file says so on every operating system (the trainer polls it
        between batches); on POSIX one SIGTERM says it at once too. On Windows a
        signal would kill the trainer before it saves, so the file alone speaks. The
        job ends ``done`` with a model if an epoch had finished; use :meth:`cancel`
        to stop without keeping anything.
        """
        if self.record.state == "running" and self.record.pid and self.is_alive():
            self.record.meta["stopped_early"] = True
            self.save()
            with contextlib.suppress(OSError):
                (self.folder / STOP_FILE).touch()
            if os.name == "posix":
                stop_job(self.record.pid, self.id)

    def cancel(self, grace: float = CANCEL_GRACE_S) -> str:
        """Stop the job and keep nothing; returns within :data:`CANCEL_LIMIT_S` seconds.

        Sends SIGTERM to every process of the job twice (``napari-hpa train``
        stops on the first and aborts at once on the second), then kills what is
        left after ``grace`` seconds (:func:`~napari_hpa.core.process.stop_job`).
        Afterwards the process is gone, the state is ``cancelled`` and no new model
        version or ``.tmp-*`` folder of the job's model is left.
        """
        with self._lock:
            return self._cancel_locked(grace)

    def _cancel_locked(self, grace: float) -> str:
        if self.is_final:
            return self.state
        self.record.cancel_requested = True
        if self.record.state == "queued":
            self.set_state("cancelled")
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
            stop_job(pid, self.id)
            wait_until(0.15)
            if self.is_alive():
                stop_job(pid, self.id)
            wait_until(grace)
            if self.is_alive() or job_alive(self.id):
                stop_job(pid, self.id, force=True)
            wait_until(CANCEL_LIMIT_S - 0.1)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=max(0.01, CANCEL_LIMIT_S - 0.05 - (time.monotonic() - t0)))
            self.record.returncode = self._proc.returncode
        self._absorb(self._read_output())
        self._discard_outputs()
        self.set_state("cancelled")
        return self.state

    def _discard_outputs(self) -> None:
        """Delete what this job's cancelled trainer left (temporary versions, a version saved).

        Only the trainer's own: a temporary folder records the process writing it
        (:func:`~napari_hpa.core.model.checkpoint.partial_versions`), so another run of
        the same name, or a model whose name starts alike, keeps its save.
        """
        import re
        import shutil

        root = Path(self.record.meta.get("models_dir") or registry.user_models_dir())
        name = self.record.model_name
        if root.is_dir() and self.record.pid:
            for tmp in partial_versions(root, name, self.record.pid, self.record.pid_start_ticks):
                shutil.rmtree(tmp, ignore_errors=True)
        path = self.record.result_path
        if path and self.record.kind == "train":
            folder = Path(path)
            if folder.parent.resolve() == root.resolve() and re.fullmatch(
                re.escape(name) + r"-v\d+", folder.name
            ):
                shutil.rmtree(folder, ignore_errors=True)
            self.record.meta["discarded_model"] = self.record.result_model
            self.record.result_path = self.record.result_model = None


def started_ago_s(record: JobRecord) -> float:
    """Seconds since the job's process started by its record (0 when it has not started)."""
    if not record.started:
        return 0.0
    try:
        started = datetime.fromisoformat(record.started)
    except ValueError:
        return 0.0
    if started.tzinfo is None:
        started = started.replace(tzinfo=timezone.utc)
    return max(0.0, (datetime.now(timezone.utc) - started).total_seconds())


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
