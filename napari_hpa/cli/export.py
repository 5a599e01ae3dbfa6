"""``napari-hpa export``: write the labels of an annotations database as CSV, JSON or TIFFs.

An export never overwrites the database it reads, an image or another file that is
not an earlier export (``core/labels/targets``): it exits 2 with one line before it
writes anything. Each file is written through a temporary file and a rename, so a
write that fails (a full disk) keeps the previous export and says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.labels.store import AnnotationStore, AnnotationStoreError, open_readonly
from ..core.tasks import BUILTIN_TASKS, Task
from . import UserError
from .outputs import check_output_folder, write_failed

FORMATS = ("csv", "json", "tiff")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand to the CLI's parser."""
    p = sub.add_parser(
        "export",
        help="export corrected labels (Kaggle CSV, JSON, per-cell TIFFs)",
        description="Export the effective labels (your corrections over the model's "
        "predictions) of an annotations database: a Kaggle CSV (Id,Target), a JSON with "
        "image- and cell-level classes, or per-cell label TIFFs (one per image, in a folder).",
    )
    p.add_argument(
        "--db",
        type=Path,
        required=True,
        help="the annotations database (<image folder>/.napari-hpa/annotations.sqlite)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="output format (default: from --out: .csv, .json, else a TIFF folder)",
    )
    p.add_argument(
        "--out", type=Path, required=True, help="output file (csv, json) or folder (tiff)"
    )
    p.add_argument(
        "--task",
        default=None,
        help="task to export (default: the database's only task, else hpa28)",
    )
    p.add_argument(
        "--only-corrected",
        action="store_true",
        help="only images with at least one correction of yours (csv, json)",
    )
    p.set_defaults(run=run)


def _format(args: argparse.Namespace) -> str:
    suffix = args.out.suffix.lower()
    fmt = args.format or (suffix[1:] if suffix in (".csv", ".json") else "tiff")
    if fmt == "tiff" and suffix in (".tif", ".tiff"):
        raise UserError(
            f"{args.out}: tiff export writes one TIFF per image into a folder; "
            "give a folder for --out"
        )
    return fmt


def _task_name(store: AnnotationStore, wanted: str | None) -> str:
    tasks = store.tasks()
    if wanted:
        if tasks and wanted not in tasks:
            known = ", ".join(tasks)
            raise UserError(f"{store.path}: no labels for task {wanted!r} (tasks: {known})")
        return wanted
    if len(tasks) == 1:
        return tasks[0]
    if "hpa28" in tasks or not tasks:
        return "hpa28"
    known = ", ".join(tasks)
    raise UserError(f"{store.path} holds several tasks ({known}); choose one with --task")


def task_classes(name: str) -> Task | None:
    """Return task ``name``: a built-in task, else the task of a model of that name."""
    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name]
    from ..core.model.registry import list_models

    for entry in reversed(list_models()):
        if entry.spec.task.name == name:
            return entry.spec.task
    return None


def run(args: argparse.Namespace) -> int:
    """Run ``napari-hpa export``; return the exit code."""
    from ..core.labels import export as exporting

    fmt = _format(args)
    if not args.db.is_file():
        raise UserError(f"{args.db}: no such annotations database")
    if fmt == "tiff":
        check_output_folder(args.out)
    try:  # read-only: works on a colleague's share and beside a writing napari
        store = open_readonly(args.db)
    except AnnotationStoreError as exc:
        raise UserError(str(exc)) from None
    with store:
        task = _task_name(store, args.task)
        classes = task_classes(task)
        try:
            if fmt == "csv":
                n = exporting.export_kaggle_csv(store, task, args.out, args.only_corrected)
                what = f"{n} image(s)"
            elif fmt == "json":
                n = exporting.export_json(store, task, classes, args.out, args.only_corrected)
                what = f"{n} image(s)"
            else:
                files = exporting.export_cell_tiff(store, task, args.out, classes)
                what = f"{len(files)} cell label TIFF(s) and {exporting.CELL_CSV}"
        except (exporting.ExportError, AnnotationStoreError) as exc:
            raise UserError(str(exc)) from None
        except OSError as exc:
            raise write_failed(args.out, exc) from None
    print(f"wrote {what} ({task}) to {args.out}")
    return 0
