"""Background jobs: :class:`JobManager` creates, finds and recovers them.

A job is a command in its own process with its state on disk; the pieces
live in their own modules, re-exported here:

* :mod:`.record`: :class:`JobRecord`, the states and the job folder's files;
* :mod:`.job`: :class:`Job`, the process, its output, poll, cancel;
* :mod:`.progress`: :class:`Progress` from the progress events;
* :mod:`..core.process`: pids and a job's processes (alive? stop), shared with the batch;
* :mod:`.locks`: one job per model at a time;
* :mod:`.recovery`: settling the jobs left by an earlier session.

Nothing here imports Qt: the GUI polls :meth:`Job.poll` from a timer, a
script may call :meth:`Job.wait`, and :meth:`JobManager.recover` reads the
folders back after a restart.
"""

from __future__ import annotations

import contextlib
import json
import sys
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ..core.model import registry
from ..core.process import job_alive as job_alive
from ..core.process import pid_alive
from . import locks, recovery
from .job import CANCEL_GRACE_S, CANCEL_LIMIT_S, JOB_NICENESS, EventCallback, FinalCallback, Job
from .locks import LOCK_DIR
from .progress import Progress, epoch_metrics, event_kind
from .record import (
    EVENTS_FILE,
    FINAL_STATES,
    JOB_FILE,
    LOG_FILE,
    STATES,
    STDOUT_FILE,
    STDOUT_PREFIX,
    JobError,
    JobLockedError,
    JobRecord,
    JobState,
)
from .recovery import QUEUED_STALE_S

__all__ = [
    "CANCEL_GRACE_S",
    "CANCEL_LIMIT_S",
    "EVENTS_FILE",
    "FINAL_STATES",
    "JOB_FILE",
    "JOB_NICENESS",
    "LOCK_DIR",
    "LOG_FILE",
    "QUEUED_STALE_S",
    "STATES",
    "STDOUT_FILE",
    "STDOUT_PREFIX",
    "EventCallback",
    "FinalCallback",
    "Job",
    "JobError",
    "JobLockedError",
    "JobManager",
    "JobRecord",
    "JobState",
    "Progress",
    "epoch_metrics",
    "event_kind",
    "job_alive",
    "pid_alive",
    "python_command",
]


class JobManager:
    """Creates, finds and recovers the jobs under one folder.

    Parameters
    ----------
    root
        The jobs folder; default ``registry.user_home() / "jobs"``.

    Notes
    -----
    The model locks are :mod:`.locks` and the settling of an earlier session's jobs is
    :mod:`.recovery`, both plain functions; the manager gives them its folder, its
    :meth:`get` and the ids of the jobs it created (which are never stale).
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else registry.user_home() / "jobs"
        self._jobs: dict[str, Job] = {}
        self._created: set[str] = set()

    # -- jobs -----------------------------------------------------------------------------
    def create(
        self, model_name: str, kind: str = "train", meta: dict[str, Any] | None = None
    ) -> Job:
        """Create a queued job with its folder, holding the lock of ``model_name``.

        Raises
        ------
        JobLockedError
            If a job for ``model_name`` is queued or running.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        job_id = datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        locks.acquire(self.root, model_name, job_id, self.get, self._created)
        folder = self.root / job_id
        folder.mkdir(parents=True)
        record = JobRecord(id=job_id, kind=kind, model_name=model_name, meta=dict(meta or {}))
        job = Job(folder, record, self, on_final=self.release_lock)
        job.save()
        self._jobs[job_id] = job
        self._created.add(job_id)
        return job

    def start(
        self,
        command: Sequence[str],
        model_name: str,
        kind: str = "train",
        meta: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> Job:
        """Create a job and start ``command``; see :meth:`create`."""
        job = self.create(model_name, kind, meta)
        try:
            return job.start(command, env=env)
        except JobError:
            raise

    def get(self, job_id: str) -> Job:
        """Return the job with this id (from memory, else read from its folder)."""
        if job_id in self._jobs:
            return self._jobs[job_id]
        folder = self.root / job_id
        try:
            data = json.loads((folder / JOB_FILE).read_text(encoding="utf-8"))
            record = JobRecord.from_dict(data)
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise JobError(f"{folder}: not a readable job ({exc})") from None
        job = Job(folder, record, self, on_final=self.release_lock)
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

    # -- locks and recovery -----------------------------------------------------------------
    def release_lock(self, job: Job) -> None:
        """Free the lock of ``job``'s model if ``job`` holds it (each job's ``on_final``)."""
        locks.release(self.root, job)

    def recover(self) -> list[Job]:
        """Settle jobs left by an earlier session; return finished results not yet seen.

        A job whose process is gone gets its final state from ``events.jsonl``
        (and the rest of the output file): ``done`` with its result model, or
        ``failed`` with the reason. Jobs still running stay running (poll them).
        The returned jobs are ``done`` or ``failed`` and not marked
        :meth:`mark_seen`.
        """
        return recovery.recover(self.list_jobs(), self._created)

    def mark_seen(self, job: Job) -> None:
        """Remember that the user has seen this job's result (recover() skips it)."""
        job.record.seen = True
        job.save()


def python_command(*args: str) -> list[str]:
    """``[sys.executable, "-m", "napari_hpa", *args]``: the CLI in the running interpreter."""
    return [sys.executable, "-m", "napari_hpa", *[str(a) for a in args]]
