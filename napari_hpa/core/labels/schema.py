"""The annotation database's file: where it lives, its tables and version, and its rows.

``SCHEMA_VERSION`` is kept in ``PRAGMA user_version``. A new file gets the tables; a file
of a newer version, or a SQLite file with other tables and no version, is refused with
:class:`AnnotationStoreError` (there are no migrations yet: version 1 is the first).
The queries live in :mod:`.store`.
"""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
#: Class ids go from 0 to this: a task has far fewer classes, and a bigger id (a damaged
#: or hostile file) must be refused before anything is sized by it.
MAX_CLASS_ID = 9999
#: Cell ids of a mask go from 1 to this (an export sizes tables by the largest id).
MAX_CELL_ID = 1 << 24

SCHEMA = """
CREATE TABLE images(
    id INTEGER PRIMARY KEY, source TEXT NOT NULL UNIQUE, image_id TEXT NOT NULL,
    width INTEGER, height INTEGER, added TEXT NOT NULL);
CREATE TABLE labels(
    image INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    cell INTEGER NOT NULL DEFAULT 0 CHECK (cell >= 0),
    task TEXT NOT NULL, class INTEGER NOT NULL CHECK (class >= 0),
    value INTEGER NOT NULL CHECK (value IN (0, 1)),
    origin TEXT NOT NULL CHECK (origin IN ('model', 'user')),
    model TEXT, score REAL, time TEXT NOT NULL,
    PRIMARY KEY (image, cell, task, class, origin)) WITHOUT ROWID;
CREATE INDEX labels_task ON labels(task, origin);
CREATE TABLE masks(
    image INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
    labels BLOB NOT NULL, height INTEGER NOT NULL, width INTEGER NOT NULL, time TEXT NOT NULL);
CREATE TABLE cells(
    image INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    cell INTEGER NOT NULL CHECK (cell > 0), area INTEGER NOT NULL, y REAL, x REAL,
    r0 INTEGER, c0 INTEGER, r1 INTEGER, c1 INTEGER,
    PRIMARY KEY (image, cell)) WITHOUT ROWID;
CREATE TABLE history(
    id INTEGER PRIMARY KEY AUTOINCREMENT, action INTEGER NOT NULL,
    image INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    cell INTEGER NOT NULL, task TEXT NOT NULL, class INTEGER NOT NULL,
    old INTEGER, new INTEGER, time TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'done' CHECK (state IN ('done', 'undone', 'dropped')));
CREATE INDEX history_action ON history(action, state);
"""
#: The review queue's tables, created when first written (``IF NOT EXISTS``), so that a
#: file stays version 1 and older napari-hpa versions, which never read them, still open
#: it; the readers take a file without them as "nothing reviewed, no order chosen".
REVIEW_SCHEMA = """
CREATE TABLE IF NOT EXISTS reviewed(
    image INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    cell INTEGER NOT NULL DEFAULT 0 CHECK (cell >= 0), task TEXT NOT NULL,
    time TEXT NOT NULL, PRIMARY KEY (image, cell, task)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS review_orders(
    task TEXT PRIMARY KEY, ordering TEXT NOT NULL,
    class INTEGER CHECK (class IS NULL OR class >= 0), time TEXT NOT NULL);
"""


class AnnotationStoreError(RuntimeError):
    """The file is not a usable annotation store (not SQLite, newer schema, foreign tables)."""


@dataclass(frozen=True)
class Edit:
    """One class of one image/cell changed by an edit, undo or redo (None = no user row)."""

    source: str
    cell: int
    task: str
    class_index: int
    before: bool | None
    after: bool | None


@dataclass(frozen=True)
class ImageRecord:
    """One row of ``images``, as :meth:`~.store.AnnotationStore.images` lists them."""

    source: str
    image_id: str
    width: int | None
    height: int | None
    added: str
    has_mask: bool


def class_arg(value: Any) -> int:
    """Return a class id given to the store, bounded before SQLite or a list is sized by it."""
    cls = int(value)
    if not 0 <= cls <= MAX_CLASS_ID:
        raise ValueError(f"class id {value} is out of range (ids go from 0 to {MAX_CLASS_ID})")
    return cls


def cell_arg(value: Any) -> int:
    """Return a cell id given to the store (0 is the whole image), bounded."""
    cell = int(value)
    if not 0 <= cell <= MAX_CELL_ID:
        raise ValueError(f"cell id {value} is out of range (0 to {MAX_CELL_ID})")
    return cell


def check_ids(
    path: Path, rows: list[tuple], class_at: int | None, cell_at: int | None
) -> list[tuple]:
    """Return ``rows`` read from ``path`` after checking their class and cell ids.

    A damaged or hostile file may hold any value there (a REAL of 1e23, text); it is
    refused before an export or a count is sized by it.
    """
    for row in rows:
        for at, top, what in ((class_at, MAX_CLASS_ID, "class"), (cell_at, MAX_CELL_ID, "cell")):
            if at is None:
                continue
            v = row[at]
            if type(v) is not int or not 0 <= v <= top:
                raise AnnotationStoreError(
                    f"{path}: a label has {what} id {v!r}, out of range (0 to {top}): the "
                    "database is damaged or was not written by napari-hpa; it was left as it is"
                )
    return rows


def default_db_path(image_path: str | Path) -> Path:
    """``<image folder>/.napari-hpa/annotations.sqlite`` (a folder is its own image folder)."""
    p = Path(image_path).expanduser()
    return (p if p.is_dir() else p.parent) / ".napari-hpa" / "annotations.sqlite"


def open_database(
    path: Path, timeout: float, readonly: bool = False
) -> tuple[sqlite3.Connection, str]:
    """Connect to ``path`` with the store's pragmas, creating or checking the schema.

    Returns the connection (autocommit: the store begins its own transactions) and the
    journal mode (``"wal"`` unless the file system refuses it). ``readonly`` opens
    without writing anything, not even the journal mode (see :func:`connect_readonly`).

    Raises
    ------
    AnnotationStoreError
        When the file is not SQLite, is damaged, is of a newer schema or holds foreign
        tables, or (``readonly``) holds no annotation store yet.
    """
    try:
        if readonly:
            conn = connect_readonly(path, timeout)
        else:
            conn = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
    except sqlite3.Error as err:
        raise database_error(path, err) from None
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        if readonly:
            conn.execute("PRAGMA query_only = ON")  # also on a private copy: writes refused
            journal_mode = str(conn.execute("PRAGMA journal_mode").fetchall()[0][0])
            _check_schema(conn, path, create=False)
        else:
            journal_mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchall()[0][0])
            conn.execute("PRAGMA synchronous = FULL")
            _check_schema(conn, path, create=True)
        _check_pages(conn, path)
    except (sqlite3.Error, AnnotationStoreError) as err:
        conn.close()
        if isinstance(err, AnnotationStoreError):
            raise
        raise database_error(path, err) from None
    return conn, journal_mode


def connect_readonly(path: Path, timeout: float) -> sqlite3.Connection:
    """Open ``path`` for reading only: nothing is written, so a read-only folder will do.

    ``mode=ro`` first: it reads beside a writer (WAL) and sees every commit. In a
    folder where SQLite may not create the ``-shm`` file it needs for that, the file
    is opened ``immutable`` when no ``-wal`` file holds commits that are not in it
    yet; otherwise the database and its ``-wal`` are copied to a temporary folder
    (removed on close) and read there, so no commit is missed.
    """
    uri = Path(os.path.abspath(path)).as_uri()

    def connect(target: str) -> sqlite3.Connection:
        conn = sqlite3.connect(
            target, timeout=timeout, isolation_level=None, check_same_thread=False, uri=True
        )
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
        except BaseException:
            conn.close()
            raise
        return conn

    try:
        return connect(f"{uri}?mode=ro")
    except sqlite3.OperationalError as err:
        if error_kind(err) not in ("cantopen", "readonly"):
            raise
    wal = Path(f"{path}-wal")
    if not wal.exists() or wal.stat().st_size == 0:
        return connect(f"{uri}?mode=ro&immutable=1")
    return _copy_and_connect(path, timeout)


class _CopyConnection(sqlite3.Connection):
    """A connection to a private copy, whose folder goes when the connection closes."""

    def close(self) -> None:
        super().close()
        folder = Path(getattr(self, "folder", ""))
        if folder.name.startswith(_COPY_PREFIX):
            shutil.rmtree(folder, ignore_errors=True)


_COPY_PREFIX = "napari-hpa-readonly-"


def _copy_and_connect(path: Path, timeout: float) -> sqlite3.Connection:
    """Read a WAL database of a read-only folder from a private copy (db and -wal)."""
    folder = Path(tempfile.mkdtemp(prefix=_COPY_PREFIX))
    try:
        copy = folder / "annotations.sqlite"
        shutil.copyfile(path, copy)
        shutil.copyfile(f"{path}-wal", f"{copy}-wal")
        conn = sqlite3.connect(
            copy,
            timeout=timeout,
            isolation_level=None,
            check_same_thread=False,
            factory=_CopyConnection,
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    conn.folder = str(folder)  # type: ignore[attr-defined]
    return conn


#: What SQLite's primary result codes mean to a user (the codes of ``sqlite3.h``).
_ERROR_KINDS = {5: "busy", 6: "busy", 8: "readonly", 10: "io", 11: "damaged", 13: "full",
                14: "cantopen", 26: "damaged"}  # fmt: skip
_ERROR_WORDS = {
    "malformed": "damaged",
    "not a database": "damaged",
    "locked": "busy",
    "busy": "busy",
    "readonly": "readonly",
    "read-only": "readonly",
    "disk i/o": "io",
    "full": "full",
    "unable to open": "cantopen",
}


def error_kind(err: sqlite3.Error) -> str:
    """Classify an SQLite error: damaged, busy, readonly, io, full, cantopen or other."""
    code = getattr(err, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None and (code & 0xFF) in _ERROR_KINDS:
        return _ERROR_KINDS[code & 0xFF]
    text = str(err).lower()
    return next((kind for word, kind in _ERROR_WORDS.items() if word in text), "other")


def database_error(path: Path, err: sqlite3.Error) -> AnnotationStoreError:
    """One line for an SQLite error on ``path``, saying what the user can do."""
    kind = error_kind(err)
    detail = " ".join(str(err).replace("*** in database main ***", "").split())
    if kind == "damaged":
        return AnnotationStoreError(
            f"{path}: the database is damaged ({detail[:120]}); it was left as it is: copy what is "
            f"readable with 'python -m napari_hpa.core.labels.recovery {path} NEW.sqlite', "
            "or restore a backup"
        )
    what = {
        "busy": "another program holds the database locked; try again when it is done",
        "readonly": "the database or its folder is read-only; nothing was saved",
        "io": f"cannot read or write the database ({detail[:120]})",
        "full": "the disk is full; the last change was not saved",
        "cantopen": "cannot open the database (a missing or read-only folder?)",
    }.get(kind, detail)
    return AnnotationStoreError(f"{path}: {what}")


def decode_mask(blob: bytes, where: Path) -> np.ndarray:
    """Return the (H, W) cell labels of a ``masks`` blob, its size checked before loading.

    The blob's ``.npy`` header is read first (:func:`check_mask`); cell ids over
    :data:`MAX_CELL_ID` are refused too, since an export sizes a table by the largest.
    """
    check_mask(blob, where)
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            labels = z["labels"]
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as exc:
        raise _bad_mask(where, f"cannot be read ({exc})") from None
    if labels.size and (labels.min() < 0 or labels.max() > MAX_CELL_ID):
        raise _bad_mask(where, f"has cell ids outside 0 to {MAX_CELL_ID}")
    return labels


def check_mask(blob: bytes, where: Path) -> None:
    """Refuse a mask blob whose ``.npy`` header is not a 2-D integer image the reader takes.

    Only the header is read: a shape over the reader's pixel limit (a damaged or
    hostile file) is refused before an array is sized by it.
    """
    from ..image.io import MAX_PIXELS

    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf, zf.open("labels.npy") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise _bad_mask(where, f"has an unknown format ({version})")
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError, TypeError) as exc:
        raise _bad_mask(where, f"cannot be read ({exc})") from None
    if len(shape) != 2 or shape[0] * shape[1] > MAX_PIXELS:
        raise _bad_mask(where, f"claims a shape of {shape}")
    if dtype.kind not in "iu" or dtype.itemsize > 8:
        raise _bad_mask(where, f"has pixels of type {dtype}")


def _bad_mask(where: Path, why: str) -> AnnotationStoreError:
    return AnnotationStoreError(
        f"{where}: a stored cell mask {why}: the database is damaged or was not written "
        "by napari-hpa; it was left as it is"
    )


def _check_pages(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a damaged file on opening, not halfway through an export or an edit.

    ``quick_check`` reads every page (about 70 ms for 20 MB); the scans find class and
    cell ids that no napari-hpa wrote (a REAL of 1e23, text) and masks whose header claims
    more pixels than any image, which would size exports and their arrays.
    """
    problem = conn.execute("PRAGMA quick_check(1)").fetchall()[0][0]
    if problem != "ok":
        raise database_error(
            path, sqlite3.DatabaseError(f"database disk image is malformed: {problem}")
        )
    bad = conn.execute(
        "SELECT class, cell FROM labels WHERE typeof(class) != 'integer' OR typeof(cell) != "
        f"'integer' OR class NOT BETWEEN 0 AND {MAX_CLASS_ID} OR cell NOT BETWEEN 0 AND "
        f"{MAX_CELL_ID} LIMIT 1"
    ).fetchall()
    if bad:
        check_ids(path, bad, class_at=0, cell_at=1)
    for (blob,) in conn.execute("SELECT labels FROM masks"):  # headers only, one at a time
        check_mask(blob, path)


def _check_schema(conn: sqlite3.Connection, path: Path, create: bool) -> None:
    """Check the file's schema version; create the tables of a new file when ``create``.

    The version is read without a lock, so opening never waits for another process's
    write; only a new file takes the write lock, to create its tables.
    """
    version, tables = _version(conn)
    if version == SCHEMA_VERSION:
        return
    if not create:
        _refuse(path, version, tables)
        raise AnnotationStoreError(f"{path}: holds no annotations yet (an empty database)")
    conn.execute("BEGIN IMMEDIATE")
    try:
        version, tables = _version(conn)
        _refuse(path, version, tables)
        if version == 0:
            for stmt in filter(str.strip, SCHEMA.split(";")):
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _version(conn: sqlite3.Connection) -> tuple[int, int]:
    version = conn.execute("PRAGMA user_version").fetchall()[0][0]
    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchall()[0][0]
    return int(version), int(tables)


def _refuse(path: Path, version: int, tables: int) -> None:
    if version > SCHEMA_VERSION:
        raise AnnotationStoreError(
            f"{path}: schema version {version} is newer than this napari-hpa "
            f"understands ({SCHEMA_VERSION}); upgrade napari-hpa"
        )
    if version == 0 and tables:
        raise AnnotationStoreError(f"{path}: not a napari-hpa annotation store")
