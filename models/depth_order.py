"""Deepest sequences first: each block updates a prefix of the packed rows (paper §3.3).

A sequence of length L passes exactly its first ⌈log2 L⌉ blocks. When the sequences of a
batch have different depths, the encoder orders them deepest first (stably), so that the
positions block i updates, those of the sequences with more than i blocks, are always the
first rows of the packed tensor. The block then runs on those rows only: no computation is
spent, and no mask is applied, on sequences that have passed all their blocks. The encoder
puts the rows back in the caller's order at the end.
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate
from typing import Optional

import torch

from models.packed import token_position, token_sequence


@dataclass(frozen=True)
class DepthOrder:
    """The batch's sequences ordered deepest first, and how many rows each block updates.

    Attributes:
        offsets: (B+1,) int64 boundaries of the ordered batch.
        rows: For each block up to the deepest, the number of leading rows it updates.
        sequences: For each block, the number of leading sequences it updates.
        gather: (T,) int64, row r of the ordered batch is row ``gather[r]`` of the input;
            None when the input is already ordered.
        restore: (T,) int64, the inverse of ``gather`` (None likewise).
    """

    offsets: torch.Tensor
    rows: tuple[int, ...]
    sequences: tuple[int, ...]
    gather: Optional[torch.Tensor] = None
    restore: Optional[torch.Tensor] = None

    @classmethod
    def build(cls, offsets: torch.Tensor, lengths: list[int], depths: list[int]) -> "DepthOrder":
        """Order a packed batch's sequences by depth, deepest first.

        Args:
            offsets: (B+1,) int64 boundaries of the input batch.
            lengths: The length of each sequence, in input order (on the host).
            depths: The number of blocks each sequence passes, in input order.

        Raises:
            ValueError: For a batch without sequences.
        """
        if not depths:
            raise ValueError("a packed batch needs at least one sequence (offsets (B+1,), B >= 1)")
        order = sorted(range(len(depths)), key=lambda b: -depths[b])  # stable
        ordered_lengths = [lengths[b] for b in order]
        ending_depths = [-depths[b] for b in order]  # non-decreasing
        ends = list(accumulate(ordered_lengths, initial=0))
        sequences = tuple(bisect_left(ending_depths, -block)  # those with depth > block
                          for block in range(-ending_depths[0]))
        rows = tuple(ends[count] for count in sequences)
        if order == sorted(order):
            return cls(offsets, rows, sequences)
        ordered_offsets = torch.tensor(ends, device=offsets.device)
        sequence = token_sequence(ordered_offsets, ends[-1])  # (T,) in the ordered batch
        input_starts = offsets[:-1][torch.tensor(order, device=offsets.device)]  # (B,)
        gather = input_starts[sequence] + token_position(ordered_offsets, sequence)  # (T,)
        restore = torch.empty_like(gather)
        restore[gather] = torch.arange(gather.numel(), device=offsets.device)
        return cls(ordered_offsets, rows, sequences, gather, restore)

    def steps(self, plan):
        """For each block, the rows it updates and their rotation plan.

        Args:
            plan: The rotation plan of the whole ordered batch (built from ``offsets``).

        Returns:
            A list of (rows, plan of those rows), one per block up to the deepest.
        """
        return [(rows, plan.prefix(sequences, rows))
                for rows, sequences in zip(self.rows, self.sequences)]

    def ordered(self, rows: torch.Tensor) -> torch.Tensor:
        """The input's (T, ...) rows in the order the blocks run them."""
        return rows if self.gather is None else rows.index_select(0, self.gather)

    def restored(self, rows: torch.Tensor) -> torch.Tensor:
        """Ordered (T, ...) rows back in the caller's order."""
        return rows if self.restore is None else rows.index_select(0, self.restore)
