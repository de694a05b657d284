"""What a pretrained (masked-base) model expects at each position: P(base) with it masked.

Each position of the region is replaced by the MASK token in its own copy of the sequence,
and the model's probabilities of A, C, G and T at that position are read back: the picture
GPN users read a DNA language model by. A region of P positions costs P forward passes;
copies are packed many to a batch.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from cmx_cli.alphabet import MASK, N_BASES
from cmx_cli.explain.attribution import Progress
from cmx_cli.tasks.masked_bases import predict_log_probabilities


def masked_profile(model: nn.Module, tokens: np.ndarray, start: int, end: int,
                   max_tokens: int, device: torch.device, precision: str,
                   progress: Optional[Progress] = None) -> np.ndarray:
    """(P, 4) probabilities of A C G T at each position ``start..end-1``, masked alone."""
    per_batch = max(1, max_tokens // max(1, len(tokens)))
    profile = np.zeros((end - start, N_BASES))
    for first in range(start, end, per_batch):
        positions = range(first, min(end, first + per_batch))
        copies = []
        for position in positions:
            copy = tokens.copy()
            copy[position] = MASK
            copies.append(copy)
        predicted = predict_log_probabilities(model, copies, max_tokens, device, precision)
        for row, (position, values) in enumerate(zip(positions, predicted)):
            profile[position - start] = np.exp(values[position].astype(np.float64))
        if progress is not None:
            progress(len(copies))
    return profile / profile.sum(axis=1, keepdims=True)


def information_bits(profile: np.ndarray) -> np.ndarray:
    """(P,) information content of each position's distribution: 2 - entropy, in bits."""
    safe = np.clip(profile, 1e-12, 1.0)
    return 2.0 + (profile * np.log2(safe)).sum(axis=1)
