"""Classification metrics in plain numpy.

Written here rather than imported from scikit-learn so that the plugin does not
pull in a large dependency for a few formulas, and so that the conventions are
ours and documented: a class with no true and no predicted positives has no
F1 and is left out of the macro mean (``nan`` in the per-class table), a class
that is absent from the labels but predicted counts as F1 = 0.

Shapes: ``y_true`` is a (N, K) 0/1 matrix (multi-hot, also for single-label
data), ``probs`` is (N, K) probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_EPS = 1e-12


def _as_2d(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    return y[:, None] if y.ndim == 1 else y


def counts(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class true/false positives and negatives of 0/1 matrices (N, K)."""
    t = _as_2d(y_true).astype(bool)
    p = _as_2d(y_pred).astype(bool)
    return {
        "tp": (t & p).sum(0),
        "fp": (~t & p).sum(0),
        "fn": (t & ~p).sum(0),
        "tn": (~t & ~p).sum(0),
    }


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def precision_recall_f1(
    y_true: np.ndarray, y_pred: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 (``nan`` where undefined).

    F1 is ``nan`` only when a class has neither true nor predicted positives;
    a class that is predicted but absent, or present but never predicted, has F1 0.
    """
    c = counts(y_true, y_pred)
    tp, fp, fn = c["tp"], c["fp"], c["fn"]
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
    return precision, recall, f1


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean F1 over the classes where it is defined (0.0 if none is)."""
    f1 = precision_recall_f1(y_true, y_pred)[2]
    return float(np.nanmean(f1)) if np.isfinite(f1).any() else 0.0


def micro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of all (sample, class) decisions pooled."""
    c = counts(y_true, y_pred)
    tp, fp, fn = c["tp"].sum(), c["fp"].sum(), c["fn"].sum()
    den = 2 * tp + fp + fn
    return float(2 * tp / den) if den else 0.0


def auroc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of one class (Mann-Whitney U with tied ranks).

    ``nan`` when the labels hold only one class, since the area is undefined then.
    """
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # Average ranks over ties so that equal scores count one half.
    _, first, cnt = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (cnt - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, cnt)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def tune_thresholds(
    y_true: np.ndarray,
    probs: np.ndarray,
    grid: np.ndarray | None = None,
    default: float = 0.5,
    prior_weight: float = 0.0,
) -> np.ndarray:
    """Per-class probability thresholds that maximise F1 on (validation) data.

    Rare classes need thresholds far from 0.5, which is why one global threshold
    under-reports them. Classes without positives keep ``default``. Ties pick the
    threshold nearest ``default`` so that thresholds stay stable on small data.

    With ``prior_weight`` k > 0 each class's threshold is pulled toward the one
    global threshold that maximises macro F1 on the same data, by the weight
    ``k / (n_pos + k)``: a class with few validation positives gets a threshold
    fitted to its few images' noise, and on new images that scores worse than the
    global one (measured in docs/benchmarks.md); a class with many keeps its own.
    """
    t = _as_2d(y_true).astype(bool)
    p = _as_2d(probs).astype(np.float64)
    if grid is None:
        grid = np.round(np.arange(0.05, 0.951, 0.025), 4)
    out = np.full(t.shape[1], default, dtype=np.float64)
    for k in range(t.shape[1]):
        if t[:, k].any():
            out[k] = _best_threshold(t[:, k : k + 1], p[:, k : k + 1], grid, default)
    present = t.any(0)
    if prior_weight > 0 and present.any():
        shared = _best_threshold(t[:, present], p[:, present], grid, default)
        w = prior_weight / (t.sum(0) + prior_weight)
        out = np.where(present, (1 - w) * out + w * shared, out)
    return out


def _best_threshold(t: np.ndarray, p: np.ndarray, grid: np.ndarray, default: float) -> float:
    """Return the grid value that maximises macro F1 of the columns (ties: nearest ``default``)."""
    pred = p[None, :, :] >= grid[:, None, None]  # (G, N, K)
    tp = (pred & t).sum(1)
    fp = (pred & ~t).sum(1)
    fn = (~pred & t).sum(1)
    f1 = (2 * tp / np.maximum(2 * tp + fp + fn, 1)).mean(1)
    candidates = grid[np.isclose(f1, f1.max())]
    return float(candidates[np.argmin(np.abs(candidates - default))])


def decide_multilabel(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Decide as the Predictor does: the classes over their threshold, else the top one.

    A one-class task ("is Cytosol present?") has no "else": below its threshold the
    answer is no, or it could never say no. :func:`napari_hpa.core.model.prediction.decide`
    calls this; returns booleans (N, K).
    """
    p = _as_2d(probs)
    pred = p >= np.asarray(thresholds)[None, :]
    if p.shape[1] < 2:
        return pred
    empty = ~pred.any(1)
    pred[np.flatnonzero(empty), p[empty].argmax(1)] = True
    return pred


def sample_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean over images of the F1 between the predicted and the true label sets.

    What a user sees on one image: the right locations, without a list of wrong ones.
    Per-class F1 cannot show that a model predicts 11 classes on every image.
    """
    t, q = _as_2d(y_true).astype(bool), _as_2d(y_pred).astype(bool)
    if len(t) == 0:
        return float("nan")
    tp = (t & q).sum(1)
    return float(np.mean(2 * tp / np.maximum(t.sum(1) + q.sum(1), 1)))


def threshold_floor(
    y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, grid: np.ndarray | None = None
) -> float:
    """Return the floor f of per-class thresholds, ``max(t_c, f)``, maximising :func:`sample_f1`.

    Per-class max-F1 thresholds tuned on classes with one or two positives are often
    very low, and together they label an image with many classes. Raising them to a
    common floor, chosen on the same validation data, keeps rare classes' thresholds
    where they were high and stops the many-labels result. Ties pick the lowest floor.
    """
    if grid is None:
        grid = np.round(np.arange(0.0, 0.951, 0.025), 4)
    thr = np.asarray(thresholds, np.float64)
    scores = [sample_f1(y_true, decide_multilabel(probs, np.maximum(thr, f))) for f in grid]
    return float(grid[int(np.argmax(scores))])


def topk_accuracy(true_index: np.ndarray, probs: np.ndarray, k: int) -> float:
    """Fraction of samples whose true class is among the ``k`` highest probabilities."""
    true_index = np.asarray(true_index).ravel()
    p = _as_2d(probs)
    if true_index.size == 0:
        return float("nan")
    k = min(k, p.shape[1])
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return float((top == true_index[:, None]).any(1).mean())


def confusion_matrix(
    true_index: np.ndarray, pred_index: np.ndarray, num_classes: int
) -> np.ndarray:
    """Count (K, K) outcomes: row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(true_index).ravel(), np.asarray(pred_index).ravel()), 1)
    return cm


def multilabel_confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """(K, K) co-occurrence of true class i and predicted class j over samples.

    The diagonal is the true positives; off-diagonal mass shows which classes are
    predicted in place of (or along with) which, the multilabel analogue of a
    confusion matrix.
    """
    t = _as_2d(y_true).astype(np.int64)
    p = _as_2d(y_pred).astype(np.int64)
    return t.T @ p


def log_loss(true_index: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (probabilities clipped)."""
    p = _as_2d(probs).astype(np.float64)
    idx = np.asarray(true_index).ravel()
    if idx.size == 0:
        return float("nan")
    chosen = np.clip(p[np.arange(idx.size), idx], 1e-7, 1.0)
    return float(-np.log(chosen).mean())


def binary_log_loss(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy over all (sample, class) entries."""
    t = _as_2d(y_true).astype(np.float64)
    p = np.clip(_as_2d(probs).astype(np.float64), 1e-7, 1 - 1e-7)
    if t.size == 0:
        return float("nan")
    return float(-(t * np.log(p) + (1 - t) * np.log(1 - p)).mean())


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else round(float(v), 6) for v in values]


def _per_class(
    classes: list[str], y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray | None
) -> list[dict[str, Any]]:
    precision, recall, f1 = precision_recall_f1(y_true, y_pred)
    support = _as_2d(y_true).astype(bool).sum(0)
    aucs = (
        [auroc(_as_2d(y_true)[:, k], probs[:, k]) for k in range(len(classes))]
        if probs is not None
        else [float("nan")] * len(classes)
    )
    rows = []
    for k, name in enumerate(classes):
        rows.append(
            {
                "class": name,
                "support": int(support[k]),
                "precision": _nan_to_none(precision[k : k + 1])[0],
                "recall": _nan_to_none(recall[k : k + 1])[0],
                "f1": _nan_to_none(f1[k : k + 1])[0],
                "auroc": _nan_to_none(np.array([aucs[k]]))[0],
            }
        )
    return rows


def multilabel_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    thresholds: np.ndarray | list[float] | float = 0.5,
    classes: list[str] | tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Metrics of independent per-class decisions ``probs >= thresholds``.

    When every sample has exactly one true class (single-label data scored by a
    multilabel model) top-1/top-3 accuracy are added: the true class within the
    k highest probabilities.
    """
    t = _as_2d(y_true).astype(np.int64)
    p = _as_2d(probs).astype(np.float64)
    k = p.shape[1]
    classes = list(classes) if classes is not None else [str(i) for i in range(k)]
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (k,))
    pred = p >= thr[None, :]
    aucs = np.array([auroc(t[:, j], p[:, j]) for j in range(k)])
    out: dict[str, Any] = {
        "kind": "multilabel",
        "n_samples": int(t.shape[0]),
        "macro_f1": round(macro_f1(t, pred), 6),
        "micro_f1": round(micro_f1(t, pred), 6),
        "macro_auroc": round(float(np.nanmean(aucs)), 6) if np.isfinite(aucs).any() else None,
        "log_loss": round(binary_log_loss(t, p), 6),
        "exact_match": round(float((pred == t.astype(bool)).all(1).mean()), 6) if t.size else None,
        "thresholds": [round(float(v), 4) for v in thr],
        "per_class": _per_class(classes, t, pred, p),
        "confusion": multilabel_confusion(t, pred).tolist(),
    }
    if t.shape[0] and (t.sum(1) == 1).all():
        true_idx = t.argmax(1)
        out["top1_accuracy"] = round(topk_accuracy(true_idx, p, 1), 6)
        out["top3_accuracy"] = round(topk_accuracy(true_idx, p, 3), 6)
    return out


def multiclass_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: list[str] | tuple[str, ...] | None = None,
    topk: tuple[int, ...] = (1, 3),
) -> dict[str, Any]:
    """Metrics of a single-label classifier: the prediction is the arg-max.

    ``y_true`` may be class indices (N,) or a one-hot matrix (N, K).
    """
    p = _as_2d(probs).astype(np.float64)
    k = p.shape[1]
    y = np.asarray(y_true)
    true_idx = y.argmax(1) if y.ndim == 2 else y.astype(np.int64)
    pred_idx = p.argmax(1)
    onehot_true = np.eye(k, dtype=np.int64)[true_idx]
    onehot_pred = np.eye(k, dtype=np.int64)[pred_idx]
    classes = list(classes) if classes is not None else [str(i) for i in range(k)]
    f1 = precision_recall_f1(onehot_true, onehot_pred)[2]
    out: dict[str, Any] = {
        "kind": "multiclass",
        "n_samples": int(true_idx.size),
        "accuracy": round(float((pred_idx == true_idx).mean()), 6) if true_idx.size else None,
        "macro_f1": round(float(np.nanmean(f1)), 6) if np.isfinite(f1).any() else 0.0,
        "micro_f1": round(micro_f1(onehot_true, onehot_pred), 6),
        "log_loss": round(log_loss(true_idx, p), 6),
        "per_class": _per_class(classes, onehot_true, onehot_pred, p),
        "confusion": confusion_matrix(true_idx, pred_idx, k).tolist(),
    }
    for kk in topk:
        out[f"top{kk}_accuracy"] = round(topk_accuracy(true_idx, p, kk), 6)
    aucs = np.array([auroc(onehot_true[:, j], p[:, j]) for j in range(k)])
    out["macro_auroc"] = round(float(np.nanmean(aucs)), 6) if np.isfinite(aucs).any() else None
    return out


def evaluate(
    kind: str,
    y_true: np.ndarray,
    probs: np.ndarray,
    thresholds: np.ndarray | list[float] | float = 0.5,
    classes: list[str] | tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Dispatch on the task kind so that training and ``evaluate`` report the same numbers."""
    if kind == "multiclass":
        return multiclass_metrics(y_true, probs, classes)
    return multilabel_metrics(y_true, probs, thresholds, classes)
