"""Tests for cmx_cli.data.dedup: exact duplicates on tokens, first copy wins, conflicts dropped."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmx_cli.alphabet import decode, encode
from cmx_cli.data.dedup import drop_duplicates
from cmx_cli.io.labels import LabelledSequences


def labelled(records: list[tuple[str, str]], source: str = "in.fa") -> LabelledSequences:
    """(letters, label) pairs → LabelledSequences named s0, s1, ..."""
    return LabelledSequences(
        names=[f"s{i}" for i in range(len(records))],
        labels=[label for _, label in records],
        tokens=[encode(letters) for letters, _ in records],
        sources=[source] * len(records),
    )


def counted(messages: list[str], pattern: str) -> list[int]:
    """The numbers after 'dropped' in the messages that match ``pattern``."""
    return [int(re.match(r"dropped (\d+) ", m).group(1)) for m in messages if re.search(pattern, m)]


# records, kept indices, duplicates dropped, conflicting dropped
CASES = [
    pytest.param([], [], 0, 0, id="empty"),
    pytest.param([("ACGT", "a"), ("GGCC", "a"), ("ACGA", "b")], [0, 1, 2], 0, 0,
                 id="all-distinct"),
    pytest.param([("ACGT", "a"), ("GGCC", "b"), ("ACGT", "a"), ("ACGT", "a")], [0, 1], 2, 0,
                 id="exact-copies-keep-first"),
    pytest.param([("GGCC", "b"), ("ACGT", "a"), ("ACGT", "a")], [0, 1], 1, 0,
                 id="first-copy-not-first-record"),
    pytest.param([("ACGTN", "a"), ("acgtn", "a")], [0], 1, 0, id="case"),
    pytest.param([("ACGTR", "a"), ("ACGTN", "a"), ("acgty", "a"), ("AcGtB", "a")], [0], 3, 0,
                 id="iupac-letters-are-all-N"),
    pytest.param([("ACGU", "a"), ("ACGT", "a")], [0], 1, 0, id="u-is-t"),
    pytest.param([("ACGT", "a"), ("ACGTN", "a"), ("ACG", "a"), ("TGCA", "a")], [0, 1, 2, 3], 0, 0,
                 id="prefix-and-reverse-are-distinct"),
    pytest.param([("ACGT", "a"), ("acgt", "b")], [], 0, 2, id="conflict-drops-both"),
    pytest.param([("ACGT", "a"), ("ACGT", "b"), ("ACGT", "a"), ("GGCC", "a")], [3], 0, 3,
                 id="conflict-drops-all-copies"),
    pytest.param(
        [("ACGT", "a"), ("TTTT", "a"), ("acgt", "a"), ("GGGG", "a"), ("gggg", "b"),
         ("TTTT", "a"), ("CCCC", "b")],
        [0, 1, 6], 2, 2, id="mixed",
    ),
]


@pytest.mark.parametrize("records, kept, n_duplicates, n_conflicting", CASES)
def test_drop_duplicates(records, kept, n_duplicates, n_conflicting):
    keep, messages = drop_duplicates(labelled(records))
    assert keep == kept
    assert counted(messages, "duplicate") == ([n_duplicates] if n_duplicates else [])
    assert counted(messages, "different labels") == ([n_conflicting] if n_conflicting else [])
    assert len(messages) == bool(n_duplicates) + bool(n_conflicting)


def test_duplicates_across_sources_keep_the_earlier_file():
    sequences = LabelledSequences(
        names=["held_out_1", "train_1", "train_2"],
        labels=["K", "K", "K"],
        tokens=[encode("ACGTACGT"), encode("ACGTACGT"), encode("TTTTACGT")],
        sources=["test.fa", "train.fa", "train.fa"],
    )
    keep, messages = drop_duplicates(sequences)
    assert [sequences.names[i] for i in keep] == ["held_out_1", "train_2"]
    assert counted(messages, "duplicate") == [1]


def test_drop_duplicates_does_not_modify_its_input():
    sequences = labelled([("ACGT", "a"), ("ACGT", "a"), ("ACGT", "b")])
    before = (list(sequences.names), list(sequences.labels), [t.copy() for t in sequences.tokens])
    drop_duplicates(sequences)
    assert sequences.names == before[0] and sequences.labels == before[1]
    assert all((a == b).all() for a, b in zip(sequences.tokens, before[2]))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.text("ACGTNacgtnRY", min_size=1, max_size=4), st.sampled_from("xyz")),
        max_size=25,
    )
)
def test_drop_duplicates_property(records):
    """Reference: group on the decoded tokens; a group with one label keeps its first member."""
    sequences = labelled(records)
    groups: dict[str, list[int]] = {}
    for index, tokens in enumerate(sequences.tokens):
        groups.setdefault(decode(tokens), []).append(index)
    expected, n_duplicates, n_conflicting = [], 0, 0
    for members in groups.values():
        if len({sequences.labels[i] for i in members}) == 1:
            expected.append(members[0])
            n_duplicates += len(members) - 1
        elif len(members) > 1:
            n_conflicting += len(members)
    keep, messages = drop_duplicates(sequences)
    assert keep == sorted(expected)
    assert counted(messages, "duplicate") == ([n_duplicates] if n_duplicates else [])
    assert counted(messages, "different labels") == ([n_conflicting] if n_conflicting else [])
