"""Wording shared by the docks: counts with the noun in the number it takes."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """Write ``n`` and the noun in the number it takes: "1 cell", "3 cells", "0 cells".

    ``plural`` is for nouns that do not just take an "s" ("1 match", "2 matches").
    """
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
