"""Is a process alive (zombies and reused pids aside), and stop a job with all its processes.

Used by training jobs (``jobs``), by the model folders' cleaner and by batch decode
workers watching their parent. Portable through psutil (Linux, macOS, Windows): no
``/proc``, no process groups. A job's processes are found by the job id in their
environment (``NAPARI_HPA_JOB_ID``, which every child inherits), so a DataLoader
worker whose trainer was killed is still found, where a walk of the process tree
would have lost it with its parent.
"""

from __future__ import annotations

import contextlib
import os

import psutil

#: The environment variable that names the job a process belongs to.
JOB_ENV = "NAPARI_HPA_JOB_ID"
_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess)
_DEAD = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def start_stamp(pid: int) -> int | None:
    """Return when ``pid`` started, in hundredths of a second, to tell reused pids apart.

    The same for the same process whoever asks (the process itself, or the job that
    started it); None if it is not running or cannot be asked.
    """
    try:
        return round(psutil.Process(pid).create_time() * 100)
    except (psutil.Error, OSError):
        return None


def pid_alive(pid: int | None, stamp: int | None = None, reap: bool = True) -> bool:
    """Tell whether ``pid`` runs: not a zombie, and started at ``stamp`` if known.

    ``reap`` first collects ``pid`` if it is this process's own finished child (a
    dropped Popen leaves a zombie); a cleaner that must never take a child's exit
    status from its caller passes False.
    """
    if not pid or pid <= 0:
        return False
    if reap and hasattr(os, "WNOHANG"):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
    try:
        proc = psutil.Process(pid)
        if proc.status() in _DEAD:
            return False
        if stamp:
            return round(proc.create_time() * 100) == stamp
    except _GONE:
        return False
    except psutil.AccessDenied:  # another user's process: it runs
        return True
    return True


def job_processes(job_id: str) -> list[psutil.Process]:
    """Return the running processes of job ``job_id`` (its trainer and every descendant)."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if proc.environ().get(JOB_ENV) == job_id and proc.status() not in _DEAD:
                found.append(proc)
    return found


def job_alive(job_id: str) -> bool:
    """Tell whether any process of job ``job_id`` still runs."""
    return bool(job_processes(job_id))


def stop_job(pid: int | None, job_id: str, force: bool = False) -> None:
    """Ask every process of the job to stop (SIGTERM); ``force`` kills them.

    ``pid`` (the job's first process) is asked first, so that a trainer that stops
    gracefully gets the signal before its workers are gone.
    """
    procs = job_processes(job_id)
    if pid and pid_alive(pid, reap=False):
        with contextlib.suppress(psutil.Error):
            first = psutil.Process(pid)
            procs = [first, *[p for p in procs if p.pid != pid]]
    for proc in procs:
        with contextlib.suppress(psutil.Error, OSError):
            if force:
                proc.kill()
            else:
                proc.terminate()
