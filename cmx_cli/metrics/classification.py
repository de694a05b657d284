"""Classification metrics from predicted probabilities.

Every ranking metric here is computed from probabilities, never from hard labels: ROC-AUC
and PR-AUC measure how well a model *orders* sequences, which a thresholded label hides.
Accuracy and balanced accuracy use the arg-max class.

A metric that is undefined for the data given (no sequences, or only one class present in
``y_true``) is returned as ``None`` (JSON ``null``). Nothing here raises or warns for such
data: scikit-learn warns in those cases, and a warning inside an evaluation run is noise
(and an error under the test suite's ``filterwarnings = error``), so each case is checked
before scikit-learn is called.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from cmx_cli.metrics.bootstrap import bootstrap_intervals

METRIC_NAMES = ("roc_auc", "pr_auc", "accuracy", "balanced_accuracy")


def _check_inputs(
    y_true: np.ndarray, probabilities: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes and label range; return int64 labels and float64 probabilities.

    Raises:
        ValueError: On shapes or labels that can only come from a programming error.
    """
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    labels = np.asarray(y_true).astype(np.int64, copy=False).reshape(-1)
    scores = np.asarray(probabilities, dtype=np.float64)
    if scores.ndim != 2 or scores.shape != (labels.size, n_classes):
        raise ValueError(
            f"probabilities must have shape ({labels.size}, {n_classes}), got {scores.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"y_true holds class indices outside 0..{n_classes - 1}")
    return labels, scores


def _renormalise(scores: np.ndarray) -> np.ndarray:
    """Scale each row to sum 1, as multi-class ROC-AUC requires; all-zero rows become uniform.

    Softmax outputs already sum to 1 up to rounding, but float32 rounding is enough for
    scikit-learn's ``allclose`` check to reject them, so rows are renormalised in float64.
    """
    totals = scores.sum(axis=1, keepdims=True)
    uniform = np.full_like(scores, 1.0 / scores.shape[1])
    safe = np.where(totals > 0, totals, 1.0)
    return np.where(totals > 0, scores / safe, uniform)


def _balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Mean recall over the classes present in ``labels``.

    This is scikit-learn's definition; it is computed here because
    ``balanced_accuracy_score`` warns whenever a predicted class is absent from ``labels``,
    which is common and harmless on small evaluation sets.
    """
    present = np.unique(labels)
    recalls = [np.mean(predicted[labels == label] == label) for label in present]
    return float(np.mean(recalls))


def _ranking_metrics(
    labels: np.ndarray, scores: np.ndarray, n_classes: int
) -> tuple[Optional[float], Optional[float]]:
    """ROC-AUC and PR-AUC, or ``(None, None)`` when fewer than two classes are present."""
    # Here, not at the top: importing scikit-learn takes a second, which every cmx command
    # (help and one-line errors included) would otherwise pay.
    from sklearn.metrics import average_precision_score, roc_auc_score

    present = np.unique(labels)
    if present.size < 2 or not np.all(np.isfinite(scores)):
        return None, None
    if n_classes == 2:
        positive = labels == 1
        return (
            float(roc_auc_score(positive, scores[:, 1])),
            float(average_precision_score(positive, scores[:, 1])),
        )
    scores = _renormalise(scores)
    if present.size == n_classes:
        roc_auc = roc_auc_score(
            labels, scores, multi_class="ovr", average="macro", labels=range(n_classes)
        )
    else:
        # scikit-learn raises when a listed class is absent from y_true (its one-vs-rest
        # AUC is undefined). Averaging over the classes present keeps the metric on small
        # evaluation sets, the same rule as PR-AUC below.
        roc_auc = np.mean([roc_auc_score(labels == label, scores[:, label]) for label in present])
    pr_auc = np.mean(
        [average_precision_score(labels == label, scores[:, label]) for label in present]
    )
    return float(roc_auc), float(pr_auc)


def classification_metrics(
    y_true: np.ndarray, probabilities: np.ndarray, n_classes: int, intervals: bool = False
) -> dict:
    """Score predicted class probabilities against true class indices.

    Binary (``n_classes == 2``): ROC-AUC and average precision (PR-AUC) take class 1 as the
    positive class and ``probabilities[:, 1]`` as its score. Multi-class: ROC-AUC is the
    macro one-vs-rest mean and PR-AUC the macro mean of one-vs-rest average precision, both
    over the classes present in ``y_true`` (rows are renormalised to sum 1 first).

    Args:
        y_true: (N,) int class indices in ``0..n_classes-1``.
        probabilities: (N, n_classes) float predicted probabilities.
        n_classes: Number of classes C (at least 2).
        intervals: Add 95% bootstrap intervals of the AUCs, ``roc_auc_ci`` and ``pr_auc_ci``
            (``[low, high]``, or ``None`` where undefined; :mod:`cmx_cli.metrics.bootstrap`).

    Returns:
        ``{"n", "roc_auc", "pr_auc", "accuracy", "balanced_accuracy"}``: ``n`` is an int,
        the rest plain floats, or ``None`` where undefined (no sequences; for the AUCs also
        a single class in ``y_true`` or non-finite probabilities).

    Raises:
        ValueError: If the shapes disagree or a label is out of range (a programming error,
            not bad user data).
    """
    labels, scores = _check_inputs(y_true, probabilities, n_classes)
    result: dict = {"n": int(labels.size), **{name: None for name in METRIC_NAMES}}
    if intervals:
        result |= {"roc_auc_ci": None, "pr_auc_ci": None}
    if labels.size == 0:
        return result
    result["roc_auc"], result["pr_auc"] = _ranking_metrics(labels, scores, n_classes)
    if intervals:
        result |= bootstrap_intervals(labels, scores if n_classes == 2 else _renormalise(scores),
                                      n_classes)
    predicted = np.argmax(scores, axis=1)
    result["accuracy"] = float(np.mean(predicted == labels))
    result["balanced_accuracy"] = _balanced_accuracy(labels, predicted)
    return result


def _percent(value: float) -> str:
    """Format a percentile edge: 10 -> "10", 100/3 -> "33.3"."""
    return f"{round(value, 1):g}"


def metrics_by_length(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    lengths: np.ndarray,
    n_classes: int,
    n_bins: int = 10,
    intervals: bool = False,
) -> list[dict]:
    """ROC-AUC within length-percentile bins (ChordMixer paper, Figure 5).

    Sequences are sorted by length and cut by rank into ``n_bins`` bins of (nearly) equal
    size: with 10 bins, the shortest 10 % form bin "0-10" and so on. Cutting by rank puts
    every sequence in exactly one bin and keeps every bin populated, even when many
    sequences share a length; the price is that two neighbouring bins may both contain that
    length, so their length ranges can touch. Ties are ordered by input position, so the
    result is deterministic. With fewer sequences than bins, each sequence is its own bin.

    Args:
        y_true: (N,) int class indices.
        probabilities: (N, n_classes) float predicted probabilities.
        lengths: (N,) int sequence lengths in bp.
        n_classes: Number of classes C.
        n_bins: Number of bins wanted (at least 1).
        intervals: Add each bin's 95% bootstrap interval of ROC-AUC, ``roc_auc_ci``.

    Returns:
        One dict per bin, shortest first: ``{"percentiles": "0-10", "min_length",
        "max_length", "n", "roc_auc"}``; ``roc_auc`` is ``None`` where a bin holds a
        single class. An empty list when N == 0.

    Raises:
        ValueError: If the shapes disagree or ``n_bins`` < 1.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    labels, scores = _check_inputs(y_true, probabilities, n_classes)
    sizes = np.asarray(lengths).astype(np.int64, copy=False).reshape(-1)
    if sizes.size != labels.size:
        raise ValueError(f"lengths has {sizes.size} entries for {labels.size} sequences")
    count = labels.size
    if count == 0:
        return []
    bins = min(n_bins, count)
    order = np.argsort(sizes, kind="stable")
    # Rank edges: bin b holds sorted positions [edges[b], edges[b+1]).
    edges = np.round(np.arange(bins + 1) * count / bins).astype(np.int64)
    result = []
    for index in range(bins):
        members = order[edges[index] : edges[index + 1]]
        metrics = classification_metrics(labels[members], scores[members], n_classes,
                                         intervals)
        result.append(
            {
                "percentiles": (
                    f"{_percent(100 * index / bins)}-{_percent(100 * (index + 1) / bins)}"
                ),
                "min_length": int(sizes[members].min()),
                "max_length": int(sizes[members].max()),
                "n": int(members.size),
                "roc_auc": metrics["roc_auc"],
                **({"roc_auc_ci": metrics["roc_auc_ci"]} if intervals else {}),
            }
        )
    return result


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray,
                   intervals: bool = False) -> dict:
    """:func:`classification_metrics` of 0/1 labels and P(label 1)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return classification_metrics(np.asarray(labels, dtype=np.int64),
                                  np.stack([1.0 - probabilities, probabilities], axis=1), 2,
                                  intervals)
