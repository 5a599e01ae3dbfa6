r"""Fields and records of the batch table: any file name back exactly, torn rows found by quotes.

Why a module of its own
-----------------------
A file name may hold anything but ``/`` and NUL: ``\r`` and ``\n``, quotes, commas,
tabs, spaces at either end, and bytes that are not UTF-8 (which Python gives as
surrogate escapes). The table must give back exactly the name it was given, or a
re-run does not recognise the image as done and appends it again. So:

* **Quoting** (:func:`csv_record`). A field is quoted when it holds ``,``, ``"``,
  ``\r``, ``\n`` or white space at either end. The csv module leaves a lone ``\r``
  unquoted when lines end in ``\n``, and every reader then splits the row there.
* **Names that are not text** (:func:`encode_image`, :func:`decode_image`). The CSV
  is UTF-8 and Parquet strings must be, so a name that UTF-8 cannot hold is written as
  a ``file:`` URI of its bytes (``file:///data/caf%E9.png``); so is a name that itself
  starts with ``file:``, which keeps the mapping one to one. Every other name is
  written as it is.
* **Records, not lines** (:func:`complete_records`). A quoted newline does not end a
  row, so the complete rows of a file, and the torn last row a killed run left, are
  found by counting quotes, never by looking for the last ``\n``.

Other text (the model id, class names in the header, error messages) is written as
valid single-line UTF-8 by :func:`plain_text`, control characters escaped; it need not
round-trip exactly.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator, Sequence
from typing import BinaryIO
from urllib.parse import quote_from_bytes, unquote_to_bytes

#: Prefix of a name written as the URI of its bytes.
URI_PREFIX = "file:"
#: The most a torn last row can be (a long path, the probabilities, an error message).
MAX_TORN_BYTES = 1 << 20
#: The longest quoted image field: a path of PATH_MAX bytes, every one a doubled quote.
MAX_NAME_FIELD = 2 * 4096
#: A field with one of these, or white space at either end, is quoted.
_SPECIAL = re.compile(r'[,"\r\n]|^\s|\s$')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ----------------------------------------------------------------------------- fields
def encode_image(name: str) -> str:
    """Return the table's spelling of image ``name``: itself, or a ``file:`` URI of its bytes.

    The URI form is used only for a name UTF-8 cannot hold (surrogate escapes of
    non-UTF-8 bytes) and for a name that starts with ``file:``;
    :func:`decode_image` gives ``name`` back in every case.
    """
    if not name.startswith(URI_PREFIX):
        try:
            name.encode("utf-8")
            return name
        except UnicodeEncodeError:
            pass
    try:
        raw = os.fsencode(name)
    except UnicodeEncodeError:  # a lone surrogate no file system here could hold
        raw = name.encode("utf-8", "surrogatepass")
    lead = "//" if raw.startswith(b"/") else ""
    return f"{URI_PREFIX}{lead}{quote_from_bytes(raw, safe='/')}"


def decode_image(text: str) -> str:
    """Return the image name that :func:`encode_image` wrote as ``text``."""
    if not text.startswith(URI_PREFIX):
        return text
    rest = text[len(URI_PREFIX) :]
    if rest.startswith("//"):
        rest = rest[2:]
    return os.fsdecode(unquote_to_bytes(rest))


def plain_text(text: object) -> str:
    r"""Return ``text`` as one line of valid UTF-8: control characters and bytes escaped.

    For the model id, the header's class names and error messages, and for every
    message that names a file (``car\rriage.png``, ``caf\udce9.png``): a name with a
    line break must not split the one line a refusal is.
    """
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(text))
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


# ----------------------------------------------------------------------------- records
def csv_record(values: Sequence[str]) -> str:
    r"""One CSV record ending in ``\n``; fields quoted as the module docstring says."""
    out = []
    for v in values:
        if _SPECIAL.search(v):
            v = '"' + v.replace('"', '""') + '"'
        out.append(v)
    return ",".join(out) + "\n"


def complete_records(fh: BinaryIO) -> Iterator[tuple[int, bytes]]:
    r"""Yield ``(offset, record)`` for every complete record of a binary file, in order.

    A record ends at a ``\n`` outside quotes (an even count of ``"`` so far). What
    follows the last complete record is a torn row, or damage; the caller decides.
    """
    offset = start = 0
    parts: list[bytes] = []
    quotes = 0
    for line in fh:
        parts.append(line)
        quotes += line.count(b'"')
        offset += len(line)
        if not quotes & 1 and line.endswith(b"\n"):
            yield start, parts[0] if len(parts) == 1 else b"".join(parts)
            parts, quotes, start = [], 0, offset


def parse_record(record: bytes) -> list[str] | None:
    """Return the fields of one record (None if it is not CSV).

    Bytes that are not UTF-8 are kept as surrogate escapes, so a name a foreign
    tool wrote as raw bytes still matches the file's name.
    """
    text = record.decode("utf-8", "surrogateescape")
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    if '"' not in text:
        return text.split(",")
    try:
        return next(csv.reader([text], strict=True), [])
    except csv.Error:
        return None


def partial_rows(tail: bytes) -> list[list[str]]:
    """Rows a torn tail would give a lenient reader (an open quote runs to its end)."""
    text = tail.decode("utf-8", "surrogateescape")
    try:
        return list(csv.reader(io.StringIO(text, newline=""), strict=False))
    except csv.Error:
        return [[], []]  # not one row of ours


def could_be_torn(tail: bytes, n_columns: int) -> bool:
    """Tell whether ``tail`` (after the last complete record) can be one torn row of ours.

    Our rows hold line breaks only inside the quoted file name, their first field,
    whose parts between ``/`` are at most 255 bytes (each quote doubled: 510). Anything
    else, such as a quote opened rows earlier by a hand edit, is damage: cutting it
    would lose rows, so the caller reports it instead.
    """
    rows = partial_rows(tail)
    if len(tail) > MAX_TORN_BYTES or len(rows) > 1 or any(len(r) > n_columns for r in rows):
        return False
    if b"\n" not in tail and b"\r" not in tail:
        return True
    if not tail.startswith(b'"'):
        return False
    end = _closing_quote(tail)
    if end >= 0 and (b"\n" in tail[end:] or b"\r" in tail[end:]):
        return False
    name = tail[1:end] if end >= 0 else tail[1:]
    return len(name) <= MAX_NAME_FIELD and all(len(p) <= 510 for p in name.split(b"/"))


def _closing_quote(field: bytes) -> int:
    """Index of the quote that closes a quoted field starting at 0; -1 if it is not closed."""
    i = 1
    while True:
        j = field.find(b'"', i)
        if j < 0:
            return -1
        if field[j + 1 : j + 2] != b'"':
            return j
        i = j + 2
