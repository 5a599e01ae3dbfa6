"""What an export may write over: its own earlier files, never an image or a database.

An export's output names come from the user (a dialog, ``--out``), and the natural
choices are dangerous: the image folder for the cell TIFFs (whose names are the
images' own), or a mistyped ``--out`` that names the database being read. Each
output is checked before anything is written:

* a CSV or JSON export replaces only a text file: never the database it reads
  (nor its ``-wal``/``-shm``), nor any SQLite file, image or other binary file;
* the cell TIFFs never go into a folder that holds the database's images (they
  would sit beside them and be read as images by Next image and ``batch``), and
  replace only a label stack that records the same image (``source`` in its
  metadata); another file of that name is left alone and a free name is taken.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from ..image.data import ImageReadError
from ..image.files import kind_of, open_image_file, sniff_format

#: The first bytes of every SQLite database file.
SQLITE_MAGIC = b"SQLite format 3\x00"
#: How much of an existing file is read to tell text from binary.
HEAD_BYTES = 4096
#: The files SQLite keeps beside a database while it is open.
DB_COMPANIONS = ("", "-wal", "-shm", "-journal")


class ExportError(ValueError):
    """An export refused before writing, because it would overwrite what it must not."""


def _head(path: Path) -> bytes:
    with open(path, "rb", buffering=0) as fh:  # a regular file (checked): cannot block
        return fh.read(HEAD_BYTES)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def binary_kind(path: Path, head: bytes) -> str | None:
    """Name what a binary file is ("an SQLite database", "a PNG image"); None for text."""
    if head.startswith(SQLITE_MAGIC):
        return "an SQLite database"
    try:
        return f"a {sniff_format(path, head).upper()} image"
    except ImageReadError:
        pass
    if b"\x00" in head:
        return "a binary file"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end of the head
            return "a binary file"
    return None


def check_text_target(path: Path, database: Path | None = None) -> None:
    """Refuse ``path`` for a CSV or JSON export unless it is new or a text file.

    Raises
    ------
    ExportError
        When ``path`` is the database (or one of its companion files), a folder,
        a FIFO or device, an SQLite file, an image or another binary file.
    """
    if database is not None:
        for suffix in DB_COMPANIONS:
            if _same_file(path, Path(f"{database}{suffix}")):
                raise ExportError(
                    f"{path}: is the annotations database this export reads; give another file name"
                )
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ExportError(f"{path}: cannot use this path ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        raise ExportError(f"{path}: is {kind_of(mode)}, not a file an export can replace")
    kind = binary_kind(path, _head(path))
    if kind is not None:
        raise ExportError(
            f"{path}: is {kind}; an export replaces only an earlier export (a text file). "
            "Nothing was written: give another file name"
        )


def image_folders(sources: Iterable[str]) -> set[Path]:
    """Return the folders of the images the sources name (``layer:`` sources have none)."""
    folders = set()
    for source in sources:
        if not source.startswith("layer:"):
            folders.add(Path(source).parent.resolve())
    return folders


def check_tiff_folder(out_dir: Path, sources: Iterable[str]) -> None:
    """Refuse a folder for the cell TIFFs that holds the images of ``sources``.

    Raises
    ------
    ExportError
        When ``out_dir`` is the folder of one of the images, or not a folder.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir}: exists and is not a folder")
    if out_dir.exists() and out_dir.resolve() in image_folders(sources):
        raise ExportError(
            f"{out_dir}: holds the images this database labels, and the label TIFFs would "
            "sit beside them (named like them, and read as images by Next image and batch). "
            f"Choose another folder, e.g. {out_dir / 'cell_labels'}"
        )


def stack_owner(path: Path) -> str | None:
    """Return the image source a cell-label stack records (None: not one, or no file)."""
    import tifffile

    try:
        with open_image_file(path) as fh, tifffile.TiffFile(fh) as tif:
            meta = tif.imagej_metadata or (tif.shaped_metadata or ({},))[0]
    except Exception:  # noqa: BLE001 - any other file (or none) is simply not ours
        return None
    labels, owner = meta.get("Labels"), meta.get("source")
    first = labels if isinstance(labels, str) else (labels or [None])[0]  # one page: a str
    return owner if first == "cells" and isinstance(owner, str) else None


def stack_path(out_dir: Path, base: str, source: str, taken: set[str]) -> Path:
    """Return ``<out_dir>/<base>.tif``, or ``<base>_2.tif``..., free or this image's own.

    A name is free when no file has it and this export has not used it (``taken``,
    lower case; the chosen name is added). A file that records another image, or none
    (a raw image, anything else), keeps its name and its content.
    """
    k, stem = 2, base
    while True:
        path = out_dir / f"{stem}.tif"
        if stem.lower() not in taken and (
            not os.path.lexists(path) or stack_owner(path) == os.path.abspath(source)
        ):
            taken.add(stem.lower())
            return path
        stem, k = f"{base}_{k}", k + 1
