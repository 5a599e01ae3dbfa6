"""Training data: where labelled images come from, and how they are split.

Three sources give the same :class:`TrainData` (a task plus a list of
``(source, targets)`` samples), so training never cares where labels came from:

* a folder of images plus a Kaggle-format CSV (``Id,Target``; targets are
  space-separated class ids or names). An Id is an HPA id (``<folder>/<Id>``
  channel set), a file stem, or a path relative to the folder;
* a folder per class (single-label tasks);
* the annotation database's corrected labels (:mod:`napari_hpa.core.labels.store`).

The image pipeline (cache, crops, augmentation) is in :mod:`napari_hpa.core.train.augment`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..image.io import read_image
from ..image.sources import IMAGE_EXTENSIONS, find_images, split_hpa_name
from ..model.names import printable
from ..tasks import BUILTIN_TASKS, HPA_CHANNELS, Task
from .cells import cell_key, pick_cells, split_cell_key
from .label_csv import DataError, build_task, read_label_csv, read_label_groups

#: Re-exported: where training data are read, their errors and label parsing are used too.
__all__ = [
    "DataError",
    "Sample",
    "TrainData",
    "build_task",
    "load_annotations",
    "load_csv",
    "load_folder_per_class",
    "read_label_csv",
    "split",
    "split_groups",
]


@dataclass(frozen=True)
class Sample:
    """One labelled image: its source (as :func:`io.read_image` takes it) and class indices."""

    source: str
    targets: tuple[int, ...]
    #: Images of one group (one original image, patient or set) stay on one side of a split.
    group: str | None = None


@dataclass
class TrainData:
    """A task and its labelled images.

    ``val_samples``, when given, is used as the validation set instead of a
    random split (e.g. a curated held-out folder). ``warnings`` lists rows that
    were skipped, for the CLI to show.
    """

    task: Task
    samples: list[Sample]
    val_samples: list[Sample] | None = None
    origin: str = ""
    warnings: list[str] = field(default_factory=list)
    #: The annotations database whose cell masks cell samples are cut with
    #: (:mod:`.cells`); None when the samples are whole images only.
    mask_db: str | None = None

    def targets_matrix(self, samples: Sequence[Sample] | None = None) -> np.ndarray:
        """Multi-hot (N, K) float32 targets."""
        return targets_matrix(self.samples if samples is None else samples, self.task.num_classes)


def targets_matrix(samples: Sequence[Sample], num_classes: int) -> np.ndarray:
    """Return multi-hot (N, K) float32 targets of ``samples``."""
    y = np.zeros((len(samples), num_classes), np.float32)
    for i, s in enumerate(samples):
        y[i, list(s.targets)] = 1.0
    return y


# ----------------------------------------------------------------------------- tasks
def channels_for(source: str) -> tuple[str, ...]:
    """Return the task channels natural for an image: HPA's four, RGB, or gray."""
    image = read_image(source)
    names = tuple(n.lower() for n in image.channel_names)
    if names == tuple(HPA_CHANNELS):
        return tuple(HPA_CHANNELS)
    if len(names) == 1:
        return ("gray",)
    return ("red", "green", "blue")


def _needs_channels(task: Task | str | Sequence[str] | None) -> bool:
    """Tell whether the task is built from the labels, taking its channels from the images."""
    return not isinstance(task, Task) and not (isinstance(task, str) and task in BUILTIN_TASKS)


# ----------------------------------------------------------------------------- sources
def _index_images(data_dir: Path) -> dict[str, list[str]]:
    """Map every name an Id may use (relative path with/without extension, stem) to sources."""
    index: dict[str, list[str]] = {}
    for source in find_images(data_dir, recursive=True):
        p = Path(source)
        rel = p.relative_to(data_dir).as_posix() if p.is_relative_to(data_dir) else p.as_posix()
        keys = {rel}
        stem_rel = re.sub(r"(\.ome)?\.[^./]+$", "", rel) if p.is_file() else rel
        keys |= {stem_rel, Path(stem_rel).name}
        if p.is_file() and split_hpa_name(p) is None:
            keys.add(p.name)
        for key in keys:
            index.setdefault(key.lower(), []).append(source)
    return index


def load_csv(
    data_dir: str | Path,
    labels: str | Path,
    task: Task | str | Sequence[str] | None = None,
    *,
    label_classes: Sequence[str] | None = None,
    kind: str = "auto",
    channels: Sequence[str] | None = None,
) -> TrainData:
    """Images in ``data_dir`` labelled by a Kaggle CSV; rows without an image are skipped."""
    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such folder")
    rows = read_label_csv(labels)
    index = _index_images(data_dir)
    warnings: list[str] = []
    found: list[tuple[str, list[str]]] = []
    found_ids: list[str] = []
    missing = []
    for image_id, tokens in rows:
        key = image_id.lower().strip("/")
        hits = index.get(key) or index.get(re.sub(r"\.(png|jpe?g|tiff?)$", "", key), [])
        if not hits:
            missing.append(image_id)
        elif len(set(hits)) > 1:
            warnings.append(f"Id {image_id!r} matches several images; give its relative path")
        else:
            found.append((hits[0], tokens))
            found_ids.append(image_id)
    if missing:
        warnings.append(
            f"{len(missing)} of {len(rows)} labelled Ids have no image in {data_dir} "
            f"(e.g. {', '.join(missing[:3])})"
        )
    if not found:
        raise DataError(f"none of the {len(rows)} Ids in {labels} matches an image in {data_dir}")
    empty = sum(1 for _, tokens in found if not tokens)
    if empty == len(found):
        raise DataError(
            f"{labels}: no row names a class (every Target of the {len(found)} matched "
            "images is empty); fill the Target column with class ids or names"
        )
    if channels is None and _needs_channels(task):
        channels = channels_for(found[0][0])
    try:
        new_task, targets = build_task(
            [t for _, t in found],
            task,
            label_classes=label_classes,
            kind=kind,
            channels=channels,
            row_ids=found_ids,
        )
    except DataError as exc:
        raise DataError(f"{labels}: {exc}") from None
    if empty and new_task.multilabel:  # an empty Target is what the Kaggle export writes for "none"
        warnings.append(
            f"{empty} row(s) of {Path(labels).name} have an empty Target: "
            "trained as 'none of the classes'"
        )
    groups = read_label_groups(labels)
    found_groups = [groups.get(i) for i in found_ids] if groups else None
    samples = _samples(found, targets, new_task, warnings, found_groups)
    return TrainData(
        new_task, samples, origin=f"{data_dir} + {Path(labels).name}", warnings=warnings
    )


def _samples(
    found, targets, task: Task, warnings: list[str], groups: Sequence[str | None] | None = None
) -> list[Sample]:
    groups = groups if groups is not None else [None] * len(found)
    samples = [
        Sample(src, t, g)
        for (src, _), t, g in zip(found, targets, groups, strict=True)
        if t is not None
    ]
    skipped = len(found) - len(samples)
    if skipped:
        warnings.append(f"{skipped} images have no single class of the task and were skipped")
    if not samples:
        raise DataError(f"no image is labelled with a class of task {task.name!r}")
    return samples


def load_folder_per_class(
    data_dir: str | Path,
    task: Task | str | Sequence[str] | None = None,
    channels: Sequence[str] | None = None,
) -> TrainData:
    """Read a single-label data set laid out as ``data_dir/<class name>/<images>``."""
    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such folder")
    class_dirs = sorted(d for d in data_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    found = []
    for d in class_dirs:
        found += [(s, [d.name]) for s in find_images(d, recursive=True)]
    if len(class_dirs) < 2 or not found:
        raise DataError(f"{data_dir}: expected one sub-folder of images per class (at least two)")
    if task is None:
        task = [d.name for d in class_dirs]
    if channels is None and _needs_channels(task):
        channels = channels_for(found[0][0])
    warnings: list[str] = []
    new_task, targets = build_task(
        [t for _, t in found],
        task,
        kind="multiclass",
        channels=channels,
        label_classes=[d.name for d in class_dirs] if not isinstance(task, Task) else None,
    )
    samples = _samples(found, targets, new_task, warnings)
    return TrainData(new_task, samples, origin=f"{data_dir} (folder per class)", warnings=warnings)


def load_annotations(db_path: str | Path, task: Task, cells: bool = True) -> TrainData:
    """Images whose labels a user corrected in the annotation database, for ``task``.

    With ``cells``, each corrected image with a stored cell mask also gives its cells as
    samples (:mod:`.cells`): a cell's own corrected labels, else the image's. The
    database is only read (:func:`~napari_hpa.core.labels.store.open_readonly`): a
    read-only folder will do, and a writer elsewhere is never waited for.
    """
    from ..labels.store import AnnotationStoreError, open_readonly

    db_path = Path(db_path).expanduser()
    if not db_path.is_file():
        raise DataError(f"{db_path}: no such annotation database")
    try:
        with open_readonly(db_path) as store:
            rows = store.corrected_images(task.name)
            own = {(s, c): lab for s, _i, c, lab in store.corrected_cells(task.name)}
            masks = {row[0]: store.cells(row[0]) for row in rows} if cells else {}
    except AnnotationStoreError as exc:
        raise DataError(str(exc)) from None
    samples = []
    for row in rows:  # (source, image_id, effective labels)
        source = str(row[0])
        image_idx = _indices(task, row[-1], db_path, source)
        if task.kind == "multiclass" and len(image_idx) != 1:
            continue
        group = source if masks.get(source) else None
        samples.append(Sample(source, image_idx, group))
        for cell in pick_cells(masks.get(source, [])):
            idx = image_idx
            if (source, cell) in own:
                idx = _indices(task, own[(source, cell)], db_path, source)
            if idx and (task.kind != "multiclass" or len(idx) == 1):
                samples.append(Sample(cell_key(source, cell), idx, source))
    if not samples:
        raise DataError(f"{db_path}: no corrected labels for task {task.name!r}")
    n_cells = sum(split_cell_key(s.source) is not None for s in samples)
    origin = f"{db_path} (corrected labels" + (f", {n_cells} cells)" if n_cells else ")")
    return TrainData(task, samples, origin=origin, mask_db=str(db_path) if n_cells else None)


def _indices(task: Task, labels: Iterable[int], db_path: Path, source: str) -> tuple[int, ...]:
    try:
        return tuple(sorted({task.class_index(int(c)) for c in labels}))
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataError(f"{db_path}: image {printable(source)}: {exc}") from None


# ----------------------------------------------------------------------------- provenance
def _files_of(source: str) -> list[Path]:
    cell = split_cell_key(source)
    p = Path(cell[0] if cell else source)
    if p.is_file():
        return [p]
    return sorted(
        f
        for f in p.parent.glob(f"{p.name}_*")
        if split_hpa_name(f)
        and split_hpa_name(f)[0] == p.name  # type: ignore[index]
        and f.suffix.lower() in IMAGE_EXTENSIONS
    )


def data_fingerprint(samples: Sequence[Sample]) -> str:
    """sha256 over sorted (source, targets, file sizes and mtimes): same data, same hash."""
    h = hashlib.sha256()
    for s in sorted(samples, key=lambda s: (s.source, s.targets)):
        h.update(f"{s.source}\t{' '.join(map(str, s.targets))}".encode())
        for f in _files_of(s.source):
            try:
                st = f.stat()
                h.update(f"\t{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
            except OSError:
                h.update(f"\t{f.name}:missing".encode())
        h.update(b"\n")
    return "sha256:" + h.hexdigest()


# ----------------------------------------------------------------------------- splitting
def split_indices(
    y: np.ndarray, val_fraction: float, seed: int = 0, multilabel: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split that keeps every class's share in both parts.

    Multilabel data use iterative stratification (Sechidis et al. 2011): the
    rarest label is placed first, each of its samples going to the part that
    still lacks most of that label. Single-label data are split per class. A
    class with one sample stays in training; validation gets at least one image.
    """
    y = np.asarray(y).astype(bool)
    n = len(y)
    rng = np.random.default_rng(seed)
    if n < 2 or val_fraction <= 0:
        return np.arange(n), np.arange(0)
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    is_val = np.zeros(n, bool)
    if multilabel:
        want = np.stack([y.sum(0) * (1 - val_fraction), y.sum(0) * val_fraction]).astype(float)
        size_left = np.array([n - n_val, n_val], float)
        left = np.ones(n, bool)
        while left[y.any(1)].any():
            pos = (y & left[:, None]).sum(0)
            label = int(np.argmin(np.where(pos > 0, pos, np.iinfo(np.int64).max)))
            for i in rng.permutation(np.flatnonzero(y[:, label] & left)):
                d = want[:, label]
                part = (
                    int(np.argmax(d))
                    if d[0] != d[1]
                    else int(np.argmax(size_left + rng.random(2) * 1e-3))
                )
                if size_left[part] <= 0:
                    part = 1 - part
                is_val[i] = part == 1
                want[part, y[i]] -= 1
                size_left[part] -= 1
                left[i] = False
        rest = rng.permutation(np.flatnonzero(left))
        take = int(max(0, min(len(rest), size_left[1])))
        is_val[rest[:take]] = True
    else:
        labels = y.argmax(1)
        shares = []
        for c in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == c))
            exact = len(members) * val_fraction
            base = min(int(exact), len(members) - 1)
            is_val[members[:base]] = True
            shares.append((exact - base, c, members, base))
        missing = n_val - int(is_val.sum())
        for _, _c, members, base in sorted(shares, key=lambda t: (-t[0], rng.random())):
            if missing <= 0:
                break
            if len(members) - base >= 2:
                is_val[members[base]] = True
                missing -= 1
    if not is_val.any():
        is_val[rng.integers(n)] = True
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def split_groups(
    y: np.ndarray,
    groups: Sequence[str | None],
    val_fraction: float,
    seed: int = 0,
    multilabel: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`split_indices`, but every group lies wholly on one side.

    The groups are split as :func:`split_indices` splits images, each group standing
    for the union of its images' labels (its primary class for single-label data);
    an image without a group is a group of its own.
    """
    y = np.asarray(y).astype(bool)
    keys = [g if g is not None else f"\0{i}" for i, g in enumerate(groups)]
    names = sorted(set(keys))
    index = {k: n for n, k in enumerate(names)}
    member = np.array([index[k] for k in keys], int)
    yg = np.zeros((len(names), y.shape[1]), bool)
    if multilabel:
        np.logical_or.at(yg, member, y)
    else:  # the group's most frequent class
        counts = np.zeros((len(names), y.shape[1]), int)
        np.add.at(counts, member, y.astype(int))
        yg[np.arange(len(names)), counts.argmax(1)] = True
    _, val_groups = split_indices(yg, val_fraction, seed, multilabel)
    is_val = np.isin(member, val_groups)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def split(data: TrainData, val_fraction: float, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Training and validation samples (the explicit validation set if the data have one).

    Samples with groups (a ``group`` column in the labels) are split by group.
    """
    if data.val_samples is not None:
        return list(data.samples), list(data.val_samples)
    y = data.targets_matrix()
    if any(s.group is not None for s in data.samples):
        groups = [s.group for s in data.samples]
        tr, va = split_groups(y, groups, val_fraction, seed, data.task.multilabel)
    else:
        tr, va = split_indices(y, val_fraction, seed, data.task.multilabel)
    return [data.samples[i] for i in tr], [data.samples[i] for i in va]
