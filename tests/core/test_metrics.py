"""Metrics against hand-computed values and brute-force definitions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_hpa.core.model import metrics as M


def test_precision_recall_f1_by_hand() -> None:
    y = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    p = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    precision, recall, f1 = M.precision_recall_f1(y, p)
    # class 0: tp 1, fp 1, fn 1; class 1: tp 2, fp 0, fn 0
    assert precision == pytest.approx([0.5, 1.0])
    assert recall == pytest.approx([0.5, 1.0])
    assert f1 == pytest.approx([0.5, 1.0])
    assert M.macro_f1(y, p) == pytest.approx(0.75)
    assert M.micro_f1(y, p) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))


def test_f1_undefined_class_is_left_out_of_macro() -> None:
    y = np.array([[1, 0, 0], [0, 1, 0]])
    p = np.array([[1, 0, 0], [0, 1, 1]])  # class 2 absent but predicted: F1 0
    f1 = M.precision_recall_f1(y, p)[2]
    assert f1[2] == 0
    y2, p2 = y[:, :2], p[:, :2]
    z = np.zeros((2, 1), int)
    f1b = M.precision_recall_f1(np.hstack([y2, z]), np.hstack([p2, z]))[2]
    assert np.isnan(f1b[2])  # neither true nor predicted: undefined
    assert M.macro_f1(np.hstack([y2, z]), np.hstack([p2, z])) == pytest.approx(1.0)


def _auroc_brute(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    pairs = [(a > b) + 0.5 * (a == b) for a, b in itertools.product(pos, neg)]
    return float(np.mean(pairs))


def test_auroc_matches_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 30)
        if y.min() == y.max():
            continue
        s = np.round(rng.random(30), 1)  # many ties
        assert M.auroc(y, s) == pytest.approx(_auroc_brute(y, s))
    assert np.isnan(M.auroc(np.ones(5), np.arange(5)))
    assert M.auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0


def test_tune_thresholds_beats_half_and_keeps_default_for_absent_classes() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random((200, 3)) < [0.1, 0.5, 0.0]).astype(int)
    # class 0 is rare and scored low: 0.5 misses it, a tuned threshold does not
    probs = np.clip(y * 0.35 + rng.random((200, 3)) * 0.3, 0, 1)
    thr = M.tune_thresholds(y, probs)
    assert thr[2] == 0.5
    tuned = M.macro_f1(y[:, :2], probs[:, :2] >= thr[:2])
    fixed = M.macro_f1(y[:, :2], probs[:, :2] >= 0.5)
    assert tuned > fixed
    assert tuned > 0.9


def test_threshold_prior_pulls_rare_classes_toward_the_shared_threshold() -> None:
    rng = np.random.default_rng(2)
    n, k = 400, 12
    y = (rng.random((n, k)) < 0.5).astype(int)  # classes 1-10: about 200 positives each
    y[:, 0] = 0
    y[:4, 0] = 1  # class 0: 4 positives
    y[:, 11] = 0  # class 11: none
    probs = np.clip(y * 0.45 + rng.random((n, k)) * 0.5, 0, 1)
    probs[:, 0] = rng.random(n) * 0.2
    probs[:4, 0] = [0.21, 0.22, 0.23, 0.24]  # the rare class's few positives happen to be low
    grid = np.round(np.arange(0.05, 0.951, 0.025), 4)
    own = M.tune_thresholds(y, probs)
    pulled = M.tune_thresholds(y, probs, prior_weight=20)
    shared = M._best_threshold(y[:, :11].astype(bool), probs[:, :11], grid, 0.5)
    assert own[0] < 0.25 < 0.4 < shared  # fitted to its 4 images, far from the shared one
    weight = 20 / (y[:, :11].sum(0) + 20)
    assert np.allclose(pulled[:11], (1 - weight) * own[:11] + weight * shared)
    assert abs(pulled[0] - shared) < 0.2 * abs(own[0] - shared)  # rare: pulled most of the way
    assert np.all(np.abs(pulled[1:11] - own[1:11]) < 0.03)  # common: nearly their own
    assert pulled[11] == 0.5  # no positives: the default, untouched
    assert np.array_equal(M.tune_thresholds(y, probs, prior_weight=0), own)


def test_topk_confusion_logloss() -> None:
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.1, 0.5, 0.4]])
    true = np.array([0, 0, 2])
    assert M.topk_accuracy(true, probs, 1) == pytest.approx(1 / 3)
    assert M.topk_accuracy(true, probs, 2) == pytest.approx(2 / 3)
    assert M.topk_accuracy(true, probs, 3) == 1.0
    cm = M.confusion_matrix(true, probs.argmax(1), 3)
    assert cm.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    expected = -np.mean(np.log([0.6, 0.2, 0.4]))
    assert M.log_loss(true, probs) == pytest.approx(expected)


def test_multiclass_and_multilabel_reports() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    true = np.array([0, 1, 2, 1])
    mc = M.multiclass_metrics(true, probs, ["a", "b", "c"])
    assert mc["accuracy"] == 0.75
    assert mc["top1_accuracy"] == 0.75 and mc["top3_accuracy"] == 1.0
    assert mc["confusion"][1] == [1, 1, 0]
    assert [r["class"] for r in mc["per_class"]] == ["a", "b", "c"]
    # the same single-label data scored by a multilabel model gets top-k too
    onehot = np.eye(3, dtype=int)[true]
    ml = M.multilabel_metrics(onehot, probs, 0.5, ["a", "b", "c"])
    assert ml["top1_accuracy"] == 0.75 and ml["top3_accuracy"] == 1.0
    assert 0 <= ml["macro_f1"] <= 1 and ml["macro_auroc"] is not None
    assert len(ml["confusion"]) == 3
    # multilabel rows with two labels: no top-k
    two = onehot.copy()
    two[0, 1] = 1
    assert "top1_accuracy" not in M.multilabel_metrics(two, probs)
    assert M.evaluate("multiclass", onehot, probs)["accuracy"] == 0.75


def test_sample_f1_and_decide_multilabel_match_the_predictor() -> None:
    from napari_hpa.core.model.metrics import decide_multilabel, sample_f1

    probs = np.array([[0.9, 0.2, 0.6], [0.1, 0.3, 0.2]])
    pred = decide_multilabel(probs, np.array([0.5, 0.5, 0.5]))
    # over the threshold, and the top class even when nothing is over it
    assert pred.tolist() == [[True, False, True], [False, True, False]]
    y = np.array([[1, 0, 0], [0, 1, 0]])
    assert sample_f1(y, pred) == pytest.approx((2 / 3 + 1.0) / 2)
    # the top class below its own (high) threshold is not added when another class is over
    assert decide_multilabel(np.array([[0.8, 0.3]]), np.array([0.9, 0.2])).tolist() == [
        [False, True]
    ]
    # a one-class task says no below its threshold: the top class is the only class
    assert decide_multilabel(np.array([[0.03], [0.7]]), np.array([0.4])).tolist() == [
        [False],
        [True],
    ]


def test_threshold_floor_stops_many_labels_per_image() -> None:
    from napari_hpa.core.model.metrics import decide_multilabel, sample_f1, threshold_floor

    rng = np.random.default_rng(0)
    n, k = 60, 8
    truth = rng.integers(0, k, n)
    y = np.eye(k)[truth]
    probs = rng.uniform(0.05, 0.45, (n, k))  # every class looks a little likely
    probs[np.arange(n), truth] = rng.uniform(0.5, 0.9, n)
    low = np.full(k, 0.05)  # what max-F1 tuning on 1-2 positives can give
    floor = threshold_floor(y, probs, low)
    assert 0.4 <= floor <= 0.55
    before = decide_multilabel(probs, low)
    after = decide_multilabel(probs, np.maximum(low, floor))
    assert before.sum(1).mean() > 6 and after.sum(1).mean() < 1.5
    assert sample_f1(y, after) > sample_f1(y, before) + 0.4
    # a high per-class threshold stays where it was
    high = low.copy()
    high[0] = 0.95
    assert np.maximum(high, threshold_floor(y, probs, high))[0] == 0.95
