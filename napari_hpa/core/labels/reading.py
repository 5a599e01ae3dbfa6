"""Reading the annotations database: the connection, its errors, and every query that only reads.

:class:`LabelReader` is what :func:`~.store.open_readonly` needs and what
:class:`~.store.AnnotationStore` builds its writes on. Every SQLite error is raised as
one :class:`~.schema.AnnotationStoreError` line naming the file, and the class and cell
ids a query returns are checked (:func:`~.schema.check_ids`) before a caller sizes
anything by them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .schema import (
    MAX_CLASS_ID,
    AnnotationStoreError,
    ImageRecord,
    cell_arg,
    check_ids,
    database_error,
    decode_mask,
    open_database,
)

#: The WHERE clause of one (image, task, cell) level of labels.
LEVEL = "image = ? AND task = ? AND cell = ?"

_R = TypeVar("_R", bound="LabelReader")


def task_name(task: Any) -> str:
    """Return a task's name; a :class:`~napari_hpa.core.tasks.Task` stands for its ``.name``."""
    return str(getattr(task, "name", task))


class LabelReader:
    """The read side of an annotations database (one connection, thread-safe).

    Parameters
    ----------
    path
        The database file; created (with its folder) when missing, unless ``readonly``.
    timeout
        Seconds to wait for another process's write lock.
    readonly
        Only read: the file must exist; nothing is written, not even the journal mode,
        so a read-only folder will do (:func:`~.schema.connect_readonly`).
    """

    def __init__(self, path: str | Path, timeout: float = 10.0, readonly: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.readonly = readonly
        if readonly:
            if not self.path.is_file():
                raise AnnotationStoreError(f"{self.path}: no such annotations database")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._depth = 0
        self._conn, self.journal_mode = open_database(self.path, timeout, readonly)

    # -- connection ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _x(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params))
            except sqlite3.Error as err:
                raise database_error(self.path, err) from None

    def _many(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        with self._lock:
            try:
                self._conn.executemany(sql, rows)
            except sqlite3.Error as err:
                raise database_error(self.path, err) from None

    def _q(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as err:
                raise database_error(self.path, err) from None

    def integrity_ok(self) -> bool:
        """``PRAGMA integrity_check`` says ok and no foreign key is dangling."""
        ok = self._q("PRAGMA integrity_check") == [("ok",)]
        return ok and not self._q("PRAGMA foreign_key_check")

    # -- images -------------------------------------------------------------------------------
    def _pk(self, source: str) -> int | None:
        rows = self._q("SELECT id FROM images WHERE source = ?", (str(source),))
        return int(rows[0][0]) if rows else None

    def images(self) -> list[ImageRecord]:
        """All images, sorted by source."""
        rows = self._q(
            "SELECT source, image_id, width, height, added, "
            "EXISTS(SELECT 1 FROM masks m WHERE m.image = i.id) FROM images i ORDER BY source"
        )
        return [
            ImageRecord(src, image_id, w, h, added, has_mask=bool(mask))
            for src, image_id, w, h, added, mask in rows
        ]

    def image_ids(self) -> dict[str, str]:
        """Map every image's source to its image id."""
        return dict(self._q("SELECT source, image_id FROM images ORDER BY source"))

    # -- undo state ---------------------------------------------------------------------------
    def can_undo(self) -> bool:
        """Tell whether :meth:`undo` has a step to revert."""
        return bool(self._q("SELECT 1 FROM history WHERE state = 'done' LIMIT 1"))

    def can_redo(self) -> bool:
        """Tell whether :meth:`redo` has an undone step to re-apply."""
        return bool(self._q("SELECT 1 FROM history WHERE state = 'undone' LIMIT 1"))

    # -- reading labels -----------------------------------------------------------------------
    def _level(self, source: str, task: str, cell: int) -> dict[int, tuple]:
        """Return class -> (user value, model value, score, model id), None where absent."""
        out: dict[int, list] = {}
        for cls, origin, value, score, model in check_ids(
            self.path,
            self._q(
                f"SELECT class, origin, value, score, model FROM labels WHERE {LEVEL}",
                (self._pk(source), task_name(task), cell_arg(cell)),
            ),
            class_at=0,
            cell_at=None,
        ):
            row = out.setdefault(cls, [None, None, None, None])
            if origin == "user":
                row[0] = value
            else:
                row[1:] = value, score, model
        return {c: tuple(v) for c, v in sorted(out.items())}

    def user_labels(self, source: str, task: str, cell: int = 0) -> dict[int, bool]:
        """Explicit user values (positives and negatives) by class."""
        level = self._level(source, task, cell)
        return {c: bool(u) for c, (u, *_rest) in level.items() if u is not None}

    def model_labels(self, source: str, task: str, cell: int = 0) -> set[int]:
        """Classes the model predicted."""
        return {c for c, (_u, m, *_rest) in self._level(source, task, cell).items() if m}

    def model_scores(self, source: str, task: str, cell: int = 0) -> dict[int, float]:
        """Return the model's probability of every class it scored."""
        level = self._level(source, task, cell)
        return {c: s for c, (_u, _m, s, _id) in level.items() if s is not None}

    def model_id(self, source: str, task: str, cell: int = 0) -> str | None:
        """Id of the model whose prediction is stored, or None."""
        ids = [i for _u, _m, _s, i in self._level(source, task, cell).values() if i is not None]
        return ids[0] if ids else None

    def effective_labels(self, source: str, task: str, cell: int = 0) -> set[int]:
        """Positive classes: the user's value where set, else the model's."""
        level = self._level(source, task, cell)
        return {c for c, (u, m, *_rest) in level.items() if (m if u is None else u)}

    def is_corrected(self, source: str, task: str, cell: int | None = None) -> bool:
        """Whether the image (any cell when ``cell`` is None) has >= 1 user row for the task."""
        sql = "SELECT 1 FROM labels WHERE image = ? AND task = ? AND origin = 'user'"
        params: list[object] = [self._pk(source), task_name(task)]
        if cell is not None:
            sql, params = sql + " AND cell = ?", [*params, cell_arg(cell)]
        return bool(self._q(sql + " LIMIT 1", params))

    def effective_table(
        self, task: str, corrected_only: bool = False
    ) -> dict[tuple[str, int], tuple[set[int], str]]:
        """(source, cell) -> (effective positives, origin) for every level with rows, sorted.

        ``origin`` is ``"user"`` when the level has >= 1 user row, else ``"model"``;
        ``corrected_only`` keeps only the ``"user"`` levels.
        """
        vals: dict[tuple[str, int], dict[int, int]] = {}
        user: set[tuple[str, int]] = set()
        for source, cell, cls, origin, value in check_ids(
            self.path,
            self._q(
                "SELECT i.source, l.cell, l.class, l.origin, l.value FROM labels l JOIN images i "
                "ON i.id = l.image WHERE l.task = ? ORDER BY l.origin",  # 'user' rows come last
                (task_name(task),),
            ),
            class_at=2,
            cell_at=1,
        ):
            vals.setdefault((source, cell), {})[cls] = value
            if origin == "user":
                user.add((source, cell))
        return {
            k: ({c for c, v in d.items() if v}, "user" if k in user else "model")
            for k, d in sorted(vals.items())
            if not corrected_only or k in user
        }

    def corrected_images(self, task: str) -> list[tuple[str, str, set[int]]]:
        """(source, image_id, effective image-level labels) of images with image-level user rows."""
        ids, table = self.image_ids(), self.effective_table(task, corrected_only=True)
        return [(src, ids[src], lab) for (src, cell), (lab, _o) in table.items() if cell == 0]

    def corrected_cells(self, task: str) -> list[tuple[str, str, int, set[int]]]:
        """(source, image_id, cell, effective labels) of cells with user rows."""
        ids, table = self.image_ids(), self.effective_table(task, corrected_only=True)
        return [(s, ids[s], c, lab) for (s, c), (lab, _o) in table.items() if c > 0]

    def class_counts(self, task: str, corrected_only: bool = True) -> dict[int, tuple[int, int]]:
        """Count, per class, the images and the cells with that effective label.

        Returns class -> (n images, n cells). ``corrected_only`` counts only levels with
        user rows (what training from corrections sees); False counts model-only
        predictions too.
        """
        counts: dict[int, list[int]] = {}
        for (_src, cell), (labels, _o) in self.effective_table(task, corrected_only).items():
            for c in labels:
                counts.setdefault(c, [0, 0])[0 if cell == 0 else 1] += 1
        return {c: (n[0], n[1]) for c, n in sorted(counts.items())}

    def tasks(self) -> list[str]:
        """Return the names of the tasks that have labels, sorted."""
        return [r[0] for r in self._q("SELECT DISTINCT task FROM labels ORDER BY task")]

    # -- the review queue ---------------------------------------------------------------------
    def has_table(self, name: str) -> bool:
        """Tell whether the file holds the table ``name`` (the review tables come lazily)."""
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return bool(self._q(sql, (name,)))

    def reviewed(self, task: str) -> set[tuple[str, int]]:
        """Return the (source, cell) items reviewed for ``task`` (cell 0: the whole image).

        Marked items (:meth:`~.store.AnnotationStore.mark_reviewed`) and corrected ones
        (any user row) both count: a correction is a review. A file without the review
        tables (an older napari-hpa wrote it) has only its corrections.
        """
        sql = (
            "SELECT DISTINCT i.source, l.cell FROM labels l JOIN images i ON i.id = l.image "
            "WHERE l.task = ? AND l.origin = 'user'"
        )
        if self.has_table("reviewed"):
            sql += (
                " UNION SELECT i.source, r.cell FROM reviewed r JOIN images i ON i.id = r.image "
                "WHERE r.task = ?"
            )
        params = (task_name(task),) * sql.count("?")
        rows = check_ids(self.path, self._q(sql, params), class_at=None, cell_at=1)
        return {(str(source), int(cell)) for source, cell in rows}

    def review_order(self, task: str) -> tuple[str, int | None] | None:
        """Return the review order chosen for ``task`` (its key and class), or None.

        None also for a file without the review tables. The key is what was stored
        (the caller checks it against the orders it knows); a class id out of range reads
        as None.
        """
        if not self.has_table("review_orders"):
            return None
        rows = self._q(
            "SELECT ordering, class FROM review_orders WHERE task = ?", (task_name(task),)
        )
        if not rows:
            return None
        order, cls = rows[0]
        good = type(cls) is int and 0 <= cls <= MAX_CLASS_ID
        return str(order), cls if good else None

    # -- cell masks ---------------------------------------------------------------------------
    def cell_mask(self, source: str) -> np.ndarray | None:
        """Return the stored (H, W) int32 cell labels, or None."""
        rows = self._q("SELECT labels FROM masks WHERE image = ?", (self._pk(source),))
        return decode_mask(rows[0][0], self.path) if rows else None

    def cells(self, source: str) -> list[int]:
        """Cell ids of the stored mask, sorted."""
        return list(self.cell_info(source))

    def cell_info(self, source: str) -> dict[int, dict[str, Any]]:
        """Return each stored cell's area, centroid and bounding box.

        Keys are the cell ids; values ``{"area", "centroid": (y, x), "bbox": (r0, c0, r1, c1)}``.
        """
        rows = check_ids(
            self.path,
            self._q(
                "SELECT cell, area, y, x, r0, c0, r1, c1 FROM cells WHERE image = ? ORDER BY cell",
                (self._pk(source),),
            ),
            class_at=None,
            cell_at=0,
        )
        return {r[0]: {"area": r[1], "centroid": (r[2], r[3]), "bbox": tuple(r[4:])} for r in rows}
