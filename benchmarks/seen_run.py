"""A seen run: the user journeys on real images, one screenshot per step (run under Xvfb).

    xvfb-run -a -s "-screen 0 1366x768x24" python benchmarks/seen_run.py --out /tmp/seen

napari is opened as a user opens it: a maximized window on the screen Xvfb gives,
the docks added from the plugin (``add_plugin_dock_widget``), each image opened by
``viewer.open`` with the reader napari chooses (napari-hpa for HPA sets; for a plain
image napari asks, and napari-hpa is picked as a user picks it in the dialog). For
every real image (the bundled RGBY field, an HPA composite, a DULoc 4-channel set, a
Kaggle ``_green.png``; then a bright-field plankton JPEG with the plankton model and an
H&E lung tile with the lung model) it
presses Predict, shows the heat map of the top class and the Annotate dock, and saves
``<n>_<image>_<step>.png``; then it shows the Retrain and
Batch docks. Copies of the images go to a temporary folder, so no annotations database
lands beside the data.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from screenshot import grab, maximized_viewer, settle, wait  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
HPA_MODEL = "hpa28-efficientnet_lite0"


def images(work: Path) -> list[tuple[str, Path]]:
    """(name, file to open) of the real images, copied into ``work``."""
    from napari_hpa.core.model.registry import sample_data_dir

    out = []
    for f in sample_data_dir().glob("hpa_57_F11_1_*.png"):
        shutil.copy(f, work / f.name)
    out.append(("rgby_field", work / "hpa_57_F11_1_green.png"))
    comp = DATA / "hpa_class_examples_composite" / "images" / "23-3-a.jpg"
    if comp.exists():
        shutil.copy(comp, work / comp.name)
        out.append(("composite_mitochondria", work / comp.name))
    duloc = DATA / "hpa_duloc_single_cells" / "images"
    if duloc.exists():
        for ch in ("red", "green", "blue", "yellow"):
            shutil.copy(duloc / f"comb4_mixed_img304_{ch}.jpg", work)
        out.append(("duloc_set", work / "comb4_mixed_img304_green.jpg"))
    kag = DATA / "hpa_kaggle2018_single_channels" / "train_sample"
    greens = sorted(kag.glob("*_green.png")) if kag.exists() else []
    if greens:
        shutil.copy(greens[0], work / greens[0].name)
        out.append(("kaggle_green", work / greens[0].name))
    plankton = DATA / "plankton_ndsb2015" / "images" / "chaetognath_other"
    jpgs = sorted(plankton.glob("*.jpg")) if plankton.exists() else []
    if jpgs:  # a bright-field image: the heat map must show on its white background
        shutil.copy(jpgs[0], work / f"plankton_{jpgs[0].name}")
        out.append(("plankton", work / f"plankton_{jpgs[0].name}"))
    lung = DATA / "lung_histology_lc25000" / "images" / "lungscc1021.jpeg"
    if lung.exists():  # an H&E tile of a group held out from the lung model's training
        shutil.copy(lung, work / lung.name)
        out.append(("lung", work / lung.name))
    return out


#: The model each non-HPA image is predicted with.
MODELS = {"plankton": "plankton121-efficientnet_lite0", "lung": "lung3-efficientnet_lite0"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/seen"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from napari.errors import MultipleReaderError

    work = Path(tempfile.mkdtemp(prefix="napari-hpa-seen-"))
    viewer, window, app = maximized_viewer()
    _, predict = viewer.window.add_plugin_dock_widget("napari-hpa", "Predict")
    _, annotate = viewer.window.add_plugin_dock_widget("napari-hpa", "Annotate", tabify=True)
    settle(app, 1.0)
    n = 0
    for name, path in images(work):
        viewer.layers.clear()
        try:  # napari chooses the reader: napari-hpa for HPA channel files (its preference)
            viewer.open(str(path), plugin=None)
        except MultipleReaderError:  # a plain image: napari asks; the user picks napari-hpa
            viewer.open(str(path), plugin="napari-hpa")
        settle(app, 1.0)
        predict.parentWidget().raise_()
        model = MODELS.get(name, HPA_MODEL)
        predict.select_model(model)
        settle(app, 0.5)
        predict.predict_button.click()
        wait(app, lambda: not predict.state.running, timeout=180)
        settle(app, 1.0)
        n += 1
        grab(app, window, args.out / f"{n:02d}_{name}_predict.png")
        result = predict.session.result
        if result is None:
            print(f"{name}: no result: {predict.status.text()}")
            continue
        top = result.order()[0]
        predict.table.select_class(top)
        wait(app, lambda top=top, result=result: top in result.cams, timeout=60)
        settle(app, 1.0)
        grab(app, window, args.out / f"{n:02d}_{name}_heatmap.png")
        annotate.parentWidget().raise_()
        settle(app, 1.0)
        grab(app, window, args.out / f"{n:02d}_{name}_annotate.png")
        cells = {c: p.top(1)[0][0] for c, p in sorted(result.cells.items())} if result.cells else {}
        print(f"{name}: image top-3 {result.prediction.top(3)}; cells {cells}")
    viewer.window.add_plugin_dock_widget("napari-hpa", "Retrain")
    settle(app, 2.0)
    grab(app, window, args.out / f"{n + 1:02d}_retrain.png")
    viewer.window.add_plugin_dock_widget("napari-hpa", "Batch")
    settle(app, 2.0)
    grab(app, window, args.out / f"{n + 2:02d}_batch.png")
    print(f"screen {window.width()}x{window.height()}; wrote {args.out}")
    viewer.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
