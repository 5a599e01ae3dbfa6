"""Shared fixtures: an isolated user folder, the real-data location, small threads."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get(
        "NAPARI_HPA_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
).resolve()


def pytest_configure(config: pytest.Config) -> None:
    """No test, not even a module- or session-scoped fixture, sees the real user folder.

    Module fixtures run before the per-test :func:`_isolated_home`; with the developer's
    own folder they would resolve ``hpa28-efficientnet_lite0`` to a retrained user
    version (seen: a 128-px @4 from a seen run failed the 160-px heat-map tests).
    """
    import tempfile

    os.environ["NAPARI_HPA_HOME"] = tempfile.mkdtemp(prefix="napari-hpa-test-home-")
    # One folder of exported ONNX graphs for the whole run: keyed by the weights' hash,
    # so sharing it is what a user's cache does; the per-test homes would export anew.
    os.environ["NAPARI_HPA_CACHE"] = tempfile.mkdtemp(prefix="napari-hpa-test-onnx-")
    # CI names a file for a crash's Python stacks ($NAPARI_HPA_FAULT_LOG, .ci/run prints it):
    # a segfault otherwise leaves only "Segmentation fault" in the log.
    fault_log = os.environ.get("NAPARI_HPA_FAULT_LOG")
    if fault_log:
        import faulthandler

        faulthandler.enable(file=open(fault_log, "w"), all_threads=True)  # noqa: SIM115


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own $NAPARI_HPA_HOME, so user models never leak between tests."""
    home = tmp_path_factory.mktemp("napari_hpa_home")
    monkeypatch.setenv("NAPARI_HPA_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def _qt_garbage_on_the_gui_thread(request: pytest.FixtureRequest) -> Iterator[None]:
    """No Qt object of a GUI test is garbage-collected on a worker thread.

    Python's cyclic collector runs in whichever thread allocates when a threshold is
    crossed: a matplotlib drawing or a prediction in a napari thread worker. If the
    cycle it frees holds a Qt widget (a dock or a dialog the viewer did not own), Qt
    destroys that widget off the GUI thread, and the process segfaults at random (CI:
    exit 139 during the Retrain test, after the model-card test had left a widget).
    So the collector is off while a test with Qt runs, and collects on the main
    thread after its viewers closed (this fixture is set up first, torn down last).
    """
    uses_qt = request.node.get_closest_marker("gui") is not None or not {
        "qtbot",
        "make_napari_viewer",
    }.isdisjoint(request.fixturenames)
    if not uses_qt:
        yield
        return
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


@pytest.fixture(scope="session", autouse=True)
def _few_threads() -> None:
    try:
        import torch

        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        # The first optimizer step imports torch._dynamo, which loads triton's bundled
        # LLVM. Loaded after Mesa's llvmpipe (any napari viewer under Xvfb), the two
        # LLVMs clash and the process segfaults; loaded first, both work. Training in
        # napari itself runs in a subprocess, so only this test process mixes them.
        import torch._dynamo  # noqa: F401
    except ImportError:
        pass


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a training module: on a shared 2-core machine two threads
    can be ten times slower (an OpenMP barrier waits for a descheduled thread)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


#: The marks of a module of GUI tests: ``gui``, and a skip without a screen (Linux
#: without ``$DISPLAY``: run under xvfb-run). ``pytestmark = GUI_TEST`` in the module.
GUI_TEST = [
    pytest.mark.gui,
    pytest.mark.skipif(
        sys.platform.startswith("linux") and not os.environ.get("DISPLAY"),
        reason="needs a display: run under xvfb-run",
    ),
]


def wait_for_job_event(job, kinds: tuple[str, ...], what: str, interval: float = 0.05) -> None:
    """Poll ``job`` until one of its events is of ``kinds``; fail if it ends first or in 240 s."""
    import time

    deadline = time.monotonic() + 240
    while not any(e.get("event") in kinds for e in job.events):
        job.poll()
        assert not job.is_final, job.log_text()
        assert time.monotonic() < deadline, f"the trainer never {what}"
        time.sleep(interval)


def shared_data(name: str) -> Path:
    """Path of a real data set in ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data set {name!r} not found at {path} (../shared/data is absent)")
    return path


@pytest.fixture
def notes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Napari notifications as (function, message), captured: readers and widgets import
    ``show_error``/``show_warning``/``show_info`` lazily, so patching the module works."""
    import napari.utils.notifications as nn

    seen: list[tuple[str, str]] = []
    for name in ("show_error", "show_warning", "show_info"):
        monkeypatch.setattr(nn, name, lambda msg, _n=name: seen.append((_n, str(msg))))
    return seen


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the reliability counts (tests/reliability_counts.py) when a test recorded any."""
    import sys

    counts = sys.modules.get("reliability_counts")
    if counts is not None and counts.COUNTS.recorded:
        terminalreporter.write_line(counts.COUNTS.summary())


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs (needs root and mount); skipped where the machine cannot."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("a real full disk needs root and mount(8) to make a 64 KiB tmpfs")
    mnt = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)
