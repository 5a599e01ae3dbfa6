"""A seen run of the review queue: real DULoc sets, "least certain first", 5 corrections.

    xvfb-run -a -s "-screen 0 1366x768x24" python benchmarks/seen_queue.py --out /tmp/seen_queue

Issue 22's seen run, as a user does it: napari maximized on the screen Xvfb gives, the
Predict and Annotate docks from the plugin, the first set of a folder of real 4-channel
DULoc sets opened by ``viewer.open`` (napari-hpa's reader), "least certain first" chosen
in Annotate's queue box (which predicts the folder in the background), then five times:
Next, the set's true location ticked and the model's wrong ones unticked in the checklist
(as clicks would), a screenshot.
The images are copies in a temporary folder: no database lands beside the data.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from screenshot import grab, maximized_viewer, settle, wait  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DULOC = ROOT.parent / "shared" / "data" / "hpa_duloc_single_cells"
N_SETS = 12
N_CORRECTED = 5


def copy_sets(work: Path) -> dict[str, int]:
    """Copy the first ``N_SETS`` sets of every class in turn; return {set id: class id}."""
    with open(DULOC / "labels.csv", newline="") as fh:
        rows = [(r["Id"], int(r["Target"].split()[0])) for r in csv.DictReader(fh)]
    by_class: dict[int, list[str]] = {}
    for set_id, cls in rows:
        by_class.setdefault(cls, []).append(set_id)
    chosen: dict[str, int] = {}
    while len(chosen) < N_SETS:
        for cls, ids in sorted(by_class.items()):
            if ids and len(chosen) < N_SETS:
                chosen[ids.pop(0)] = cls
    for set_id in chosen:
        for f in (DULOC / "images").glob(f"{set_id}_*.jpg"):
            shutil.copy(f, work / f.name)
    return chosen


def main() -> int:
    """Open, choose the order, correct five sets with Next; a screenshot per step."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/seen_queue"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from napari_hpa.core.tasks import get_task

    work = Path(tempfile.mkdtemp(prefix="napari-hpa-seen-queue-"))
    truth = copy_sets(work)
    task = get_task("hpa28")
    viewer, window, app = maximized_viewer()
    _, predict = viewer.window.add_plugin_dock_widget("napari-hpa", "Predict")
    _, annotate = viewer.window.add_plugin_dock_widget("napari-hpa", "Annotate", tabify=True)
    settle(app, 1.0)
    first = sorted(truth)[0]
    viewer.open(str(work / f"{first}_green.jpg"), plugin=None)
    settle(app, 1.0)
    annotate.parentWidget().raise_()
    queue = annotate.queue
    i = queue.order_combo.findText("least certain first")
    queue.order_combo.setCurrentIndex(i)
    queue.order_combo.activated.emit(i)  # what a click on the entry in the open box sends
    wait(app, lambda: queue.running, timeout=60)
    settle(app, 2.0)
    grab(app, window, args.out / "00_predicting_the_folder.png")
    wait(app, lambda: not queue.running and not queue.missing, timeout=600)
    settle(app, 1.0)
    grab(app, window, args.out / "01_queue_ranked.png")
    print(f"ranked: {[Path(i.source).name + ' (' + i.reason + ')' for i in queue.ranked[:6]]}")
    for n in range(N_CORRECTED):
        target = annotate.step(1)  # Next: the first set of the queue not reviewed yet
        if target is None:
            print("the queue has nothing left")
            break
        wait(app, lambda t=target: annotate.source == t and annotate._loader is None)
        wait(app, lambda: not predict.state.running, timeout=180)  # auto-predict
        settle(app, 1.0)
        set_id = Path(target).name
        right = task.class_index(truth[set_id])
        wrong = annotate.store.effective_labels(target, task.name) - {right}
        annotate.set_label(right, True)  # the ticks and unticks clicks make
        for c in sorted(wrong):
            annotate.set_label(c, False)
        settle(app, 0.5)
        grab(app, window, args.out / f"{n + 2:02d}_corrected_{set_id}.png")
        print(
            f"{set_id}: truth {task.classes[task.class_index(truth[set_id])]}; "
            f"{queue.counts_label.text()} {queue.reason_label.text()}"
        )
    print(f"screen {window.width()}x{window.height()}; wrote {args.out}")
    viewer.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
