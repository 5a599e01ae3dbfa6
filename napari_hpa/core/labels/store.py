"""Label store shared by the plugin (corrections), training (data source) and export.

One SQLite file (WAL journal, ``synchronous=FULL``, foreign keys on, schema version in
``PRAGMA user_version``). Rows are image x cell (0 = whole image) x task x class, with origin
``"model"`` (a prediction, replaced as a whole on every new prediction) or ``"user"`` (a
correction). The effective label of a class is the user's value where there is one, else the
model's. Every user edit is one committed transaction and is logged in ``history`` so it can
be undone and redone, also after the store is reopened.

``synchronous=FULL``: in WAL mode ``NORMAL`` is safe against application crashes but may lose
the last commits on power loss or an OS crash; ``FULL`` syncs the WAL on every commit, so a
correction is on disk when :meth:`AnnotationStore.set_user_label` returns. Edits come at human
speed and predictions in one transaction per image (or per :meth:`transaction` block), so the
cost of the extra fsync does not matter.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .reading import LEVEL, LabelReader, task_name
from .schema import (
    MAX_CELL_ID,
    MAX_CLASS_ID,
    REVIEW_SCHEMA,
    SCHEMA_VERSION,
    AnnotationStoreError,
    Edit,
    ImageRecord,
    cell_arg,
    check_ids,
    class_arg,
    default_db_path,
)

__all__ = [
    "MAX_CELL_ID",
    "MAX_CLASS_ID",
    "SCHEMA_VERSION",
    "AnnotationStore",
    "AnnotationStoreError",
    "Edit",
    "ImageRecord",
    "LabelReader",
    "default_db_path",
    "open_readonly",
]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _bool(v: int | None) -> bool | None:
    return None if v is None else bool(v)


def open_readonly(path: str | Path, timeout: float = 10.0) -> AnnotationStore:
    """Open ``path`` only to read it: for export, training data and counts.

    Nothing is written and no lock is taken, so it works in a read-only folder (a
    colleague's share) and while another process writes (WAL).
    """
    return AnnotationStore(path, timeout, readonly=True)


class AnnotationStore(LabelReader):
    """Labels of images and cells in one SQLite file.

    Parameters
    ----------
    path
        The database file; created (with its folder) when missing, unless ``readonly``.
    timeout
        Seconds to wait for another process's write lock.
    readonly
        Only read (:func:`open_readonly`): the file must exist, and every write raises
        :class:`AnnotationStoreError`. The reading queries are :class:`LabelReader`'s.

    Notes
    -----
    One connection guarded by a re-entrant lock, so a store can be shared between the GUI
    thread and worker threads. Other processes may open the same file (WAL lets them read
    during a write). ``with store.transaction():`` batches many writes into one commit.
    Undo/redo is one stack per database file. ``task`` arguments are task names (a ``Task``
    object is taken as its ``.name``).

    Every SQLite error (damaged pages, a full disk, a lock held too long) is raised as one
    :class:`AnnotationStoreError` line naming the file; the file is never deleted or
    rewritten because of one. Class and cell ids read from the file are checked against
    :data:`MAX_CLASS_ID` and :data:`MAX_CELL_ID` before anything is sized by them.
    """

    # -- transactions -------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[AnnotationStore]:
        """One write transaction (``BEGIN IMMEDIATE``); nested blocks join the outer one."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self
                finally:
                    self._depth -= 1
                return
            self._x("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self
            except BaseException:
                if self._conn.in_transaction:  # SQLite may have rolled back already
                    with suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                raise
            else:
                self._x("COMMIT")
            finally:
                self._depth = 0

    # -- images -------------------------------------------------------------------------------
    def add_image(
        self, source: str, image_id: str | None = None, shape: Sequence[int] | None = None
    ) -> int:
        """Register an image (idempotent; updates id/shape when given) and return its row id."""
        source = str(source)
        h, w = (int(shape[-2]), int(shape[-1])) if shape is not None else (None, None)
        with self.transaction():
            self._x(
                "INSERT INTO images(source, image_id, width, height, added) VALUES (?,?,?,?,?) "
                "ON CONFLICT(source) DO UPDATE SET image_id = COALESCE(?, image_id), "
                "width = COALESCE(excluded.width, width), "
                "height = COALESCE(excluded.height, height)",
                (source, image_id or Path(source).name, w, h, _now(), image_id),
            )
            return self._q("SELECT id FROM images WHERE source = ?", (source,))[0][0]

    def _pk_or_add(self, source: str) -> int:
        """Return the image's row id, registering the image first when it is new."""
        pk = self._pk(source)
        return self.add_image(source) if pk is None else pk

    def remove_image(self, source: str) -> bool:
        """Delete an image with all its labels, mask and history."""
        with self.transaction():
            return self._x("DELETE FROM images WHERE source = ?", (source,)).rowcount > 0

    # -- writing labels -----------------------------------------------------------------------
    def set_model_labels(
        self,
        source: str,
        task: str,
        probabilities: Sequence[float] | np.ndarray,
        predicted: Iterable[int],
        model_id: str,
        cell: int = 0,
    ) -> None:
        """Replace the model rows of (image, cell, task) with one prediction, atomically.

        One row per class of ``probabilities`` (value 1 for classes in ``predicted``); with
        empty ``probabilities`` only the predicted classes are stored, without scores.
        """
        probs = np.asarray(probabilities, dtype=float).ravel().tolist()
        if len(probs) > MAX_CLASS_ID + 1:
            raise ValueError(f"{len(probs)} probabilities: more classes than {MAX_CLASS_ID + 1}")
        pred = {class_arg(i) for i in predicted}
        classes = range(len(probs)) if probs else sorted(pred)
        if not pred <= set(classes):
            raise ValueError(f"predicted classes {sorted(pred - set(classes))} out of range")
        scores = probs or [None] * (max(classes, default=-1) + 1)
        t, cell, task = _now(), cell_arg(cell), task_name(task)
        with self.transaction():
            pk = self._pk_or_add(source)
            self._x(f"DELETE FROM labels WHERE {LEVEL} AND origin = 'model'", (pk, task, cell))
            self._many(
                "INSERT INTO labels(image, cell, task, class, value, origin, model, score, time) "
                "VALUES (?, ?, ?, ?, ?, 'model', ?, ?, ?)",
                [(pk, cell, task, c, int(c in pred), model_id, scores[c], t) for c in classes],
            )

    def set_user_labels(
        self, source: str, task: str, values: Mapping[int, bool | None], cell: int = 0
    ) -> list[Edit]:
        """Set (True/False) or clear (None) user values of several classes as one undo step.

        Committed before returning. Returns the changes (no-ops are skipped, not logged).
        """
        t, cell, task = _now(), cell_arg(cell), task_name(task)
        edits: list[Edit] = []
        changes = sorted((class_arg(c), v) for c, v in values.items())
        with self.transaction():
            pk = self._pk_or_add(source)
            current = self.user_labels(source, task, cell)
            action = self._q("SELECT COALESCE(MAX(action), 0) + 1 FROM history")[0][0]
            for cls, value in changes:
                old = None if current.get(cls) is None else int(current[cls])
                new = None if value is None else int(bool(value))
                if old == new:
                    continue
                if not edits:  # a new edit ends the redo chain
                    self._x("UPDATE history SET state = 'dropped' WHERE state = 'undone'")
                self._write_user(pk, cell, task, cls, new, t)
                self._x(
                    "INSERT INTO history(action, image, cell, task, class, old, new, time) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    (action, pk, cell, task, cls, old, new, t),
                )
                edits.append(Edit(source, cell, task, cls, _bool(old), _bool(new)))
        return edits

    def set_user_label(
        self, source: str, task: str, class_index: int, value: bool | None, cell: int = 0
    ) -> bool:
        """Set one user value (None clears it: back to the model). True if it changed."""
        return bool(self.set_user_labels(source, task, {class_index: value}, cell))

    def clear_user_labels(self, source: str, task: str, cell: int = 0) -> list[Edit]:
        """Remove every user value of (image, cell, task), as one undo step."""
        clear = dict.fromkeys(self.user_labels(source, task, cell))
        return self.set_user_labels(source, task, clear, cell)

    def accept_model(self, source: str, task: str, cell: int = 0) -> list[Edit]:
        """Copy every model value into the user values (confirms the prediction), one step."""
        level = self._level(source, task, cell)
        values = {c: bool(m) for c, (_u, m, _s, _id) in level.items() if m is not None}
        return self.set_user_labels(source, task, values, cell)

    def _write_user(self, pk: int, cell: int, task: str, cls: int, value: int | None, t: str):
        if value is None:
            sql = f"DELETE FROM labels WHERE {LEVEL} AND class = ? AND origin = 'user'"
            self._x(sql, (pk, task, cell, cls))
        else:
            self._x(
                "INSERT OR REPLACE INTO labels(image, cell, task, class, value, origin, time) "
                "VALUES (?, ?, ?, ?, ?, 'user', ?)",
                (pk, cell, task, cls, value, t),
            )

    # -- the review queue ---------------------------------------------------------------------
    def mark_reviewed(self, source: str, task: str, cell: int = 0) -> None:
        """Record that the user looked at (image, cell) for ``task``: the queue moves past it.

        Not an edit (nothing to undo). The review tables are created on the first write,
        so a file no queue used keeps the tables older versions know.
        """
        cell, task = cell_arg(cell), task_name(task)
        with self.transaction():
            self._review_tables()
            self._x(
                "INSERT OR REPLACE INTO reviewed(image, cell, task, time) VALUES (?, ?, ?, ?)",
                (self._pk_or_add(source), cell, task, _now()),
            )

    def set_review_order(self, task: str, order: str, class_index: int | None = None) -> None:
        """Remember the queue's order for ``task``, so that the folder opens again in it.

        ``order`` is a ``review.ORDERS`` key; ``class_index`` the class of ``"class"``.
        """
        cls = None if class_index is None else class_arg(class_index)
        with self.transaction():
            self._review_tables()
            self._x(
                "INSERT OR REPLACE INTO review_orders(task, ordering, class, time) "
                "VALUES (?, ?, ?, ?)",
                (task_name(task), str(order), cls, _now()),
            )

    def _review_tables(self) -> None:
        for stmt in filter(str.strip, REVIEW_SCHEMA.split(";")):
            self._x(stmt)

    # -- undo / redo --------------------------------------------------------------------------
    def undo(self) -> list[Edit] | None:
        """Revert the last user edit step of this store; None when there is nothing to undo."""
        return self._replay("SELECT MAX(action) FROM history WHERE state = 'done'", "undone")

    def redo(self) -> list[Edit] | None:
        """Re-apply the last undone step; None when there is nothing to redo."""
        return self._replay("SELECT MIN(action) FROM history WHERE state = 'undone'", "done")

    def _replay(self, pick: str, state: str) -> list[Edit] | None:
        t, undo = _now(), state == "undone"
        with self.transaction():
            action = self._q(pick)[0][0]
            if action is None:
                return None
            rows = check_ids(
                self.path,
                self._q(
                    "SELECT h.image, i.source, h.cell, h.task, h.class, h.old, h.new "
                    "FROM history h JOIN images i ON i.id = h.image WHERE h.action = ? "
                    "ORDER BY h.id " + ("DESC" if undo else "ASC"),
                    (action,),
                ),
                class_at=4,
                cell_at=2,
            )
            edits = []
            for pk, source, cell, task, cls, old, new in rows:
                before, after = (new, old) if undo else (old, new)
                self._write_user(pk, cell, task, cls, after, t)
                edits.append(Edit(source, cell, task, cls, _bool(before), _bool(after)))
            self._x("UPDATE history SET state = ? WHERE action = ?", (state, action))
            return edits

    # -- cell masks ---------------------------------------------------------------------------
    def set_cell_mask(self, source: str, labels: np.ndarray, keep_labels: bool = False) -> None:
        """Store an image's cell labels (0 = background) and the cells' area/centroid/bbox.

        When the mask changes, the image's cell-level labels (and their undo history) are
        deleted, since the cell ids no longer mean the same cells, unless ``keep_labels``.
        """
        from ..image.cells import cell_properties

        labels = np.asarray(labels)
        if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"cell mask must be 2-D integers, got {labels.dtype} {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() > MAX_CELL_ID):
            raise ValueError(f"cell ids of the mask are out of range (0 to {MAX_CELL_ID})")
        labels = labels.astype(np.int32)
        buf = io.BytesIO()
        np.savez_compressed(buf, labels=labels)
        props = cell_properties(labels)
        with self.transaction():
            pk = self._pk_or_add(source)
            old = self.cell_mask(source)
            if old is not None and not keep_labels and not np.array_equal(old, labels):
                self._x("DELETE FROM labels WHERE image = ? AND cell > 0", (pk,))
                self._x("UPDATE history SET state = 'dropped' WHERE image = ? AND cell > 0", (pk,))
                if self.has_table("reviewed"):
                    self._x("DELETE FROM reviewed WHERE image = ? AND cell > 0", (pk,))
            self._x(
                "INSERT OR REPLACE INTO masks VALUES (?, ?, ?, ?, ?)",
                (pk, buf.getvalue(), *labels.shape, _now()),
            )
            self._x(
                "UPDATE images SET height = COALESCE(height, ?), width = COALESCE(width, ?) "
                "WHERE id = ?",
                (*labels.shape, pk),
            )
            self._x("DELETE FROM cells WHERE image = ?", (pk,))
            self._many(
                "INSERT INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(pk, c, p["area"], *p["centroid"], *p["bbox"]) for c, p in props.items()],
            )
