"""Export an :class:`~napari_hpa.core.labels.store.AnnotationStore`: Kaggle CSV, JSON, cell TIFFs.

All exports write the *effective* labels (the user's value where set, else the model's).
An image without image-level rows gets the union of its cells' labels as its image label
(HPA convention: an image shows every location any of its cells shows). Images are named
by their bare id (:func:`export_id`), as Kaggle's HPA ``Id`` column names them.

Every output is checked before anything is written (:mod:`.targets`: never the
database, an image or another binary file, never the images' folder for the TIFFs)
and written to a temporary file beside it, then renamed over it (``core/atomic``): a
full disk or a kill leaves the previous export, never a truncated one. The cell TIFFs
and their table are one set, moved in together (:mod:`.staging`) or not at all.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_open, write_text
from ..image.sources import split_hpa_name
from .staging import staged_set
from .store import AnnotationStore
from .targets import ExportError, check_text_target, check_tiff_folder, stack_path

__all__ = [
    "ExportError",
    "ImageSummary",
    "export_id",
    "image_summaries",
    "export_kaggle_csv",
    "export_json",
    "export_cell_tiff",
]

CELL_CSV = "cell_labels.csv"
#: The columns of :data:`CELL_CSV`.
CELL_COLUMNS = (
    "image_id",
    "source",
    "file",
    "cell",
    "area",
    "centroid_y",
    "centroid_x",
    "label_ids",
    "labels",
    "origin",
)
#: An image file's extension, which a Kaggle ``Id`` leaves out (``x.ome.tif`` as one).
_EXTENSION = re.compile(r"(\.ome)?\.(png|jpe?g|tiff?)$", re.I)


@dataclass
class ImageSummary:
    """Effective labels of one image for one task.

    ``origin`` is ``"user"`` (>= 1 user row at that level), ``"model"`` (model rows only) or
    None (no rows; for the image level, ``labels`` is then the union of the cells' labels).
    ``cells`` maps every known cell (mask or labels) -> (labels, origin). ``export_name`` is
    the name the exports give the image (:func:`export_id`, unique among the images).
    """

    source: str
    image_id: str
    labels: set[int] = field(default_factory=set)
    origin: str | None = None
    model: str | None = None
    scores: dict[int, float] = field(default_factory=dict)
    cells: dict[int, tuple[set[int], str | None]] = field(default_factory=dict)
    export_name: str | None = None

    @property
    def corrected(self) -> bool:
        """True when the user labelled the image or any of its cells."""
        return self.origin == "user" or any(o == "user" for _l, o in self.cells.values())


def export_id(image_id: str, source: str = "") -> str:
    """Return the id an export names an image by: Kaggle's, without extension or colour.

    ``0-2-a.jpg`` -> ``0-2-a``, ``x.ome.tif`` -> ``x``; an HPA channel file (the id or
    the source, e.g. ``<folder>/abc_green.png`` opened by napari's own reader) -> its
    set's id ``abc``. The training and evaluation readers match such an id to the image
    file or the HPA set, as they match an id with its extension.
    """
    hpa = split_hpa_name(image_id) or (
        split_hpa_name(source) if source and not source.startswith("layer:") else None
    )
    if hpa is not None:
        return hpa[0]
    return _EXTENSION.sub("", image_id) or image_id


def _unique_ids(summaries: list[ImageSummary]) -> None:
    """Name each image by :func:`export_id`, unless another image would share the name.

    Two images that only differ by extension (``a.png``, ``a.tif``) keep their stored
    ids, and two of the same id in different folders their sources: a CSV with a
    repeated ``Id`` is refused by the readers, rightly, since the rows cannot be told apart.
    """
    namings = (lambda s: export_id(s.image_id, s.source), lambda s: s.image_id)
    taken: set[str] = set()
    pending = summaries
    for naming in namings:
        counts = Counter(naming(s).lower() for s in pending)
        rest = []
        for s in pending:
            name = naming(s)
            if counts[name.lower()] == 1 and name.lower() not in taken:
                s.export_name = name
                taken.add(name.lower())
            else:
                rest.append(s)
        pending = rest
    for s in pending:
        s.export_name = s.source  # unique: the store's key


def image_summaries(
    store: AnnotationStore, task: str, only_corrected: bool = False
) -> list[ImageSummary]:
    """One :class:`ImageSummary` per image of the store, sorted by source."""
    table = store.effective_table(task)
    out = {src: ImageSummary(src, iid) for src, iid in store.image_ids().items()}
    for rec in store.images():
        if rec.has_mask:
            out[rec.source].cells = {c: (set(), None) for c in store.cells(rec.source)}
    for (src, cell), (labels, origin) in table.items():
        if cell == 0:
            out[src].labels, out[src].origin = set(labels), origin
        else:
            out[src].cells[cell] = (labels, origin)
    for s in out.values():
        s.cells = dict(sorted(s.cells.items()))
        if s.origin is None:
            s.labels = set().union(*(lab for lab, _o in s.cells.values()))
        if (s.source, 0) in table:
            s.model = store.model_id(s.source, task)
            s.scores = store.model_scores(s.source, task)
    _unique_ids(list(out.values()))  # over every image: an id does not depend on the filter
    return [s for s in out.values() if s.corrected or not only_corrected]


def _names(class_names: Any) -> list[str]:
    """Class names from a Task (``.classes``), a sequence, or None."""
    if class_names is None:
        return []
    return [str(c) for c in getattr(class_names, "classes", class_names)]


def _name(names: Sequence[str], i: int) -> str:
    return names[i] if 0 <= i < len(names) else str(i)


def export_kaggle_csv(
    store: AnnotationStore, task: str, out: str | Path, classes_only_corrected: bool = False
) -> int:
    """Write ``Id,Target`` rows (Target = space-separated sorted class ids, empty if none).

    Parameters
    ----------
    classes_only_corrected
        Only write images with >= 1 user correction (image or cell level) for the task.

    Returns
    -------
    int
        Number of rows written.

    Raises
    ------
    ExportError
        When ``out`` is the database, an image or another file an export must not replace.
    """
    out = Path(out)
    check_text_target(out, store.path)
    rows = image_summaries(store, task, only_corrected=classes_only_corrected)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Id", "Target"])
        for s in rows:
            writer.writerow([s.export_name, " ".join(str(c) for c in sorted(s.labels))])
    return len(rows)


def export_json(
    store: AnnotationStore,
    task: str,
    class_names: Any,
    out: str | Path,
    only_corrected: bool = False,
) -> int:
    """Write a JSON list, one object per image.

    ``{"image", "source", "labels": [names], "label_ids", "origin", "model", "scores":
    {name: p}, "cells": [{"cell", "labels", "label_ids", "origin"}]}``; ``class_names`` is a
    Task or a sequence of names (ids without a name are written as their number).

    Returns
    -------
    int
        Number of images written.

    Raises
    ------
    ExportError
        When ``out`` is the database, an image or another file an export must not replace.
    """
    out = Path(out)
    check_text_target(out, store.path)
    names = _names(class_names)
    items = []
    for s in image_summaries(store, task, only_corrected=only_corrected):
        ids = sorted(s.labels)
        items.append(
            {
                "image": s.export_name,
                "source": s.source,
                "labels": [_name(names, i) for i in ids],
                "label_ids": ids,
                "origin": s.origin,
                "model": s.model,
                "scores": {_name(names, c): round(p, 6) for c, p in sorted(s.scores.items())},
                "cells": [
                    {
                        "cell": c,
                        "labels": [_name(names, i) for i in sorted(lab)],
                        "label_ids": sorted(lab),
                        "origin": o,
                    }
                    for c, (lab, o) in s.cells.items()
                ],
            }
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(items, indent=1, ensure_ascii=False) + "\n")
    return len(items)


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "image"


def export_cell_tiff(
    store: AnnotationStore,
    task: str,
    out_dir: str | Path,
    class_names: Any = None,
    all_classes: bool = True,
) -> list[Path]:
    """Write one multi-page TIFF per image that has a cell mask, and ``cell_labels.csv``.

    Page 0 holds the cell ids (0 = background); each further page belongs to one class and
    holds the ids of the cells whose effective labels include it (0 elsewhere). With
    ``all_classes`` page ``k + 1`` is class ``k`` for every class of ``class_names`` (or up to
    the highest class id used), the same layout in every file; otherwise only the classes
    present in that image get a page. Pages are named (ImageJ slice labels: ``cells``, then
    class names), uint16 when the ids fit (else uint32), zlib compressed: Fiji opens a file
    as a stack, ``tifffile.imread`` as (pages, H, W). ``cell_labels.csv`` has one row per
    cell: image_id, source, file, cell, area, centroid_y, centroid_x, label_ids (space
    separated), labels (``;`` separated), origin.

    Each TIFF records its image's source, so a later export into the same folder
    replaces the image's own stack and nothing else (another file of that name keeps
    it: the stack takes ``<id>_2.tif``).

    The set is all or nothing (:func:`.staging.staged_set`): every file is written
    into a temporary folder inside ``out_dir`` first and moved in, ``cell_labels.csv``
    last, only when all were written; a failure (a full disk) leaves the previous
    export as it was, every stack and its table.

    Returns
    -------
    list of Path
        The TIFF files written (images without a mask are skipped).

    Raises
    ------
    ExportError
        When ``out_dir`` holds the database's images, or its ``cell_labels.csv`` is not
        one an export wrote.
    """
    out_dir = Path(out_dir)
    check_tiff_folder(out_dir, store.image_ids())
    table = out_dir / CELL_CSV
    _check_cell_table(table, store.path)
    names = _names(class_names)
    summaries = [s for s in image_summaries(store, task) if s.cells]
    used = {c for s in summaries for lab, _o in s.cells.values() for c in lab}
    n_classes = max(len(names), max(used, default=-1) + 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    taken: set[str] = {Path(CELL_CSV).stem.lower()}
    with (
        staged_set(out_dir, last=(CELL_CSV,)) as stage,
        open(stage / CELL_CSV, "w", newline="", encoding="utf-8") as fh,
    ):
        writer = csv.writer(fh)
        writer.writerow(CELL_COLUMNS)
        for s in summaries:
            mask = store.cell_mask(s.source)
            if mask is None:
                continue
            path = stack_path(out_dir, _safe(str(s.export_name)), s.source, taken)
            present = set().union(*(lab for lab, _o in s.cells.values()))
            classes = [c for c in range(n_classes) if all_classes or c in present]
            names_of = [_name(names, c) for c in classes]
            _write_stack(stage / path.name, mask, s.cells, classes, names_of, s.source)
            written.append(path)
            info = store.cell_info(s.source)
            for cell, (lab, origin) in s.cells.items():
                p = info.get(cell, {"area": 0, "centroid": (float("nan"), float("nan"))})
                y, x = p["centroid"]
                ids = sorted(lab)
                label_ids = " ".join(map(str, ids))
                labels = ";".join(_name(names, c) for c in ids)
                row = [s.export_name, s.source, path.name, cell, p["area"]]
                row += [f"{y:.1f}", f"{x:.1f}"]
                writer.writerow([*row, label_ids, labels, origin or ""])
    return written


def _check_cell_table(table: Path, database: Path) -> None:
    """Refuse to replace a ``cell_labels.csv`` that an export did not write."""
    check_text_target(table, database)
    if not table.exists():
        return
    with open(table, newline="", encoding="utf-8", errors="replace") as fh:
        header = next(csv.reader(fh), [])
    if header != list(CELL_COLUMNS):
        raise ExportError(
            f"{table}: is not the cell table of an earlier export (its columns differ); "
            "choose another folder for the cell TIFFs"
        )


def _write_stack(
    path: Path,
    mask: np.ndarray,
    cells: dict[int, tuple[set[int], str | None]],
    classes: list[int],
    names: list[str],
    source: str,
) -> None:
    """Stream page 0 (cell ids) and one page per class into one compressed TIFF.

    The metadata record ``source`` (absolute), which :func:`.targets.stack_owner` reads.
    """
    import tifffile

    mask = np.maximum(mask, 0)
    dtype = np.uint16 if mask.max(initial=0) < 2**16 else np.uint32
    mask = mask.astype(dtype)
    n = int(mask.max(initial=0)) + 1

    def pages() -> Iterator[np.ndarray]:
        yield mask
        for k in classes:
            ids = [c for c, (lab, _o) in cells.items() if k in lab and 0 < c < n]
            if not ids:
                yield np.zeros_like(mask)
                continue
            has = np.zeros(n, dtype=bool)
            has[ids] = True
            yield np.where(has[mask], mask, 0).astype(dtype)

    tifffile.imwrite(
        path,
        pages(),
        shape=(len(classes) + 1, *mask.shape),
        dtype=dtype,
        photometric="minisblack",
        compression="zlib",
        compressionargs={"level": 1},  # ~3x faster than the default; label pages stay small
        metadata={"axes": "ZYX", "Labels": ["cells", *names], "source": os.path.abspath(source)},
        imagej=dtype == np.uint16,
    )
