"""Parquet output of a batch: atomic part files per chunk, compacted at the end.

Why parts: a Parquet file cannot be appended to, and rewriting it per chunk would
cost O(n^2). Each chunk of rows becomes its own file in ``<out>.parts/``
(written under a temporary name, fsynced, renamed), so a killed run keeps every
finished chunk; :meth:`ParquetWriter.close` streams the old table and the parts
into one file (first row per image or cell wins) and renames it into place.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .table import (
    MAIN_PART_PREFIX,
    BatchError,
    ResultWriter,
    Row,
    fsync_dir,
    fsync_file,
    lock_table,
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
        self._lock_fd: int | None = os.open(self.parts / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        lock_table(self._lock_fd, self.out)
        for path in [self.out, *sorted(self.parts.glob(f"{MAIN_PART_PREFIX}*.parquet"))]:
            if path.is_file():
                for row in _read_parquet(path, self.classes, self.cells, self._check_header):
                    self._count(row)

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
        tmp = final.with_suffix(".tmp")
        pq.write_table(table, tmp)
        fsync_file(tmp)
        os.replace(tmp, final)
        fsync_dir(self.parts)
        self._buffer.clear()

    def close(self) -> None:
        """Compact the table and its parts into ``out`` and release the lock."""
        if self._lock_fd is None:
            return
        self.sync()
        self._compact()
        os.close(self._lock_fd)
        self._lock_fd = None
        with contextlib.suppress(OSError):
            (self.parts / ".lock").unlink()
            self.parts.rmdir()

    def _compact(self) -> None:
        """Stream the table and the parts into one file, first row per image/cell wins."""
        import pyarrow.parquet as pq

        parts = sorted(self.parts.glob(f"{MAIN_PART_PREFIX}*.parquet"))
        if not parts and self.out.is_file():
            return
        sources = [p for p in [self.out, *parts] if p.is_file()]
        tmp = self.out.with_name(self.out.name + ".compact.tmp")
        schema = _arrow_table([], self.columns, self.classes, self.cells).schema
        seen: set[tuple[str, int | None]] = set()
        with pq.ParquetWriter(tmp, schema) as writer:
            for path in sources:
                for batch in pq.ParquetFile(path).iter_batches(batch_size=65536):
                    images = batch.column("image").to_pylist()
                    cells = batch.column("cell").to_pylist() if self.cells else [None] * len(images)
                    keep = []
                    for i, key in enumerate(zip(images, cells, strict=True)):
                        if key not in seen:
                            seen.add(key)
                            keep.append(i)
                    if keep:
                        import pyarrow as pa

                        table = pa.Table.from_batches([batch]).take(keep).cast(schema)
                        writer.write_table(table)
        fsync_file(tmp)
        os.replace(tmp, self.out)
        fsync_dir(self.out.parent)
        for path in parts:
            path.unlink()


def _arrow_table(rows: Sequence[Row], columns: Sequence[str], classes: Sequence[str], cells: bool):
    import pyarrow as pa

    probs = np.full((len(rows), len(classes)), np.nan, np.float32)
    for i, row in enumerate(rows):
        if row.probabilities is not None:
            probs[i] = row.probabilities
    arrays: dict[str, pa.Array] = {"image": pa.array([r.image for r in rows], pa.string())}
    if cells:
        arrays["cell"] = pa.array([r.cell for r in rows], pa.int64())
    arrays["model"] = pa.array([r.model for r in rows], pa.string())
    for k, name in enumerate(classes):
        arrays[name] = pa.array(probs[:, k], pa.float32())
    arrays["predicted"] = pa.array([" ".join(map(str, r.predicted)) for r in rows], pa.string())
    arrays["status"] = pa.array([r.status for r in rows], pa.string())
    arrays["error"] = pa.array([r.error for r in rows], pa.string())
    return pa.table([arrays[c] for c in columns], names=list(columns))


def _read_parquet(
    path: Path, classes: Sequence[str], cells: bool, check: Callable[[Sequence[str], Path], None]
) -> Iterator[Row]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    check(pf.schema_arrow.names, path)
    for batch in pf.iter_batches(
        batch_size=65536,
        columns=["image", "model", "predicted", "status"] + (["cell"] if cells else []),
    ):
        data = batch.to_pydict()
        for i, image in enumerate(data["image"]):
            yield Row(
                image=image,
                model=data["model"][i],
                predicted=[int(v) for v in (data["predicted"][i] or "").split()],
                status=data["status"][i],
                cell=data["cell"][i] if cells else None,
            )
