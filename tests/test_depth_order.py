"""Deepest sequences first: each block runs on the rows of the sequences still passing."""
import numpy as np
import pytest
import torch

from models import ChordMixer, ChordMixerConfig, RotationPlan, blocks_for_length
from models.depth_order import DepthOrder
from models.rotate import rotate_reference


def _offsets(lengths):
    return torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int64)


def test_an_empty_batch_is_a_value_error():
    with pytest.raises(ValueError, match="at least one sequence"):
        DepthOrder.build(torch.tensor([0]), [], [])
    network = ChordMixer(ChordMixerConfig(max_len=16, track_size=2, hidden_size=4))
    with pytest.raises(ValueError, match="at least one sequence"):
        network(torch.zeros(0, dtype=torch.int64), torch.tensor([0]))


def test_an_ordered_batch_is_left_as_it_is():
    order = DepthOrder.build(_offsets([3, 7, 2, 8]), [3, 7, 2, 8], [3, 3, 1, 1])
    assert order.gather is None and order.restore is None
    assert order.rows == (20, 10, 10) and order.sequences == (4, 2, 2)
    rows = torch.arange(20)
    assert order.ordered(rows) is rows and order.restored(rows) is rows


def test_deepest_sequences_come_first_and_go_back():
    lengths, depths = [3, 7, 2, 8], [2, 3, 1, 3]
    order = DepthOrder.build(_offsets(lengths), lengths, depths)
    # Stable: the two depth-3 sequences keep their order, then depth 2, then depth 1.
    assert order.offsets.tolist() == [0, 7, 15, 18, 20]
    assert order.gather.tolist() == [*range(3, 10), *range(12, 20), 0, 1, 2, 10, 11]
    assert order.rows == (20, 18, 15) and order.sequences == (4, 3, 2)
    rows = torch.randn(20, 3)
    assert torch.equal(order.restored(order.ordered(rows)), rows)


@pytest.mark.parametrize("lengths", [[5, 1, 300, 40, 2, 17], [64, 64], [1]])
def test_leading_sequences_rotate_as_they_would_alone(lengths):
    order = DepthOrder.build(_offsets(lengths), lengths, [blocks_for_length(n) for n in lengths])
    plan = RotationPlan.build(order.offsets, 4)
    x = torch.randn(sum(lengths), 4 * 3)
    for rows, prefix in order.steps(plan):
        sequences = order.offsets[:int((order.offsets <= rows).sum())]
        expected = rotate_reference(x[:rows], sequences, 4)
        assert torch.equal(prefix.rotate(x[:rows]), expected)


def test_blocks_run_only_on_the_rows_still_passing():
    torch.manual_seed(0)
    model = ChordMixer(ChordMixerConfig(max_len=300, track_size=2, hidden_size=8, dropout=0.0))
    lengths = [2, 300, 5, 37]  # 1, 9, 3 and 6 blocks
    seen = []
    for block in model.blocks:
        block.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    tokens = torch.randint(0, 4, (sum(lengths),))
    model(tokens, _offsets(lengths)).sum().backward()
    assert seen == [344, 342, 342, 337, 337, 337, 300, 300, 300]
    assert all(p.grad is not None for p in model.blocks.parameters())
