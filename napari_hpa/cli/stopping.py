"""Stop on a signal at a safe point: the flag that ``train`` and ``batch`` poll.

A signal only sets the flag; the command's loop polls it between batches and ends
cleanly (the best epoch saved, the table synced, the worker pool shut down). A
``KeyboardInterrupt`` raised at an arbitrary point could instead leave a lock of the
process pool held (``concurrent.futures.wait`` takes each future's lock in turn), and
the shutdown would then wait forever. A second signal still aborts at once.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..jobs.record import STOP_ENV


class StopFlag:
    """The given signals set the flag (stop at the next poll); a second one aborts.

    In a job, the job's stop file (``$NAPARI_HPA_STOP_FILE``, made by "stop early")
    sets it too: the one way to ask on Windows, where a signal kills.
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.stopped = False
        self.signals = tuple(signals)
        self._old: dict[int, Any] = {}
        named = os.environ.get(STOP_ENV)
        self._stop_file = Path(named) if named else None

    def __call__(self) -> bool:
        """Return True once a stop signal has arrived or the stop file exists."""
        if not self.stopped and self._stop_file is not None and self._stop_file.exists():
            self.stopped = True
        return self.stopped

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stopped:
            raise KeyboardInterrupt
        self.stopped = True

    def __enter__(self) -> StopFlag:
        for sig in self.signals:
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
