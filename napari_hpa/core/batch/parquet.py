"""Parquet output of a batch: atomic part files per chunk, compacted at the end.

Why parts: a Parquet file cannot be appended to, and rewriting it per chunk would
cost O(n^2). Each chunk of rows becomes its own file in ``<out>.parts/``
(written under a temporary name, fsynced, renamed), so a killed run keeps every
finished chunk; :meth:`ParquetWriter.close` streams the old table and the parts
into one file (first row per image or cell wins) and renames it into place.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path
from .records import decode_image, encode_image, plain_text
from .table import (
    MAIN_PART_PREFIX,
    BatchError,
    ResultWriter,
    Row,
    TableLock,
    parts_dir,
)


class ParquetWriter(ResultWriter):
    """Parquet output: atomic part files per chunk, compacted into ``out`` on close."""

    def __init__(
        self, out: Path, classes: Sequence[str], cells: bool, chunk_rows: int = 512
    ) -> None:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise BatchError(
                f"{out}: writing Parquet needs pyarrow (pip install pyarrow)"
            ) from None
        super().__init__(out, classes, cells)
        self.chunk_rows = max(1, chunk_rows)
        self._buffer: list[Row] = []
        self.parts = parts_dir(self.out)
        self.parts.mkdir(parents=True, exist_ok=True)
        self._lock: TableLock | None = TableLock(self.out, self.parts / ".lock")
        try:
            for path in [self.out, *sorted(self.parts.glob(f"{MAIN_PART_PREFIX}*.parquet"))]:
                if path.is_file():
                    for row in _read_parquet(path, self.classes, self.cells, self._check_header):
                        self._count(row)
        except BaseException:
            self._lock.release()
            self._lock = None
            raise

    def write(self, rows: Sequence[Row]) -> None:
        """Buffer ``rows``; a full chunk (``chunk_rows``) becomes a part file."""
        self._buffer.extend(rows)
        for row in rows:
            self._count(row)
        if len(self._buffer) >= self.chunk_rows:
            self.sync()

    def sync(self) -> None:
        """Write the buffered rows as one atomic part file, fsynced."""
        if not self._buffer:
            return
        import pyarrow.parquet as pq

        table = _arrow_table(self._buffer, self.columns, self.classes, self.cells)
        final = self.parts / f"{MAIN_PART_PREFIX}{uuid.uuid4().hex}.parquet"
        try:
            with atomic_path(final) as tmp:
                pq.write_table(table, tmp)
        except OSError as exc:
            raise _write_error(self.out, exc) from None
        self._buffer.clear()

    def close(self) -> None:
        """Compact the table and its parts into ``out`` and release the lock."""
        if self._lock is None:
            return
        try:
            self.sync()
            self._compact()
        finally:
            self._lock.release()
            self._lock = None
        with contextlib.suppress(OSError):
            self.parts.rmdir()

    def _compact(self) -> None:
        """Stream the table and the parts into one file, first row per image/cell wins."""
        import pyarrow.parquet as pq

        parts = sorted(self.parts.glob(f"{MAIN_PART_PREFIX}*.parquet"))
        if not parts and self.out.is_file():
            return
        sources = [p for p in [self.out, *parts] if p.is_file()]
        schema = _arrow_table([], self.columns, self.classes, self.cells).schema
        seen: set[tuple[str, int | None]] = set()
        try:
            with atomic_path(self.out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
                for path in sources:
                    with pq.ParquetFile(path) as source:  # closed now, not when collected
                        for batch in source.iter_batches(batch_size=65536):
                            self._keep_first(batch, schema, seen, writer)
        except OSError as exc:  # the parts stay: the next run compacts them
            raise _write_error(self.out, exc) from None
        for path in parts:
            path.unlink()

    def _keep_first(self, batch: Any, schema: Any, seen: set, writer: Any) -> None:
        """Write the rows of ``batch`` whose (image, cell) was not written before."""
        import pyarrow as pa

        images = batch.column("image").to_pylist()
        cells = batch.column("cell").to_pylist() if self.cells else [None] * len(images)
        keep = []
        for i, key in enumerate(zip(images, cells, strict=True)):
            if key not in seen:
                seen.add(key)
                keep.append(i)
        if keep:
            writer.write_table(pa.Table.from_batches([batch]).take(keep).cast(schema))


def _write_error(out: Path, exc: OSError) -> BatchError:
    return BatchError(
        f"{out}: cannot write the table ({exc.strerror or exc}); the rows written "
        "before are kept and a re-run resumes"
    )


def _arrow_table(rows: Sequence[Row], columns: Sequence[str], classes: Sequence[str], cells: bool):
    import pyarrow as pa

    probs = np.full((len(rows), len(classes)), np.nan, np.float32)
    for i, row in enumerate(rows):
        if row.probabilities is not None:
            probs[i] = row.probabilities
    images = [encode_image(r.image) for r in rows]
    arrays: dict[str, pa.Array] = {"image": pa.array(images, pa.string())}
    if cells:
        arrays["cell"] = pa.array([r.cell for r in rows], pa.int64())
    arrays["model"] = pa.array([plain_text(r.model) for r in rows], pa.string())
    for k, name in enumerate(columns[-3 - len(classes) : -3]):
        arrays[name] = pa.array(probs[:, k], pa.float32())
    arrays["predicted"] = pa.array([" ".join(map(str, r.predicted)) for r in rows], pa.string())
    arrays["status"] = pa.array([r.status for r in rows], pa.string())
    arrays["error"] = pa.array([plain_text(r.error) for r in rows], pa.string())
    return pa.table([arrays[c] for c in columns], names=list(columns))


def _read_parquet(
    path: Path, classes: Sequence[str], cells: bool, check: Callable[[Sequence[str], Path], None]
) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as pf:  # closed when read, not when collected
            check(pf.schema_arrow.names, path)
            columns = ["image", "model", "predicted", "status"] + (["cell"] if cells else [])
            for batch in pf.iter_batches(batch_size=65536, columns=columns):
                data = batch.to_pydict()
                for i, image in enumerate(data["image"]):
                    yield Row(
                        image=decode_image(image),
                        model=data["model"][i],
                        predicted=[int(v) for v in (data["predicted"][i] or "").split()],
                        status=data["status"][i],
                        cell=data["cell"][i] if cells else None,
                    )
    except (pa.ArrowException, ValueError) as exc:
        if isinstance(exc, BatchError):
            raise
        raise BatchError(f"{path}: not a readable Parquet table ({exc})") from None
