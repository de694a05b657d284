"""Packed batches: B sequences concatenated into T positions, with offsets (B+1,) marking
where each starts (``cu_seqlens`` style).

The per-sequence steps (rotation, pooling, spans, attention) all need to know which sequence
each position belongs to and where in it the position lies; these two helpers say so.
"""
from __future__ import annotations

import torch

#: Rows whose norm and MLP a block runs at once where it may take them in slices: in inference,
#: and in the recomputation of reversible blocks. Their activations are then kept for one slice
#: of rows at a time (a 1,000,000-base sequence has 16 slices).
SLICE_ROWS = 2**16


def row_slices(rows: int) -> list[slice]:
    """The slices of :data:`SLICE_ROWS` rows (the last one shorter) that cover ``rows`` rows."""
    return [slice(start, min(start + SLICE_ROWS, rows)) for start in range(0, rows, SLICE_ROWS)]


def token_sequence(offsets: torch.Tensor, total: int) -> torch.Tensor:
    """The sequence of each position: (B+1,) int64 offsets -> (T,) int64 indices."""
    lengths = offsets[1:] - offsets[:-1]  # (B,)
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=offsets.device), lengths,
                                   output_size=total)


def token_position(offsets: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor:
    """Each position's place in its own sequence, from :func:`token_sequence`: (T,) int64."""
    return torch.arange(sequence.numel(), device=offsets.device) - offsets[:-1][sequence]


def add_to_leading_rows(x: torch.Tensor, update: torch.Tensor, alpha: float = 1.0
                        ) -> torch.Tensor:
    """x with alpha × ``update`` (R, d) added to its first R rows: (T, d) -> (T, d), new."""
    rows = update.shape[0]
    if rows == x.shape[0]:
        return torch.add(x, update, alpha=alpha)
    return torch.cat([torch.add(x[:rows], update, alpha=alpha), x[rows:]])
