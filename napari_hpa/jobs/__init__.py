"""Background jobs (training, comparison) in their own processes; no Qt.

* :mod:`.runner`: :class:`JobManager` and, re-exported, the generic part split over
  :mod:`.record` (the job's folder and states), :mod:`.job` (a subprocess per job, cancel),
  :mod:`.progress` (progress events), :mod:`.locks` (one job per model) and
  :mod:`.recovery` (after a restart); pids and process groups are ``core.process``;
* :mod:`.retrain`: one-click retraining on corrected labels and the
  parent-vs-new comparison;
* :mod:`.compare`: the comparison itself (also ``python -m napari_hpa.jobs.compare``).
"""

from __future__ import annotations

from .runner import (
    CANCEL_LIMIT_S,
    FINAL_STATES,
    STATES,
    Job,
    JobError,
    JobLockedError,
    JobManager,
    JobRecord,
    Progress,
    epoch_metrics,
    event_kind,
    python_command,
)

__all__ = [
    "CANCEL_LIMIT_S",
    "FINAL_STATES",
    "STATES",
    "Job",
    "JobError",
    "JobLockedError",
    "JobManager",
    "JobRecord",
    "Progress",
    "epoch_metrics",
    "event_kind",
    "python_command",
]
