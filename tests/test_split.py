"""Tests for cmx_cli.data.split: stratified splits and the split.tsv file."""
from __future__ import annotations

from collections import Counter
from itertools import zip_longest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmx_cli.data.split import read_split, stratified_group_split, stratified_split, write_split
from cmx_cli.errors import CmxError


def interleaved_labels(sizes: dict[str, int]) -> list[str]:
    """Labels with the classes interleaved (a, b, c, a, b, c, ...), not in blocks."""
    columns = [[label] * size for label, size in sizes.items()]
    return [label for row in zip_longest(*columns) for label in row if label is not None]


def counts_per_class(labels: list[str], splits: list[str]) -> dict[str, tuple[int, int, int]]:
    counter = Counter(zip(labels, splits))
    return {
        label: (counter[label, "train"], counter[label, "val"], counter[label, "test"])
        for label in sorted(set(labels))
    }


def documented_counts(n: int, val: float, test: float) -> tuple[int, int, int]:
    """round(n·test) to test, round(n·val) to val, the rest to train; all to train if that
    would leave training without a member."""
    n_test, n_val = round(n * test), round(n * val)
    if n_test + n_val >= n:
        return n, 0, 0
    return n - n_val - n_test, n_val, n_test


# class sizes, val fraction, test fraction, expected (train, val, test) per class, by hand.
PROPORTIONS = [
    pytest.param({"a": 10}, 0.1, 0.2, {"a": (7, 1, 2)}, id="one-class"),
    pytest.param({"a": 100, "b": 7}, 0.1, 0.1, {"a": (80, 10, 10), "b": (5, 1, 1)},
                 id="imbalanced"),
    pytest.param({"a": 50, "b": 50}, 0.2, 0.1, {"a": (35, 10, 5), "b": (35, 10, 5)},
                 id="balanced"),
    pytest.param({"a": 20, "b": 1, "c": 9}, 0.15, 0.25,
                 {"a": (12, 3, 5), "b": (1, 0, 0), "c": (6, 1, 2)}, id="three-classes"),
    pytest.param({"a": 3}, 0.2, 0.2, {"a": (1, 1, 1)}, id="three-one-each"),
    pytest.param({"a": 4}, 0.1, 0.4, {"a": (2, 0, 2)}, id="no-val-after-rounding"),
    pytest.param({"a": 6}, 0.0, 0.5, {"a": (3, 0, 3)}, id="no-val-fraction"),
    pytest.param({"a": 10}, 0.0, 0.0, {"a": (10, 0, 0)}, id="all-train"),
    # Tiny classes: the held-out parts would take every member, so all stay in training.
    pytest.param({"a": 2, "b": 10}, 0.4, 0.4, {"a": (2, 0, 0), "b": (2, 4, 4)},
                 id="tiny-class-two"),
    pytest.param({"a": 1, "b": 10}, 0.3, 0.3, {"a": (1, 0, 0), "b": (4, 3, 3)},
                 id="singleton"),
    pytest.param({"a": 10}, 0.5, 0.5, {"a": (10, 0, 0)}, id="nothing-left-for-train"),
]


@pytest.mark.parametrize("sizes, val, test, expected", PROPORTIONS)
def test_stratified_split_proportions(sizes, val, test, expected):
    labels = interleaved_labels(sizes)
    splits = stratified_split(labels, val, test, seed=0)
    assert len(splits) == len(labels)
    assert set(splits) <= {"train", "val", "test"}
    assert counts_per_class(labels, splits) == expected


def test_stratified_split_is_deterministic_by_seed():
    labels = interleaved_labels({"a": 40, "b": 30})
    first = stratified_split(labels, 0.2, 0.2, seed=5)
    assert stratified_split(labels, 0.2, 0.2, seed=5) == first
    other = stratified_split(labels, 0.2, 0.2, seed=6)
    assert other != first
    assert counts_per_class(labels, other) == counts_per_class(labels, first)


def test_stratified_split_draws_members_at_random():
    """The test members are drawn at random, not the first ones of each class."""
    labels = ["a"] * 100
    splits = stratified_split(labels, 0.1, 0.1, seed=0)
    assert splits[:20] != ["test"] * 10 + ["val"] * 10
    assert splits.count("test") == 10 and splits.count("val") == 10


def test_stratified_split_empty():
    assert stratified_split([], 0.1, 0.1, seed=0) == []


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.dictionaries(st.sampled_from("abcdefg"), st.integers(1, 60), min_size=1),
    val=st.sampled_from([0.0, 0.05, 0.1, 0.15, 0.2, 0.3]),
    test=st.sampled_from([0.0, 0.05, 0.1, 0.15, 0.2, 0.3]),
    seed=st.integers(0, 1000),
)
def test_stratified_split_follows_documented_rule(sizes, val, test, seed):
    labels = interleaved_labels(sizes)
    splits = stratified_split(labels, val, test, seed)
    expected = {label: documented_counts(n, val, test) for label, n in sizes.items()}
    assert counts_per_class(labels, splits) == dict(sorted(expected.items()))
    assert stratified_split(labels, val, test, seed) == splits


NAMES = ["seq1", "seq 2", 'quote"d', "seq1", "x|y;z"]
SOURCES = ["a.fa", "a.fa", "b.fa", "b.fa", "dir with space/c.fa"]
LABELS = ["Kleb", "Kleb", "Acin", "Acin", "Kleb"]
SPLITS = ["train", "val", "test", "train", "train"]


def test_write_read_split_round_trip(tmp_path):
    path = tmp_path / "split.tsv"
    write_split(path, NAMES, SOURCES, LABELS, SPLITS)
    assert path.read_text().splitlines()[0].split("\t") == ["name", "source", "label", "split"]
    assert len(path.read_text().splitlines()) == 1 + len(NAMES)
    assert read_split(path) == {
        ("a.fa", "seq1"): "train",
        ("a.fa", "seq 2"): "val",
        ("b.fa", 'quote"d'): "test",
        ("b.fa", "seq1"): "train",  # same name in another source is another sequence
        ("dir with space/c.fa", "x|y;z"): "train",
    }


@settings(max_examples=50, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12),
            st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12),
            st.sampled_from(["train", "val", "test"]),
        ),
        min_size=1,
        max_size=20,
        unique_by=lambda row: (row[0], row[1]),
    )
)
def test_write_read_split_round_trip_property(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("split") / "split.tsv"
    names = [row[0] for row in rows]
    sources = [row[1] for row in rows]
    splits = [row[2] for row in rows]
    write_split(path, names, sources, ["label"] * len(rows), splits)
    assert read_split(path) == {(source, name): split for name, source, split in rows}


def test_read_split_missing_file(tmp_path):
    path = tmp_path / "split.tsv"
    with pytest.raises(CmxError) as error:
        read_split(path)
    assert str(path) in error.value.message
    assert "Hint:" in error.value.message
    assert error.value.exit_code == 1


def test_read_split_directory_is_not_a_split_file(tmp_path):
    with pytest.raises(CmxError, match="Hint:"):
        read_split(tmp_path)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("name\tlabel\tsplit\nseq1\tKleb\ttrain\n", id="no-source"),
        pytest.param("name\tsource\tlabel\nseq1\ta.fa\tKleb\n", id="no-split"),
        pytest.param("seq1\ta.fa\tKleb\ttrain\nseq2\ta.fa\tKleb\tval\n", id="no-header"),
        pytest.param("name,source,label,split\nseq1,a.fa,Kleb,train\n", id="comma-separated"),
    ],
)
def test_read_split_wrong_columns(tmp_path, text):
    path = tmp_path / "split.tsv"
    path.write_text(text)
    with pytest.raises(CmxError) as error:
        read_split(path)
    assert str(path) in error.value.message
    assert "column" in error.value.message
    assert "Hint:" in error.value.message


def test_read_split_empty_file_is_damaged(tmp_path):
    path = tmp_path / "split.tsv"
    path.write_text("")
    with pytest.raises(CmxError, match="Hint:"):
        read_split(path)


def test_read_split_header_only_is_damaged(tmp_path):
    # A run always has sequences: a split without rows means a damaged run directory.
    path = tmp_path / "split.tsv"
    write_split(path, [], [], [], [])
    with pytest.raises(CmxError, match="Hint:"):
        read_split(path)



def _grouped_labels(seed=0):
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for label in ("a", "b"):
        for group in range(30):
            size = int(rng.integers(1, 6))
            labels += [label] * size
            groups += [f"{label}{group}"] * size
    return labels, groups


def test_group_split_keeps_every_group_whole():
    labels, groups = _grouped_labels()
    splits = stratified_group_split(labels, groups, 0.1, 0.2, seed=3)
    split_of_group = {}
    for group, split in zip(groups, splits):
        assert split_of_group.setdefault(group, split) == split, group
    for label in ("a", "b"):
        members = [s for s, lab in zip(splits, labels) if lab == label]
        # Whole groups of at most 5 overshoot the target by less than one group.
        assert round(0.2 * len(members)) <= members.count("test") < round(0.2 * len(members)) + 5
        assert round(0.1 * len(members)) <= members.count("val") < round(0.1 * len(members)) + 5
        assert members.count("train") > 0
    assert stratified_group_split(labels, groups, 0.1, 0.2, seed=3) == splits
    assert stratified_group_split(labels, groups, 0.1, 0.2, seed=4) != splits


def test_group_split_assigns_a_mixed_group_by_its_majority():
    labels = ["a", "a", "b", "b", "b", "a"]
    groups = ["g1", "g1", "g1", "g2", "g2", "g3"]
    splits = stratified_group_split(labels, groups, 0.0, 0.0, seed=0)
    assert splits == ["train"] * 6
    splits = stratified_group_split(labels, groups, 0.0, 0.5, seed=0)
    assert len({splits[0], splits[1], splits[2]}) == 1  # g1 stays whole
