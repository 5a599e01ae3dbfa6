"""Counters behind the reliability summary line that ``pytest`` prints at the end.

Tests record each bad input they try and each crash trial they run; the
``pytest_terminal_summary`` hook in ``conftest.py`` prints
``reliability: bad_inputs_tried=N crashes_survived=M data_lost=L`` whenever
anything was recorded. A module-level counter (not a fixture) so any test file,
and the crash-trial library, can record without plumbing; per process, which is
what a plain ``pytest`` run is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


@dataclass
class Counts:
    """What the run tried; ``failures`` names the inputs or trials that went wrong."""

    bad_inputs_tried: int = 0
    bad_inputs_handled: int = 0
    crash_trials: int = 0
    crashes_survived: int = 0
    data_lost: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def recorded(self) -> bool:
        return bool(self.bad_inputs_tried or self.crash_trials)

    def summary(self) -> str:
        """The one line the terminal summary prints (all three counts, always)."""
        return (
            f"reliability: bad_inputs_tried={self.bad_inputs_tried} "
            f"crashes_survived={self.crashes_survived} data_lost={self.data_lost}"
        )


COUNTS = Counts()


def record_bad_input(kind: str, path_name: str, ok: bool) -> None:
    """One bad input tried on one path (reader, predict, batch ...); ``ok``: handled as required.

    Record after the test's assertions (so ``ok=True`` means they passed), or
    with ``ok=False`` just before failing.
    """
    COUNTS.bad_inputs_tried += 1
    if ok:
        COUNTS.bad_inputs_handled += 1
    else:
        COUNTS.failures.append(f"bad input {kind} on {path_name}")


@contextlib.contextmanager
def counted(kind: str, path_name: str) -> Iterator[None]:
    """Record one bad input as handled if the block's assertions pass, else as failed.

    A skip inside the block records nothing: the input was not tried.
    """
    try:
        yield
    except pytest.skip.Exception:
        raise
    except BaseException:
        record_bad_input(kind, path_name, ok=False)
        raise
    record_bad_input(kind, path_name, ok=True)


def record_crash_trial(kind: str, survived: bool, lost: int) -> None:
    """One kill/crash trial: did the program come back usable, and how many records were lost."""
    COUNTS.crash_trials += 1
    if survived:
        COUNTS.crashes_survived += 1
    else:
        COUNTS.failures.append(f"crash trial {kind} not survived")
    if lost:
        COUNTS.data_lost += int(lost)
        COUNTS.failures.append(f"crash trial {kind} lost {lost}")


def reset() -> None:
    """Start counting afresh (for tests of this module)."""
    COUNTS.__init__()  # type: ignore[misc]
