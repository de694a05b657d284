"""Inference over many sequences: length buckets, packed batches, input order restored."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from cmx_cli.data.batching import make_batches, pack
from cmx_cli.runtime import autocast


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
    model: nn.Module, sequences: Sequence[np.ndarray], max_tokens: int, device: torch.device,
    precision: str,
) -> Iterator[tuple[list[int], list[int], torch.Tensor]]:
    """Run ``model`` in eval mode over token-budget batches of ``sequences``.

    Args:
        model: A network taking (tokens, offsets).
        sequences: Token arrays.
        max_tokens: Token budget per batch.
        device: Where to compute.
        precision: ``fp32`` or ``bf16``.

    Yields:
        The indices of a batch's sequences, its offsets as a list, and the model's output as
        float32 on the CPU. The model's train/eval mode is restored afterwards.
    """
    with evaluating(model):
        for batch in make_batches([len(sequence) for sequence in sequences], max_tokens):
            tokens, offsets = pack([sequences[index] for index in batch])
            with autocast(device, precision):
                output = model(tokens.to(device), offsets.to(device))
            yield batch, offsets.tolist(), output.float().cpu()
