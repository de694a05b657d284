"""Tests for cmx_cli.baselines.flank: what the local-context baseline can learn."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cmx_cli.alphabet import A, C, G, N, T
from cmx_cli.baselines.flank import FlankBaseline, flank_features, n_features
from cmx_cli.variants.windows import AlleleWindow

WIDTH = 61  # window length of the synthetic SNVs
CENTRE = WIDTH // 2


def make_window(
    ref_tokens: np.ndarray, start: int, ref_length: int, alt: list[int]
) -> AlleleWindow:
    """Build an AlleleWindow the way make_windows does: REF -> ALT at ``start``."""
    ref_tokens = np.asarray(ref_tokens, dtype=np.uint8)
    end = start + ref_length
    alt_tokens = np.concatenate(
        (ref_tokens[:start], np.asarray(alt, dtype=np.uint8), ref_tokens[end:])
    )
    return AlleleWindow(ref_tokens, alt_tokens, (start, end), (start, start + len(alt)))


def random_snvs(count: int, seed: int) -> tuple[list[AlleleWindow], np.ndarray, np.ndarray]:
    """Random central SNVs; half are A->C so the joint rule has enough positives.

    Returns:
        ``(windows, ref_tokens, alt_bases)``: the windows, (count, WIDTH) REF tokens,
        (count,) ALT bases.
    """
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 4, size=(count, WIDTH), dtype=np.uint8)  # (count, WIDTH)
    alt = (tokens[:, CENTRE] + rng.integers(1, 4, size=count)) % 4  # (count,)
    a_to_c = rng.random(count) < 0.5
    tokens[a_to_c, CENTRE] = A
    alt[a_to_c] = C
    windows = [make_window(row, CENTRE, 1, [base]) for row, base in zip(tokens, alt)]
    return windows, tokens, alt


def joint_rule(tokens: np.ndarray, alt: np.ndarray) -> np.ndarray:
    """1 iff the base 3 before the SNV is G and the SNV is A->C."""
    return ((tokens[:, CENTRE - 3] == G) & (tokens[:, CENTRE] == A) & (alt == C)).astype(int)


def held_out_auc(rule, groups: Optional[np.ndarray] = None, n_train: int = 3000) -> float:
    """Fit on n_train random SNVs labelled by ``rule`` and return the ROC-AUC on 2000 more."""
    train, train_tokens, train_alt = random_snvs(n_train, seed=1)
    test, test_tokens, test_alt = random_snvs(2000, seed=2)
    model = FlankBaseline().fit(train, rule(train_tokens, train_alt))
    assert model.converged
    return roc_auc_score(rule(test_tokens, test_alt), model.predict_proba(test))


def test_feature_count_and_shape():
    windows, _, _ = random_snvs(7, seed=0)
    matrix = flank_features(windows, flank=5)
    assert n_features(5) == 1552
    assert matrix.shape == (7, 1552) and matrix.format == "csr"
    # 11 REF + 11 ALT slots, class, length change, frame, 10 class x flank slots.
    np.testing.assert_array_equal(matrix.getnnz(axis=1), 35)
    assert set(np.unique(matrix.data)) == {1.0}
    assert "±5 bp" in FlankBaseline().describe() and "1,552" in FlankBaseline().describe()


def test_learns_substitution_jointly_with_local_context():
    assert held_out_auc(joint_rule) > 0.95


def test_learns_context_that_depends_on_the_substitution():
    """Needs the class x flank interactions: without them the held-out AUC is about 0.85."""

    def dependent_rule(tokens: np.ndarray, alt: np.ndarray) -> np.ndarray:
        a_to_c = (tokens[:, CENTRE] == A) & (alt == C)
        before = tokens[:, CENTRE - 3]
        return np.where(a_to_c, before == G, before == T).astype(int)

    assert held_out_auc(dependent_rule) > 0.95


def test_does_not_see_distant_context():
    def distant_rule(tokens: np.ndarray, alt: np.ndarray) -> np.ndarray:
        return (tokens[:, CENTRE + 20] == G).astype(int)

    assert 0.4 < held_out_auc(distant_rule) < 0.6


def edge_and_indel_windows() -> list[AlleleWindow]:
    """SNVs at index 0 and at the end of short windows, indels, an MNV, N and MASK bases."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 4, size=40, dtype=np.uint8)
    windows = [
        make_window(base[:12], 0, 1, [T]),  # SNV at index 0
        make_window(base[:12], 11, 1, [G]),  # SNV at the last index
        make_window(base[:1], 0, 1, [C]),  # a 1 bp window
        make_window(base, 20, 1, [G, T, T, A, C, A, G, G, T]),  # insertion of 8 bp
        make_window(base, 20, 9, [A]),  # deletion of 8 bp
        make_window(base, 37, 3, [C]),  # deletion reaching the end of the window
        make_window(base[:6], 0, 1, [A, A, A, A]),  # insertion at index 0
        make_window(base, 10, 3, [T, T, T]),  # MNV
        make_window(np.full(9, N, dtype=np.uint8), 4, 1, [A]),  # N -> A, all-N flanks
        make_window(np.array([A, 5, C, G, T], dtype=np.uint8), 2, 1, [5]),  # MASK around
    ]
    return windows


def test_edges_and_indels_give_finite_probabilities():
    windows = edge_and_indel_windows()
    snvs, tokens, alt = random_snvs(200, seed=4)
    train = snvs + windows * 3
    labels = np.concatenate((joint_rule(tokens, alt), np.tile([0, 1], len(windows) * 3 // 2)))
    model = FlankBaseline().fit(train, labels)
    probabilities = model.predict_proba(windows)
    assert probabilities.shape == (len(windows),) and probabilities.dtype == np.float64
    assert np.all(np.isfinite(probabilities))
    assert np.all((probabilities >= 0) & (probabilities <= 1))


def test_edge_window_features():
    windows = edge_and_indel_windows()
    dense = flank_features(windows[:1], flank=5).toarray()[0]  # SNV at index 0, 12 bp window
    ref_slots = dense[:55].reshape(11, 5)
    np.testing.assert_array_equal(ref_slots[:5], 0)  # nothing before index 0
    assert ref_slots[5:].sum() == 6  # the allele and 5 bases after it
    mask_row = flank_features(windows[-1:], flank=2).toarray()[0]  # A MASK [C->MASK] G T
    np.testing.assert_array_equal(mask_row[:25].reshape(5, 5).sum(axis=1), [1, 0, 1, 1, 1])
    np.testing.assert_array_equal(mask_row[25:50].reshape(5, 5).sum(axis=1), [1, 0, 0, 1, 1])
    assert mask_row[50 + C * 5 + N] == 1  # SNV class C -> N (MASK counts as N)


def test_groups_with_opposite_rules_are_each_learned():
    windows, tokens, alt = random_snvs(1200, seed=5)
    groups = np.arange(len(windows)) % 2
    rule = (tokens[:, CENTRE - 2] == T).astype(int)
    labels = np.where(groups == 0, rule, 1 - rule)
    train, test = slice(0, 800), slice(800, None)
    model = FlankBaseline().fit(windows[train], labels[train], groups[train])
    probabilities = model.predict_proba(windows[test], groups[test])
    for group in (0, 1):
        chosen = groups[test] == group
        assert roc_auc_score(labels[test][chosen], probabilities[chosen]) > 0.95
    assert "2 groups" in model.describe()
    with pytest.raises(ValueError, match="not seen in training"):
        model.predict_proba(windows[:3], np.array([0, 1, 7]))


def test_single_class_group_is_constant():
    windows, tokens, alt = random_snvs(300, seed=6)
    groups = (np.arange(len(windows)) >= 200).astype(int)
    labels = np.where(groups == 0, joint_rule(tokens, alt), 1)
    labels[:2] = [0, 1]  # group 0 surely holds both classes
    model = FlankBaseline().fit(windows, labels, groups)
    probabilities = model.predict_proba(windows, groups)
    np.testing.assert_array_equal(probabilities[groups == 1], 1.0)
    assert np.unique(probabilities[groups == 0]).size > 1


def test_same_seed_same_probabilities():
    windows, tokens, alt = random_snvs(400, seed=7)
    labels = joint_rule(tokens, alt)
    first = FlankBaseline(seed=3).fit(windows, labels).predict_proba(windows)
    second = FlankBaseline(seed=3).fit(windows, labels).predict_proba(windows)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("bad", [np.array([0, 2, 1]), np.array([0, 1])])
def test_bad_labels_raise(bad):
    windows, _, _ = random_snvs(3, seed=8)
    with pytest.raises(ValueError):
        FlankBaseline().fit(windows, bad)


def test_predict_before_fit_raises():
    windows, _, _ = random_snvs(2, seed=9)
    with pytest.raises(RuntimeError, match="before fit"):
        FlankBaseline().predict_proba(windows)
