"""Procedural HPA-like 4-channel fields of cells with known labels.

A field is a ``(4, H, W)`` float32 image in [0, 1] in :data:`HPA_CHANNELS` order
(microtubules, protein, nucleus, ER) plus ground truth: image-level HPA28 class
ids, a cell instance mask and a nucleus mask. Cells are wobbly ellipses with a
textured nucleus, a microtubule mesh partly radiating from a centrosome and a
reticular ER densest around the nucleus; the protein channel paints the drawn
classes' patterns. Everything is deterministic given ``seed`` (one numpy
Generator). Lengths scale with the cell size, so 128 px looks like 512 px
downsampled. Typical cost on one core: ~15 ms at 128 px, ~0.2 s at 512 px.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...atomic import atomic_open, atomic_path
from ...tasks import HPA28_CLASSES, HPA_CHANNELS
from .canvas import (
    F32,
    lay_out_cells,
    paint_er,
    paint_microtubules,
    paint_nucleoli,
    paint_nucleus,
    smooth_noise,
    to_peak,
)
from .patterns import PATTERNS, mixing_level

#: HPA28 class ids the generator can paint.
SUPPORTED_CLASSES: tuple[int, ...] = (
    0, 1, 2, 4, 5, 6, 7, 9, 11, 12, 13, 14, 19, 20, 21, 22, 23, 24, 25,
)  # fmt: skip
#: File colour suffix of each channel, in HPA_CHANNELS order.
CHANNEL_COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow")


@dataclass
class SynthField:
    """One synthetic field and its ground truth.

    Attributes
    ----------
    image
        (4, H, W) float32 in [0, 1], channels :data:`HPA_CHANNELS`.
    labels
        Image-level HPA28 class ids, ascending (the union of ``cell_labels``).
    cell_mask, nucleus_mask
        (H, W) int32 instance labels, 0 = background; a nucleus has its cell's id.
    seed
        Seed that reproduces the field with :func:`make_field`.
    cell_labels
        Cell id -> class ids shown by that cell.
    """

    image: np.ndarray
    labels: list[int]
    cell_mask: np.ndarray
    nucleus_mask: np.ndarray
    seed: int
    cell_labels: dict[int, list[int]] = field(default_factory=dict)
    channel_names: tuple[str, ...] = HPA_CHANNELS

    @property
    def label_names(self) -> list[str]:
        """HPA class names of the field's labels."""
        return [HPA28_CLASSES[c] for c in self.labels]


assert tuple(sorted(PATTERNS)) == SUPPORTED_CLASSES


# ----------------------------------------------------------------- public API


def _finish(rng: np.random.Generator, x: np.ndarray, illum: np.ndarray, noise: float,
            gain: tuple[float, float]) -> np.ndarray:  # fmt: skip
    """Gain, uneven illumination, offset, read + shot noise; clip to [0, 1]."""
    y = to_peak(x) * rng.uniform(*gain) * illum + noise * rng.uniform(0.005, 0.04)
    sd = noise * (rng.uniform(0.008, 0.03) + 0.035 * np.sqrt(np.clip(y, 0, None)))
    return np.clip(y + sd * rng.standard_normal(y.shape, dtype=F32), 0.0, 1.0).astype(F32)


def make_field(
    size: int = 256,
    classes: Sequence[int] | None = None,
    n_labels: int | tuple[int, int] = (1, 3),
    n_cells: int | None = None,
    seed: int = 0,
    noise: float = 1.0,
    mixed_cells: bool = False,
) -> SynthField:
    """Generate one square field of cells.

    Parameters
    ----------
    size
        Height and width in px.
    classes
        HPA28 class ids to draw labels from (default :data:`SUPPORTED_CLASSES`).
    n_labels
        Labels per image: an int (``1`` for single-label tasks) or ``(min, max)``.
    n_cells
        Number of cells; default scales with size (3-8 at 256 px). Fewer may fit.
    seed
        Seed of the numpy Generator: same seed, same field.
    noise
        Scale of offset, read and shot noise; 0 gives a clean image.
    mixed_cells
        If true each cell shows a non-empty subset of the image labels (whose
        union is the image label, as in HPA single-cell data); else all share them.
    """
    rng = np.random.default_rng(seed)
    pool = sorted({int(k) for k in (SUPPORTED_CLASSES if classes is None else classes)})
    if not pool or any(k not in PATTERNS for k in pool):
        raise ValueError(f"classes must be a non-empty subset of {SUPPORTED_CLASSES}, got {pool}")
    lo, hi = (n_labels, n_labels) if isinstance(n_labels, int) else n_labels
    if not 1 <= lo <= hi:
        raise ValueError(f"n_labels must be >= 1 and min <= max, got {n_labels!r}")
    k = int(rng.integers(min(lo, len(pool)), min(hi, len(pool)) + 1))
    labels = sorted(int(v) for v in rng.choice(pool, size=k, replace=False))
    c = lay_out_cells(rng, int(size), n_cells, touch=22 in labels)
    cell_labels = {i: list(labels) for i in range(1, c.n + 1)}
    if mixed_cells and c.n > 1:
        for i in cell_labels:
            cell_labels[i] = [v for v in labels if rng.random() < 0.6] or [labels[0]]
        for v in labels:
            if not any(v in ls for ls in cell_labels.values()):
                cell_labels[int(rng.integers(1, c.n + 1))].append(v)
        cell_labels = {i: sorted(ls) for i, ls in cell_labels.items()}
    c.nucleoli = paint_nucleoli(c)
    c.mt, c.er = paint_microtubules(c), paint_er(c)
    blue = paint_nucleus(c)
    protein = np.zeros(c.shape, F32)
    for v in labels:  # per-cell expression level; 0 where the cell lacks the class
        lut = np.array([0.0] + [rng.uniform(0.5, 1.0) * (v in cell_labels[i])
                                for i in range(1, c.n + 1)], F32)  # fmt: skip
        level = rng.uniform(0.5, 1.0)
        pattern = to_peak(PATTERNS[v](c))
        protein += level * mixing_level(pattern, c.cell) * pattern * lut[c.ext]
    illum = 1.0 + 0.12 * smooth_noise(rng, c.shape, size / 5)
    gains = ((0.55, 0.95), (0.35, 1.0), (0.6, 1.0), (0.5, 0.9))
    planes = (c.mt, protein, blue, c.er)
    image = np.stack([_finish(rng, p, illum, noise, g) for p, g in zip(planes, gains, strict=True)])
    nucleus_mask = np.where(c.nuc_px < 0, c.cell, 0).astype(np.int32)
    return SynthField(image, labels, c.cell, nucleus_mask, int(seed), cell_labels)


def field_seed(seed: int, index: int) -> int:
    """Seed of item ``index`` of ``make_dataset(seed=seed)``; independent of ``n``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def make_dataset(
    n: int,
    size: int = 128,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    n_labels: int | tuple[int, int] = (1, 3),
    **kwargs,
) -> Iterator[SynthField]:
    """Yield ``n`` fields, item i made with ``field_seed(seed, i)``.

    Datasets with different seeds share no field; ``kwargs`` go to :func:`make_field`.
    """
    for i in range(int(n)):
        yield make_field(size, classes, n_labels, seed=field_seed(seed, i), **kwargs)


def to_uint8(plane: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8, rounded."""
    return (np.clip(plane, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def sample_files(n: int, fmt: str = "png") -> list[str]:
    """Return the names :func:`write_samples` writes for ``n`` sets: ``labels.csv``, then images."""
    ext = fmt.lower().lstrip(".")
    return ["labels.csv"] + [
        f"synth_{i:04d}_{color}.{ext}" for i in range(n) for color in CHANNEL_COLORS
    ]


def write_samples(
    outdir: str | Path,
    n: int = 4,
    size: int = 512,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    fmt: str = "png",
    n_labels: int | tuple[int, int] = (1, 3),
    overwrite: bool = False,
) -> Path:
    """Write ``n`` fields in HPA file layout plus a Kaggle ``labels.csv``; return ``outdir``.

    Files: ``synth_0000_red.png``, ``_green``, ``_blue``, ``_yellow`` (8-bit
    grayscale; ``fmt`` "png" or "tif"), and ``labels.csv`` with header ``Id,Target``
    (Target: space-separated ascending class ids). Fields are ``make_dataset(n,
    size, seed, classes, n_labels)``.

    Each file is written to a temporary file and renamed (``core/atomic``), and
    ``labels.csv`` last, so a folder with a ``labels.csv`` holds every set it lists.
    Unless ``overwrite``, nothing is drawn when any of the files is already there
    (:class:`FileExistsError` naming the folder), and a failure part way (a full
    disk) removes the files this call wrote, leaving the folder as it was. With
    ``overwrite``, a failure leaves every file whole, old or new.
    """
    from PIL import Image

    ext = fmt.lower().lstrip(".")
    if ext not in ("png", "tif", "tiff"):
        raise ValueError(f"fmt must be 'png' or 'tif', got {fmt!r}")
    out = Path(outdir)
    if not overwrite:
        taken = [name for name in sample_files(n, ext) if os.path.lexists(out / name)]
        if taken:
            more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
            raise FileExistsError(
                errno.EEXIST,
                f"already holds {taken[0]}{more}; nothing was overwritten "
                "(choose an empty or new folder)",
                str(out),
            )
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    written: list[Path] = []
    try:
        for i, f in enumerate(make_dataset(n, size, seed, classes, n_labels)):
            sid = f"synth_{i:04d}"
            for plane, color in zip(f.image, CHANNEL_COLORS, strict=True):
                path = out / f"{sid}_{color}.{ext}"
                with atomic_path(path) as tmp:  # the format follows tmp's suffix, the target's
                    Image.fromarray(to_uint8(plane)).save(tmp)
                written.append(path)
            rows.append([sid, " ".join(str(v) for v in f.labels)])
        with atomic_open(out / "labels.csv", "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([["Id", "Target"], *rows])
    except BaseException:
        if not overwrite:  # they were not there before: the folder goes back to how it was
            for path in written:
                with contextlib.suppress(OSError):
                    path.unlink()
        raise
    return out
