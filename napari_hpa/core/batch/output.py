"""The result table by its suffix: :func:`open_writer` (CSV or Parquet) and :func:`read_table`.

Above both formats (:mod:`.table` for CSV and the shared rows, :mod:`.parquet`), so that
neither imports the other to choose.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .parquet import ParquetWriter
from .records import complete_records, parse_record
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

    For viewers (the widget's results table); ``max_rows`` caps what is loaded. Cells
    are the table's text: a name that is not UTF-8 stays in its ``file:`` form
    (:func:`.records.decode_image` gives the exact name). A torn last row is left out.
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
    with open(path, "rb") as fh:
        records = complete_records(fh)
        first = next(records, None)
        columns = (parse_record(first[1]) or []) if first is not None else []
        rows = []
        for _offset, record in records:
            values = parse_record(record)
            if values is None or len(values) != len(columns):
                continue
            rows.append(dict(zip(columns, (_text(v) for v in values), strict=True)))
            if max_rows is not None and len(rows) >= max_rows:
                break
    return columns, rows


def _text(value: str) -> str:
    """Return a cell as valid text: bytes a foreign tool wrote that are not UTF-8 become U+FFFD."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
