"""An optional local stem: each position's input also embeds its neighbours' bases.

In the paper's network a position first sees its neighbours through the blocks: block 1
brings offsets 1, 2, 4, 8, ... and offset 3 (one codon) needs two blocks. DNA language
models lean on local context (GPN's dilated convolutions, DNABERT's k-mers). This stem adds,
to the token embedding of position i, one learned vector per neighbour i + o for every
offset 0 < |o| ≤ radius: a width-(2 radius + 1) convolution of the one-hot sequence, which
stops at each sequence's ends (a packed batch never leaks between its sequences).

Its weight holds one row per (offset, token): row ``k * vocab_size + token`` is the vector of
``token`` seen at ``offsets[k]``. A neighbour past the sequence's end reads a constant zero row
appended at run time (faster than ``embedding_bag``'s ``padding_idx``, and never trained).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LocalContext(nn.Module):
    """The sum of the neighbours' embeddings within ±radius, per position of a packed batch.

    Args:
        vocab_size: Input tokens.
        d_model: Channels.
        radius: Neighbours on each side (≥ 1).
    """

    def __init__(self, vocab_size: int, d_model: int, radius: int) -> None:
        super().__init__()
        if radius < 1:
            raise ValueError(f"a local stem needs radius >= 1, got {radius}")
        self.vocab_size = vocab_size
        #: The neighbour offsets, in the order of the table's blocks of rows.
        self.offsets = tuple(o for o in range(-radius, radius + 1) if o)
        self.padding_row = len(self.offsets) * vocab_size
        self.weight = nn.Parameter(torch.empty(self.padding_row, d_model))
        # Each neighbour's vector is drawn like an embedding row, scaled so that all of them
        # together are about as large as the position's own token embedding.
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(len(self.offsets)))

    def table(self) -> torch.Tensor:
        """(offsets, vocab_size, d) the vector of each token at each offset."""
        return self.weight.view(len(self.offsets), self.vocab_size, -1)

    def forward(self, tokens: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """(T, d) the local-context vectors of a packed batch.

        Args:
            tokens: (T,) int64 tokens of all sequences, concatenated.
            offsets: (B+1,) int64 sequence boundaries.
        """
        total = tokens.shape[0]
        position = torch.arange(total, device=tokens.device)  # (T,)
        lengths = offsets[1:] - offsets[:-1]
        start = torch.repeat_interleave(offsets[:-1], lengths)  # (T,) own sequence's start
        end = torch.repeat_interleave(offsets[1:], lengths)  # (T,) and end
        shift = torch.tensor(self.offsets, device=tokens.device)  # (K,)
        neighbour = position[:, None] + shift  # (T, K)
        inside = (neighbour >= start[:, None]) & (neighbour < end[:, None])
        seen = tokens[neighbour.clamp(0, max(total - 1, 0))]  # (T, K)
        first_row = torch.arange(len(self.offsets), device=tokens.device) * self.vocab_size
        rows = torch.where(inside, first_row + seen, self.padding_row)  # (T, K)
        table = torch.cat([self.weight, self.weight.new_zeros(1, self.weight.shape[1])])
        return F.embedding_bag(rows, table, mode="sum")
