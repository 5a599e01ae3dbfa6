"""Is a process alive (zombies and reused pids aside), and signal its group.

Used by training jobs (``jobs``) and by batch decode workers watching their parent.

Linux-first: ``/proc`` tells zombies and reused pids apart; elsewhere the
checks fall back to ``kill(pid, 0)``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def proc_start_ticks(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (Linux), to tell reused pids apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    parts = stat.rsplit(")", 1)[1].split()
    return parts[0] if parts else None


def pid_alive(pid: int | None, start_ticks: int | None = None) -> bool:
    """Tell whether ``pid`` runs: not a zombie, and started at ``start_ticks`` if known.

    The start time tells a reused pid from the process that was recorded.
    """
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        # Reap it if it is our own finished child (a dropped Popen leaves a zombie).
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if _proc_state(pid) in ("Z", "X"):
        return False
    if start_ticks is not None:
        now = proc_start_ticks(pid)
        if now is not None and now != start_ticks:
            return False
    return True


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid`` (the job and its workers)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def group_alive(pgid: int) -> bool:
    """Tell whether any process of group ``pgid`` (a job and its workers) still runs.

    A group of zombies does not count, where ``/proc`` shows the states.
    """
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # killpg(0) succeeds while zombies of the group remain; check /proc when we can.
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parts = stat.rsplit(")", 1)[1].split()
        if len(parts) > 2 and parts[2] == str(pgid) and parts[0] not in ("Z", "X"):
            return True
    return False
