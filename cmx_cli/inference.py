"""Running a trained network over many inputs: one batched, no-grad loop for every head.

Inputs (sequences, or variants with two windows each) are grouped into token-budget batches
of one depth (:func:`~cmx_cli.data.batching.make_batches`); a head's packing function turns
a batch into the tensors its network takes, and its caller reads the outputs back into
input order. Strands are averaged in one place (:func:`mean_over_strands`).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from cmx_cli.data.batching import make_batches
from cmx_cli.interrupts import raise_if_interrupted
from cmx_cli.runtime import autocast

#: Turns the input indices of one batch into the network's input tensors, on the CPU.
PackBatch = Callable[[list[int]], tuple[torch.Tensor, ...]]


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block, then restore its train/eval mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def batched_outputs(
    model: nn.Module, lengths: Sequence[int], pack_batch: PackBatch, max_tokens: int,
    device: torch.device, precision: str,
) -> Iterator[tuple[list[int], tuple[torch.Tensor, ...], torch.Tensor]]:
    """Run ``model`` in eval mode over token-budget batches of its inputs.

    Args:
        model: A network on ``device``.
        lengths: Tokens of each input (both windows of a variant count).
        pack_batch: Builds one batch's input tensors from its input indices.
        max_tokens: Token budget per batch.
        device: Where to compute.
        precision: ``fp32`` or ``bf16``.

    Yields:
        A batch's input indices, its input tensors (on the CPU) and the model's output as
        float32 on the CPU. The model's train/eval mode is restored afterwards.
    """
    with evaluating(model):
        for batch in make_batches(lengths, max_tokens):
            raise_if_interrupted()
            inputs = pack_batch(batch)
            with autocast(device, precision):
                output = model(*(tensor.to(device) for tensor in inputs))
            yield batch, inputs, output.float().cpu()


#: Scores ``(input index, reverse strand)`` members in one pass, one score (row) each.
ScoreStrands = Callable[[Sequence[tuple[int, bool]]], np.ndarray]


def mean_over_strands(score: ScoreStrands, count: int, both_strands: bool) -> np.ndarray:
    """Each input's score as given, or the mean of its two strands' scores.

    Both strands of an input are scored in the same pass (the reverse right after the
    forward one), so that they share batches.

    Args:
        score: Scores a list of ``(input index, reverse strand)`` members.
        count: Number of inputs.
        both_strands: Average the forward and the reverse strand.

    Returns:
        (count, ...) scores in input order.
    """
    if not both_strands:
        return score([(index, False) for index in range(count)])
    scores = score([(index, reverse) for index in range(count) for reverse in (False, True)])
    return scores.reshape(count, 2, *scores.shape[1:]).mean(axis=1)
