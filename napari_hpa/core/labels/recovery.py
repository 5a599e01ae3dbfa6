"""Salvage a damaged annotations database: copy every row that still reads into a new file.

Why here and not ``sqlite3 .recover``: that needs the sqlite3 shell, which many users
lack (and some builds of it fail on WAL files). This reads the damaged file read-only,
never changes it, and writes a new database of the same schema, table by table: rows
are read in ranges of their key, and a range that hits a damaged page is halved until
the readable rows around it are copied and only the unreadable ones are left behind.

Run it as ``python -m napari_hpa.core.labels.recovery DAMAGED.sqlite NEW.sqlite``.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .schema import (
    MAX_CELL_ID,
    MAX_CLASS_ID,
    AnnotationStoreError,
    connect_readonly,
    database_error,
    open_database,
)

#: Tables in an order that keeps foreign keys satisfied, with the key read in ranges.
TABLES = (("images", "id"), ("history", "id"), ("masks", "image"))
#: Tables keyed by image (WITHOUT ROWID), read image by image; only ids in range.
_IDS = f"typeof(cell) = 'integer' AND cell BETWEEN 0 AND {MAX_CELL_ID}"
PER_IMAGE = {
    "labels": f"SELECT * FROM labels WHERE image = ? AND {_IDS} AND typeof(class) = 'integer' "
    f"AND class BETWEEN 0 AND {MAX_CLASS_ID}",
    "cells": f"SELECT * FROM cells WHERE image = ? AND {_IDS}",
}
#: Keys per range read at once.
CHUNK = 512


def recover(src: str | Path, dest: str | Path) -> dict[str, int]:
    """Copy what is readable of ``src`` into the new database ``dest``; rows per table.

    ``src`` is opened read-only and never changed. ``dest`` must not exist.

    Raises
    ------
    AnnotationStoreError
        When ``dest`` exists or ``src`` cannot be opened at all.
    """
    src, dest = Path(src), Path(dest)
    if dest.exists():
        raise AnnotationStoreError(f"{dest}: exists; give a new file for the recovered rows")
    try:
        source = connect_readonly(src, timeout=10.0)
    except sqlite3.Error as err:
        raise database_error(src, err) from None
    target, _mode = open_database(dest, timeout=10.0)
    counts: dict[str, int] = {}
    try:
        target.execute("PRAGMA foreign_keys = OFF")  # rows whose image was lost still copy
        target.execute("BEGIN")
        for table, key in TABLES:
            top = _top(source, table, key)
            counts[table] = _copy_ranges(source, target, table, key, 0, top)
        images = [r[0] for r in target.execute("SELECT id FROM images").fetchall()]
        for table, sql in PER_IMAGE.items():
            counts[table] = sum(_copy(source, target, table, sql, (pk,)) or 0 for pk in images)
        target.execute("COMMIT")
    finally:
        source.close()
        target.close()
    return counts


def _top(source: sqlite3.Connection, table: str, key: str) -> int:
    """Largest key of ``table``, or a generous guess when the last page is damaged."""
    try:
        top = source.execute(f"SELECT max({key}) FROM {table}").fetchall()[0][0]
        return int(top or 0)
    except sqlite3.DatabaseError:
        return 1 << 22


def _copy_ranges(
    source: sqlite3.Connection, target: sqlite3.Connection, table: str, key: str, lo: int, hi: int
) -> int:
    """Copy rows with ``lo <= key <= hi``, halving a range that does not read."""
    n = 0
    sql = f"SELECT * FROM {table} WHERE {key} BETWEEN ? AND ? ORDER BY {key}"
    stack = [(a, min(a + CHUNK - 1, hi)) for a in range(lo, hi + 1, CHUNK)][::-1]
    while stack:
        a, b = stack.pop()
        got = _copy(source, target, table, sql, (a, b))
        if got is not None:
            n += got
        elif a < b:  # a damaged page in this range: read both halves (one key: left behind)
            mid = (a + b) // 2
            stack += [(mid + 1, b), (a, mid)]
    return n


def _copy(
    source: sqlite3.Connection,
    target: sqlite3.Connection,
    table: str,
    sql: str,
    params: Sequence[object],
) -> int | None:
    """Copy the rows ``sql`` selects; None (nothing copied) if they cannot all be read."""
    try:
        rows = source.execute(sql, tuple(params)).fetchall()
    except sqlite3.DatabaseError:
        return None
    if rows:
        marks = ", ".join("?" * len(rows[0]))
        target.executemany(f"INSERT OR IGNORE INTO {table} VALUES ({marks})", rows)
    return len(rows)


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    """Command line: ``recovery DAMAGED NEW``; prints the rows copied per table."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        out("usage: python -m napari_hpa.core.labels.recovery DAMAGED.sqlite NEW.sqlite")
        return 2
    try:
        counts = recover(args[0], args[1])
    except AnnotationStoreError as exc:
        out(f"error: {exc}")
        return 2
    out(f"recovered into {args[1]}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
