"""Tests for cmx_cli.data.batching: depth buckets, token budgets, order, shuffling, packing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cmx_cli.data.batching import make_batches, pack
from models import blocks_for_length


def check_invariants(lengths: list[int], max_tokens: int, batches: list[list[int]]) -> None:
    """The contract every call of make_batches keeps, shuffled or not."""
    flat = [index for batch in batches for index in batch]
    assert sorted(flat) == list(range(len(lengths)))  # each index exactly once
    for batch in batches:
        assert batch, "empty batch"
        depths = {blocks_for_length(lengths[index]) for index in batch}
        assert len(depths) == 1, f"batch {batch} mixes depths {depths}"
        tokens = sum(lengths[index] for index in batch)
        if tokens > max_tokens:
            assert len(batch) == 1 and lengths[batch[0]] > max_tokens, (
                f"batch {batch} has {tokens} > {max_tokens} tokens"
            )


def check_input_order(lengths: list[int], max_tokens: int, batches: list[list[int]]) -> None:
    """Unshuffled: buckets by increasing depth, input order inside, each batch filled greedily."""
    flat = [index for batch in batches for index in batch]
    assert flat == sorted(range(len(lengths)), key=lambda i: (blocks_for_length(lengths[i]), i))
    for batch, following in zip(batches, batches[1:]):
        depth = blocks_for_length(lengths[batch[0]])
        if depth == blocks_for_length(lengths[following[0]]):  # a batch is closed only when the next sequence would not fit
            assert sum(lengths[i] for i in batch) + lengths[following[0]] > max_tokens


# lengths, max_tokens, expected batches (worked out by hand from ⌈log2 L⌉, at least 1).
CASES = [
    pytest.param([], 10, [], id="empty"),
    pytest.param([5], 10, [[0]], id="one"),
    # depths: 3→2, 100→7, 2→1, 5→3, 70→7, 4→2
    pytest.param([3, 100, 2, 5, 70, 4], 10, [[2], [0, 5], [3], [1], [4]], id="mixed-depths"),
    # 1 and 2 both pass one block; 3 and 4 pass two.
    pytest.param([1, 3, 2, 4, 1], 100, [[0, 2, 4], [1, 3]], id="length-1-and-2-share"),
    # exactly at the budget fits; one more token does not.
    pytest.param([4, 4, 4, 4], 8, [[0, 1], [2, 3]], id="exactly-full"),
    pytest.param([4, 4, 4, 4], 7, [[0], [1], [2], [3]], id="one-short"),
    # 5..8 share depth 3: greedy fill in input order.
    pytest.param([5, 6, 7, 8, 5], 12, [[0, 1], [2], [3], [4]], id="greedy"),
    # longer than the budget: alone, never truncated.
    pytest.param([9, 1000, 1000, 9], 16, [[0], [3], [1], [2]], id="over-budget-alone"),
]


@pytest.mark.parametrize("lengths, max_tokens, expected", CASES)
def test_make_batches_without_shuffle(lengths, max_tokens, expected):
    batches = make_batches(lengths, max_tokens)
    assert batches == expected
    check_invariants(lengths, max_tokens, batches)
    check_input_order(lengths, max_tokens, batches)


def test_make_batches_accepts_numpy_lengths():
    lengths = np.array([3, 100, 2, 5, 70, 4], dtype=np.int64)
    assert make_batches(lengths, 10) == [[2], [0, 5], [3], [1], [4]]


def test_shuffle_needs_rng():
    with pytest.raises(ValueError, match="rng"):
        make_batches([1, 2, 3], 10, shuffle=True)


LONG = [int(length) for length in np.random.default_rng(7).integers(1, 3000, size=300)]


def test_shuffle_is_deterministic_per_seed():
    first = make_batches(LONG, 4000, shuffle=True, rng=np.random.default_rng(1))
    again = make_batches(LONG, 4000, shuffle=True, rng=np.random.default_rng(1))
    other = make_batches(LONG, 4000, shuffle=True, rng=np.random.default_rng(2))
    assert first == again
    assert first != other
    for batches in (first, other):
        check_invariants(LONG, 4000, batches)


def test_shuffle_changes_order_but_not_membership_rules():
    plain = make_batches(LONG, 4000)
    shuffled = make_batches(LONG, 4000, shuffle=True, rng=np.random.default_rng(0))
    assert shuffled != plain
    # Batches are shuffled across depths too, not only within a bucket.
    depths = [blocks_for_length(LONG[batch[0]]) for batch in shuffled]
    assert depths != sorted(depths)


def test_shuffle_does_not_touch_the_input():
    lengths = list(LONG)
    make_batches(lengths, 4000, shuffle=True, rng=np.random.default_rng(3))
    assert lengths == LONG


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=5000), max_size=60),
    max_tokens=st.integers(min_value=1, max_value=8000),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_make_batches_property(lengths, max_tokens, seed):
    batches = make_batches(lengths, max_tokens)
    check_invariants(lengths, max_tokens, batches)
    check_input_order(lengths, max_tokens, batches)
    shuffled = make_batches(lengths, max_tokens, shuffle=True, rng=np.random.default_rng(seed))
    check_invariants(lengths, max_tokens, shuffled)
    assert len(shuffled) >= len({blocks_for_length(length) for length in lengths})


@pytest.mark.parametrize(
    "sequences, expected_tokens, expected_offsets",
    [
        pytest.param([[0, 1, 2], [3, 4]], [0, 1, 2, 3, 4], [0, 3, 5], id="two"),
        pytest.param([[5]], [5], [0, 1], id="one-mask-token"),
        pytest.param([[3], [2, 2], [1, 1, 1], [0]], [3, 2, 2, 1, 1, 1, 0], [0, 1, 3, 6, 7],
                     id="four"),
        # uint8 values above 127 must not wrap to negatives.
        pytest.param([[255, 200], [128]], [255, 200, 128], [0, 2, 3], id="high-bytes"),
    ],
)
def test_pack(sequences, expected_tokens, expected_offsets):
    arrays = [np.array(sequence, dtype=np.uint8) for sequence in sequences]
    tokens, offsets = pack(arrays)
    assert tokens.dtype == torch.int64 and offsets.dtype == torch.int64
    assert tokens.device.type == "cpu" and offsets.device.type == "cpu"
    assert tokens.shape == (len(expected_tokens),)
    assert offsets.shape == (len(sequences) + 1,)
    assert tokens.tolist() == expected_tokens
    assert offsets.tolist() == expected_offsets
    for i, array in enumerate(arrays):  # each sequence is recoverable from its offsets
        assert tokens[offsets[i]:offsets[i + 1]].tolist() == array.tolist()


def test_pack_does_not_share_memory_with_input():
    array = np.array([1, 2, 3], dtype=np.uint8)
    tokens, _ = pack([array])
    tokens[0] = 4
    assert array.tolist() == [1, 2, 3]
