"""Model names and model text: the one rule for what a model may be called, and safe display.

A model's name becomes a folder name (``<name>-v<version>``) inside the models
folder, a job lock, a glob pattern and a ``name@version`` reference; it also comes
from files other people send (a shared ``model.json``). :func:`check_model_name`
is the one rule that every writer and reader applies, so a name can never leave
its folder, never be mistaken for a path, a version or a pattern, and every name
that can be saved can be resolved again. :func:`printable` makes any text read
from a model folder safe to show in a terminal.
"""

from __future__ import annotations

import unicodedata

#: Longest model name: a folder name ``<name>-v<version>`` plus a temporary
#: folder's suffix must stay well below the 255 bytes file systems allow.
MODEL_NAME_MAX = 80
#: Characters allowed in a name besides letters and digits.
NAME_PUNCTUATION = "-_.+ "


def model_name_problem(name: object) -> str | None:
    r"""Return why ``name`` cannot name a model, or None when it can.

    Allowed: 1 to :data:`MODEL_NAME_MAX` characters, letters and digits (any
    script) and ``- _ . +`` and inner spaces, starting with a letter or a digit.
    So no ``/`` or ``\`` (a path), no ``..``, no ``@`` (``name@version``), no
    leading ``.`` or ``_`` (hidden and temporary folders), no glob characters,
    and no control or invisible characters.
    """
    if not isinstance(name, str):
        return f"a model name must be text, not {type(name).__name__}"
    if not name:
        return "a model name cannot be empty"
    if len(name) > MODEL_NAME_MAX:
        return f"a model name has at most {MODEL_NAME_MAX} characters (this one has {len(name)})"
    bad = sorted({c for c in name if not (c.isalnum() or c in NAME_PUNCTUATION)})
    if bad:
        shown = " ".join(_escape(c) if not c.isprintable() else repr(c) for c in bad[:5])
        return f"a model name may not contain {shown}"
    if not name[0].isalnum():
        return "a model name must start with a letter or a digit"
    if name != name.strip():
        return "a model name may not end with a space"
    if ".." in name:
        return "a model name may not contain '..'"
    return None


def check_model_name(name: object) -> str:
    """Return ``name`` if it can name a model, else raise ValueError saying why.

    The message quotes the name with its control characters escaped, so it is
    safe to print.
    """
    problem = model_name_problem(name)
    if problem is not None:
        shown = printable(str(name), limit=MODEL_NAME_MAX + 20)
        hint = "use letters, digits and - _ . +"
        raise ValueError(f"bad model name '{shown}': {problem} ({hint})")
    assert isinstance(name, str)  # model_name_problem refuses anything else
    return name


def _escape(char: str) -> str:
    code = ord(char)
    if char == "\n":
        return "\\n"
    if char == "\r":
        return "\\r"
    if char == "\t":
        return "\\t"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _unsafe(char: str) -> bool:
    """Control, format (bidi overrides, zero-width), surrogate, unassigned, line separators."""
    category = unicodedata.category(char)
    return category[0] == "C" or category in ("Zl", "Zp")


def printable(text: object, limit: int = 200) -> str:
    r"""Return ``text`` as one line that is safe to print in a terminal.

    Escape sequences, newlines, carriage returns, tabs and invisible characters
    (bidi overrides, zero-width spaces) are shown as ``\x1b``, ``\n``,
    ``\u202e``..., so text from a model folder can neither forge rows nor move
    the cursor. Longer than ``limit`` characters, it is cut with ``...``.
    """
    out = "".join(_escape(c) if _unsafe(c) else c for c in str(text))
    return out if len(out) <= limit else out[: max(0, limit - 3)] + "..."
