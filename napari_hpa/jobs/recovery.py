"""Settling the jobs of an earlier napari session after a restart.

A job outlives napari: its process runs in its own session and writes to
files. When napari starts again, :meth:`~napari_hpa.jobs.runner.JobManager.recover`
reads the folders back (with :func:`recover`): finished jobs get their final state
from their events, jobs queued by a session that died are abandoned.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .job import Job

#: A job queued this long by another session that never started it is abandoned.
QUEUED_STALE_S = 120.0


def job_age_s(job: Job) -> float:
    """Seconds since the job was created (infinite when its time cannot be read)."""
    try:
        created = datetime.fromisoformat(job.record.created)
    except ValueError:
        return float("inf")
    return (datetime.now(timezone.utc) - created).total_seconds()


def never_started(job: Job, ours: bool) -> bool:
    """Whether ``job`` is queued by another session (not ``ours``) that died before starting it.

    The age is read only for a queued job of another session.
    """
    return job.state == "queued" and not ours and job_age_s(job) > QUEUED_STALE_S


def recover(jobs: Iterable[Job], created: Container[str]) -> list[Job]:
    """Settle ``jobs`` left by an earlier session; return finished results not yet seen.

    A job whose process is gone gets its final state from ``events.jsonl``
    (and the rest of the output file): ``done`` with its result model, or
    ``failed`` with the reason. Jobs still running stay running (poll them).
    ``created`` holds the ids of this session's jobs, which are never abandoned.
    The returned jobs are ``done`` or ``failed`` and not marked seen.
    """
    unseen = []
    for job in jobs:
        if job.state == "queued":
            if never_started(job, job.id in created):
                job.set_state("failed", "the job was never started (napari closed?)")
        elif job.state == "running":
            job.poll()
        if job.state in ("done", "failed") and not job.record.seen:
            unseen.append(job)
    return unseen
