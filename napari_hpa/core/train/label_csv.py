"""Label CSVs: Kaggle-style ``Id,Target`` rows, and their tokens turned into a task.

A token is a class name (case-insensitive) or a class id. Numeric ids in a file
that does not say which task it labels are the 28 HPA classes (the Kaggle HPA
numbering), so a model trained on such a file reads the same file the same way
when it is evaluated. A token that is no class is an error that names its row.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from ..tasks import BUILTIN_TASKS, HPA28_CLASSES, HPA_CHANNELS, Task, TaskKind, get_task

_ID_COLUMNS = ("id", "image", "file", "filename", "source", "path")
_TARGET_COLUMNS = ("target", "targets", "label", "labels", "class_id", "class", "classes")
#: A column that names which images belong together (tiles of one original image, one
#: patient, one slide, one set): the validation split then keeps each group whole.
GROUP_COLUMNS = ("group", "patient", "slide", "subject", "set")


class DataError(ValueError):
    """Training data that cannot be used; the message says what to fix."""


def _split_tokens(value: str) -> list[str]:
    value = value.strip()
    if not value:
        return []
    sep = "|" if "|" in value else ";" if ";" in value else None
    return [t.strip() for t in (value.split(sep) if sep else value.split()) if t.strip()]


def _is_id(token: str) -> bool:
    """Tell whether ``token`` is a class id: ASCII digits ('²' is a digit to Python, not here)."""
    return token.isascii() and token.isdigit()


def build_task(
    rows: Sequence[Sequence[str]],
    task: Task | str | Sequence[str] | None = None,
    *,
    label_classes: Sequence[str] | None = None,
    kind: TaskKind | str = "auto",
    channels: Sequence[str] | None = None,
    name: str = "custom",
    row_ids: Sequence[str] | None = None,
) -> tuple[Task, list[tuple[int, ...] | None]]:
    """Turn label tokens into a task and class indices per row.

    Parameters
    ----------
    rows
        Each row's label tokens (class ids or names).
    task
        A :class:`Task`, a built-in task name, a list of class names (a subset
        task, e.g. one class for a binary task), or None to read the classes
        from the labels.
    label_classes
        What numeric labels index into. Defaults to the task's classes, or to
        HPA's 28 classes when the task's classes are all HPA class names, or when the
        labels define the task and hold a numeric id (a Kaggle HPA CSV): numeric
        ids then mean the 28 HPA classes, and the task is all of them (``hpa28``),
        so that evaluating on the same CSV reads the ids the same way.
    kind
        ``auto`` picks multiclass when every row has exactly one of two or more
        classes, else multilabel (one class is always multilabel: a sigmoid);
        the ``hpa28`` task of numeric ids is multilabel unless ``multiclass`` is
        asked for.
    channels
        Input channels of a new task (default HPA's four).
    row_ids
        Each row's image Id, to name the row in an error message.

    Returns
    -------
    The task and, per row, its class indices (None: the row names no class of
    a multiclass task and must be skipped).

    Raises
    ------
    DataError
        For a token that is no class, naming the row that holds it.
    """
    if isinstance(task, str):
        task = get_task(task) if task in BUILTIN_TASKS else [task]
    channels = tuple(channels or HPA_CHANNELS)
    fixed_kind: str | None = None
    hpa_ids = False
    if isinstance(task, Task):
        classes, fixed_kind = list(task.classes), task.kind
        namespace = list(label_classes or _id_namespace(classes))
    elif task is not None:
        classes = [str(c) for c in task]
        namespace = list(label_classes or _id_namespace(classes))
        hpa = {c.lower(): c for c in HPA28_CLASSES}
        classes = [
            hpa.get(c.lower(), c) if namespace == list(HPA28_CLASSES) else c for c in classes
        ]
    elif label_classes:
        namespace = list(label_classes)
        classes = []  # the classes the labels use, below
    elif any(_is_id(t) for row in rows for t in row):
        namespace, hpa_ids = list(HPA28_CLASSES), True
        classes = list(HPA28_CLASSES)
    else:
        namespace = sorted({t for row in rows for t in row})
        classes = list(namespace)
    per_row: list[list[int]] = []
    for i, row in enumerate(rows):
        try:
            per_row.append([_resolve(token, namespace, hpa_ids) for token in row])
        except DataError as exc:
            raise DataError(_row_error(exc, row, row_ids[i] if row_ids else None)) from None
    if task is None and not hpa_ids and label_classes:
        classes = [namespace[i] for i in sorted({i for row in per_row for i in row})]
    if not classes:
        raise DataError("the labels name no class")
    lookup = {c.lower(): i for i, c in enumerate(classes)}
    resolved = [
        {lookup[namespace[i].lower()] for i in row if namespace[i].lower() in lookup}
        for row in per_row
    ]
    if fixed_kind is None:
        if kind == "auto":
            single = all(len(r) == 1 for r in resolved)
            kind = (
                "multilabel"
                if hpa_ids
                else "multiclass"
                if single and len(classes) > 1
                else "multilabel"
            )
        if kind == "multiclass" and len(classes) < 2:
            raise DataError("a multiclass task needs at least two classes")
        if hpa_ids and kind == "multilabel":
            name = "hpa28"
        task = Task(name, kind, tuple(classes), channels)  # type: ignore[arg-type]
    assert isinstance(task, Task)  # given, or built just above
    out: list[tuple[int, ...] | None] = []
    for r in resolved:
        if task.kind == "multiclass" and len(r) != 1:
            out.append(None)
        else:
            out.append(tuple(sorted(r)))
    return task, out


def _id_namespace(classes: Sequence[str]) -> Sequence[str]:
    """Return what numeric ids index for a task of ``classes``.

    HPA's 28 classes when every class is an HPA class name (a subset of HPA is
    trained and evaluated with the Kaggle numbering alike), else the classes.
    """
    lowered = {c.lower() for c in HPA28_CLASSES}
    return HPA28_CLASSES if all(c.lower() in lowered for c in classes) else classes


def _row_error(exc: DataError, row: Sequence[str], row_id: str | None) -> str:
    """Word the error of a bad label token, naming its row (and hinting at the separator)."""
    where = f"Id {row_id!r}: " if row_id is not None else ""
    words = [t for t in row if not _is_id(t)]
    hint = (
        "; class names that contain spaces must be separated by '|' or ';'"
        if len(words) > 1
        else ""
    )
    return f"{where}{exc}{hint}"


def _resolve(token: str, namespace: Sequence[str], hpa_ids: bool = False) -> int:
    """Return the index of ``token`` (a class name, case-insensitive, or an id) in ``namespace``."""
    lowered = [c.lower() for c in namespace]
    if token.lower() in lowered:  # a class named "3" is that class, not id 3
        return lowered.index(token.lower())
    if _is_id(token):
        i = int(token) if len(token) <= 9 else len(namespace)  # 10^23 is out of range too
        if i >= len(namespace):
            what = "numeric ids are the 28 HPA classes" if hpa_ids else "ids go"
            shown = token if len(token) <= 12 else token[:12] + "..."
            raise DataError(
                f"class id {shown} is out of range ({what} from 0 to {len(namespace) - 1})"
            )
        return i
    more = "..." if len(namespace) > 10 else ""
    context = "; the numeric ids of this file are HPA classes" if hpa_ids else ""
    raise DataError(f"unknown class {token!r}{context} (known: {', '.join(namespace[:10])}{more})")


def _open_table(path: Path) -> tuple[csv.DictReader, dict[str, str]]:
    """Open the CSV: its rows and its header by lower-cased name."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the label file ({exc})") from None
    reader = csv.DictReader(text.splitlines())
    return reader, {h.strip().lower(): h for h in (reader.fieldnames or [])}


def read_label_csv(path: str | Path) -> list[tuple[str, list[str]]]:
    """Rows ``(Id, tokens)`` of a Kaggle-style CSV (``Id,Target``; a few aliases accepted)."""
    path = Path(path)
    reader, header = _open_table(path)
    id_col = next((header[c] for c in _ID_COLUMNS if c in header), None)
    tgt_col = next((header[c] for c in _TARGET_COLUMNS if c in header), None)
    if id_col is None or tgt_col is None:
        found = ", ".join(header) or "none"
        raise DataError(f"{path}: expected columns Id,Target (Kaggle format); found {found}")
    rows = []
    lines: dict[str, list[int]] = {}
    for row in reader:
        image_id = (row.get(id_col) or "").strip()
        if image_id:
            rows.append((image_id, _split_tokens(row.get(tgt_col) or "")))
            lines.setdefault(image_id, []).append(reader.line_num)
    if not rows:
        raise DataError(f"{path}: no labelled rows")
    # which of two rows is right cannot be guessed, and a silent pick would also
    # put one image in both the training and the validation split
    dupes = {i: n for i, n in lines.items() if len(n) > 1}
    if dupes:
        shown = "; ".join(
            f"{i!r} on lines {', '.join(map(str, n))}" for i, n in list(dupes.items())[:3]
        )
        more = f" (and {len(dupes) - 3} more)" if len(dupes) > 3 else ""
        raise DataError(
            f"{path}: {len(dupes)} Id(s) appear more than once: {shown}{more}; "
            "keep one row per image"
        )
    return rows


def read_label_groups(path: str | Path) -> dict[str, str]:
    """Each Id's group from the CSV's group column (:data:`GROUP_COLUMNS`); {} without one.

    Tiles cut, rotated or flipped from one original image are near-copies: split
    one by one, copies of an image land on both sides and the validation score is
    inflated (LC25000's lung tiles: 20 per original). An Id with an empty group
    is its own group.
    """
    reader, header = _open_table(Path(path))
    id_col = next((header[c] for c in _ID_COLUMNS if c in header), None)
    group_col = next((header[c] for c in GROUP_COLUMNS if c in header), None)
    if id_col is None or group_col is None:
        return {}
    groups: dict[str, str] = {}
    for row in reader:
        image_id = (row.get(id_col) or "").strip()
        group = (row.get(group_col) or "").strip()
        if image_id and group:
            groups[image_id] = group
    return groups
