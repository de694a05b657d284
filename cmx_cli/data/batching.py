"""Length buckets and token-budget batches (DESIGN.md, "Batching").

Sequences are bucketed by the number of blocks they pass, ⌈log2 L⌉, so that a batch shares a
depth, and each batch is filled up to a token budget so that memory is bounded by tokens,
not by sequence count. A sequence longer than the budget gets a batch of its own: nothing is
ever truncated, padded or chunked.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Optional, Sequence

import numpy as np
import torch

from models.config import blocks_for_length


def make_batches(
    lengths: Sequence[int],
    max_tokens: int,
    shuffle: bool = False,
    rng: Optional[np.random.Generator] = None,
) -> list[list[int]]:
    """Group sequence indices into batches of one depth and at most ``max_tokens`` tokens.

    Args:
        lengths: Length of each sequence.
        max_tokens: Token budget per batch; a longer sequence forms a batch alone.
        shuffle: Shuffle within buckets and the order of batches (training). Without it,
            buckets are visited by depth and sequences keep their input order within one.
        rng: Random generator, required when ``shuffle`` is set.

    Returns:
        Lists of indices; every index appears in exactly one batch.
    """
    if shuffle and rng is None:
        raise ValueError("make_batches(shuffle=True) needs an rng")
    buckets: dict[int, list[int]] = defaultdict(list)
    for index, length in enumerate(lengths):
        buckets[blocks_for_length(int(length))].append(index)
    batches: list[list[int]] = []
    for depth in sorted(buckets):
        members = buckets[depth]
        if shuffle:
            members = [members[i] for i in rng.permutation(len(members))]
        current: list[int] = []
        current_tokens = 0
        for index in members:
            length = int(lengths[index])
            if current and current_tokens + length > max_tokens:
                batches.append(current)
                current, current_tokens = [], 0
            current.append(index)
            current_tokens += length
        if current:
            batches.append(current)
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def pack(sequences: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate token arrays into one packed batch.

    Args:
        sequences: B uint8 token arrays, each of length ≥ 1.

    Returns:
        tokens (T,) int64 and offsets (B+1,) int64, both on the CPU.
    """
    lengths = np.fromiter((len(sequence) for sequence in sequences), dtype=np.int64)
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = torch.from_numpy(np.concatenate(sequences).astype(np.int64))  # (T,)
    return tokens, torch.from_numpy(offsets)  # (T,), (B+1,)
