"""The Retrain dock's log window: the text of its training and comparison jobs."""

from __future__ import annotations

from collections.abc import Sequence

from qtpy.QtWidgets import QDialog, QPlainTextEdit, QVBoxLayout, QWidget

from ...jobs.job import Job


def jobs_log_text(jobs: Sequence[Job]) -> str:
    """Each job's kind, id, state, error, command and log, one after the other."""
    return (
        "\n\n".join(
            f"=== {j.record.kind} job {j.id} ({j.state}) ===\n"
            + (f"error: {j.record.error}\n" if j.record.error else "")
            + f"command: {' '.join(j.record.command)}\n\n{j.log_text() or '(empty log)'}"
            for j in jobs
        )
        or "No job has run yet."
    )


def show_log_dialog(parent: QWidget, jobs: Sequence[Job]) -> QDialog:
    """Open a read-only, unwrapped window with :func:`jobs_log_text` and return it."""
    dialog = QDialog(parent)
    dialog.setWindowTitle("Retrain log")
    view = QPlainTextEdit(jobs_log_text(jobs))
    view.setReadOnly(True)
    view.setLineWrapMode(QPlainTextEdit.NoWrap)
    lay = QVBoxLayout(dialog)
    lay.addWidget(view)
    dialog.resize(720, 420)
    dialog.show()
    return dialog
