"""Screenshots of heat maps on real images: fluorescence fields, a DULoc set, plankton (Xvfb).

    xvfb-run -a -s "-screen 0 1366x768x24" python benchmarks/heat_shots.py --out /tmp/shots_heat

For each image: napari opens it with the napari-hpa reader, the Predict dock is added
from the plugin, the image is predicted (cells on where the image has a nucleus), and
the window is saved with the heat map of the top class (``<name>_heat.png``), the same
with the cells layer hidden (``<name>_heat_only.png``) and without the heat map
(``<name>_plain.png``). Prints, per image, the class shown, the heat layer's blending
and what fraction of the map is drawn (not transparent).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
from screenshot import grab, settle, wait

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ROOT = Path(__file__).resolve().parents[1]
#: (name, files to copy, the file to open, model).
IMAGES = [
    (
        "hpa_field",
        [
            ROOT / "napari_hpa" / "bundled_samples" / f"hpa_57_F11_1_{c}.png"
            for c in ("red", "green", "blue", "yellow")
        ],
        "hpa_57_F11_1_red.png",
        "hpa28-efficientnet_lite0",
    ),
    (
        "hpa_composite",
        [DATA / "hpa_class_examples_composite" / "images" / "5-1-a.jpg"],
        "5-1-a.jpg",
        "hpa28-efficientnet_lite0",
    ),
    (
        "duloc",  # 1536 px, resized to 320: exactly 2 x 2 tiles (the maps: one whole pass)
        [
            DATA / "hpa_duloc_single_cells" / "images" / f"comb1_mixed_img24_{c}.jpg"
            for c in ("red", "green", "blue", "yellow")
        ],
        "comb1_mixed_img24_red.jpg",
        "hpa28-efficientnet_lite0",
    ),
    (
        "plankton",
        [DATA / "plankton_ndsb2015" / "images" / "ctenophore_lobate" / "74176.jpg"],
        "74176.jpg",
        "plankton121-efficientnet_lite0",
    ),
]


def border_ratio(cam: np.ndarray) -> float:
    """The map's change across its middle row or column (a 2 x 2 grid's tile border) over
    the median change between rows or columns: about 1 when no line shows there."""
    ratios = []
    for axis in (0, 1):
        steps = np.abs(np.diff(cam, axis=axis)).mean(axis=1 - axis)
        middle = cam.shape[axis] // 2
        ratios.append(float(steps[middle - 2 : middle + 1].max() / max(np.median(steps), 1e-9)))
    return max(ratios)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/shots_heat"))
    parser.add_argument("--size", default="1366x768", help="window size WxH")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_hpa.widgets._shared import results as R

    args.out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication([])
    for name, files, opened, model in IMAGES:
        work = Path(tempfile.mkdtemp(prefix="napari-hpa-heat-"))
        for f in files:
            if f.exists():
                shutil.copy(f, work / f.name)
        if not (work / opened).exists():
            print(f"{name}: skipped, {opened} not found")
            continue
        viewer = napari.Viewer(title="napari-hpa", show=True)
        window = viewer.window._qt_window
        w, h = (int(v) for v in args.size.split("x"))
        window.resize(w, h)
        viewer.open(str(work / opened), plugin="napari-hpa")
        _, predict = viewer.window.add_plugin_dock_widget("napari-hpa", "Predict")
        assert predict.select_model(model), model
        settle(app)
        predict.predict_button.click()
        wait(app, lambda p=predict: not p.state.running and p.cam_worker is None, 300)
        result = predict.session.result
        assert result is not None, predict.status.text()
        cam = R.find_layer(viewer, "cam")
        norm = (cam.data - cam.contrast_limits[0]) / np.ptp(cam.contrast_limits)
        alpha = cam.colormap.map(np.clip(norm, 0, 1).ravel())[:, 3]
        print(
            f"{name}: {cam.name}, blending {cam.blending}, cells {len(result.cells)}, "
            f"drawn {np.mean(alpha > 0):.2f} of the map, max alpha {alpha.max():.2f}, "
            f"border step / median {border_ratio(cam.data):.1f}"
        )
        settle(app, 1.0)
        grab(app, window, args.out / f"{name}_heat.png")
        cells = R.find_layer(viewer, "cells")
        if cells is not None:
            cells.visible = False
            grab(app, window, args.out / f"{name}_heat_only.png")
        cam.visible = False
        grab(app, window, args.out / f"{name}_plain.png")
        viewer.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
