"""How long does Predict block napari's main thread? (run under Xvfb)

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/gui_latency.py

A 2048 x 2048 4-channel HPA-style field (``core.synth``) is opened with the
napari-hpa reader, the Predict panel is docked, and Predict is clicked twice
(cold: the model loads; warm: it is cached). A QTimer beats every 10 ms on the
main thread; the longest gap between beats, less the 10 ms period, is the
longest stall the user could feel (pan and zoom freeze for that long). Also
printed: how long the click handler takes, the time from the click until the
text overlay shows the result, how long napari-hpa's own main-thread handlers
ran, and as a baseline the longest stall of plain zoom redraws without any
prediction (the cost of one frame on this machine's OpenGL). The last line is
``max_stall_ms=<value>`` (the worst over both runs; goal <= 100 ms).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

BEAT_MS = 10


class Heartbeat:
    """Records the gaps between QTimer beats on the main thread."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.last = time.perf_counter()
        self.gaps: list[float] = []
        self.ends: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(BEAT_MS)
        self.timer.timeout.connect(self._beat)

    def _beat(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self.last)
        self.ends.append(now)
        self.last = now

    def start(self) -> None:
        self.gaps.clear()
        self.ends.clear()
        self.last = time.perf_counter()
        self.timer.start()

    def stop(self) -> float:
        """Longest stall in ms (largest gap minus the beat period)."""
        self.timer.stop()
        self._beat()
        return max(0.0, 1000 * max(self.gaps, default=0.0) - BEAT_MS)

    def worst(self, t0: float, n: int = 3) -> str:
        """The ``n`` longest gaps as 'start-end s' after ``t0``."""
        pairs = sorted(zip(self.gaps, self.ends, strict=True), reverse=True)[:n]
        return ", ".join(f"{1000 * g:.0f} ms at {e - g - t0:.2f}-{e - t0:.2f} s" for g, e in pairs)


#: The Predict dock's main-thread handlers that are timed (and profiled with --profile).
HANDLERS = ("show_result", "show_cells", "_on_progress", "_on_result", "_on_cam")


def trace(widget, events: list[tuple[float, float, str]], profiles: dict | None = None) -> None:
    """Record (start, end, name) of the widget's main-thread handlers.

    With ``profiles`` (name -> ``cProfile.Profile``), each handler also runs under
    its profiler, to say what inside it takes the time.
    """
    import cProfile

    for name in HANDLERS:
        original = getattr(widget, name)

        def wrapped(*a, _f=original, _n=name):
            start = time.perf_counter()
            if profiles is None:
                out = _f(*a)
            else:
                prof = profiles.setdefault(_n, cProfile.Profile())
                out = prof.runcall(_f, *a)
            events.append((start, time.perf_counter(), _n))
            return out

        setattr(widget, name, wrapped)


def print_profiles(profiles: dict, top: int) -> None:
    """Print each handler's ``top`` entries by cumulative time (napari-hpa's and napari's)."""
    import io
    import pstats

    for name, prof in profiles.items():
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out).sort_stats("cumulative")
        stats.print_stats(top)
        lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
        print(f"  profile of {name}:")
        print("\n".join("    " + ln for ln in lines[-top - 1 :]))


def baseline(app, viewer, beat: Heartbeat, steps: int = 20) -> float:
    """Longest stall while only zooming (one redraw per step): the cost of a frame."""
    beat.start()
    for _ in range(steps):
        viewer.camera.zoom *= 1.02
        spin(app, 0.05)
    return beat.stop()


def spin(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.001)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--model", default=None, help="model (default: the default model)")
    parser.add_argument("--no-cells", action="store_true", help="skip cell segmentation")
    parser.add_argument(
        "--backend", default="auto", help="what runs the network (the Backend box; default auto)"
    )
    parser.add_argument(
        "--image", type=Path, default=None, help="a real image to open instead of a generated field"
    )
    parser.add_argument(
        "--folder", type=Path, default=None, help="where to write (and reuse) the generated image"
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="also print the main-thread steps and the longest stalls",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="profile the handlers of the warm run; print the N costliest calls of each",
    )
    args = parser.parse_args()

    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    from napari_hpa.core.image.synth import make_field
    from napari_hpa.core.image.writers import write_hpa_set
    from napari_hpa.widgets.predict import PredictWidget

    folder = args.folder or Path(tempfile.gettempdir()) / f"napari-hpa-latency-{args.size}"
    image_id = "field"
    if args.image is None and not (folder / f"{image_id}_yellow.png").is_file():
        print(f"generating a {args.size} px field in {folder} ...", flush=True)
        write_hpa_set(folder, image_id, make_field(size=args.size, seed=3).image)
    opened = args.image or folder / f"{image_id}_red.png"

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    app = QApplication.instance()
    viewer.open(str(opened), plugin="napari-hpa")
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Predict")
    if args.model:
        widget.select_model(args.model)
    widget.cells_check.setChecked(not args.no_cells)
    widget.backend_combo.setCurrentText(args.backend)
    spin(app, 1.0)
    shape = "x".join(str(n) for n in viewer.layers[0].data.shape)
    print(
        f"model {widget.entry.id}, device {widget.state.device}, backend {args.backend}, "
        f"{os.cpu_count()} CPU cores, image {opened.name} {shape}, "
        f"cells {'off' if args.no_cells else 'on'}"
    )

    events: list[tuple[float, float, str]] = []
    profiles: dict | None = {} if args.profile else None
    trace(widget, events, profiles)
    beat = Heartbeat()
    frame = baseline(app, viewer, beat)
    print(f"baseline: zoom redraws without prediction, max stall {frame:.0f} ms")
    worst = warm = 0.0
    for run in ("cold", "warm"):
        beat.start()
        events.clear()
        if profiles is not None:
            profiles.clear()  # the warm run's are printed
        t0 = time.perf_counter()
        widget.predict_button.click()
        click_ms = 1000 * (time.perf_counter() - t0)
        while widget.state.running:
            app.processEvents()
            time.sleep(0.001)
        spin(app, 1.0)  # the layers are drawn after the result arrives
        stall = beat.stop()
        worst, warm = max(worst, stall), stall
        result = widget.session.result
        overlay_s = widget.state.shown_after
        stages = ", ".join(f"{k} {v:.2f} s" for k, v in (result.timings if result else {}).items())
        handler = max((e - s for s, e, _ in events), default=0.0)
        print(
            f"{run}: click handler {click_ms:.1f} ms; click to overlay {overlay_s:.2f} s; "
            f"max stall {stall:.0f} ms; longest napari-hpa handler {1000 * handler:.0f} ms; "
            f"worker stages: {stages}"
        )
        if args.trace:
            print("  longest gaps: " + beat.worst(t0, 4))
            print("  " + "; ".join(f"{s - t0:.2f}-{e - t0:.2f} {n}" for s, e, n in events))
    if profiles:
        print_profiles(profiles, args.profile)
    viewer.close()
    print(f"torch threads used by the worker: {torch.get_num_threads()}")
    print(f"warm_max_stall_ms={warm:.0f} baseline_frame_ms={frame:.0f}")
    print(f"max_stall_ms={worst:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
