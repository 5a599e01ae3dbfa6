"""Settling the jobs of an earlier napari session after a restart.

A job outlives napari: its process runs in its own session and writes to
files. When napari starts again, :meth:`~napari_hpa.jobs.runner.JobManager.recover`
reads the folders back: finished jobs get their final state from their
events, jobs queued by a session that died are abandoned.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .job import Job

#: A job queued this long by another session that never started it is abandoned.
QUEUED_STALE_S = 120.0


def job_age_s(job: Job) -> float:
    try:
        created = datetime.fromisoformat(job.record.created)
    except ValueError:
        return float("inf")
    return (datetime.now(timezone.utc) - created).total_seconds()


class RecoveryMixin:
    """The recovery methods of :class:`~napari_hpa.jobs.runner.JobManager` (a mixin)."""

    _created: set[str]

    if TYPE_CHECKING:

        def list_jobs(self) -> list[Job]: ...

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
                if job.id not in self._created and job_age_s(job) > QUEUED_STALE_S:
                    # Its creator died before starting it.
                    job.set_state("failed", "the job was never started (napari closed?)")
            elif job.state == "running":
                job.poll()
            if job.state in ("done", "failed") and not job.record.seen:
                unseen.append(job)
        return unseen

    def mark_seen(self, job: Job) -> None:
        """Remember that the user has seen this job's result (recover() skips it)."""
        job.record.seen = True
        job.save()
