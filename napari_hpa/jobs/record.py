"""The job record, its states and its folder on disk.

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

States: ``queued -> running -> done | failed | cancelled`` (``queued`` may
also go straight to ``failed`` or ``cancelled``); the last three are final.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
STATES: tuple[JobState, ...] = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES: frozenset[str] = frozenset({"done", "failed", "cancelled"})
#: The states each state may go to (the final states go nowhere).
TRANSITIONS: dict[str, frozenset[str]] = {
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
#: Created by "stop early": the trainer stops after its batch and keeps its best epoch.
STOP_FILE = "stop"
#: Tells the job's trainer where its stop file is.
STOP_ENV = "NAPARI_HPA_STOP_FILE"
#: Marks the lines of log.txt that came from standard output (not JSON events).
STDOUT_PREFIX = "[stdout] "


class JobError(RuntimeError):
    """A job that cannot be started, found or controlled; the message says why."""


class JobLockedError(JobError):
    """A job for the same model is already running."""


def now_iso() -> str:
    """Return the time now in UTC, ISO 8601 to the second (the record's timestamps)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` by a rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class JobRecord:
    """Everything in ``job.json``."""

    id: str
    kind: str
    model_name: str
    command: list[str] = field(default_factory=list)
    state: str = "queued"
    created: str = field(default_factory=now_iso)
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
        """Read a saved record; fields this version does not know are dropped."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})
