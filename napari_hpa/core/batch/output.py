"""The result table by its suffix: :func:`open_writer` (CSV or Parquet) and :func:`read_table`.

Above both formats (:mod:`.table` for CSV and the shared rows, :mod:`.parquet`), so that
neither imports the other to choose.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from .parquet import ParquetWriter
from .table import BatchError, CsvWriter, ResultWriter


def open_writer(out: Path, classes: Sequence[str], cells: bool) -> ResultWriter:
    """Open the writer for ``out``'s suffix (``.csv`` or ``.parquet``)."""
    suffix = Path(out).suffix.lower()
    if suffix == ".parquet":
        return ParquetWriter(out, classes, cells)
    if suffix == ".csv":
        return CsvWriter(out, classes, cells)
    raise BatchError(f"{out}: the output must end in .csv or .parquet")


def read_table(
    path: str | os.PathLike, max_rows: int | None = None
) -> tuple[list[str], list[dict]]:
    """Columns and rows (dicts of strings, probabilities as floats) of a finished table.

    For viewers (the widget's results table); ``max_rows`` caps what is loaded.
    """
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        columns = list(pf.schema_arrow.names)
        rows: list[dict] = []
        for batch in pf.iter_batches(batch_size=4096):
            rows.extend(batch.to_pylist())
            if max_rows is not None and len(rows) >= max_rows:
                return columns, rows[:max_rows]
        return columns, rows
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        columns = list(reader.fieldnames or [])
        rows = []
        for values in reader:
            if None in values or any(v is None for v in values.values()):
                continue
            rows.append(values)
            if max_rows is not None and len(rows) >= max_rows:
                break
    return columns, rows
