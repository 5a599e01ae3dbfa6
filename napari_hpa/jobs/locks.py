"""One job per model at a time: a lock file per model name under ``<jobs root>/locks/``.

The lock file holds the id of the job that took it. A lock whose job has
ended, or was queued by a session that died before starting it, is stale and
taken over; another session's running job keeps it. Plain functions: the
:class:`~napari_hpa.jobs.runner.JobManager` passes in how to find a job by its id
and which jobs it created itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Container
from pathlib import Path
from typing import TYPE_CHECKING

from .record import JobError, JobLockedError
from .recovery import never_started

if TYPE_CHECKING:
    from .job import Job

LOCK_DIR = "locks"

#: Finds a job by its id (raises :class:`~.record.JobError` when there is none).
GetJob = Callable[[str], "Job"]


def lock_path(root: Path, model_name: str) -> Path:
    """Return the lock file of ``model_name`` under the jobs folder ``root``."""
    safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in model_name)
    return root / LOCK_DIR / f"{safe}.lock"


def acquire(root: Path, model_name: str, job_id: str, get: GetJob, created: Container[str]) -> None:
    """Take the lock of ``model_name`` for ``job_id``, taking over a stale one.

    ``created`` holds the ids of the jobs this session created: a queued job of
    this session is never stale, since it is about to start.

    Raises
    ------
    JobLockedError
        If a job for ``model_name`` is queued or running (the message says which).
    """
    path = lock_path(root, model_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock_holder(path, get, created)
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


def lock_holder(path: Path, get: GetJob, created: Container[str]) -> Job | None:
    """Return the job that holds the lock file ``path``, polled; None if the lock is stale."""
    try:
        job_id = path.read_text().strip()
    except OSError:
        return None
    try:
        job = get(job_id)
    except JobError:
        return None
    if not job.is_final:
        job.poll()
    if never_started(job, job_id in created):
        return None  # its creator died before starting it
    return job


def release(root: Path, job: Job) -> None:
    """Remove the lock of ``job``'s model if ``job`` holds it (another job's lock stays)."""
    path = lock_path(root, job.record.model_name)
    try:
        if path.read_text().strip() == job.id:
            path.unlink()
    except OSError:
        pass
