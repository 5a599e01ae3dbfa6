"""Wording shared by the docks: counts with the noun in its number, file errors in one line."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """Write ``n`` and the noun in the number it takes: "1 cell", "3 cells", "0 cells".

    ``plural`` is for nouns that do not just take an "s" ("1 match", "2 matches").
    """
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def naming_the_file(exc: BaseException, path: object, lead: str) -> str:
    """Say a refused file operation in one line that names the file.

    The error's own words, after ``lead`` unless they already name ``path``.
    """
    text = str(exc.args[0]) if exc.args else str(exc)
    return text if str(path) in text else f"{lead}{text}"
