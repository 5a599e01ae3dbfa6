"""The result table of a batch run: CSV or Parquet, written incrementally and resumable.

Why this shape
--------------
A screen can be millions of images and a run can be killed at any moment (a
scheduler's time limit, ``kill -9``, a power cut). The table is therefore the
run's only state: an image is *done* exactly when its row is in the table, and a
re-run reads the table to skip those images. No separate journal can disagree
with it.

* **CSV** (default): every image's rows go to the file in a single ``os.write``
  on an ``O_APPEND`` descriptor, so a killed process leaves at most one torn last
  row, which the next run cuts (that image is simply done again). Rows are found by
  their quotes, not by newlines, and any file name reads back exactly
  (:mod:`.records`). The file is ``fsync``-ed every chunk, for power cuts; a write
  that fails (a full disk) is cut back and reported, so the table stays resumable.
* **Parquet** (``.parquet`` and pyarrow installed): rows are buffered and each
  chunk is written as an atomic part file in ``<out>.parts/``; :meth:`close`
  streams the old table and the parts into one file (atomic rename). A kill
  loses at most the unwritten chunk; its images are done again on resume.
* **Parts from other processes** (Dask workers) are CSV files in the same
  ``<out>.parts/`` folder, written under a temporary name and renamed when
  complete; :func:`merge_parts` folds them into the main table, deduplicated.

Columns: ``image`` (the source; :func:`.records.decode_image` gives the exact name
back), [``cell``], ``model``, one probability per class (named by the class),
``predicted`` (space-separated class indices), ``status`` (``ok``, ``error``, or
``warning``: a blank or saturated image, its probabilities but no predicted class) and
``error`` (the message, one line naming the image; a warning's reason for a warning row).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .records import (
    MAX_TORN_BYTES,
    complete_records,
    could_be_torn,
    csv_record,
    decode_image,
    encode_image,
    parse_record,
    partial_rows,
    plain_text,
)

#: Output suffixes the batch accepts.
TABLE_SUFFIXES = (".csv", ".parquet")
#: Folder next to the output that holds part files (Parquet chunks, Dask workers' parts).
PARTS_SUFFIX = ".parts"
WORKER_PART_PREFIX = "worker-"
MAIN_PART_PREFIX = "main-"


class BatchError(ValueError):
    """A problem the user can fix (bad folder, bad output, a table of another model).

    Its message is one line whatever the file names in it hold (:func:`.records.plain_text`).
    """

    def __init__(self, message: object) -> None:
        super().__init__(plain_text(message))


@dataclass
class Row:
    """One result row: a whole image (``cell`` None) or one cell of it."""

    image: str
    model: str
    probabilities: np.ndarray | None = None
    predicted: list[int] = field(default_factory=list)
    status: str = "ok"
    error: str = ""
    cell: int | None = None


def table_columns(classes: Sequence[str], cells: bool) -> list[str]:
    """Column names, in order; the same for local, Dask, CSV and Parquet tables."""
    head = ["image", "cell"] if cells else ["image"]
    return [*head, "model", *classes, "predicted", "status", "error"]


def parts_dir(out: Path) -> Path:
    """Return the folder of ``out``'s part files (``<out>.parts``)."""
    return out.with_name(out.name + PARTS_SUFFIX)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable; best effort (not every platform can)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _row_values(row: Row, n_classes: int, cells: bool, fmt: str) -> list[str]:
    probs = row.probabilities
    values = [fmt % v for v in probs] if probs is not None else [""] * n_classes
    image = encode_image(row.image)
    head = [image, "" if row.cell is None else str(row.cell)] if cells else [image]
    predicted = " ".join(str(i) for i in row.predicted)
    return [*head, plain_text(row.model), *values, predicted, row.status, plain_text(row.error)]


def _parse_row(values: Sequence[str], n_classes: int, cells: bool) -> Row | None:
    """Return the row of a record's fields, by position (None: a line that is not ours)."""
    at = 2 if cells else 1
    if len(values) != at + n_classes + 4:
        return None
    try:
        probs = None
        if n_classes and values[at + 1]:
            probs = np.array([float(v) for v in values[at + 1 : at + 1 + n_classes]], np.float32)
        cell = values[1] if cells else ""
        predicted = [int(v) for v in values[at + 1 + n_classes].split()]
        if any(not 0 <= i < n_classes for i in predicted):
            return None  # a class this table has no column for
        return Row(
            image=decode_image(values[0]),
            model=values[at],
            probabilities=probs,
            predicted=predicted,
            status=values[at + 2 + n_classes] or "ok",
            error=values[at + 3 + n_classes],
            cell=int(cell) if cell else None,
        )
    except ValueError:
        return None


@dataclass
class TableState:
    """What an existing table already holds: used to skip done images and to count."""

    done: set[str] = field(default_factory=set)
    models: set[str] = field(default_factory=set)
    class_counts: Counter = field(default_factory=Counter)
    rows: int = 0
    errors: int = 0

    def add(self, row: Row) -> None:
        """Count one row that is in the table."""
        self.done.add(row.image)
        if row.model:
            self.models.add(row.model)
        self.rows += 1
        if row.status == "ok":
            self.class_counts.update(row.predicted)
        else:
            self.errors += 1


class ResultWriter:
    """Base class: ``open`` reads the existing state, ``write`` appends rows, ``close`` finishes."""

    def __init__(self, out: Path, classes: Sequence[str], cells: bool) -> None:
        self.out = Path(out)
        self.classes = tuple(classes)
        self.cells = cells
        #: The header as written (class names on one line, valid UTF-8).
        self.columns = [plain_text(c) for c in table_columns(self.classes, cells)]
        self.state = TableState()

    def write(self, rows: Sequence[Row]) -> None:  # pragma: no cover - abstract
        """Append ``rows``: all rows of one image in one call, so they land together."""
        raise NotImplementedError

    def sync(self) -> None:
        """Make what was written durable (end of a chunk)."""

    def close(self) -> None:
        """Finish the table; safe to call twice."""

    def _check_header(self, header: Sequence[str], where: Path) -> None:
        if list(header) != self.columns:
            kind = "per-cell" if "cell" in header else "per-image"
            raise BatchError(
                f"{where} already holds a {kind} table with other columns (another model or "
                f"mode?); choose a new output file or delete it"
            )

    def _count(self, row: Row) -> None:
        self.state.add(row)


class CsvWriter(ResultWriter):
    """Append-only CSV; one ``os.write`` per call, a torn last row repaired on open.

    Parameters
    ----------
    out
        The CSV file (created with a header if absent or empty).
    float_format
        ``%``-format of probabilities: ``%.6f`` for the user's table (as
        ``napari-hpa predict``), ``%.9g`` (exact float32) for part files.
    lock
        Take the table's exclusive :class:`TableLock`, so two runs cannot append to it.

    Notes
    -----
    A write that fails (a full disk) is cut back to the rows before it and raised as a
    :class:`BatchError`: the table stays as it was, and a re-run resumes from it.
    """

    def __init__(
        self,
        out: Path,
        classes: Sequence[str],
        cells: bool,
        float_format: str = "%.6f",
        lock: bool = True,
    ) -> None:
        super().__init__(out, classes, cells)
        self.float_format = float_format
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock = TableLock(self.out, table_lock_file(self.out)) if lock else None
        try:
            self._fd: int | None = os.open(self.out, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except BaseException:
            self._release()
            raise
        self._size = 0
        try:
            self._load()
        except BaseException:
            os.close(self._fd)
            self._fd = None
            self._release()
            raise

    def _load(self) -> None:
        """Count the table's rows; cut a torn last row (a cell block: the whole image)."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        header: list[str] | None = None
        end = 0  # end of the last complete record
        block: list[Row] = []  # rows of the last image, counted when the next one starts
        block_start = 0
        with open(self.out, "rb") as fh:
            for offset, record in complete_records(fh):
                end = offset + len(record)
                values = parse_record(record)
                if header is None:
                    header = values or []
                    self._check_header(header, self.out)
                    continue
                row = None if values is None else _parse_row(values, len(self.classes), self.cells)
                if row is None:
                    continue  # a foreign or damaged line: ignore it, never crash
                if not (self.cells and block and block[-1].image == row.image):
                    for done in block:
                        self._count(done)
                    block, block_start = [], offset
                block.append(row)
            if end < size:  # a torn last row from a killed run, or damage
                torn = self._check_tail(fh, end, size, header)
                if self.cells and block and encode_image(block[-1].image).startswith(torn):
                    block, end = [], block_start  # the torn write was (part of) its cell rows
                os.ftruncate(self._fd, end)
                os.fsync(self._fd)
        for done in block:
            self._count(done)
        self._size = end
        if header is None:
            self._append(csv_record(self.columns).encode("utf-8"), "write the header of")

    def _check_tail(self, fh: BinaryIO, end: int, size: int, header: list[str] | None) -> str:
        """Return the torn row's first field; refuse to cut what is not one row of ours.

        Cutting more than a torn row would lose a user's rows, so a tail that is not
        one partial row (a quote opened earlier and never closed) is reported.
        """
        fh.seek(end)
        tail = fh.read(min(size - end, MAX_TORN_BYTES + 1))
        if header is None:
            if csv_record(self.columns).encode("utf-8").startswith(tail):
                return ""  # a torn header
            raise BatchError(f"{self.out}: not a batch table; choose a new output file")
        if could_be_torn(tail, len(self.columns)):
            rows = partial_rows(tail)
            return rows[0][0] if rows and rows[0] else ""
        fh.seek(0)
        line = fh.read(end).count(b"\n") + 1
        raise BatchError(
            f"{self.out}: damaged from line {line} on (a quote there is never closed, "
            f"{size - end} bytes); repair that line or move the file, then re-run"
        )

    def _append(self, data: bytes, what: str = "append to") -> None:
        """Write ``data`` at the end; on failure cut the file back to what it held."""
        assert self._fd is not None
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise BatchError(
                f"{self.out}: cannot {what} the table ({exc.strerror or exc}); "
                f"the {self.state.rows} row(s) before are kept and a re-run resumes"
            ) from None
        self._size += len(data)

    def write(self, rows: Sequence[Row]) -> None:
        """Append ``rows`` in one ``os.write``: a kill tears at most the last line."""
        if not rows:
            return
        n, fmt = len(self.classes), self.float_format
        text = "".join(csv_record(_row_values(row, n, self.cells, fmt)) for row in rows)
        self._append(text.encode("utf-8"))  # one write(): all rows of an image land together
        for row in rows:
            self._count(row)

    def sync(self) -> None:
        """Fsync the file."""
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise BatchError(f"{self.out}: cannot save the table ({exc.strerror})") from None

    def close(self) -> None:
        """Fsync and close the file, releasing its lock; safe to call twice."""
        if self._fd is not None:
            try:
                self.sync()
            finally:
                os.close(self._fd)
                self._fd = None
                self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


# ----------------------------------------------------------------------------- parts
def new_worker_part(parts: Path) -> tuple[Path, Path]:
    """Return a (temporary, final) pair of names for one worker's new CSV part file."""
    parts.mkdir(parents=True, exist_ok=True)
    final = parts / f"{WORKER_PART_PREFIX}{uuid.uuid4().hex}.csv"
    return final.with_suffix(".tmp"), final


def merge_parts(writer: ResultWriter, paths: Iterable[Path] | None = None) -> int:
    """Append the rows of finished worker parts that the table lacks; delete the parts.

    Returns the number of new rows. An image already in the table is skipped
    with all its rows, so a chunk that was run twice (a lost worker, a resumed
    cancel) never duplicates rows.
    """
    if paths is None:
        folder = parts_dir(writer.out)
        paths = sorted(folder.glob(f"{WORKER_PART_PREFIX}*.csv")) if folder.is_dir() else []
    added = 0
    for path in paths:
        fresh: dict[str, list[Row]] = {}
        for row in read_csv_rows(path, writer.classes, writer.cells):
            if row.image not in writer.state.done:
                fresh.setdefault(row.image, []).append(row)
        for group in fresh.values():
            writer.write(group)
            added += len(group)
        writer.sync()
        path.unlink()
    return added


def clean_stale_parts(out: Path) -> None:
    """Remove temporary part files a killed run left behind (never complete, never merged)."""
    folder = parts_dir(out)
    if folder.is_dir():
        for tmp in folder.glob(f"{WORKER_PART_PREFIX}*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()


def remove_empty_parts_dir(out: Path) -> None:
    """Remove ``out``'s parts folder if nothing is left in it."""
    with contextlib.suppress(OSError):
        parts_dir(out).rmdir()


# ----------------------------------------------------------------------------- reading
def read_csv_rows(path: Path, classes: Sequence[str], cells: bool) -> Iterator[Row]:
    """Rows of a batch CSV (complete records only; foreign lines skipped)."""
    columns = [plain_text(c) for c in table_columns(classes, cells)]
    with open(path, "rb") as fh:
        records = complete_records(fh)
        first = next(records, None)
        if first is None:
            return
        if parse_record(first[1]) != columns:
            raise BatchError(f"{path}: unexpected columns")
        for _offset, record in records:
            values = parse_record(record)
            row = None if values is None else _parse_row(values, len(classes), cells)
            if row is not None:
                yield row


# ----------------------------------------------------------------------------- helpers
class TableLock:
    """An exclusive lock on one results table, so that two runs never write it at once.

    A hidden lock file (filelock: ``flock`` on Linux and macOS, ``msvcrt`` on Windows)
    beside the table, removed when the writer closes; the lock itself ends with the
    process, so a killed run never blocks the next.

    Raises :class:`BatchError` at once if another run holds it.
    """

    def __init__(self, out: Path, lock_file: Path) -> None:
        import filelock

        self.lock_file = lock_file
        self._lock: filelock.BaseFileLock | None = filelock.FileLock(
            str(lock_file), timeout=0, thread_local=False
        )
        try:
            self._lock.acquire()
        except filelock.Timeout:
            self._lock = None
            raise BatchError(f"{out} is being written by another batch run") from None
        except OSError as exc:
            self._lock = None
            raise BatchError(f"{out}: cannot lock the table ({exc.strerror or exc})") from None

    def release(self) -> None:
        """Release the lock and remove its file (no leftover beside the table); safe twice."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
            with contextlib.suppress(OSError):
                self.lock_file.unlink()


def table_lock_file(out: Path) -> Path:
    """Return the hidden lock file of the table ``out``, in its folder."""
    return out.parent / f".{out.name}.lock"


def fsync_file(path: Path) -> None:
    """Flush ``path`` to disk before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
