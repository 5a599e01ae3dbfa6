"""The docks fit a 1366 x 768 laptop screen, all four at once (issue 17, defect 6)."""

from __future__ import annotations

from conftest import GUI_TEST

from napari_hpa.core.image.synth import write_samples

pytestmark = GUI_TEST
LAPTOP = (1366, 768)
#: The most a dock may ask for beside napari's layer list and a usable canvas.
MAX_DOCK_WIDTH = 450


def test_four_docks_fit_a_laptop_screen(make_napari_viewer, qtbot, tmp_path):
    """Before, the Retrain dock alone needed 975 px of height and the four docks grew
    napari's window to 2762 px; the docks now scroll instead."""
    images = write_samples(tmp_path / "images", n=1, size=128, seed=3)
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(*LAPTOP)
    viewer.open(str(images / "synth_0000_red.png"), plugin="napari-hpa")
    widgets = {}
    for name in ("Predict", "Annotate", "Retrain", "Batch"):
        _dock, widgets[name] = viewer.window.add_plugin_dock_widget("napari-hpa", name)
        qtbot.wait(50)
    qtbot.wait(200)
    assert (window.width(), window.height()) == LAPTOP
    for name, widget in widgets.items():
        least = widget.minimumSizeHint()
        assert least.height() <= 200, (name, least)
        assert least.width() <= MAX_DOCK_WIDTH, (name, least)
        assert widget.isVisible(), name
    canvas = viewer.window._qt_viewer.canvas.native
    assert canvas.width() >= 400 and canvas.height() >= 600  # room left for the image
