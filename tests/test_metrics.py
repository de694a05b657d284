"""Tests for cmx_cli.metrics: hand-computed metric values, undefined cases, length bins."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from sklearn.metrics import roc_auc_score

from cmx_cli.metrics.classification import classification_metrics, metrics_by_length
from cmx_cli.metrics.tables import length_table, metrics_table


def binary(scores: list[float]) -> np.ndarray:
    """(N, 2) probabilities from class-1 scores."""
    positive = np.asarray(scores, dtype=np.float64)
    return np.stack([1 - positive, positive], axis=1)


def render(table) -> str:
    console = Console(file=io.StringIO(), width=140, color_system=None)
    console.print(table)
    return console.file.getvalue()


# A 3-class example worked by hand in the comments of test_multiclass_macro_ovr.
Y3 = np.array([0, 0, 1, 1, 2, 2])
P3 = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.3, 0.4, 0.3],
        [0.2, 0.6, 0.2],
        [0.5, 0.3, 0.2],
        [0.1, 0.2, 0.7],
        [0.4, 0.1, 0.5],
    ]
)


@pytest.mark.parametrize(
    "y_true, scores, roc_auc, pr_auc, accuracy, balanced_accuracy",
    [
        # Perfect ranking.
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 1.0, 1.0, 1.0, 1.0),
        # Reversed ranking: every positive below every negative.
        # AP: positives at ranks 3 and 4 -> 0.5 * 1/3 + 0.5 * 2/4.
        ([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], 0.0, 0.5 / 3 + 0.25, 0.0, 0.0),
        # Hand-worked: pairs (pos > neg) 0.8>0.1, 0.8>0.4, 0.35>0.1 but 0.35<0.4 -> 3/4.
        # AP: ranks 0.8(P) 0.4(N) 0.35(P) 0.1(N) -> 0.5 * 1 + 0.5 * 2/3.
        # argmax predicts 0,0,0,1: accuracy 3/4, recalls 1 and 1/2 -> balanced 3/4.
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75, 0.5 + 1 / 3, 0.75, 0.75),
        # A tie between a positive and a negative counts half.
        ([0, 1], [0.5, 0.5], 0.5, 0.5, 0.5, 0.5),
    ],
)
def test_binary_hand_computed(y_true, scores, roc_auc, pr_auc, accuracy, balanced_accuracy):
    result = classification_metrics(np.array(y_true), binary(scores), 2)
    assert result["n"] == len(y_true)
    assert result["roc_auc"] == pytest.approx(roc_auc)
    assert result["pr_auc"] == pytest.approx(pr_auc)
    assert result["accuracy"] == pytest.approx(accuracy)
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy)


def test_binary_uses_column_one_only():
    # Column 0 is deliberately inconsistent with column 1: only column 1 is the score.
    probabilities = np.array([[0.0, 0.1], [0.0, 0.2], [0.0, 0.8], [0.0, 0.9]])
    result = classification_metrics(np.array([0, 0, 1, 1]), probabilities, 2)
    assert result["roc_auc"] == 1.0


def test_multiclass_macro_ovr():
    # Class 0 vs rest: positives {.7, .3} over negatives {.2, .5, .1, .4}: 4 + 2 = 6/8.
    # Class 1 vs rest: positives {.6, .3} over negatives {.2, .4, .2, .1}: 4 + 3 = 7/8.
    # Class 2 vs rest: positives {.7, .5} over negatives {.1, .3, .2, .2}: 8/8.
    # AP: class 0 ranks P N N P -> .5 + .5 * 2/4; class 1 ranks P N P -> .5 + .5 * 2/3;
    # class 2 -> 1. argmax: 0 1 1 0 2 2 -> accuracy 4/6; recalls 1/2, 1/2, 1.
    result = classification_metrics(Y3, P3, 3)
    assert result["roc_auc"] == pytest.approx((0.75 + 0.875 + 1.0) / 3)
    assert result["pr_auc"] == pytest.approx((0.75 + (0.5 + 1 / 3) + 1.0) / 3)
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["balanced_accuracy"] == pytest.approx(2 / 3)
    expected = roc_auc_score(Y3, P3, multi_class="ovr", average="macro", labels=range(3))
    assert result["roc_auc"] == pytest.approx(expected)


def test_multiclass_rows_are_renormalised():
    unnormalised = P3 * np.array([[2.0], [0.5], [3.0], [1.0], [7.0], [0.1]])
    assert classification_metrics(Y3, unnormalised, 3) == pytest.approx(
        classification_metrics(Y3, P3, 3)
    )
    zero_row = P3.copy()
    zero_row[0] = 0.0
    assert classification_metrics(Y3, zero_row, 3)["roc_auc"] is not None


def test_multiclass_absent_class_averages_over_present_classes():
    # Drop class 2 from y_true (rows 4, 5) but keep three probability columns.
    result = classification_metrics(Y3[:4], P3[:4], 3)
    class_0 = roc_auc_score(Y3[:4] == 0, P3[:4, 0] / P3[:4].sum(axis=1))
    class_1 = roc_auc_score(Y3[:4] == 1, P3[:4, 1] / P3[:4].sum(axis=1))
    assert result["roc_auc"] == pytest.approx((class_0 + class_1) / 2)
    assert result["pr_auc"] is not None


@pytest.mark.parametrize(
    "y_true, probabilities, n_classes",
    [
        (np.array([1, 1, 1]), binary([0.2, 0.5, 0.9]), 2),
        (np.array([0, 0]), binary([0.2, 0.5]), 2),
        (np.array([2, 2]), P3[:2], 3),
    ],
)
def test_single_class_gives_none_for_rankings(y_true, probabilities, n_classes):
    result = classification_metrics(y_true, probabilities, n_classes)
    assert result["roc_auc"] is None
    assert result["pr_auc"] is None
    # Accuracy is still defined with one class.
    assert isinstance(result["accuracy"], float)
    assert isinstance(result["balanced_accuracy"], float)


def test_empty_input_gives_all_none():
    result = classification_metrics(np.zeros(0, int), np.zeros((0, 2)), 2)
    assert result == {
        "n": 0,
        "roc_auc": None,
        "pr_auc": None,
        "accuracy": None,
        "balanced_accuracy": None,
    }


def test_values_are_plain_python_and_json_ready():
    probabilities = binary([0.3, 0.6, 0.2]).astype(np.float32)
    result = classification_metrics(np.array([0, 1, 1]), probabilities, 2)
    assert type(result["n"]) is int
    for name in ("roc_auc", "pr_auc", "accuracy", "balanced_accuracy"):
        assert type(result[name]) is float
    json.dumps(result)


def test_non_finite_probabilities_give_none_for_rankings():
    result = classification_metrics(np.array([0, 1]), binary([np.nan, 0.5]), 2)
    assert result["roc_auc"] is None and result["pr_auc"] is None


@pytest.mark.parametrize(
    "y_true, probabilities, n_classes",
    [
        (np.array([0, 2]), binary([0.1, 0.9]), 2),  # label out of range
        (np.array([0, 1, 1]), binary([0.1, 0.9]), 2),  # length mismatch
        (np.array([0, 1]), P3[:2], 2),  # wrong number of columns
    ],
)
def test_programming_errors_raise(y_true, probabilities, n_classes):
    with pytest.raises(ValueError):
        classification_metrics(y_true, probabilities, n_classes)


def test_by_length_exact_bins():
    rng = np.random.default_rng(0)
    lengths = rng.permutation(np.arange(1, 21)) * 100
    # Short sequences (<= 1000 bp) ranked perfectly, long ones ranked backwards.
    y_true = np.tile([0, 1], 10)
    short = lengths <= 1000
    scores = np.where(y_true == 1, 0.9, 0.1)
    scores = np.where(short, scores, 1 - scores)
    bins = metrics_by_length(y_true, binary(scores), lengths, 2)
    assert [row["percentiles"] for row in bins] == [f"{i}-{i + 10}" for i in range(0, 100, 10)]
    assert [(row["min_length"], row["max_length"]) for row in bins] == [
        (200 * i + 100, 200 * i + 200) for i in range(10)
    ]
    assert all(row["n"] == 2 for row in bins)
    # Lengths are distinct, so a bin's members are exactly the lengths in its range.
    for row in bins:
        members = (lengths >= row["min_length"]) & (lengths <= row["max_length"])
        expected = classification_metrics(y_true[members], binary(scores[members]), 2)
        assert row["roc_auc"] == expected["roc_auc"]


def test_by_length_separates_short_and_long_behaviour():
    lengths = np.arange(100)
    y_true = np.tile([0, 1], 50)
    scores = np.where(y_true == 1, 0.8, 0.2)
    scores[50:] = 1 - scores[50:]
    bins = metrics_by_length(y_true, binary(scores), lengths, 2, n_bins=2)
    assert [row["roc_auc"] for row in bins] == [1.0, 0.0]
    assert [row["percentiles"] for row in bins] == ["0-50", "50-100"]


def test_by_length_fewer_sequences_than_bins():
    lengths = np.array([30, 10, 20])
    bins = metrics_by_length(np.array([0, 1, 0]), binary([0.1, 0.2, 0.3]), lengths, 2)
    assert [row["percentiles"] for row in bins] == ["0-33.3", "33.3-66.7", "66.7-100"]
    assert [(row["min_length"], row["n"], row["roc_auc"]) for row in bins] == [
        (10, 1, None),
        (20, 1, None),
        (30, 1, None),
    ]


def test_by_length_all_equal_lengths_keeps_every_sequence():
    probabilities = binary(np.linspace(0, 1, 30))
    bins = metrics_by_length(np.tile([0, 1], 15), probabilities, np.full(30, 500), 2)
    assert len(bins) == 10
    assert sum(row["n"] for row in bins) == 30
    assert all(row["min_length"] == row["max_length"] == 500 for row in bins)


def test_by_length_empty():
    assert metrics_by_length(np.zeros(0, int), np.zeros((0, 2)), np.zeros(0, int), 2) == []


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 50), min_size=1, max_size=60),
    n_bins=st.integers(1, 12),
)
def test_by_length_partitions_every_sample_once(lengths, n_bins):
    lengths = np.array(lengths)
    count = lengths.size
    y_true = np.arange(count) % 2
    bins = metrics_by_length(y_true, binary(np.full(count, 0.5)), lengths, 2, n_bins=n_bins)
    assert len(bins) == min(n_bins, count)
    assert sum(row["n"] for row in bins) == count
    sizes = [row["n"] for row in bins]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    assert bins[0]["min_length"] == lengths.min()
    assert bins[-1]["max_length"] == lengths.max()
    # Bins follow sorted order: sorted lengths sliced by the bin sizes give each range.
    sorted_lengths = np.sort(lengths)
    start = 0
    for row in bins:
        chunk = sorted_lengths[start : start + row["n"]]
        assert (row["min_length"], row["max_length"]) == (chunk.min(), chunk.max())
        start += row["n"]


def test_metrics_table_renders_rows_and_dashes():
    rows = {
        "cmx": classification_metrics(np.array([0, 0, 1, 1]), binary([0.1, 0.4, 0.35, 0.8]), 2),
        "k-mer baseline": classification_metrics(np.array([1, 1]), binary([0.2, 0.9]), 2),
    }
    text = render(metrics_table("test split", rows))
    assert "test split" in text
    for header in ("ROC-AUC", "PR-AUC", "accuracy", "balanced accuracy"):
        assert header in text
    cmx_line = next(line for line in text.splitlines() if "cmx" in line)
    assert "0.750" in cmx_line and "0.833" in cmx_line
    baseline_line = next(line for line in text.splitlines() if "k-mer baseline" in line)
    assert baseline_line.count("–") == 2


def test_length_table_renders_ranges():
    lengths = np.arange(1000, 21000, 1000)
    probabilities = binary(np.tile([0.2, 0.7], 10))
    bins = metrics_by_length(np.tile([0, 1], 10), probabilities, lengths, 2, n_bins=2)
    text = render(length_table("by length", bins))
    assert "0-50" in text and "50-100" in text
    assert "1,000–10,000" in text and "11,000–20,000" in text
    assert "1.000" in text
