"""``napari-hpa export`` keeps the images, the database and the previous export (issue 18, 1-3)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_hpa.cli import main
from napari_hpa.core.atomic import TMP_PREFIX
from napari_hpa.core.image.writers import write_image
from napari_hpa.core.labels.store import AnnotationStore, default_db_path

TASK = "hpa28"


@pytest.fixture
def field(tmp_path: Path) -> Path:
    """``F/cell1.tif``, a raw image with two labelled cells in ``F/.napari-hpa``."""
    folder = tmp_path / "F"
    write_image(folder / "cell1.tif", np.full((2, 40, 40), 1234, np.uint16))
    mask = np.zeros((40, 40), np.int32)
    mask[2:15, 2:15], mask[20:35, 20:38] = 1, 2
    source = str(folder / "cell1.tif")
    with AnnotationStore(default_db_path(source)) as store:
        store.add_image(source, "cell1", mask.shape)
        store.set_cell_mask(source, mask)
        store.set_user_label(source, TASK, 3, True)
        store.set_user_label(source, TASK, 5, True, cell=1)
    return folder


def test_tiff_export_into_the_image_folder_is_refused(field: Path) -> None:
    """The issue's command, as a user runs it: exit 2, one line, the raw image intact."""
    raw = (field / "cell1.tif").read_bytes()
    db = default_db_path(field / "cell1.tif")
    done = subprocess.run(
        [sys.executable, "-m", "napari_hpa", "export", "--db", str(db), "--out", str(field)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "holds the images this database labels" in done.stderr
    assert (field / "cell1.tif").read_bytes() == raw
    assert sorted(p.name for p in field.iterdir()) == [".napari-hpa", "cell1.tif"]


def test_csv_over_the_database_is_refused(field: Path, capsys) -> None:
    db = default_db_path(field / "cell1.tif")
    before = db.read_bytes()
    assert main(["export", "--db", str(db), "--format", "csv", "--out", str(db)]) == 2
    assert "is the annotations database this export reads" in capsys.readouterr().err
    with AnnotationStore(db) as store:
        assert store.integrity_ok()
        assert store.effective_labels(str(field / "cell1.tif"), TASK) == {3}
    assert db.read_bytes()[:16] == before[:16] == b"SQLite format 3\x00"
    image = field / "cell1.tif"
    assert main(["export", "--db", str(db), "--format", "json", "--out", str(image)]) == 2
    assert "is a TIFF image" in capsys.readouterr().err


def test_full_disk_keeps_the_previous_csv(field: Path, tiny_tmpfs: Path, capsys) -> None:
    """A real 64 KiB tmpfs: the export fails with one line, the previous CSV is kept whole."""
    db = default_db_path(field / "cell1.tif")
    out = tiny_tmpfs / "labels.csv"
    assert main(["export", "--db", str(db), "--out", str(out)]) == 0
    previous = out.read_bytes()
    with AnnotationStore(db) as store:
        for i in range(700):
            store.set_user_label(str(field / f"img_{i:03d}_{'x' * 100}.tif"), TASK, 1, True)
    capsys.readouterr()
    assert main(["export", "--db", str(db), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "nothing was overwritten" in err
    assert out.read_bytes() == previous
    assert [p.name for p in tiny_tmpfs.iterdir() if p.name.startswith(TMP_PREFIX)] == []
