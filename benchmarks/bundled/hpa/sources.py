"""The real HPA images the bundled model learns from, and the split by set.

Three sources, each read as a user's file would be (``core.image.io.read_image``):

* ``composite``: ``hpa_class_examples_composite``, 65 RGB composites, one label each,
  zoomed in (1-3 cells fill an 820 px image);
* ``kaggle``: the 50 labelled green (protein-only) images of
  ``hpa_kaggle2018_single_channels``, multi-label, whole fields at 512 px;
* ``duloc``: ``hpa_duloc_single_cells``, 67 four-channel sets (RGBY), each a 3 x 3
  mosaic of 9 masked cells of one location (5 locations).

The held-out part is chosen per source, by whole image or set, never by tile or
cell: one composite of every class that has two or more, 20 Kaggle images, and
30 % of the DULoc sets of every class (at least one).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_hpa.core.image.io import ImageData, read_image
from napari_hpa.core.tasks import HPA28_CLASSES

from ..common import DATA

COMP_DIR = DATA / "hpa_class_examples_composite"
KAG_DIR = DATA / "hpa_kaggle2018_single_channels"
DULOC_DIR = DATA / "hpa_duloc_single_cells"
K = len(HPA28_CLASSES)
SEED = 0
KAGGLE_HELD_OUT = 20
DULOC_HELD_OUT = 0.3
SOURCES = ("composite", "kaggle", "duloc")


@dataclass
class Item:
    """One labelled image or set: where it is, its labels, and what training made of it."""

    key: str
    source: str
    path: Path
    labels: np.ndarray
    cells: list[np.ndarray] = field(default_factory=list)

    def read(self) -> ImageData:
        """The image as a user opening the file gets it (a Kaggle green file: protein only)."""
        if self.source == "kaggle":
            raw = read_image(self.path, hpa_set=False)
            return ImageData(
                raw.data, ("protein",), raw.paths, raw.image_id, raw.source, raw.metadata
            )
        return read_image(self.path)


def multi_hot(ids: list[int]) -> np.ndarray:
    """A (K,) 0/1 vector of the given class ids."""
    y = np.zeros(K, np.float32)
    y[ids] = 1
    return y


def load_items() -> list[Item]:
    """Every labelled real HPA image here, in a fixed order."""
    items: list[Item] = []
    with (COMP_DIR / "labels.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            items.append(
                Item(
                    row["file"],
                    "composite",
                    COMP_DIR / row["file"],
                    multi_hot([int(row["class_id"])]),
                )
            )
    with (KAG_DIR / "labels.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["channel"] == "green" and row["kaggle_split"] == "train" and row["Target"]:
                ids = [int(v) for v in row["Target"].split()]
                items.append(Item(row["file"], "kaggle", KAG_DIR / row["file"], multi_hot(ids)))
    with (DULOC_DIR / "labels.csv").open(newline="") as fh:
        for row in sorted(csv.DictReader(fh), key=lambda r: r["Id"]):
            ids = [int(v) for v in row["Target"].split()]
            path = DULOC_DIR / "images" / f"{row['Id']}_green.jpg"
            items.append(Item(row["Id"], "duloc", path, multi_hot(ids)))
    return items


def split(items: list[Item]) -> tuple[list[int], list[int]]:
    """(train, held_out) indices: by image or set, per source (see the module docstring)."""
    rng = np.random.default_rng(SEED)
    held: list[int] = []
    for source, share in (("composite", None), ("duloc", DULOC_HELD_OUT)):
        by_class: dict[int, list[int]] = {}
        for i, it in enumerate(items):
            if it.source == source:
                by_class.setdefault(int(it.labels.argmax()), []).append(i)
        for _, idx in sorted(by_class.items()):
            if share is None:
                if len(idx) >= 2:
                    held.append(int(rng.choice(idx)))
            else:
                n = max(1, round(share * len(idx)))
                held += [int(v) for v in rng.choice(idx, size=n, replace=False)]
    kag = [i for i, it in enumerate(items) if it.source == "kaggle"]
    held += [int(v) for v in rng.choice(kag, size=min(KAGGLE_HELD_OUT, len(kag)), replace=False)]
    held = sorted(held)
    chosen = set(held)
    return [i for i in range(len(items)) if i not in chosen], held


def counts(items: list[Item], idx: list[int], source: str) -> np.ndarray:
    """Images (or sets) per class of one source among ``idx``."""
    rows = [items[i].labels for i in idx if items[i].source == source]
    return np.sum(rows, axis=0).astype(int) if rows else np.zeros(K, int)
