"""The parameter-free Rotate step on packed variable-length batches (paper §3.2, eq. 1-2).

A packed batch is the concatenation of B sequences, T tokens in all, with offsets (B+1,)
marking where each starts (``cu_seqlens`` style). Channels are split into tracks of
``track_size``; track k ≥ 1 of a sequence of length L is rotated by 2^(k-1) mod L *within
that sequence*: output position j takes input position (j + 2^(k-1)) mod L, which equals
``torch.roll(x, -shift)`` per sequence. Track 0 is not rotated.

The whole batch is rotated by one ``index_select`` over the (T·n_tracks, track_size) row view
of the activations, with a flat row index built once per batch (:class:`RotationPlan`) and
reused by every block. A rotation is a permutation, so its gradient is the inverse
permutation: backward is another ``index_select`` with the inverse index, not the
scatter-add (atomics on CUDA) that autograd would use for ``index_select``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from models.packed import token_position, token_sequence


def track_shifts(n_tracks: int, device: torch.device | None = None) -> torch.Tensor:
    """Shift of each track: 0 for track 0, 2^(k-1) for track k ≥ 1. Shape (n_tracks,) int64."""
    shifts = torch.zeros(n_tracks, dtype=torch.int64, device=device)
    if n_tracks > 1:
        shifts[1:] = 2 ** torch.arange(n_tracks - 1, dtype=torch.int64, device=device)
    return shifts


def rotation_source_rows(offsets: torch.Tensor, n_tracks: int) -> torch.Tensor:
    """Flat source-row index of the packed rotation.

    Args:
        offsets: (B+1,) int64, offsets[0] == 0, non-decreasing, every length ≥ 1.
        n_tracks: Number of tracks.

    Returns:
        (T·n_tracks,) int64: row r = t·n_tracks + k of the rotated (T·n_tracks, track_size)
        view is row ``index[r]`` of the input view.
    """
    offsets = offsets.to(torch.int64)
    lengths = offsets[1:] - offsets[:-1]  # (B,)
    sequence_of_token = token_sequence(offsets, int(offsets[-1]))  # (T,)
    start = offsets[:-1][sequence_of_token]  # (T,)
    length = lengths[sequence_of_token]  # (T,)
    position = token_position(offsets, sequence_of_token)  # (T,)
    shifts = track_shifts(n_tracks, offsets.device)  # (n_tracks,)
    # Reduce the shift first so that shift + position never overflows for huge tracks.
    source_position = (position[:, None] + shifts[None, :] % length[:, None]) % length[:, None]
    source_token = start[:, None] + source_position  # (T, n_tracks)
    track = torch.arange(n_tracks, device=offsets.device)
    return (source_token * n_tracks + track[None, :]).reshape(-1)  # (T·n_tracks,)


def _permute_rows(x: torch.Tensor, index: torch.Tensor, row_size: int,
                  out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Rows of ``row_size`` channels of x in ``index`` order, into ``out`` (new when None).

    The result is a tensor of its own, not a view, so that it may be changed in place.
    """
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    rows = x.reshape(-1, row_size)  # (T·n_tracks, track_size)
    torch.index_select(rows, 0, index, out=out.view(-1, row_size))
    return out


class _RowPermutation(torch.autograd.Function):
    """y = rows of x in ``index`` order; backward applies the inverse permutation."""

    @staticmethod
    def forward(ctx, x, index, inverse, row_size):  # noqa: D102 - autograd protocol
        ctx.save_for_backward(inverse)
        ctx.row_size = row_size
        return _permute_rows(x, index, row_size)

    @staticmethod
    def backward(ctx, grad_output):  # noqa: D102 - autograd protocol
        (inverse,) = ctx.saved_tensors
        return _permute_rows(grad_output, inverse, ctx.row_size), None, None, None


def _roll_tracks(x: torch.Tensor, shifts: tuple[int, ...], track_size: int,
                 out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Rotate the tracks of one sequence: track k's rows j take rows (j + shifts[k]) mod L.

    Two slice copies per track (``torch.roll`` without its index arithmetic), into ``out``
    (a new tensor when None).
    """
    x = x.contiguous()  # no copy when it already is
    length = x.shape[0]
    out = torch.empty_like(x) if out is None else out
    source = x.view(length, len(shifts), track_size)
    target = out.view(length, len(shifts), track_size)
    for track, shift in enumerate(shifts):
        shift %= length
        target[:length - shift, track] = source[shift:, track]
        target[length - shift:, track] = source[:shift, track]
    return out


class _TrackRoll(torch.autograd.Function):
    """One sequence's rotation by slice copies; backward rolls the other way."""

    @staticmethod
    def forward(ctx, x, shifts, track_size):  # noqa: D102 - autograd protocol
        ctx.shifts, ctx.track_size = shifts, track_size
        return _roll_tracks(x, shifts, track_size)

    @staticmethod
    def backward(ctx, grad_output):  # noqa: D102 - autograd protocol
        inverse = tuple(-shift for shift in ctx.shifts)
        return _roll_tracks(grad_output, inverse, ctx.track_size), None, None


@dataclass(frozen=True)
class RotationPlan:
    """Everything the blocks need about one packed batch, built once per batch.

    A batch of one sequence takes a fast path instead: two slice copies per track, with no
    index at all.

    The plan does not depend on the width: it rotates any (T, n_tracks × track size)
    activations, such as the half-width halves of reversible blocks.

    Attributes:
        offsets: (B+1,) int64 sequence boundaries.
        n_tracks: Number of tracks.
        source_rows: (T·n_tracks,) forward permutation of rows, int32 unless the batch has
            2^31 rows or more (None for one sequence).
        inverse_rows: (T·n_tracks,) its inverse, used in backward (None for one sequence).
        single_shifts: The tracks' shifts when the batch is one sequence, else None.
    """

    offsets: torch.Tensor
    n_tracks: int
    source_rows: Optional[torch.Tensor]
    inverse_rows: Optional[torch.Tensor]
    single_shifts: Optional[tuple[int, ...]] = None

    @classmethod
    def build(cls, offsets: torch.Tensor, n_tracks: int) -> "RotationPlan":
        """Build the forward and inverse row permutations for a packed batch.

        Args:
            offsets: (B+1,) int64 on the device of the activations.
            n_tracks: Number of tracks.
        """
        if offsets.numel() == 2:
            return cls(offsets, n_tracks, None, None, tuple(track_shifts(n_tracks).tolist()))
        source = rotation_source_rows(offsets, n_tracks)
        inverse = torch.empty_like(source)
        inverse[source] = torch.arange(source.numel(), device=source.device)
        if source.numel() <= torch.iinfo(torch.int32).max:
            # int32 rows halve the memory of the index and its inverse, at the same speed.
            source, inverse = source.to(torch.int32), inverse.to(torch.int32)
        return cls(offsets, n_tracks, source, inverse)

    def prefix(self, sequences: int, tokens: int) -> "RotationPlan":
        """The plan of the batch's first ``sequences`` sequences, ``tokens`` positions in all.

        No index is rebuilt: a sequence's rows move only within it, so the first rows of
        the permutation and of its inverse are those of the leading sequences.
        """
        if sequences == self.offsets.numel() - 1:
            return self
        if sequences == 1:
            shifts = tuple(track_shifts(self.n_tracks).tolist())
            return RotationPlan(self.offsets[:2], self.n_tracks, None, None, shifts)
        rows = tokens * self.n_tracks
        return RotationPlan(self.offsets[:sequences + 1], self.n_tracks,
                            self.source_rows[:rows], self.inverse_rows[:rows])

    def rotate(self, x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Rotate every track of every sequence.

        Args:
            x: (T, d) packed activations, d = n_tracks × track size.
            out: A contiguous (T, d) tensor to write into, without autograd (``cmx bench``
                times the rotation this way, against a copy into a tensor that exists).

        Returns:
            (T, d) rotated activations (``out`` when given).
        """
        track_size = x.shape[-1] // self.n_tracks
        if out is not None:
            if self.single_shifts is not None:
                return _roll_tracks(x, self.single_shifts, track_size, out)
            return _permute_rows(x, self.source_rows, track_size, out)
        if self.single_shifts is not None:
            return _TrackRoll.apply(x, self.single_shifts, track_size)
        return _RowPermutation.apply(x, self.source_rows, self.inverse_rows, track_size)


def rotate_reference(x: torch.Tensor, offsets: torch.Tensor, n_tracks: int) -> torch.Tensor:
    """Per-sequence, per-track ``torch.roll`` rotation: the slow, obviously correct reference.

    This is how the authors' code rotates (a Python loop over sequences and tracks). It is
    kept for tests and benchmarks only.

    Args:
        x: (T, d) packed activations, d = n_tracks × track size.
        offsets: (B+1,) sequence boundaries.
        n_tracks: Number of tracks.

    Returns:
        (T, d) rotated activations.
    """
    track_size = x.shape[-1] // n_tracks
    pieces = []
    bounds = offsets.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        sequence = x[start:end].reshape(end - start, n_tracks, track_size)  # (L, tracks, ts)
        tracks = [sequence[:, 0]]
        for k in range(1, n_tracks):
            tracks.append(torch.roll(sequence[:, k], shifts=-(2 ** (k - 1)), dims=0))
        pieces.append(torch.stack(tracks, dim=1).reshape(end - start, -1))  # (L, d)
    return torch.cat(pieces, dim=0)


@dataclass(frozen=True)
class ReferenceRotationPlan:
    """A :class:`RotationPlan` stand-in that rotates with :func:`rotate_reference`.

    ``ChordMixer.plan_type = ReferenceRotationPlan`` gives the authors' per-sequence,
    per-track ``torch.roll`` network, for benchmarks and equivalence tests.
    """

    offsets: torch.Tensor
    n_tracks: int

    @classmethod
    def build(cls, offsets: torch.Tensor, n_tracks: int) -> "ReferenceRotationPlan":
        """Keep the boundaries; nothing is precomputed."""
        return cls(offsets, n_tracks)

    def prefix(self, sequences: int, tokens: int) -> "ReferenceRotationPlan":
        """The plan of the batch's first ``sequences`` sequences (``tokens`` is unused)."""
        return ReferenceRotationPlan(self.offsets[:sequences + 1], self.n_tracks)

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate every track of every sequence with ``torch.roll``."""
        return rotate_reference(x, self.offsets, self.n_tracks)
