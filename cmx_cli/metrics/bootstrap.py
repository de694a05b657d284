"""How uncertain a held-out ROC-AUC or PR-AUC is: stratified percentile bootstrap intervals.

Each resample draws, with replacement, as many items of each class as the held-out set has
(stratified, as pROC does by default), so every resample holds every class and its metric is
defined. The interval is the 2.5th and 97.5th percentile of the resampled metric over
:data:`RESAMPLES` resamples from a fixed seed, so a rerun prints the same interval.

The resampled metrics are computed in bulk with numpy: ROC-AUC from average ranks (the
Mann-Whitney statistic, which equals scikit-learn's ROC-AUC, ties included) and PR-AUC as
scikit-learn's average precision (a step per distinct score). The point estimates next to
the intervals still come from :mod:`cmx_cli.metrics.classification`.
"""
from __future__ import annotations

import numpy as np

#: Resamples per interval.
RESAMPLES = 1000
#: Coverage of an interval.
LEVEL = 0.95
#: Scores held in memory at once (resamples × items), to bound memory on large sets.
_CHUNK_ELEMENTS = 4_000_000


def stratified_resamples(labels: np.ndarray, resamples: int = RESAMPLES,
                         seed: int = 0) -> np.ndarray:
    """(resamples, N) item indices: each row draws each class's items with replacement."""
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    rows = np.empty((resamples, labels.size), dtype=np.int64)
    start = 0
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rows[:, start:start + members.size] = rng.choice(members, (resamples, members.size))
        start += members.size
    return rows


def _roc_auc_rows(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC-AUC of each row (items along axis 1); ``positive`` is boolean, one count per row."""
    from scipy.stats import rankdata  # here: importing scipy.stats takes a second

    ranks = rankdata(scores, axis=1)
    n_pos = positive.sum(axis=1)
    n_neg = positive.shape[1] - n_pos
    rank_sum = np.where(positive, ranks, 0.0).sum(axis=1)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _average_precision_rows(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """scikit-learn's average precision of each row: Σ over distinct thresholds of
    (recall step) × precision."""
    order = np.argsort(-scores, axis=1, kind="stable")
    sorted_scores = np.take_along_axis(scores, order, axis=1)
    true_positives = np.cumsum(np.take_along_axis(positive, order, axis=1), axis=1)
    # A threshold ends at the last item of each run of equal scores.
    ends = np.ones_like(sorted_scores, dtype=bool)
    ends[:, :-1] = sorted_scores[:, :-1] != sorted_scores[:, 1:]
    at_ends = np.where(ends, true_positives, 0)
    previous = np.zeros_like(at_ends)
    previous[:, 1:] = np.maximum.accumulate(at_ends, axis=1)[:, :-1]
    counted = np.arange(1, scores.shape[1] + 1)
    precision = true_positives / counted
    steps = np.where(ends, true_positives - previous, 0)
    return (steps * precision).sum(axis=1) / true_positives[:, -1]


def _interval(values: np.ndarray) -> list[float]:
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]


def bootstrap_intervals(y_true: np.ndarray, probabilities: np.ndarray, n_classes: int,
                        resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """95% intervals of ROC-AUC and PR-AUC, as :func:`classification_metrics` defines them.

    Binary: class 1 is positive. Multi-class: the macro mean over the classes present of the
    one-vs-rest metric.

    Args:
        y_true: (N,) class indices.
        probabilities: (N, n_classes) predicted probabilities (rows summing to 1 for more
            than two classes).
        n_classes: Number of classes.
        resamples: Bootstrap resamples.
        seed: Seed of the resampling.

    Returns:
        ``{"roc_auc_ci": [low, high], "pr_auc_ci": [low, high]}``; each None where the
        metric is undefined (fewer than two classes, or non-finite probabilities).
    """
    labels = np.asarray(y_true, dtype=np.int64).reshape(-1)
    scores = np.asarray(probabilities, dtype=np.float64)
    present = np.unique(labels)
    if present.size < 2 or not np.all(np.isfinite(scores)):
        return {"roc_auc_ci": None, "pr_auc_ci": None}
    classes = [1] if n_classes == 2 else list(present)
    rows = stratified_resamples(labels, resamples, seed)
    roc, pr = np.zeros(resamples), np.zeros(resamples)
    step = max(1, _CHUNK_ELEMENTS // max(1, labels.size))
    for start in range(0, resamples, step):
        chunk = rows[start:start + step]
        for label in classes:
            positive = labels[chunk] == label
            column = scores[chunk, label]
            roc[start:start + step] += _roc_auc_rows(positive, column)
            pr[start:start + step] += _average_precision_rows(positive, column)
    return {"roc_auc_ci": _interval(roc / len(classes)), "pr_auc_ci": _interval(pr / len(classes))}
