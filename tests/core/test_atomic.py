"""core.atomic: the target is the old file or the new one, never a torn one."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from napari_hpa.core import atomic


def test_write_text_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    atomic.write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_a_failing_writer_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("{}")
    with pytest.raises(RuntimeError), atomic.atomic_open(target) as fh:
        fh.write('{"half": ')
        raise RuntimeError("writer died")
    assert target.read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_temporary_keeps_the_suffix_for_writers_that_choose_by_it(tmp_path: Path) -> None:
    with atomic.atomic_path(tmp_path / "labels.tif") as tmp:
        assert tmp.suffix == ".tif" and tmp.parent == tmp_path
        assert tmp.name.startswith(atomic.TMP_PREFIX)
        tmp.write_bytes(b"x")
    assert (tmp_path / "labels.tif").read_bytes() == b"x"


def test_full_disk_keeps_the_previous_file(tiny_tmpfs: Path) -> None:
    target = tiny_tmpfs / "export.csv"
    target.write_text("id,label\na,1\n")
    with pytest.raises(OSError) as err:
        atomic.write_text(target, "id,label\n" + "b,2\n" * 100_000)
    assert err.value.errno == errno.ENOSPC
    assert target.read_text() == "id,label\na,1\n"
    assert [p.name for p in tiny_tmpfs.iterdir()] == ["export.csv"]
