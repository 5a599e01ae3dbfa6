"""Retrain a model on the user's corrected labels, in the background (no Qt).

What one click of **Retrain** does (:func:`start_retrain`):

1. copy the annotation database with SQLite's online backup API into the job
   folder (``snapshot.sqlite``), so corrections made during the run go to the
   next run and never race the trainer;
2. hold out a seeded, class-stratified fraction of the corrected images
   (``holdout.json``) that the trainer never sees, not even for early stopping
   or threshold tuning, and write the training copy without them (``train.sqlite``);
3. start ``python -m napari_hpa train --db train.sqlite --base PARENT ...
   --progress jsonl`` as a :class:`~napari_hpa.jobs.runner.Job`. The trainer
   writes the new version (``parent`` set) into the user model folder itself.

When it is done, :func:`start_compare` scores the parent and the new version on
the held-out images in another background process
(``python -m napari_hpa.jobs.compare``) and :func:`read_comparison` gives the
table: macro F1, per-class F1, what improved and what got worse.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.labels.schema import connect_readonly
from ..core.labels.store import AnnotationStore, open_readonly
from ..core.model import registry
from ..core.tasks import Task
from ..core.train.data import split_indices
from .compare import COMPARE_FILE, Comparison, worse_because
from .runner import Job, JobError, JobManager, python_command

SNAPSHOT_FILE = "snapshot.sqlite"
TRAIN_DB_FILE = "train.sqlite"
HOLDOUT_FILE = "holdout.json"
#: Fewer corrected images than this in a class gets a warning.
MIN_IMAGES_PER_CLASS = 3
#: Fewer corrected images than this in all cannot be retrained on.
MIN_IMAGES_TOTAL = 4


@dataclass(frozen=True)
class Preset:
    """Training settings behind one choice of the Retrain widget."""

    key: str
    label: str
    epochs: int
    freeze_epochs: int
    patience: int
    lr: float
    batch_size: int = 16
    max_size: int | None = None
    max_minutes: float | None = None
    description: str = ""
    #: Keep the parent's batch-norm statistics: a few corrected images from another
    #: microscope, 16 per batch, otherwise replace them with noisy batch statistics when
    #: the backbone is unfrozen (bundled EfficientNet on generated fields: training loss
    #: 1.2 -> 4.9 at the unfreeze; held-out macro F1 0.299 -> 0.324 with this on;
    #: docs/benchmarks.md).
    freeze_bn: bool = True

    def train_args(self, parent_size: int) -> list[str]:
        """Extra ``napari-hpa train`` flags of this preset."""
        args = [
            "--epochs", str(self.epochs),
            "--freeze-epochs", str(self.freeze_epochs),
            "--patience", str(self.patience),
            "--lr", str(self.lr),
            "--batch-size", str(self.batch_size),
        ]  # fmt: skip
        if self.max_size and parent_size > self.max_size:
            args += ["--size", str(self.max_size)]
        if self.max_minutes:
            args += ["--max-minutes", str(self.max_minutes)]
        if self.freeze_bn:
            args.append("--freeze-bn")
        return args


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        "quick",
        "Quick (minutes on a CPU)",
        epochs=6,
        freeze_epochs=2,
        patience=0,
        lr=3e-3,
        max_size=128,
        max_minutes=10.0,
        description="The head alone for 2 epochs, then the whole network for 4 at a lower "
        "learning rate, on images of at most 128 px; stops after 10 minutes at the latest.",
    ),
    "full": Preset(
        "full",
        "Full (best result, slower)",
        epochs=25,
        freeze_epochs=1,
        patience=6,
        lr=3e-3,
        description="The head for 1 epoch, then the whole network for up to 24 epochs at the "
        "parent's input size, stopping early when validation F1 stops improving.",
    ),
}


# ------------------------------------------------------------------ counts
@dataclass(frozen=True)
class ClassCount:
    """Corrected images and cells of one class."""

    index: int
    name: str
    images: int
    cells: int

    @property
    def too_few(self) -> bool:
        """True when the class has corrections, but too few to be learned well."""
        return 0 < self.images < MIN_IMAGES_PER_CLASS


@dataclass
class DataSummary:
    """What the Retrain widget shows about a database before training."""

    db: Path
    task: str
    n_images: int
    n_cells: int
    counts: list[ClassCount] = field(default_factory=list)
    error: str | None = None
    #: Tasks that have corrections in this database (any task, not only ``task``).
    corrected_tasks: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """Why training would fail or learn some classes poorly, in the widget's words."""
        out = []
        if self.error:
            return [self.error]
        others = [t for t in self.corrected_tasks if t != self.task]
        if self.n_images == 0 and others:
            out.append(
                f"no corrections for task {self.task!r} in this database; it has "
                f"corrections for {', '.join(others)}: pick a model of that task"
            )
        elif self.n_images < MIN_IMAGES_TOTAL:
            out.append(
                f"only {self.n_images} corrected image(s); retraining needs at least "
                f"{MIN_IMAGES_TOTAL} (some are held out to compare the models)"
            )
        few = [c for c in self.counts if c.too_few]
        if few:
            names = ", ".join(f"{c.name} ({c.images})" for c in few)
            out.append(
                f"{len(few)} class(es) have fewer than {MIN_IMAGES_PER_CLASS} corrected images "
                f"and will be learned poorly: {names}"
            )
        return out

    @property
    def can_train(self) -> bool:
        """True when the database has enough corrected images to retrain."""
        return self.error is None and self.n_images >= MIN_IMAGES_TOTAL


def summarize(db: str | Path, task: Task) -> DataSummary:
    """Corrected images and cells per class of ``task`` in the database ``db``."""
    db = Path(db)
    if not db.is_file():
        return DataSummary(db, task.name, 0, 0, error=f"{db}: no annotation database yet")
    try:
        with open_readonly(db) as store:  # a colleague's read-only share will do
            per_class = store.class_counts(task.name)
            n_images = len(store.corrected_images(task.name))
            n_cells = len(store.corrected_cells(task.name))
            corrected_tasks = [t for t in store.tasks() if store.class_counts(t)]
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, not raised
        return DataSummary(db, task.name, 0, 0, error=f"{db}: cannot read ({exc})")
    counts = [
        ClassCount(k, task.classes[k] if 0 <= k < task.num_classes else str(k), n_img, n_cell)
        for k, (n_img, n_cell) in sorted(per_class.items())
    ]
    return DataSummary(db, task.name, n_images, n_cells, counts, None, corrected_tasks)


# ------------------------------------------------------------------ snapshot and split
def snapshot_db(src: str | Path, dest: str | Path) -> Path:
    """Copy a live SQLite database with the online backup API (consistent even mid-write).

    ``src`` is only read (:func:`~napari_hpa.core.labels.schema.connect_readonly`), so it
    may lie in a read-only folder.
    """
    src, dest = Path(src), Path(dest)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such database")
    dest.parent.mkdir(parents=True, exist_ok=True)
    source = connect_readonly(src, 10.0)
    target = sqlite3.connect(dest)
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode = DELETE")
    finally:
        target.close()
        source.close()
    return dest


def holdout_split(
    items: list[tuple[str, set[int]]],
    num_classes: int,
    fraction: float,
    seed: int,
    multilabel: bool = True,
) -> tuple[list[int], list[int]]:
    """Split corrected images into (train, held out) indices, stratified by class, seeded."""
    if fraction <= 0 or len(items) < 2:
        return list(range(len(items))), []
    y = np.zeros((len(items), num_classes), bool)
    for i, (_src, labels) in enumerate(items):
        y[i, [c for c in labels if 0 <= c < num_classes]] = True
    tr, ho = split_indices(y, fraction, seed, multilabel)
    return sorted(int(i) for i in tr), sorted(int(i) for i in ho)


# ------------------------------------------------------------------ requests
@dataclass
class RetrainRequest:
    """What to retrain, on what, how.

    Parameters
    ----------
    base
        The parent model: ``name``, ``name@version`` or a folder.
    db
        The annotation database with the corrections.
    preset
        A key of :data:`PRESETS`.
    holdout_fraction
        Share of the corrected images kept out of training, to compare the models on.
    seed
        Seed of the held-out split and of training.
    name
        Name of the new model (default: the parent's name, so it becomes its next version).
    task
        Task name under which the corrections are stored (default: the parent's task).
    device
        ``auto``, ``cpu``, ``cuda`` or ``mps``.
    """

    base: str
    db: Path
    preset: str = "quick"
    holdout_fraction: float = 0.2
    seed: int = 0
    name: str | None = None
    task: str | None = None
    device: str = "auto"
    val_fraction: float = 0.2
    extra_args: list[str] = field(default_factory=list)


def start_retrain(request: RetrainRequest, manager: JobManager | None = None) -> Job:
    """Snapshot the database, split off the held-out images and start the trainer.

    Returns the running job; raises :class:`JobError` (or ``JobLockedError``
    when this model is already being retrained) with a message for the user.
    """
    manager = manager or JobManager()
    if request.preset not in PRESETS:
        raise JobError(f"unknown preset {request.preset!r} (known: {', '.join(PRESETS)})")
    try:
        parent = registry.resolve_model(request.base)
    except (LookupError, ValueError) as exc:  # CheckpointError: a refused model.json
        raise JobError(str(exc.args[0]) if exc.args else str(exc)) from None
    name = request.name or parent.name
    task = parent.spec.task
    task_key = request.task or task.name
    db = Path(request.db).expanduser()
    if not db.is_file():
        raise JobError(f"{db}: no annotation database; correct some images first")
    preset = PRESETS[request.preset]
    job = manager.create(
        name,
        kind="train",
        meta={
            "parent": parent.id,
            "parent_path": str(parent.path),
            "db": str(db),
            "task": task_key,
            "preset": preset.key,
            "holdout_fraction": request.holdout_fraction,
            "seed": request.seed,
            "name": name,
            "models_dir": str(registry.user_models_dir()),
        },
    )
    try:
        command = _prepare(job, request, parent, task, task_key, preset, name)
    except Exception as exc:
        job.set_state("failed", f"could not prepare the training data: {exc}")
        raise JobError(job.record.error or str(exc)) from None
    return job.start(command)


def _prepare(
    job: Job,
    request: RetrainRequest,
    parent: registry.ModelEntry,
    task: Task,
    task_key: str,
    preset: Preset,
    name: str,
) -> list[str]:
    snapshot = snapshot_db(request.db, job.folder / SNAPSHOT_FILE)
    with open_readonly(snapshot) as store:
        corrected = [(src, set(labels)) for src, _id, labels in store.corrected_images(task_key)]
    if len(corrected) < MIN_IMAGES_TOTAL:
        raise JobError(
            f"only {len(corrected)} corrected image(s) for task {task_key!r}; "
            f"need at least {MIN_IMAGES_TOTAL}"
        )
    train_idx, hold_idx = holdout_split(
        corrected, task.num_classes, request.holdout_fraction, request.seed, task.multilabel
    )
    train_db = snapshot_db(snapshot, job.folder / TRAIN_DB_FILE)
    with AnnotationStore(train_db) as store:
        for i in hold_idx:
            store.remove_image(corrected[i][0])
    holdout = {
        "task": task_key,
        "classes": list(task.classes),
        "images": [
            {"source": corrected[i][0], "targets": sorted(corrected[i][1])} for i in hold_idx
        ],
        "n_train_images": len(train_idx),
    }
    (job.folder / HOLDOUT_FILE).write_text(json.dumps(holdout, indent=2), encoding="utf-8")
    job.record.meta.update(n_train_images=len(train_idx), n_holdout_images=len(hold_idx))
    command = python_command(
        "train",
        "--db",
        str(train_db),
        "--base",
        str(parent.path),
        "--name",
        name,
        "--val-fraction",
        str(request.val_fraction),
        "--seed",
        str(request.seed),
        "--device",
        request.device,
        "--progress",
        "jsonl",
        "--description",
        f"{parent.id} retrained on {len(train_idx)} corrected images ({preset.key} preset)",
        *preset.train_args(parent.spec.input.size),
        *request.extra_args,
    )
    job.record.command = command
    job.save()
    return command


# ------------------------------------------------------------------ comparison
def result_entry(job: Job) -> registry.ModelEntry | None:
    """Return the model version a finished training job wrote (None if none)."""
    for ref in (job.record.result_path, job.record.result_model):
        if ref:
            try:
                return registry.resolve_model(ref)
            except (LookupError, ValueError):
                continue
    return None


def start_compare(train_job: Job, manager: JobManager | None = None, device: str = "auto") -> Job:
    """Score the parent and the new version on the held-out images (a background job)."""
    manager = manager or train_job.manager or JobManager()
    child = result_entry(train_job)
    if train_job.state != "done" or child is None:
        raise JobError(f"job {train_job.id} has no new model to compare")
    holdout = train_job.folder / HOLDOUT_FILE
    if not holdout.is_file():
        raise JobError(f"job {train_job.id} kept no held-out images")
    parent = train_job.record.meta.get("parent_path") or train_job.record.meta.get("parent")
    out = train_job.folder / COMPARE_FILE
    command = [
        *python_command()[:2],
        "napari_hpa.jobs.compare",
        "--parent",
        str(parent),
        "--child",
        str(child.path),
        "--holdout",
        str(holdout),
        "--out",
        str(out),
        "--device",
        device,
    ]
    return manager.start(
        command,
        f"{train_job.record.model_name}@compare",
        kind="compare",
        meta={
            "train_job": train_job.id,
            "parent": train_job.record.meta.get("parent"),
            "child": child.id,
            "out": str(out),
        },
    )


def comparison_job(train_job: Job, manager: JobManager | None = None) -> Job | None:
    """Return the newest comparison job started for ``train_job`` (None if none was).

    A comparison outlives napari like a training does: after a restart this finds
    the one that is still running, or that ended while napari was closed.
    """
    manager = manager or train_job.manager or JobManager()
    jobs = [
        j
        for j in manager.list_jobs()
        if j.record.kind == "compare" and j.record.meta.get("train_job") == train_job.id
    ]
    return jobs[-1] if jobs else None


def read_comparison(train_job: Job) -> Comparison | None:
    """Read the comparison written for a training job, or None if not (yet) there."""
    path = train_job.folder / COMPARE_FILE
    if not path.is_file():
        return None
    try:
        comp = Comparison.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if not comp.reasons:
        comp.reasons = worse_because(comp, _trained_on(train_job), MIN_IMAGES_PER_CLASS)
    return comp


def _trained_on(train_job: Job) -> dict[str, int]:
    """Corrected training images per class name, from the job's training snapshot."""
    db = train_job.folder / TRAIN_DB_FILE
    task = str(train_job.record.meta.get("task", ""))
    if not db.is_file() or not task:
        return {}
    try:
        with open_readonly(db) as store:
            counts = store.class_counts(task)
        holdout = json.loads((train_job.folder / HOLDOUT_FILE).read_text(encoding="utf-8"))
        classes = list(holdout.get("classes", []))
    except Exception:  # noqa: BLE001 - a reason is a nicety: never fail the result on it
        return {}
    return {
        classes[k] if 0 <= k < len(classes) else str(k): n_img
        for k, (n_img, _cells) in counts.items()
    }


def describe(job: Job) -> dict[str, Any]:
    """Return a JSON-able summary of a job for logs and tests."""
    return {**asdict(job.record), "progress": asdict(job.progress)}
