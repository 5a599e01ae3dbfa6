"""The review queue's orders, on plain probabilities and on predictions stored in SQLite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_hpa.core.labels.review import (
    Scored,
    disagreement,
    margin,
    rank_cells,
    rank_images,
    stored_predictions,
)
from napari_hpa.core.labels.store import AnnotationStore

CLASSES = ["Nucleoplasm", "Cytosol", "Mitochondria"]


def _p(*values: float) -> np.ndarray:
    return np.array(values, np.float32)


def test_margin_names_the_two_classes() -> None:
    gap, reason = margin(_p(0.30, 0.34, 0.1), CLASSES)
    assert gap == pytest.approx(0.04, abs=1e-6)
    assert reason == "margin 0.04: Cytosol vs Nucleoplasm"


def test_least_certain_first_and_ties_keep_file_order() -> None:
    items = [
        Scored("a", _p(0.9, 0.05, 0.05)),  # sure
        Scored("b", _p(0.45, 0.44, 0.11)),  # unsure
        Scored("c", None),  # not predicted
        Scored("d", _p(0.45, 0.44, 0.11)),  # as unsure as b: after b
    ]
    ranked = rank_images(items, CLASSES, disagreement_weight=0)
    assert [r.source for r in ranked] == ["b", "d", "a", "c"]
    assert ranked[-1].reason == "not predicted yet"
    assert ranked[0].reason.startswith("margin 0.01: Nucleoplasm vs Cytosol")


def test_cells_that_disagree_move_an_image_up_and_say_why() -> None:
    cells = {i: _p(0.1, 0.8, 0.1) for i in range(1, 5)}
    cells[5] = _p(0.8, 0.1, 0.1)
    sure_but_split = Scored("split", _p(0.7, 0.2, 0.1), cells)
    unsure = Scored("unsure", _p(0.5, 0.35, 0.15))
    assert disagreement(sure_but_split) == (pytest.approx(0.8), 1)
    assert [
        r.source
        for r in rank_images(
            [unsure, sure_but_split], CLASSES, "least_certain", disagreement_weight=0
        )
    ] == [
        "unsure",
        "split",
    ]
    ranked = rank_images([unsure, sure_but_split], CLASSES)  # the default weight
    assert ranked[0].source == "split"
    assert "4 of 5 cells say Cytosol, the image Nucleoplasm" in ranked[0].reason


def test_one_predicted_class_keeps_only_that_class_least_confident_first() -> None:
    items = [
        Scored("a", _p(0.1, 0.9, 0.0)),
        Scored("b", _p(0.9, 0.1, 0.0)),
        Scored("c", _p(0.2, 0.6, 0.2)),
        Scored("d", None),
    ]
    ranked = rank_images(items, CLASSES, "class", class_index=1)
    assert [r.source for r in ranked] == ["c", "a"]
    assert ranked[0].reason == "predicted Cytosol at 0.60"
    with pytest.raises(ValueError, match="needs a class"):
        rank_images(items, CLASSES, "class")
    with pytest.raises(ValueError, match="unknown review order"):
        rank_images(items, CLASSES, "newest")


def test_lowest_confidence_and_file_orders() -> None:
    items = [Scored("a", _p(0.5, 0.5, 0.0)), Scored("b", _p(0.4, 0.3, 0.3))]
    assert [r.source for r in rank_images(items, CLASSES, "lowest_confidence")] == ["b", "a"]
    assert [r.source for r in rank_images(items[::-1], CLASSES, "file")] == ["b", "a"]


def test_cells_rank_by_margin_and_a_dissenting_cell_first() -> None:
    item = Scored(
        "x",
        _p(0.8, 0.1, 0.1),
        {1: _p(0.5, 0.4, 0.1), 2: _p(0.2, 0.7, 0.1), 3: _p(0.9, 0.05, 0.05)},
    )
    ranked = rank_cells(item, CLASSES)
    assert [r.cell for r in ranked] == [2, 1, 3]
    assert ranked[0].reason.endswith("the image says Nucleoplasm")
    assert [r.cell for r in rank_cells(item, CLASSES, "file")] == [1, 2, 3]


def test_stored_predictions_read_back_from_the_database(tmp_path: Path) -> None:
    db = tmp_path / "annotations.sqlite"
    mask = np.zeros((8, 8), np.int32)
    mask[:4, :4], mask[4:, 4:] = 1, 2
    with AnnotationStore(db) as store:
        store.set_model_labels("/d/a.png", "t", [0.2, 0.7, 0.1], [1], "m@1")
        store.set_cell_mask("/d/a.png", mask)
        store.set_model_labels("/d/a.png", "t", [0.6, 0.3, 0.1], [0], "m@1", cell=1)
        store.set_model_labels("/d/a.png", "t", [0.1, 0.8, 0.1], [1], "m@1", cell=2)
        scored = stored_predictions(store, "t", ["/d/a.png", "/d/b.png"], len(CLASSES))
    a, b = scored
    np.testing.assert_allclose(a.image, [0.2, 0.7, 0.1])
    assert sorted(a.cells) == [1, 2] and a.cells[1][0] == pytest.approx(0.6)
    assert b.image is None and b.cells == {}
    assert [r.source for r in rank_images(scored, CLASSES)] == ["/d/a.png", "/d/b.png"]


def test_spread_confusions_takes_each_pair_in_turn() -> None:
    """Three unsure Nucleoplasm/Cytosol images and one Cytosol/Mitochondria: the second
    pair's image comes second, not fourth; within a pair the margin order is kept."""
    from napari_hpa.core.labels.review import spread_confusions

    items = [
        Scored("a", _p(0.50, 0.49, 0.01)),
        Scored("b", _p(0.52, 0.47, 0.01)),
        Scored("c", _p(0.55, 0.44, 0.01)),
        Scored("d", _p(0.05, 0.60, 0.35)),
        Scored("e", None),
    ]
    ranked = rank_images(items, CLASSES, disagreement_weight=0)
    assert [r.source for r in ranked] == ["a", "b", "c", "d", "e"]
    spread = spread_confusions(ranked, items)
    assert [r.source for r in spread] == ["a", "d", "b", "c", "e"]
    assert spread[1].reason == ranked[3].reason  # the reasons travel with their items
