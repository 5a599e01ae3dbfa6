"""Screenshots of the Predict and Annotate panels for the docs (run under Xvfb).

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/screenshot.py

Opens napari as ``napari-hpa open`` does (a copy of the bundled sample, so no
annotations database is written next to ``sample_data/``), runs Predict, picks
a class row (its activation map), opens Annotate, selects a cell, toggles a
label, and saves ``docs/img/predict.png`` and ``docs/img/annotate.png``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def wait(app, until: Callable[[], bool], timeout: float = 120.0) -> None:
    """Run the Qt event loop until ``until()`` is true."""
    end = time.monotonic() + timeout
    while not until():
        if time.monotonic() > end:
            raise TimeoutError("timed out waiting for the GUI")
        app.processEvents()
        time.sleep(0.01)


def settle(app, seconds: float = 0.5) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def central_pixel(labels: np.ndarray) -> tuple[int, int]:
    """A pixel of the cell nearest the image centre (a cell that is wholly in view)."""
    h, w = labels.shape
    ys, xs = np.nonzero(labels)
    i = int(np.argmin((ys - h / 2) ** 2 + (xs - w / 2) ** 2))
    return int(ys[i]), int(xs[i])


def maximized_viewer():
    """A napari viewer filling the screen as a user's maximized window does; (viewer, window, app).

    Xvfb has no window manager, so the window is also resized to the screen.
    """
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="napari-hpa", show=True)
    window = viewer.window._qt_window
    window.showMaximized()
    window.resize(QApplication.primaryScreen().size())
    app = QApplication.instance()
    settle(app, 1.0)
    return viewer, window, app


def grab(app, window, path: Path) -> None:
    """Save the whole window, without napari's notification toasts."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in window.findChildren(NapariQtNotification):
        toast.close()
    settle(app, 0.3)
    window.grab().save(str(path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--model", default=None, help="model (default: the default model)")
    parser.add_argument("--size", default="1600x1000", help="window size WxH")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_hpa.cli.open import setup_viewer
    from napari_hpa.core.model.registry import sample_data_dir
    from napari_hpa.widgets._shared import results as R

    work = Path(tempfile.mkdtemp(prefix="napari-hpa-shot-"))
    for f in sample_data_dir().glob("synth_*"):
        shutil.copy(f, work / f.name)

    viewer = napari.Viewer(title="napari-hpa", show=True)
    w, h = (int(v) for v in args.size.split("x"))
    qt_window = viewer.window._qt_window
    qt_window.resize(w, h)
    app = QApplication.instance()
    predict, annotate = setup_viewer(viewer, str(work / "synth_0000"), model=args.model)
    settle(app)

    predict.predict_button.click()
    wait(app, lambda: not predict.state.running)
    result = predict.session.result
    assert result is not None, predict.status.text()
    chosen = result.prediction.predicted
    pick = chosen[1] if len(chosen) > 1 else result.order()[0]
    predict.table.select_class(pick)
    wait(app, lambda: predict.cam_worker is None and pick in result.cams)
    predict.parentWidget().raise_()
    settle(app, 1.0)
    args.out.mkdir(parents=True, exist_ok=True)
    grab(app, qt_window, args.out / "predict.png")

    # Annotate: its tab, a click on a big cell, one label toggled with the number keys.
    annotate.parentWidget().raise_()
    wait(app, lambda: annotate._writer is None)
    cells = R.find_layer(viewer, "cells")
    y, x = central_pixel(cells.data)
    annotate.select_at((float(y), float(x)))
    annotate.toggle_rank(1)
    viewer.layers.selection.active = cells
    R.find_layer(viewer, "cam").visible = False  # correcting: the plain image and the cells
    settle(app, 1.0)
    grab(app, qt_window, args.out / "annotate.png")
    print(f"wrote {args.out / 'predict.png'} and {args.out / 'annotate.png'}")
    viewer.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
