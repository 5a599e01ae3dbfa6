"""A seen run of journeys 3-5 on real DULoc sets: correct, export, retrain, batch (Xvfb).

    xvfb-run -a -s "-screen 0 1366x768x24" python benchmarks/seen_loop.py --out /tmp/seen_loop

Six real 4-channel DULoc sets (``../shared/data/hpa_duloc_single_cells``) are copied
to a temporary folder. napari opens maximized with the docks added from the plugin;
the first set is opened by ``viewer.open`` with napari choosing the reader. Then, as a
user: Predict, the Annotate dock pre-filled, key 1 toggles a class, Accept prediction
and Next image (auto-predict) through every set, the Kaggle CSV and JSON exports (the
save dialogs answered with a file in the folder), Retrain with the quick preset (the
live plot, then the comparison, Use this model, Roll back), and Batch over the folder
(the bar chart, then a double-click on a result). One screenshot per step,
``<n>_<step>.png``; what each shows is printed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from screenshot import grab, maximized_viewer, settle, wait  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DULOC = ROOT.parent / "shared" / "data" / "hpa_duloc_single_cells" / "images"
SETS = (
    "comb4_mixed_img304",
    "comb1_mixed_img0",
    "comb2_mixed_img188",
    "comb3_mixed_img282",
    "comb1_mixed_img10",
    "comb2_mixed_img196",
)


def copy_sets(work: Path) -> list[Path]:
    """Copy the DULoc sets' four channel files into ``work``; return their green files."""
    greens = []
    for name in SETS:
        for ch in ("red", "green", "blue", "yellow"):
            src = DULOC / f"{name}_{ch}.jpg"
            if src.exists():
                shutil.copy(src, work / src.name)
        if (work / f"{name}_green.jpg").exists():
            greens.append(work / f"{name}_green.jpg")
    return greens


def main() -> int:  # noqa: PLR0915 - one journey, step by step
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/seen_loop"))
    parser.add_argument("--retrain-timeout", type=float, default=900.0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not DULOC.exists():
        print(f"no DULoc data at {DULOC}")
        return 1

    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QFileDialog

    work = Path(tempfile.mkdtemp(prefix="napari-hpa-loop-"))
    images = work / "screen"
    images.mkdir()
    greens = sorted(copy_sets(images))  # Next image walks the folder in name order
    viewer, window, app = maximized_viewer()
    n = 0

    def shot(step: str, what: str) -> None:
        nonlocal n
        n += 1
        settle(app, 1.0)
        grab(app, window, args.out / f"{n:02d}_{step}.png")
        print(f"{n:02d}_{step}: {what}")

    def show(widget) -> None:
        """Scroll the dock so that ``widget`` is in view, as a user scrolls to it."""
        from qtpy.QtWidgets import QScrollArea

        parent = widget.parentWidget()
        while parent is not None and not isinstance(parent, QScrollArea):
            parent = parent.parentWidget()
        if parent is not None:
            parent.ensureWidgetVisible(widget)

    def current() -> str:
        from napari_hpa.core.model import preferences

        return f"settings name {preferences.current_model()}"

    _, predict = viewer.window.add_plugin_dock_widget("napari-hpa", "Predict")
    _, annotate = viewer.window.add_plugin_dock_widget("napari-hpa", "Annotate", tabify=True)
    viewer.open(str(greens[0]), plugin=None)  # napari chooses, as on a drop (napari-hpa)
    settle(app, 1.0)
    predict.parentWidget().raise_()
    predict.predict_button.click()
    wait(app, lambda: not predict.state.running, timeout=180)
    shot("predict", f"layers {[ly.name for ly in viewer.layers]}; {predict.status.text()}")

    # journey 3: correct and export
    annotate.parentWidget().raise_()
    checked = [annotate.list.item(i).text() for i in range(annotate.list.count())]
    shot("annotate_prefilled", f"first rows {checked[:3]}")
    annotate.list.setFocus()
    QTest.keyClick(annotate.list, Qt.Key_1)
    shot("annotate_key_1", f"status: {annotate.status.text()}")
    annotate.auto_predict.setChecked(True)
    for i in range(1, len(greens)):
        annotate.accept_button.click()
        annotate.next_button.click()
        settle(app, 0.5)
        wait(app, lambda: not predict.state.running, timeout=180)
        settle(app, 1.0)
        if i == 1:
            shot("next_image_autopredicted", f"{predict.status.text()}")
    annotate.accept_button.click()
    answers = iter([str(work / "labels.csv"), str(work / "labels.json")])
    QFileDialog.getSaveFileName = staticmethod(lambda *a, **k: (next(answers), ""))
    annotate.exports.export_csv()
    annotate.exports.export_json()
    csv_text = (work / "labels.csv").read_text() if (work / "labels.csv").exists() else ""
    shot("exported", f"CSV rows {len(csv_text.splitlines())}: {csv_text.splitlines()[:3]}")

    # journey 4: retrain
    _, retrain = viewer.window.add_plugin_dock_widget("napari-hpa", "Retrain")
    settle(app, 3.0)
    shot("retrain_counts", "the Retrain dock's counts of corrected images per class")
    retrain.retrain_button.click()
    t0 = time.perf_counter()
    wait(app, lambda: retrain.running, timeout=60)
    settle(app, 20.0)
    shot("retrain_live_plot", f"{time.perf_counter() - t0:.0f} s after Retrain")
    # the run ends, then its comparison with the parent runs: wait for the comparison table
    wait(app, lambda: retrain.compare_table.rowCount() > 0, timeout=args.retrain_timeout)
    settle(app, 3.0)
    show(retrain.use_button)
    rows = retrain.compare_table.rowCount()
    shot("retrain_compared", f"finished after {time.perf_counter() - t0:.0f} s; {rows} rows")
    retrain.use_button.click()
    settle(app, 3.0)
    shot("retrain_used", f"Predict's model: {predict.model_combo.currentText()}; {current()}")
    retrain.rollback_button.click()
    settle(app, 3.0)
    shot(
        "retrain_rolled_back", f"Predict's model: {predict.model_combo.currentText()}; {current()}"
    )

    # journey 5: batch
    _, batch = viewer.window.add_plugin_dock_widget("napari-hpa", "Batch")
    batch.folder_edit.setText(str(images))
    batch.out_edit.setText(str(work / "batch.csv"))
    batch.run_button.click()
    wait(app, lambda: batch.results_table.rowCount() > 0 and batch.run_button.isEnabled(), 600)
    shot("batch_done", f"{batch.results_table.rowCount()} result rows")
    batch.open_result(1, 0)
    settle(app, 3.0)
    shot("batch_opened_row", f"layers {[ly.name for ly in viewer.layers]}")
    print(f"screen {window.width()}x{window.height()}; wrote {args.out}")
    viewer.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
