"""Reversible blocks: the same function as ordinary backpropagation, with nothing kept."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models import ChordMixer, ChordMixerConfig, RotationPlan, blocks_for_length
from models.depth_order import DepthOrder
from models import packed as packed_batches
from models.reversible import ReversibleBlock, run_reversible

LENGTHS = [3, 40, 300, 17]  # 2, 6, 9 and 5 blocks: mixed depths


def _offsets(lengths):
    return torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int64)


def _tokens(lengths, seed=1):
    return torch.randint(0, 4, (sum(lengths),), generator=torch.Generator().manual_seed(seed))


def _plain(blocks, x1, x2, steps):
    """The same blocks by ordinary autograd, which keeps every activation."""
    for block, (rows, plan) in zip(blocks, steps):
        x1, x2 = block(x1, x2, rows, plan)
    return x1, x2


def _stack_and_inputs(dtype, dropout):
    torch.manual_seed(0)
    config = ChordMixerConfig(max_len=300, track_size=4, hidden_size=16, dropout=dropout,
                              reversible=True)
    network = ChordMixer(config).to(dtype)
    order = DepthOrder.build(_offsets(LENGTHS), LENGTHS,
                             [blocks_for_length(n) for n in LENGTHS])
    steps = order.steps(RotationPlan.build(order.offsets, config.n_tracks))
    assert [rows for rows, _ in steps] == [360, 360, 357, 357, 357, 340, 300, 300, 300]
    x1, x2 = (torch.randn(sum(LENGTHS), config.d_model // 2, dtype=dtype) for _ in range(2))
    return network, steps, x1, x2


@pytest.mark.parametrize("slice_rows", [2**16, 50])  # one slice; 8 of them (360 rows)
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_gradients_equal_ordinary_backpropagation(dropout, slice_rows, monkeypatch):
    monkeypatch.setattr(packed_batches, "SLICE_ROWS", slice_rows)
    network, steps, x1, x2 = _stack_and_inputs(torch.float64, dropout)
    results = []
    for run in (_plain, run_reversible):
        network.zero_grad()
        inputs = [x1.clone().requires_grad_(), x2.clone().requires_grad_()]
        torch.manual_seed(7)  # the same dropout masks in both runs
        y1, y2 = run(network.blocks, *inputs, steps)
        (y1.square().sum() + (y2 * torch.linspace(-1, 1, y2.shape[1], dtype=y2.dtype)).sum()
         ).backward()
        results.append([y1.detach(), y2.detach(), *(t.grad for t in inputs),
                        *(p.grad.clone() for p in network.blocks.parameters())])
    for plain, reversible in zip(*results):
        torch.testing.assert_close(reversible, plain, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("slice_rows", [2**16, 50])
def test_training_keeps_only_the_output_of_the_stack(slice_rows, monkeypatch):
    monkeypatch.setattr(packed_batches, "SLICE_ROWS", slice_rows)
    network, steps, x1, x2 = _stack_and_inputs(torch.float32, 0.1)
    saved = []

    def pack(tensor):
        saved.append(tensor.numel())
        return tensor

    inputs = [x1.requires_grad_(), x2.requires_grad_()]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        y1, y2 = run_reversible(network.blocks, *inputs, steps)
    assert saved == []  # nothing per block, and not even the outputs through autograd:
    kept = y1.grad_fn.outputs  # the stack keeps its outputs itself, to free them early
    assert [t.data_ptr() for t in kept] == [y1.data_ptr(), y2.data_ptr()]
    (y1.sum() + y2.sum()).backward()
    assert y1.grad_fn.outputs is None  # let go once backward has used them
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        _plain(network.blocks, *inputs, steps)
    assert sum(saved) > 10 * x1.numel()


def test_the_trunk_trains_like_ordinary_backpropagation_in_float32():
    network, *_ = _stack_and_inputs(torch.float32, 0.2)
    tokens, offsets = _tokens(LENGTHS), _offsets(LENGTHS)
    results = []
    for reversible_backward in (False, True):
        network.zero_grad()
        torch.manual_seed(3)
        if reversible_backward:
            output = network(tokens, offsets)
        else:
            with _ordinary_backward():
                output = network(tokens, offsets)
        output.square().mean().backward()
        results.append([output.detach(), *(p.grad.clone() for p in network.parameters())])
    for plain, reversible in zip(*results):
        torch.testing.assert_close(reversible, plain, rtol=1e-4, atol=1e-6)


class _ordinary_backward:
    """Swap the reversible stack for ordinary autograd inside ``ChordMixer.forward``."""

    def __enter__(self):
        import models.chordmixer as trunk
        self.trunk, self.original = trunk, trunk.run_reversible
        trunk.run_reversible = _plain

    def __exit__(self, *exc):
        self.trunk.run_reversible = self.original


def test_backward_leaves_the_random_generator_where_forward_left_it():
    network, *_ = _stack_and_inputs(torch.float32, 0.5)
    tokens, offsets = _tokens(LENGTHS), _offsets(LENGTHS)
    output = network(tokens, offsets)
    after_forward = torch.get_rng_state()
    output.sum().backward()
    assert torch.equal(torch.get_rng_state(), after_forward)


def test_a_second_backward_is_a_clear_error():
    network, *_ = _stack_and_inputs(torch.float32, 0.0)
    loss = network(_tokens(LENGTHS), _offsets(LENGTHS)).sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass per forward"):
        loss.backward()


def test_a_frozen_embedding_still_trains_the_blocks():
    network, *_ = _stack_and_inputs(torch.float32, 0.0)
    network.embedding.weight.requires_grad_(False)
    network(_tokens(LENGTHS), _offsets(LENGTHS)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in network.blocks.parameters())


def test_output_does_not_depend_on_batch_companions():
    network, *_ = _stack_and_inputs(torch.float32, 0.0)
    network.eval()
    lengths = [2, 300, 1, 37, 5]
    tokens, offsets = _tokens(lengths), _offsets(lengths)
    with torch.no_grad():
        packed = network(tokens, offsets)
        for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
            alone = network(tokens[start:end], _offsets([end - start]))
            torch.testing.assert_close(packed[start:end], alone, rtol=1e-5, atol=1e-5)


def test_a_sequence_passes_exactly_its_blocks():
    torch.manual_seed(0)
    network = ChordMixer(ChordMixerConfig(max_len=64, track_size=2, hidden_size=8, dropout=0.0,
                                          reversible=True)).eval()
    tokens, offsets = torch.tensor([0, 1, 2]), _offsets([3])  # 2 blocks
    with torch.no_grad():
        before = network(tokens, offsets)
        for parameter in network.blocks[2].parameters():
            parameter.zero_()
        assert torch.equal(network(tokens, offsets), before)
        for parameter in network.blocks[1].second.parameters():
            parameter.zero_()
        assert not torch.allclose(network(tokens, offsets), before)


@pytest.mark.parametrize("length", [2, 64, 77])
def test_every_input_position_reaches_every_output_after_log2_blocks(length):
    torch.manual_seed(0)
    network = ChordMixer(ChordMixerConfig(max_len=length, track_size=2, hidden_size=16,
                                          dropout=0.0, reversible=True))
    embedded = []

    def keep_embedding(module, args, out):
        out.retain_grad()
        embedded.append(out)

    network.embedding.register_forward_hook(keep_embedding)
    # A projection that LayerNorm does not cancel (its outputs sum to a constant).
    projection = torch.linspace(-1.0, 1.0, network.config.d_model)
    for position in (0, length - 1):
        embedded.clear()
        output = network(_tokens([length]), _offsets([length]))
        (output[position] * projection).sum().backward()
        assert bool((embedded[0].grad.abs().sum(dim=1) > 0).all())


def test_bf16_autocast_gradients_stay_close_to_ordinary_backpropagation():
    network, *_ = _stack_and_inputs(torch.float32, 0.0)
    tokens, offsets = _tokens(LENGTHS), _offsets(LENGTHS)
    gradients = []
    for reversible_backward in (False, True):
        network.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if reversible_backward:
                output = network(tokens, offsets)
            else:
                with _ordinary_backward():
                    output = network(tokens, offsets)
        output.float().square().mean().backward()
        gradients.append(torch.cat([p.grad.flatten() for p in network.parameters()]))
    plain, reversible = gradients
    assert torch.isfinite(reversible).all()
    assert (reversible - plain).norm() <= 0.05 * plain.norm()


def test_config_needs_an_even_track_size_and_old_configs_load_as_not_reversible():
    with pytest.raises(ValueError, match="even"):
        ChordMixerConfig(track_size=3, reversible=True)
    config = ChordMixerConfig(track_size=4, reversible=True)
    assert ChordMixerConfig.from_dict(config.to_dict()) == config
    old = {key: value for key, value in config.to_dict().items() if key != "reversible"}
    assert ChordMixerConfig.from_dict(old).reversible is False


def test_blocks_are_pairs_of_half_width_blocks_with_as_many_weights():
    standard = ChordMixer(ChordMixerConfig(max_len=256, track_size=4, hidden_size=16))
    reversible = ChordMixer(ChordMixerConfig(max_len=256, track_size=4, hidden_size=16,
                                             reversible=True))
    assert all(isinstance(block, ReversibleBlock) for block in reversible.blocks)
    assert reversible.blocks[0].first.mix[0].in_features == standard.config.d_model // 2
    weights = [sum(p.numel() for p in n.blocks.parameters() if p.dim() == 2)
               for n in (standard, reversible)]
    assert weights[0] == weights[1]
