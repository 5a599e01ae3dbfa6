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
  line, which the next run truncates (that image is simply done again). The file
  is ``fsync``-ed every chunk, for power cuts.
* **Parquet** (``.parquet`` and pyarrow installed): rows are buffered and each
  chunk is written as an atomic part file in ``<out>.parts/``; :meth:`close`
  streams the old table and the parts into one file (atomic rename). A kill
  loses at most the unwritten chunk; its images are done again on resume.
* **Parts from other processes** (Dask workers) are CSV files in the same
  ``<out>.parts/`` folder, written under a temporary name and renamed when
  complete; :func:`merge_parts` folds them into the main table, deduplicated.

Columns: ``image``, [``cell``], ``model``, one probability per class (named by
the class), ``predicted`` (space-separated class indices), ``status`` (``ok`` or
``error``) and ``error`` (the message).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

#: Output suffixes the batch accepts.
TABLE_SUFFIXES = (".csv", ".parquet")
#: Folder next to the output that holds part files (Parquet chunks, Dask workers' parts).
PARTS_SUFFIX = ".parts"
WORKER_PART_PREFIX = "worker-"
MAIN_PART_PREFIX = "main-"


class BatchError(ValueError):
    """A problem the user can fix (bad folder, bad output, a table of another model)."""


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
    head = [row.image, "" if row.cell is None else str(row.cell)] if cells else [row.image]
    predicted = " ".join(str(i) for i in row.predicted)
    error = row.error.replace("\r", " ").replace("\n", " ")
    return [*head, row.model, *values, predicted, row.status, error]


def _parse_row(values: dict[str, str], classes: Sequence[str], cells: bool) -> Row:
    probs = None
    if classes and values.get(classes[0], ""):
        probs = np.array([float(values[c]) for c in classes], np.float32)
    cell = values.get("cell", "") if cells else ""
    predicted = [int(v) for v in values.get("predicted", "").split()]
    return Row(
        image=values["image"],
        model=values.get("model", ""),
        probabilities=probs,
        predicted=predicted,
        status=values.get("status", "ok") or "ok",
        error=values.get("error", ""),
        cell=int(cell) if cell else None,
    )


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
        self.columns = table_columns(self.classes, cells)
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
    """Append-only CSV; one ``os.write`` per call, torn last line repaired on open.

    Parameters
    ----------
    out
        The CSV file (created with a header if absent or empty).
    float_format
        ``%``-format of probabilities: ``%.6f`` for the user's table (as
        ``napari-hpa predict``), ``%.9g`` (exact float32) for part files.
    lock
        Take an exclusive ``flock`` so two runs cannot append to one table.
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
        self._fd: int | None = os.open(self.out, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            if lock:
                lock_table(self._fd, self.out)
            self._load()
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise

    def _load(self) -> None:
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size == 0:
            self._write_text(_csv_line(self.columns))
            return
        with open(self.out, "rb") as fh:
            data_end = _complete_length(fh, size)
            if data_end < size and self.cells:
                # the torn write may have been one image's block of cell rows: drop it whole
                data_end = _last_image_start(fh, data_end)
            if data_end < size:  # torn last line from a killed run: drop it
                os.ftruncate(self._fd, data_end)
                os.fsync(self._fd)
            fh.seek(0)
            # a raw stream is enough for TextIOWrapper, though typeshed asks for a buffered one
            limited = cast(io.BufferedReader, _Limited(fh, data_end))
            text = io.TextIOWrapper(limited, encoding="utf-8", newline="")
            reader = csv.reader(text)
            header = next(reader, None)
            if header is None:
                self._write_text(_csv_line(self.columns))
                return
            self._check_header(header, self.out)
            for values in reader:
                if len(values) != len(self.columns):
                    continue  # a foreign or damaged line: ignore it, never crash
                self._count(
                    _parse_row(
                        dict(zip(self.columns, values, strict=True)), self.classes, self.cells
                    )
                )

    def _write_text(self, text: str) -> None:
        assert self._fd is not None
        data = text.encode("utf-8")
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def write(self, rows: Sequence[Row]) -> None:
        """Append ``rows`` in one ``os.write``: a kill tears at most the last line."""
        if not rows:
            return
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        for row in rows:
            writer.writerow(_row_values(row, len(self.classes), self.cells, self.float_format))
        self._write_text(buf.getvalue())  # one write(): all rows of an image land together
        for row in rows:
            self._count(row)

    def sync(self) -> None:
        """Fsync the file."""
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        """Fsync and close the file, releasing its lock; safe to call twice."""
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None


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
    """Rows of a batch CSV (complete lines only)."""
    columns = table_columns(classes, cells)
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return
        if header != columns:
            raise BatchError(f"{path}: unexpected columns")
        for values in reader:
            if len(values) == len(columns):
                yield _parse_row(dict(zip(columns, values, strict=True)), classes, cells)


# ----------------------------------------------------------------------------- helpers
def _csv_line(values: Sequence[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def lock_table(fd: int, out: Path) -> None:
    """Lock ``fd`` exclusively, so that two runs never write one table.

    Raises :class:`BatchError` at once if another process holds it; a no-op on Windows.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; a second run is the user's choice
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise BatchError(f"{out} is being written by another batch run") from None


def fsync_file(path: Path) -> None:
    """Flush ``path`` to disk before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _complete_length(fh: io.BufferedReader, size: int) -> int:
    """Length of the file up to and including its last newline (0 if there is none)."""
    block = 65536
    end = size
    while end > 0:
        start = max(0, end - block)
        fh.seek(start)
        chunk = fh.read(end - start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            return start + i + 1
        end = start
    return 0


def _first_field(line: bytes) -> str:
    return next(csv.reader([line.decode("utf-8", "replace")]), [""])[0]


def _last_image_start(fh: io.BufferedReader, end: int) -> int:
    """Offset of the first row of the last image's block of rows before ``end``."""
    fh.seek(0)
    header_end = len(fh.readline())
    if end <= header_end:
        return end
    span = 1 << 16
    while True:
        start = max(header_end, end - span)
        fh.seek(start)
        chunk = fh.read(end - start)
        lines = chunk.split(b"\n")[:-1]
        offsets = [start]
        for line in lines[:-1]:
            offsets.append(offsets[-1] + len(line) + 1)
        if start > header_end:  # the first line may be cut: never use it
            lines, offsets = lines[1:], offsets[1:]
        if not lines:
            span *= 4
            continue
        last = _first_field(lines[-1])
        i = len(lines) - 1
        while i > 0 and _first_field(lines[i - 1]) == last:
            i -= 1
        if i > 0 or start == header_end:
            return offsets[i]
        span *= 4


class _Limited(io.RawIOBase):
    """A read-only view of the first ``limit`` bytes of a binary file."""

    def __init__(self, fh: io.BufferedReader, limit: int) -> None:
        self._fh = fh
        self._left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._left)
        if n <= 0:
            return 0
        data = self._fh.read(n)
        buffer[: len(data)] = data
        self._left -= len(data)
        return len(data)
