"""The one way the docks run work off napari's main thread: napari's ``create_worker``.

A worker's errors become napari notifications: napari's ``create_worker``
relays every exception a worker raises to its notification manager (an error
toast, with the traceback behind it). ``errored`` lets a dock also say it in its
own status line. Long jobs (training, comparison) are subprocesses in
:mod:`napari_hpa.jobs`; what the docks start here is short, or a prediction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QThreadPool


def run_in_background(
    fn: Callable[..., Any],
    *args: Any,
    done: Callable[[Any], None] | None = None,
    errored: Callable[[BaseException], None] | None = None,
    urgent: bool = False,
    **kwargs: Any,
) -> Any:
    """Start ``fn(*args, **kwargs)`` in a napari thread worker and return the worker.

    Parameters
    ----------
    fn
        The work (a function, or a generator function: its yields arrive as ``yielded``).
    done
        Called on the main thread with what ``fn`` returned.
    errored
        Called on the main thread with the exception ``fn`` raised, after napari
        has shown it as a notification.
    urgent
        Start now even when every thread of Qt's pool is busy (a Cancel must not
        wait behind a prediction): the pool gets one more thread if needed.
    """
    from napari.qt.threading import create_worker

    worker = create_worker(fn, *args, _start_thread=False, **kwargs)
    if done is not None:
        worker.returned.connect(done)
    if errored is not None:
        worker.errored.connect(errored)
    if urgent:
        pool = QThreadPool.globalInstance()
        if pool.activeThreadCount() >= pool.maxThreadCount():
            pool.setMaxThreadCount(pool.activeThreadCount() + 1)
    worker.start()
    return worker
