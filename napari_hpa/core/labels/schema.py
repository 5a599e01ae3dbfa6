"""The annotation database's file: where it lives, its tables and version, and its rows.

``SCHEMA_VERSION`` is kept in ``PRAGMA user_version``. A new file gets the tables; a file
of a newer version, or a SQLite file with other tables and no version, is refused with
:class:`AnnotationStoreError` (there are no migrations yet: version 1 is the first).
The queries live in :mod:`.store`.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1

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


def default_db_path(image_path: str | Path) -> Path:
    """``<image folder>/.napari-hpa/annotations.sqlite`` (a folder is its own image folder)."""
    p = Path(image_path).expanduser()
    return (p if p.is_dir() else p.parent) / ".napari-hpa" / "annotations.sqlite"


def open_database(path: Path, timeout: float) -> tuple[sqlite3.Connection, str]:
    """Connect to ``path`` with the store's pragmas, creating or checking the schema.

    Returns the connection (autocommit: the store begins its own transactions) and the
    journal mode SQLite granted (``"wal"`` unless the file system refuses it).

    Raises
    ------
    AnnotationStoreError
        When the file is not SQLite, is of a newer schema or holds foreign tables.
    """
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        journal_mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchall()[0][0])
        conn.execute("PRAGMA synchronous = FULL")
        _init_schema(conn, path)
    except (sqlite3.DatabaseError, AnnotationStoreError) as err:
        conn.close()
        if isinstance(err, AnnotationStoreError):
            raise
        raise AnnotationStoreError(f"{path}: {err}") from None
    return conn, journal_mode


def _init_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Create the tables of a new file, or check an existing one's version (one transaction)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchall()[0][0]
        if version > SCHEMA_VERSION:
            raise AnnotationStoreError(
                f"{path}: schema version {version} is newer than this napari-hpa "
                f"understands ({SCHEMA_VERSION}); upgrade napari-hpa"
            )
        if version == 0:
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchall()[0][0]:
                raise AnnotationStoreError(f"{path}: not a napari-hpa annotation store")
            for stmt in filter(str.strip, SCHEMA.split(";")):
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
