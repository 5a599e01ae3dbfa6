"""Issue 18, item 16 in napari: a damaged annotations database is one notification, kept as is.

The Annotate dock is added as the Plugins menu adds it and napari picks the reader; the
folder's database has two pages overwritten with noise, as a failing disk leaves them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from conftest import GUI_TEST
from reliability_counts import record_bad_input

from napari_hpa.core.image.writers import write_image
from napari_hpa.core.labels.store import AnnotationStore, default_db_path

pytestmark = GUI_TEST


def _damaged_db(path: Path) -> str:
    """Write a 300-image database, overwrite two of its middle pages; its sha256."""
    with AnnotationStore(path) as store, store.transaction():
        for i in range(300):
            src = f"/data/img{i:04d}"
            store.set_model_labels(src, "hpa28", np.full(28, 0.1), [0, 3], "m@1")
            store.set_user_label(src, "hpa28", 5, True)
    data = bytearray(path.read_bytes())
    middle = len(data) // 4096 // 2
    noise = np.random.default_rng(1).integers(0, 256, 2 * 4096, np.uint8).tobytes()
    data[middle * 4096 : (middle + 2) * 4096] = noise
    path.write_bytes(bytes(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_damaged_database_is_one_notification(make_napari_viewer, tmp_path: Path, notes) -> None:
    folder = tmp_path / "field"
    folder.mkdir()
    image = folder / "cell.jpg"
    write_image(image, np.random.default_rng(0).random((1, 64, 64)).astype(np.float32))
    db = default_db_path(image)
    db.parent.mkdir()
    digest = _damaged_db(db)
    viewer = make_napari_viewer()
    annotate = viewer.window.add_plugin_dock_widget("napari-hpa", "Annotate")[1]
    ok = False
    try:
        viewer.open(str(image), plugin="napari-hpa")
        assert annotate.source == str(image)
        errors = [msg for kind, msg in notes if kind == "show_error"]
        assert len(errors) == 1, notes
        assert str(db) in errors[0] and "damaged" in errors[0] and "\n" not in errors[0]
        assert annotate.store is None  # nothing is written to it
        assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
        ok = True
    finally:
        record_bad_input("damaged_db_pages", "Annotate dock", ok)
