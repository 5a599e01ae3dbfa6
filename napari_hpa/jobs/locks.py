"""One job per model at a time: a lock file per model name under ``<jobs root>/locks/``.

The lock file holds the id of the job that took it. A lock whose job has
ended, or was queued by a session that died before starting it, is stale and
taken over; another session's running job keeps it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .record import JobError, JobLockedError
from .recovery import QUEUED_STALE_S, job_age_s

if TYPE_CHECKING:
    from .job import Job

LOCK_DIR = "locks"


class ModelLocksMixin:
    """The lock methods of :class:`~napari_hpa.jobs.runner.JobManager` (a mixin)."""

    root: Path
    _created: set[str]

    if TYPE_CHECKING:

        def get(self, job_id: str) -> Job: ...

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
        if (
            job.state == "queued"
            and job_id not in self._created
            and job_age_s(job) > QUEUED_STALE_S
        ):
            return None  # its creator died before starting it
        return job

    def _release(self, job: Job) -> None:
        path = self._lock_path(job.record.model_name)
        try:
            if path.read_text().strip() == job.id:
                path.unlink()
        except OSError:
            pass
