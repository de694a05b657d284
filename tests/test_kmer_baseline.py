"""Tests for cmx_cli.kmer_baseline: exact k-mer counts and the baseline's behaviour."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from cmx_cli.alphabet import encode
from cmx_cli.baselines.kmer import KmerBaseline, kmer_frequencies
from cmx_cli.metrics.classification import classification_metrics


def column(kmer: str) -> int:
    """Column of a k-mer, computed independently of the module: base-4, first base high."""
    index = 0
    for letter in kmer:
        index = index * 4 + "ACGT".index(letter)
    return index


def naive_frequencies(letters: str, k: int) -> dict[int, float]:
    """Count k-mers with a plain Python loop, skipping windows with anything but ACGT."""
    windows = [letters[i : i + k].upper() for i in range(len(letters) - k + 1)]
    counts = Counter(window for window in windows if set(window) <= set("ACGT"))
    total = sum(counts.values())
    return {column(kmer): count / total for kmer, count in counts.items()}


def row_dict(matrix: sparse.csr_matrix, row: int) -> dict[int, float]:
    values = matrix.getrow(row)
    return {int(index): float(value) for index, value in zip(values.indices, values.data)}


@pytest.mark.parametrize(
    "letters, k, expected",
    [
        ("ACGTA", 2, {"AC": 0.25, "CG": 0.25, "GT": 0.25, "TA": 0.25}),
        ("ACNGT", 2, {"AC": 0.5, "GT": 0.5}),  # CN and NG skipped
        ("ACGNNACG", 3, {"ACG": 1.0}),
        ("AAAC", 1, {"A": 0.75, "C": 0.25}),
        ("AAAA", 2, {"AA": 1.0}),  # strand-specific: no TT from the reverse strand
        ("ACGT", 4, {"ACGT": 1.0}),
        ("acgtA", 2, {"AC": 0.25, "CG": 0.25, "GT": 0.25, "TA": 0.25}),  # soft-masked
        ("TTTTG", 5, {"TTTTG": 1.0}),
        ("A", 2, {}),  # shorter than k
        ("", 3, {}),
        ("NNNN", 1, {}),
        ("ANA", 2, {}),  # every window touches N
    ],
)
def test_exact_frequencies(letters, k, expected):
    matrix = kmer_frequencies([encode(letters)], k)
    assert matrix.shape == (1, 4**k)
    expected_columns = {column(kmer): value for kmer, value in expected.items()}
    assert row_dict(matrix, 0) == pytest.approx(expected_columns)


def test_matrix_type_shape_and_row_sums():
    sequences = [encode(text) for text in ("ACGTACGT", "N", "GGGGCC", "")]
    matrix = kmer_frequencies(sequences, 3)
    assert sparse.issparse(matrix) and matrix.format == "csr"
    assert matrix.dtype == np.float32
    assert matrix.shape == (4, 64)
    np.testing.assert_allclose(matrix.sum(axis=1).A1, [1.0, 0.0, 1.0, 0.0], rtol=1e-6)


def test_no_sequences():
    assert kmer_frequencies([], 2).shape == (0, 16)


@pytest.mark.parametrize("k", [0, -1, 13])
def test_bad_k_raises(k):
    with pytest.raises(ValueError, match="k must be"):
        kmer_frequencies([encode("ACGT")], k)
    with pytest.raises(ValueError, match="k must be"):
        KmerBaseline(k=k)


@settings(max_examples=80, deadline=None)
@given(letters=st.text(alphabet="ACGTN", max_size=60), k=st.integers(1, 6))
def test_matches_naive_count(letters, k):
    matrix = kmer_frequencies([encode(letters)], k)
    assert row_dict(matrix, 0) == pytest.approx(naive_frequencies(letters, k), rel=1e-6)


def test_megabase_sequence():
    tokens = np.zeros(1_000_000, dtype=np.uint8)  # all A
    tokens[500_000] = 4  # one N removes the five windows that cover it
    matrix = kmer_frequencies([tokens, tokens[:3]], 5)
    assert row_dict(matrix, 0) == {column("AAAAA"): 1.0}
    assert matrix[1].nnz == 0


def composition_sequences(
    rng: np.random.Generator, base_probabilities: list[float], count: int
) -> list[np.ndarray]:
    """Random sequences of 80-300 bp drawn from one base composition (A, C, G, T)."""
    return [
        rng.choice(4, size=int(rng.integers(80, 300)), p=base_probabilities).astype(np.uint8)
        for _ in range(count)
    ]


AT_RICH = [0.35, 0.15, 0.15, 0.35]
GC_RICH = [0.15, 0.35, 0.35, 0.15]
UNIFORM = [0.25, 0.25, 0.25, 0.25]


def labelled(rng, compositions: list[list[float]], count: int):
    sequences, labels = [], []
    for label, composition in enumerate(compositions):
        sequences += composition_sequences(rng, composition, count)
        labels += [label] * count
    return sequences, np.array(labels)


def test_separates_gc_rich_from_at_rich():
    rng = np.random.default_rng(1)
    train, y_train = labelled(rng, [AT_RICH, GC_RICH], 60)
    test, y_test = labelled(rng, [AT_RICH, GC_RICH], 60)
    baseline = KmerBaseline(k=3).fit(train, y_train)
    assert baseline.converged is True
    probabilities = baseline.predict_proba(test)
    assert probabilities.shape == (120, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert classification_metrics(y_test, probabilities, 2)["roc_auc"] > 0.95


def test_chance_level_on_identical_distributions():
    # Both classes come from one distribution, so nothing generalises: a baseline that
    # scored well here would be leaking labels. 400 test sequences put the AUC's standard
    # error near 0.03, so [0.35, 0.65] is about five standard errors wide (this seed
    # gives 0.53; other seeds range 0.41-0.53).
    rng = np.random.default_rng(3)
    train, y_train = labelled(rng, [UNIFORM, UNIFORM], 100)
    test, y_test = labelled(rng, [UNIFORM, UNIFORM], 200)
    probabilities = KmerBaseline(k=3).fit(train, y_train).predict_proba(test)
    assert 0.35 < classification_metrics(y_test, probabilities, 2)["roc_auc"] < 0.65


def test_three_classes():
    rng = np.random.default_rng(3)
    compositions = [AT_RICH, GC_RICH, [0.45, 0.05, 0.45, 0.05]]
    train, y_train = labelled(rng, compositions, 40)
    test, y_test = labelled(rng, compositions, 40)
    baseline = KmerBaseline(k=2, class_weight="balanced").fit(train, y_train)
    probabilities = baseline.predict_proba(test)
    assert probabilities.shape == (120, 3)
    assert classification_metrics(y_test, probabilities, 3)["roc_auc"] > 0.95


def test_same_seed_is_deterministic():
    rng = np.random.default_rng(4)
    train, y_train = labelled(rng, [AT_RICH, UNIFORM], 30)
    first = KmerBaseline(k=4, seed=7).fit(train, y_train).predict_proba(train)
    second = KmerBaseline(k=4, seed=7).fit(train, y_train).predict_proba(train)
    np.testing.assert_array_equal(first, second)


def test_columns_follow_class_indices_when_a_class_is_absent():
    rng = np.random.default_rng(5)
    train, y_train = labelled(rng, [AT_RICH, GC_RICH], 20)
    y_train = y_train * 2  # classes 0 and 2; class 1 never seen
    baseline = KmerBaseline(k=2).fit(train, y_train, n_classes=3)
    probabilities = baseline.predict_proba(train)
    assert probabilities.shape == (40, 3)
    assert np.all(probabilities[:, 1] == 0.0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    # Without n_classes the width is max(label) + 1.
    assert KmerBaseline(k=2).fit(train, y_train).predict_proba(train[:1]).shape == (1, 3)


def test_predict_no_sequences():
    rng = np.random.default_rng(6)
    train, y_train = labelled(rng, [AT_RICH, GC_RICH], 10)
    assert KmerBaseline(k=2).fit(train, y_train).predict_proba([]).shape == (0, 2)


@pytest.mark.parametrize(
    "labels, n_classes, message",
    [
        ([1, 1, 1, 1], None, "at least two classes"),
        ([0, 1, 0], None, "4 sequences but 3 labels"),
        ([0, 1, 2, 0], 2, "exceed n_classes"),
        ([0, -1, 0, 1], None, "non-negative"),
    ],
)
def test_fit_rejects_bad_labels(labels, n_classes, message):
    sequences = [encode("ACGTACGT")] * 4
    with pytest.raises(ValueError, match=message):
        KmerBaseline(k=2).fit(sequences, np.array(labels), n_classes=n_classes)


def test_predict_before_fit_raises():
    with pytest.raises(RuntimeError, match="before fit"):
        KmerBaseline().predict_proba([encode("ACGT")])


@pytest.mark.parametrize(
    "baseline, text",
    [
        (KmerBaseline(), "5-mer frequencies + logistic regression"),
        (
            KmerBaseline(k=3, class_weight="balanced"),
            "3-mer frequencies + logistic regression (balanced class weights)",
        ),
    ],
)
def test_describe(baseline, text):
    assert baseline.describe() == text
