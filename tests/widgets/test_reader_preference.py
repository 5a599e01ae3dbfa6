"""napari chooses napari-hpa for HPA channel files and OME-TIFF, as a user drops them (issue 17).

Files are dropped on the real QtViewer (its ``dropEvent``, what a drag and drop
calls), with napari's modal dialogs recorded and dismissed: a test fails when
napari would have asked "Choose reader". Before a drop, napari-hpa is
deactivated in npe2, as in a napari process that has not used napari-hpa yet, so
the drop itself runs none of napari-hpa's code before napari has chosen.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import GUI_TEST

from napari_hpa.core.image.writers import write_hpa_set, write_image

pytestmark = GUI_TEST
PLUGIN = "napari-hpa"
#: Names a microscope writes into an OME-TIFF; napari-hpa maps them to the HPA channels.
OME_NAMES = ["Tubulin", "Protein", "DAPI", "ER"]


@pytest.fixture
def dialogs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Titles of the modal dialogs napari opened (each dismissed as Cancel at once)."""
    from qtpy.QtWidgets import QDialog

    shown: list[str] = []

    def exec_(self: QDialog) -> int:
        shown.append(self.windowTitle())
        return QDialog.Rejected

    monkeypatch.setattr(QDialog, "exec_", exec_)
    monkeypatch.setattr(QDialog, "exec", exec_)
    return shown


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """HPA sets (png, jpg, tif, one without yellow), a plain PNG and a named OME-TIFF."""
    rng = np.random.default_rng(3)
    field = rng.integers(0, 255, (4, 64, 64), dtype=np.uint8)
    folder = tmp_path / "images"
    folder.mkdir()
    write_hpa_set(folder, "setpng", field)
    write_hpa_set(folder, "setjpg", field, fmt="jpg")
    write_hpa_set(folder, "settif", field, fmt="tif")
    write_hpa_set(folder, "noyellow", field)
    (folder / "noyellow_yellow.png").unlink()
    write_image(folder / "plain.png", field[:3])
    write_image(folder / "lone_green.png", field[1:2])  # a Kaggle protein channel alone
    tifffile.imwrite(
        folder / "stains.ome.tif",
        field,
        ome=True,
        metadata={"axes": "CYX", "Channel": {"Name": OME_NAMES}},
    )
    return folder


def _not_yet_used() -> None:
    """napari-hpa as napari has it before anything of napari-hpa is used in a session."""
    from npe2 import PluginManager

    PluginManager.instance().deactivate(PLUGIN)


def _used_before(viewer, images: Path) -> None:
    """An earlier napari session used napari-hpa once; now a new session starts.

    The use: the first drop of an HPA file, where napari asked and the user chose
    napari-hpa (napari's dialog then opens it with ``plugin="napari-hpa"``).
    """
    _not_yet_used()
    viewer.open(images / "lone_green.png", plugin=PLUGIN)
    viewer.layers.clear()
    _not_yet_used()


def _drop(viewer, *paths: Path) -> None:
    """Drop ``paths`` on the viewer's canvas, as a drag and drop from a file manager does."""
    from qtpy.QtCore import QMimeData, QPointF, Qt, QUrl
    from qtpy.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    event = QDropEvent(QPointF(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    viewer.window._qt_viewer.dropEvent(event)


def _names(viewer) -> list[str]:
    return [lyr.name for lyr in viewer.layers]


def _ours(viewer) -> bool:
    """Whether every layer was read by napari-hpa (it marks its layers' metadata)."""
    return bool(viewer.layers) and all("napari_hpa" in lyr.metadata for lyr in viewer.layers)


#: Files dropped together, and the layers napari-hpa makes of them.
DROPS = [
    (["setpng_red.png"], ["microtubules", "protein", "nucleus", "ER"]),
    (["setjpg_green.jpg"], ["microtubules", "protein", "nucleus", "ER"]),
    (["settif_yellow.tif"], ["microtubules", "protein", "nucleus", "ER"]),
    (
        ["noyellow_red.png", "noyellow_green.png", "noyellow_blue.png"],
        ["microtubules", "protein", "nucleus"],
    ),
    (["lone_green.png"], ["lone"]),
]


def test_a_dropped_hpa_channel_file_opens_its_set_without_asking(
    make_napari_viewer, dialogs, images
):
    viewer = make_napari_viewer()  # napari's settings as a user who set nothing has them
    _used_before(viewer, images)
    for files, layers in DROPS:
        _not_yet_used()  # each drop as the first thing of a new session
        _drop(viewer, *(images / f for f in files))
        assert dialogs == [], files
        assert _names(viewer) == layers and _ours(viewer), files
        viewer.layers.clear()


def test_a_dropped_ome_tiff_is_one_layer_per_named_channel_in_predict(
    make_napari_viewer, qtbot, dialogs, images
):
    from qtpy.QtWidgets import QComboBox

    viewer = make_napari_viewer()
    _not_yet_used()
    _, predict = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict")
    _drop(viewer, images / "stains.ome.tif")
    assert dialogs == []
    assert _names(viewer) == OME_NAMES and _ours(viewer)

    def shown() -> list[str]:
        return [c.currentText() for c in predict.channel_box.findChildren(QComboBox)]

    qtbot.waitUntil(lambda: sorted(shown()) == sorted(OME_NAMES), timeout=5_000)
    picked = {c: getattr(v, "label", v) for c, v in predict.state.assignment.items()}
    assert picked == dict(zip(["microtubules", "protein", "nucleus", "er"], OME_NAMES, strict=True))


def test_a_plain_png_is_left_to_the_users_choice(make_napari_viewer, dialogs, images):
    from napari.plugins.utils import get_preferred_reader

    viewer = make_napari_viewer()
    _used_before(viewer, images)
    assert get_preferred_reader(images / "plain.png") is None
    _drop(viewer, images / "plain.png")
    assert dialogs == ["Choose reader"]  # napari asks, as for any image two readers read
    assert len(viewer.layers) == 0  # the user pressed Cancel
    _drop(viewer, images / "setpng_blue.png")  # an HPA file beside it: no question
    assert dialogs == ["Choose reader"] and _ours(viewer)


def test_the_users_own_reader_choice_is_kept(make_napari_viewer, dialogs, images):
    from napari.settings import get_settings

    viewer = make_napari_viewer()
    _not_yet_used()
    # Chosen earlier by the user, in napari's dialog or in Preferences > Plugins.
    mine = {"*_red.png": "napari", "*.tif": "napari"}
    get_settings().plugins.extension2reader = dict(mine)
    _used_before(viewer, images)
    prefs = get_settings().plugins.extension2reader
    assert {k: prefs[k] for k in mine} == mine and prefs["*_green.png"] == PLUGIN

    _drop(viewer, images / "setpng_red.png")  # the user's reader, napari's builtin
    assert _names(viewer) == ["setpng_red"] and not _ours(viewer)
    viewer.layers.clear()
    _drop(viewer, images / "stains.ome.tif")  # the user's *.tif came first: theirs wins
    assert len(viewer.layers) == 1 and not _ours(viewer)
    viewer.layers.clear()
    _drop(viewer, images / "setpng_green.png")
    assert _names(viewer) == ["microtubules", "protein", "nucleus", "ER"] and _ours(viewer)
    assert dialogs == []


def test_the_preference_lasts_into_a_new_napari_process(tmp_path, images):
    """napari-hpa used once; the next day the user runs napari and drags a file in."""
    from napari.settings import NapariSettings

    from napari_hpa._reader_preference import READER_PATTERNS, prefer_napari_hpa

    config = tmp_path / "napari" / "settings.yaml"
    config.parent.mkdir()
    # The napari-hpa activation of the earlier session, written to that napari's settings file.
    assert len(prefer_napari_hpa(NapariSettings(config_path=config))) == len(READER_PATTERNS)
    saved = NapariSettings(config_path=config).plugins.extension2reader
    assert saved["*_red.png"] == PLUGIN and saved["*.ome.tif"] == PLUGIN
    assert "*.png" not in saved and "*.tif" not in saved

    env = {**os.environ, "NAPARI_CONFIG": str(config)}
    drop = textwrap.dedent(
        f"""
        import sys
        import napari
        from qtpy.QtCore import QMimeData, QPointF, Qt, QUrl
        from qtpy.QtGui import QDropEvent
        from qtpy.QtWidgets import QDialog

        QDialog.exec_ = QDialog.exec = lambda self: print("DIALOG", self.windowTitle()) or 0
        viewer = napari.Viewer(show=False)
        print("before drop:", [m for m in sys.modules if m.startswith("napari_hpa")])
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile({str(images / "setpng_green.png")!r})])
        event = QDropEvent(QPointF(5, 5), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
        viewer.window._qt_viewer.dropEvent(event)
        print("layers:", [lyr.name for lyr in viewer.layers])
        viewer.close()
        """
    )
    session = subprocess.run(
        [sys.executable, "-c", drop], env=env, capture_output=True, text=True, timeout=300
    )
    assert session.returncode == 0, session.stderr
    assert "before drop: []" in session.stdout  # nothing of napari-hpa ran before the drop
    assert "DIALOG" not in session.stdout
    assert "layers: ['microtubules', 'protein', 'nucleus', 'ER']" in session.stdout
