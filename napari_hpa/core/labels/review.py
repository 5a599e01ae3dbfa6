"""The review queue's order: which images (and cells) to correct first, from predictions.

A correction teaches the model most where it was unsure, so the default order puts the
smallest *margin* first: the gap between the two most probable classes. An image whose
cells disagree with it (its own top class is not what most of its cells say) is moved
up by :data:`DISAGREEMENT_WEIGHT` times the share of its cells that disagree. The other
orders are those a user asks for by name: file order, one predicted class (as in
CellProfiler Analyst's "fetch objects of a class"), and the lowest top probability first.

Everything here reads plain probabilities (:class:`Scored`), so that the GUI (stored
predictions, :func:`stored_predictions`) and ``benchmarks/correction_loop.py`` (a
simulated user) rank with the same code. Items not predicted yet go last, in file order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .reading import LabelReader

#: The orders, by key, with the name a user sees.
ORDERS: dict[str, str] = {
    "least_certain": "least certain first",
    "lowest_confidence": "lowest confidence first",
    "class": "one predicted class",
    "file": "file order",
}
#: How much a fully disagreeing set of cells adds to ``1 - margin`` (0: the margin alone).
DISAGREEMENT_WEIGHT = 0.5


@dataclass(frozen=True)
class Scored:
    """One image's predictions: the image's probabilities and its cells' (may be empty)."""

    source: str
    image: np.ndarray | None
    cells: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class ReviewItem:
    """One place in the queue: an image (``cell`` 0) or one of its cells, and why it is there."""

    source: str
    cell: int
    score: float
    reason: str


def margin(probs: np.ndarray, classes: Sequence[str]) -> tuple[float, str]:
    """Return the gap between the two most probable classes, and it said in words."""
    if len(probs) < 2:
        p = float(probs[0]) if len(probs) else 0.0
        gap = abs(2 * p - 1)  # one class: how far from a coin toss
        return gap, f"margin {gap:.2f}: {classes[0] if classes else 'the class'} at {p:.2f}"
    top = np.argsort(-probs, kind="stable")[:2]
    gap = float(probs[top[0]] - probs[top[1]])
    return gap, f"margin {gap:.2f}: {classes[top[0]]} vs {classes[top[1]]}"


def disagreement(item: Scored) -> tuple[float, int]:
    """Return the share of cells whose top class is not the image's, and that class.

    An image with no cells, or no image-level prediction, has none (0.0, -1).
    """
    if item.image is None or not item.cells:
        return 0.0, -1
    mine = int(np.argmax(item.image))
    tops = [int(np.argmax(p)) for p in item.cells.values()]
    others = [t for t in tops if t != mine]
    if not others:
        return 0.0, -1
    most = max(set(others), key=others.count)
    return len(others) / len(tops), most


def _confidence(probs: np.ndarray, classes: Sequence[str]) -> tuple[float, str]:
    """Return ``1 - `` the top probability (higher: less confident), and it said in words."""
    top = int(np.argmax(probs))
    p = float(probs[top])
    return 1.0 - p, f"confidence {p:.2f}: {classes[top]}"


def _least_certain(item: Scored, classes: Sequence[str], weight: float) -> tuple[float, str]:
    assert item.image is not None
    gap, reason = margin(item.image, classes)
    share, said = disagreement(item)
    if weight > 0 and share > 0:
        n = len(item.cells)
        reason += (
            f"; {round(share * n)} of {n} cells say {classes[said]}, "
            f"the image {classes[int(np.argmax(item.image))]}"
        )
    return (1.0 - gap) + weight * share, reason


def rank_images(
    items: Sequence[Scored],
    classes: Sequence[str],
    order: str = "least_certain",
    class_index: int | None = None,
    disagreement_weight: float = DISAGREEMENT_WEIGHT,
) -> list[ReviewItem]:
    """Order the images for review (first = correct first).

    ``order`` is a key of :data:`ORDERS`; ``"class"`` keeps only the images whose top
    class is ``class_index``, least confident first. Ties keep the given (file) order.

    Raises
    ------
    ValueError
        An unknown order, or ``"class"`` without a valid ``class_index``.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown review order {order!r}; known: {', '.join(ORDERS)}")
    if order == "class" and (class_index is None or not 0 <= class_index < len(classes)):
        raise ValueError("the order 'one predicted class' needs a class")
    ranked: list[tuple[float, int, ReviewItem]] = []
    unscored: list[ReviewItem] = []
    for i, item in enumerate(items):
        if order == "file":
            ranked.append((0.0, i, ReviewItem(item.source, 0, 0.0, "file order")))
            continue
        if item.image is None or not len(item.image):
            unscored.append(ReviewItem(item.source, 0, float("-inf"), "not predicted yet"))
            continue
        top = int(np.argmax(item.image))
        p = float(item.image[top])
        if order == "least_certain":
            score, reason = _least_certain(item, classes, disagreement_weight)
        elif order == "lowest_confidence":
            score, reason = _confidence(item.image, classes)
        else:
            if top != class_index:
                continue
            score, reason = 1.0 - p, f"predicted {classes[top]} at {p:.2f}"
        ranked.append((score, i, ReviewItem(item.source, 0, score, reason)))
    ranked.sort(key=lambda t: (-t[0], t[1]))
    return [r for _, _, r in ranked] + ([] if order == "class" else unscored)


def spread_confusions(ranked: Sequence[ReviewItem], items: Sequence[Scored]) -> list[ReviewItem]:
    """Reorder ``ranked`` so that each round visits every confusion once, least certain first.

    A confusion is an image's two most probable classes (unordered). A model that is wrong
    on most images is often unsure between the same two classes, and the margin alone
    would then fill the first corrections with one pair; taking the least certain image of
    each pair in turn spreads them over the classes. Images without a prediction stay last.
    """
    pair_of: dict[str, tuple[int, ...]] = {}
    for item in items:
        if item.image is not None and len(item.image) > 1:
            top = np.argsort(-item.image, kind="stable")[:2]
            pair_of[item.source] = tuple(sorted(int(t) for t in top))
    groups: dict[tuple[int, ...], list[ReviewItem]] = {}
    rest = []
    for r in ranked:
        if r.source in pair_of:
            groups.setdefault(pair_of[r.source], []).append(r)  # in margin order
        else:
            rest.append(r)
    out: list[ReviewItem] = []
    queues = list(groups.values())  # ordered by each pair's least certain image
    while queues:
        out += [q.pop(0) for q in queues]
        queues = [q for q in queues if q]
    return out + rest


def rank_cells(
    item: Scored, classes: Sequence[str], order: str = "least_certain"
) -> list[ReviewItem]:
    """Order one image's cells for review; a cell that disagrees with the image goes first.

    ``"file"`` and ``"class"`` keep the cells' numbering.
    """
    mine = None if item.image is None else int(np.argmax(item.image))
    ranked: list[tuple[float, int, ReviewItem]] = []
    for cell, probs in sorted(item.cells.items()):
        if order in ("file", "class"):
            ranked.append((0.0, cell, ReviewItem(item.source, cell, 0.0, f"cell {cell}")))
            continue
        top = int(np.argmax(probs))
        if order == "lowest_confidence":
            score, reason = _confidence(probs, classes)
        else:
            gap, reason = margin(probs, classes)
            score = 1.0 - gap
            if mine is not None and top != mine:
                score += DISAGREEMENT_WEIGHT
                reason += f"; the image says {classes[mine]}"
        ranked.append((score, cell, ReviewItem(item.source, cell, score, reason)))
    ranked.sort(key=lambda t: (-t[0], t[1]))
    return [r for _, _, r in ranked]


def stored_predictions(
    reader: LabelReader, task: str, sources: Sequence[str], n_classes: int
) -> list[Scored]:
    """Read the stored model probabilities of ``sources`` (and their cells) for ``task``.

    A source with no stored prediction gets ``image=None`` (it goes last in the queue).
    """
    out = []
    for source in sources:
        image = _vector(reader.model_scores(source, task, 0), n_classes)
        cells = {}
        for cell in reader.cells(source):
            probs = _vector(reader.model_scores(source, task, cell), n_classes)
            if probs is not None:
                cells[cell] = probs
        out.append(Scored(source, image, cells))
    return out


def _vector(scores: dict[int, float], n_classes: int) -> np.ndarray | None:
    if not scores:
        return None
    probs = np.zeros(n_classes, np.float32)
    for cls, p in scores.items():
        if 0 <= cls < n_classes:
            probs[cls] = p
    return probs
