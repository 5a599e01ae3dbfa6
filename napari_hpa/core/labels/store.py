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
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .schema import (
    SCHEMA_VERSION,
    AnnotationStoreError,
    Edit,
    ImageRecord,
    default_db_path,
    open_database,
)

__all__ = [
    "SCHEMA_VERSION",
    "AnnotationStore",
    "AnnotationStoreError",
    "Edit",
    "ImageRecord",
    "default_db_path",
]

_LEVEL = "image = ? AND task = ? AND cell = ?"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _bool(v: int | None) -> bool | None:
    return None if v is None else bool(v)


def _task(task: Any) -> str:
    """Return a task's name; a :class:`~napari_hpa.core.tasks.Task` stands for its ``.name``."""
    return str(getattr(task, "name", task))


class AnnotationStore:
    """Labels of images and cells in one SQLite file.

    Parameters
    ----------
    path
        The database file; created (with its folder) when missing.
    timeout
        Seconds to wait for another process's write lock.

    Notes
    -----
    One connection guarded by a re-entrant lock, so a store can be shared between the GUI
    thread and worker threads. Other processes may open the same file (WAL lets them read
    during a write). ``with store.transaction():`` batches many writes into one commit.
    Undo/redo is one stack per database file. ``task`` arguments are task names (a ``Task``
    object is taken as its ``.name``).
    """

    def __init__(self, path: str | Path, timeout: float = 10.0) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._depth = 0
        self._conn, self.journal_mode = open_database(self.path, timeout)

    # -- connection ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> AnnotationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
                self._x("ROLLBACK")
                raise
            else:
                self._x("COMMIT")
            finally:
                self._depth = 0

    def _x(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._conn.execute(sql, tuple(params))

    def _q(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    def integrity_ok(self) -> bool:
        """``PRAGMA integrity_check`` says ok and no foreign key is dangling."""
        ok = self._q("PRAGMA integrity_check") == [("ok",)]
        return ok and not self._q("PRAGMA foreign_key_check")

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

    def _pk(self, source: str) -> int | None:
        rows = self._q("SELECT id FROM images WHERE source = ?", (str(source),))
        return int(rows[0][0]) if rows else None

    def _pk_or_add(self, source: str) -> int:
        """Return the image's row id, registering the image first when it is new."""
        pk = self._pk(source)
        return self.add_image(source) if pk is None else pk

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
        pred = {int(i) for i in predicted}
        classes = range(len(probs)) if probs else sorted(pred)
        if not pred <= set(classes):
            raise ValueError(f"predicted classes {sorted(pred - set(classes))} out of range")
        scores = probs or [None] * (max(classes, default=-1) + 1)
        t, cell, task = _now(), int(cell), _task(task)
        with self.transaction():
            pk = self._pk_or_add(source)
            self._x(f"DELETE FROM labels WHERE {_LEVEL} AND origin = 'model'", (pk, task, cell))
            self._conn.executemany(
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
        t, cell, task = _now(), int(cell), _task(task)
        edits: list[Edit] = []
        with self.transaction():
            pk = self._pk_or_add(source)
            current = self.user_labels(source, task, cell)
            action = self._q("SELECT COALESCE(MAX(action), 0) + 1 FROM history")[0][0]
            for cls, value in sorted((int(c), v) for c, v in values.items()):
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
            sql = f"DELETE FROM labels WHERE {_LEVEL} AND class = ? AND origin = 'user'"
            self._x(sql, (pk, task, cell, cls))
        else:
            self._x(
                "INSERT OR REPLACE INTO labels(image, cell, task, class, value, origin, time) "
                "VALUES (?, ?, ?, ?, ?, 'user', ?)",
                (pk, cell, task, cls, value, t),
            )

    # -- undo / redo --------------------------------------------------------------------------
    def can_undo(self) -> bool:
        """Tell whether :meth:`undo` has a step to revert."""
        return bool(self._q("SELECT 1 FROM history WHERE state = 'done' LIMIT 1"))

    def can_redo(self) -> bool:
        """Tell whether :meth:`redo` has an undone step to re-apply."""
        return bool(self._q("SELECT 1 FROM history WHERE state = 'undone' LIMIT 1"))

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
            rows = self._q(
                "SELECT h.image, i.source, h.cell, h.task, h.class, h.old, h.new FROM history h "
                "JOIN images i ON i.id = h.image WHERE h.action = ? ORDER BY h.id "
                + ("DESC" if undo else "ASC"),
                (action,),
            )
            edits = []
            for pk, source, cell, task, cls, old, new in rows:
                before, after = (new, old) if undo else (old, new)
                self._write_user(pk, cell, task, cls, after, t)
                edits.append(Edit(source, cell, task, cls, _bool(before), _bool(after)))
            self._x("UPDATE history SET state = ? WHERE action = ?", (state, action))
            return edits

    # -- reading labels -----------------------------------------------------------------------
    def _level(self, source: str, task: str, cell: int) -> dict[int, tuple]:
        """Return class -> (user value, model value, score, model id), None where absent."""
        out: dict[int, list] = {}
        for cls, origin, value, score, model in self._q(
            f"SELECT class, origin, value, score, model FROM labels WHERE {_LEVEL}",
            (self._pk(source), _task(task), int(cell)),
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
        params: list[object] = [self._pk(source), _task(task)]
        if cell is not None:
            sql, params = sql + " AND cell = ?", [*params, int(cell)]
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
        for source, cell, cls, origin, value in self._q(
            "SELECT i.source, l.cell, l.class, l.origin, l.value FROM labels l JOIN images i "
            "ON i.id = l.image WHERE l.task = ? ORDER BY l.origin",  # 'user' rows come last
            (_task(task),),
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
            self._conn.executemany(
                "INSERT INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(pk, c, p["area"], *p["centroid"], *p["bbox"]) for c, p in props.items()],
            )

    def cell_mask(self, source: str) -> np.ndarray | None:
        """Return the stored (H, W) int32 cell labels, or None."""
        rows = self._q("SELECT labels FROM masks WHERE image = ?", (self._pk(source),))
        if not rows:
            return None
        with np.load(io.BytesIO(rows[0][0]), allow_pickle=False) as z:
            return z["labels"]

    def cells(self, source: str) -> list[int]:
        """Cell ids of the stored mask, sorted."""
        return list(self.cell_info(source))

    def cell_info(self, source: str) -> dict[int, dict[str, Any]]:
        """Return each stored cell's area, centroid and bounding box.

        Keys are the cell ids; values ``{"area", "centroid": (y, x), "bbox": (r0, c0, r1, c1)}``.
        """
        rows = self._q(
            "SELECT cell, area, y, x, r0, c0, r1, c1 FROM cells WHERE image = ? ORDER BY cell",
            (self._pk(source),),
        )
        return {r[0]: {"area": r[1], "centroid": (r[2], r[3]), "bbox": tuple(r[4:])} for r in rows}
