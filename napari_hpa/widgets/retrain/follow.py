"""Following the Retrain widget's background jobs: the poll, the end of a run, recovery.

A timer calls :meth:`JobFollowerMixin._tick` every 200 ms on the GUI thread: it
polls the training and comparison jobs, and never blocks. Short calls (reading
the database, starting a job, cancelling) run in napari thread workers through
:meth:`JobFollowerMixin._submit`. When a training ends, the comparison
starts; when it ends, the result panel shows it. Jobs that ended while napari
was closed are picked up the same way at the next start, and one still running
(a training or its comparison) is followed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QProgressBar, QWidget

from ...core.model.registry import ModelEntry
from ...jobs.retrain import comparison_job, read_comparison, result_entry, start_compare
from ...jobs.runner import Job, JobManager
from .._shared.background import run_in_background
from .compare_panel import ComparePanel
from .plot import TrainingPlot
from .state import RetrainState, progress_text

#: The progress display is refreshed at most this often (seconds).
UI_INTERVAL_S = 0.5


class JobFollowerMixin:
    """The job-following methods of the Retrain widget (a mixin).

    The widget provides the attributes annotated here (see its ``_build``).
    """

    manager: JobManager
    state: RetrainState
    progress: QProgressBar
    status: QLabel
    plot: TrainingPlot
    result_box: ComparePanel
    _gone: threading.Event
    _final_shown: str | None
    _unshown: int
    _last_ui: float

    if TYPE_CHECKING:

        def _update_buttons(self) -> None: ...
        def refresh_models_async(self) -> None: ...  # noqa: D102 - the widget's
        def _refresh_predict_widgets(self, select: ModelEntry | None = None) -> list[Any]: ...

    # -- polling --------------------------------------------------------------------------
    def _submit(
        self,
        fn: Callable[..., Any],
        done: Callable[[Any], None],
        *args: Any,
        latest: str | None = None,
        urgent: bool = False,
    ) -> Any:
        """Run ``fn(*args)`` in a napari thread worker; ``done`` gets its result or exception.

        With ``latest``, only the newest call of that name is delivered (two
        recounts may end out of order; the older one must not overwrite the
        newer). ``urgent`` starts it even when every worker thread is busy.
        """
        worker: Any = None

        def deliver(outcome: Any) -> None:
            if worker in self.state.pending:
                self.state.pending.remove(worker)
            if self._gone.is_set():
                return  # the dock was closed or deleted while the worker ran
            if latest is not None and self.state.latest.get(latest) is not worker:
                return
            with one_paint(self):
                done(outcome)

        worker = run_in_background(fn, *args, done=deliver, errored=deliver, urgent=urgent)
        self.state.pending.append(worker)
        if latest is not None:
            self.state.latest[latest] = worker
        return worker

    def _tick(self) -> None:
        """Every 200 ms: poll the jobs (never blocks).

        The display follows at most every :data:`UI_INTERVAL_S` (and at once when an
        epoch or the run ends), in one paint: with software OpenGL one paint of napari's
        window costs 50-70 ms, and QProgressBar.setValue would paint synchronously.
        """
        job = self.state.job
        if job is not None:
            if not job.is_final:
                self._unshown += len(job.poll())
            ended = job.is_final and self._final_shown != job.id
            epoch = len(job.progress.history) != len(self.state.history)
            due = self._unshown and time.monotonic() - self._last_ui >= UI_INTERVAL_S
            if ended or epoch or due:
                self._unshown = 0
                self._last_ui = time.monotonic()
                with one_paint(self):
                    self._show_job(job)
        cjob = self.state.compare_job
        if cjob is not None and not cjob.is_final:
            cjob.poll()
            if cjob.is_final:
                with one_paint(self):
                    self._on_compare_finished()
            elif time.monotonic() - self._last_ui >= UI_INTERVAL_S:
                self._last_ui = time.monotonic()
                with one_paint(self):
                    self._show_compare_progress(cjob)

    def _show_job(self, job: Job) -> None:
        p = job.progress
        if len(p.history) != len(self.state.history):
            self.state.history = list(p.history)
            self.plot.set_history(self.state.history, p.epochs or None)
        if not job.is_final:
            self.progress.setValue(int(1000 * p.fraction))
            current = max(1, p.epoch, len(p.history))
            epoch = f"epoch {current}/{p.epochs}" if p.epochs else "preparing"
            self.progress.setFormat(f"{epoch} · {100 * p.fraction:.0f}%")
            self.status.setText(progress_text(p))
            return
        if self._final_shown != job.id:  # the end of a run is handled once
            self._final_shown = job.id
            self._on_job_finished(job)

    def _on_job_finished(self, job: Job) -> None:
        self._update_buttons()
        if job.state == "done":
            child = result_entry(job)
            self.progress.setValue(1000)
            self.progress.setFormat("Done")
            self.refresh_models_async()
            # Later, in its own event: Predict's refresh and this paint must not add up.
            QTimer.singleShot(300, self._refresh_predict_widgets)
            if child is None:
                self.status.setText(
                    f"Training ended without a new model: {job.record.error or 'no epoch finished'}"
                )
                return
            self.status.setText(
                f"New version {child.id} (from {child.spec.parent}). "
                "Comparing it with its parent on the held-out images…"
            )
            self._submit(start_compare, self._on_compare_started, job, self.manager)
        elif job.state == "cancelled":
            self.progress.setFormat("Cancelled")
            self.status.setText("Cancelled: no new model was written.")
        else:
            self.progress.setFormat("Failed")
            self.status.setText(
                f"Training failed: {job.record.error or 'unknown error'} (see Log…)"
            )

    def _on_compare_started(self, cjob: Job | BaseException) -> None:
        if isinstance(cjob, BaseException):
            self.status.setText(f"New version ready; no comparison: {cjob}")
            self._show_result()
            return
        self.state.compare_job = cjob
        self._update_buttons()

    def _show_compare_progress(self, cjob: Job) -> None:
        p = cjob.progress
        if p.batches:
            self.progress.setValue(int(1000 * p.batch / p.batches))
            self.progress.setFormat(f"comparing {p.batch}/{p.batches}")

    def _on_compare_finished(self) -> None:
        job, cjob = self.state.job, self.state.compare_job
        if job is None or cjob is None:
            return
        self.state.comparison = read_comparison(job)
        if cjob.state != "done" or self.state.comparison is None:
            self.status.setText(f"Comparison failed: {cjob.record.error or cjob.state} (see Log…)")
        self.manager.mark_seen(job)
        self.manager.mark_seen(cjob)
        self._show_result()
        self._update_buttons()

    RESULT_PLACEHOLDER = ComparePanel.PLACEHOLDER

    def _clear_result(self) -> None:
        self.result_box.clear()

    @property
    def has_result(self) -> bool:
        """True once a new version is shown (with or without its comparison)."""
        return self.result_box.has_result

    def _show_result(self) -> None:
        job = self.state.job
        comp = self.state.comparison
        child = result_entry(job) if job is not None else None
        if child is None:
            self._clear_result()
            return
        self.progress.setValue(1000)
        self.progress.setFormat("Done")
        if comp is None:
            self.result_box.show_new_version(child)
            return
        self.result_box.show_comparison(comp)
        self.status.setText(f"Done: {child.id}. Use it, or roll back to {comp.parent}.")
        self.plot.set_history(
            self.state.history or job.progress.history,
            job.progress.epochs,
            comp.parent_macro_f1,
            comp.child_macro_f1,
        )

    # -- recovery -------------------------------------------------------------------------
    def _on_recovered(self, jobs: list[Job] | BaseException) -> None:
        """Jobs of an earlier napari: follow a running one, else show the newest result.

        A training still running is followed; a finished one is shown with its
        comparison: the one that ended while napari was closed (read from its file),
        the one still running (followed, not started twice: the model's lock would
        refuse a second), or a new one when none ran.
        """
        if isinstance(jobs, BaseException) or self.state.job is not None:
            return
        running = [
            j for j in self.manager.list_jobs() if j.record.kind == "train" and not j.is_final
        ]
        trained = [j for j in jobs if j.record.kind == "train"]
        if running:
            self.state.job = running[-1]
            self.status.setText(f"Following a training started earlier (job {running[-1].id}).")
            self._show_job(running[-1])
            self._update_buttons()
            return
        if not trained:
            return
        job = trained[-1]
        self.state.job = job
        self._final_shown = job.id
        if job.state == "failed":
            self.status.setText(f"A training started earlier failed: {job.record.error} (see Log…)")
            self.manager.mark_seen(job)
            self._update_buttons()
            return
        self.state.history = list(job.progress.history)
        self.plot.set_history(self.state.history, job.progress.epochs or None)
        self.refresh_models_async()
        comp = read_comparison(job)
        cjob = comparison_job(job, self.manager)
        if comp is not None:
            self.state.comparison = comp
            self.state.compare_job = cjob
            self.manager.mark_seen(job)
            if cjob is not None:
                self.manager.mark_seen(cjob)
            self._show_result()
        elif cjob is not None and not cjob.is_final:
            self.state.compare_job = cjob
            child = result_entry(job)
            if child is not None:
                self.result_box.show_new_version(child)
            self.status.setText(
                f"{job.record.result_model} finished training before napari was closed; "
                "comparing it with its parent on the held-out images…"
            )
            self._show_compare_progress(cjob)
        else:
            self.status.setText(
                f"While napari was closed, {job.record.result_model} finished "
                "training. Comparing it with its parent…"
            )
            self._submit(start_compare, self._on_compare_started, job, self.manager)
        self._update_buttons()


@contextlib.contextmanager
def one_paint(widget: QWidget) -> Iterator[None]:
    """Apply several changes, then paint once, later (not synchronously)."""
    widget.setUpdatesEnabled(False)
    try:
        yield
    finally:
        widget.setUpdatesEnabled(True)
