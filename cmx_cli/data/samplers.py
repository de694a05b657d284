"""The samplers that read pretraining sequences: random genome segments, or whole records.

Both read through the FASTA index (:class:`~cmx_cli.io.fasta.FastaFile`), one sequence at a
time, and reverse-complement half of the training sequences when asked. Validation sets are
fixed by their seed and never flipped.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Iterator, Literal, Optional, Sequence, Union

import numpy as np

from cmx_cli import alphabet
from cmx_cli.data.pretrain_sources import PretrainSequence, RecordSpan, SourcePlan
from cmx_cli.errors import CmxError
from cmx_cli.io.fasta import FastaFile

DEFAULT_MAX_N = 0.1
#: Segments drawn in a row that may all be rejected (too much N) before giving up.
MAX_CONSECUTIVE_SKIPS = 1000


def _flip(sequence: PretrainSequence) -> PretrainSequence:
    """The reverse complement, soft-mask flags reversed with it."""
    return PretrainSequence(
        alphabet.reverse_complement(sequence.tokens),
        sequence.lowercase[::-1].copy(),
        sequence.source + "(-)",
    )


def _until(
    n_tokens: Optional[int], sequences: Iterator[PretrainSequence]
) -> Iterator[PretrainSequence]:
    """Pass sequences on until their lengths add up to at least ``n_tokens`` (None: all).

    The next sequence is drawn only when the budget is not yet reached, so no random draw
    and no read is wasted.
    """
    total = 0
    while n_tokens is None or total < n_tokens:
        sequence = next(sequences, None)
        if sequence is None:
            return
        total += len(sequence)
        yield sequence


class _Source:
    """What both samplers share: file handles, reading, augmentation, the context manager."""

    def __init__(self, regions: Sequence[RecordSpan], reverse_complement: bool) -> None:
        if not regions:
            raise ValueError("no regions to read from")
        self.regions = tuple(regions)
        self.reverse_complement = reverse_complement
        self._handles: dict[Path, FastaFile] = {}  # opened on first use, one per file

    def _fetch(self, region: RecordSpan, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the tokens and soft-mask flags of ``[start, end)`` of a region's record."""
        fasta = self._handles.get(region.path)
        if fasta is None:
            fasta = self._handles[region.path] = FastaFile(region.path)
        letters, tokens = fasta.tokens(region.contig, start, end)
        return tokens, alphabet.lowercase_mask(letters)

    def _augment(self, sequence: PretrainSequence, rng: np.random.Generator) -> PretrainSequence:
        """Reverse-complement with probability 0.5 when augmentation is on."""
        if self.reverse_complement and rng.random() < 0.5:
            return _flip(sequence)
        return sequence

    def close(self) -> None:
        """Close the FASTA files (they reopen on the next read)."""
        for fasta in self._handles.values():
            fasta.close()
        self._handles.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class SegmentSampler(_Source):
    """Random segments of genome regions, read through the FASTA index.

    Lengths: ``round(exp(N(mu, sigma)))`` with ``mu`` the mean of ``log(min_length)`` and
    ``log(max_length)`` and ``sigma = (log(max_length) - log(min_length)) / 4``, so the
    median is the geometric mean of the bounds and the bounds lie 2 sigma away; the 2.3 %
    beyond each bound are clipped to it (the paper's section 4.1 draws variable lengths from
    a log-normal too). A length longer than every region is cut to the longest region.
    Start: uniform over every valid (region, start) pair, so regions weigh by length.
    Segments with more than ``max_n`` N are skipped and counted in :attr:`skipped`.

    Args:
        regions: RecordSpans to draw from, e.g. ``plan.train``.
        min_length: Shortest segment in bp.
        max_length: Longest segment in bp.
        max_n: Largest share of N in a kept segment.
        reverse_complement: Reverse-complement each sample with probability 0.5.
        max_consecutive_skips: Rejected segments in a row before giving up.

    Raises:
        CmxError: Every region is shorter than ``min_length``.
    """

    def __init__(
        self,
        regions: Sequence[RecordSpan],
        min_length: int,
        max_length: int,
        max_n: float = DEFAULT_MAX_N,
        reverse_complement: bool = True,
        max_consecutive_skips: int = MAX_CONSECUTIVE_SKIPS,
    ) -> None:
        super().__init__(regions, reverse_complement)
        if not 1 <= min_length <= max_length:
            raise ValueError(f"need 1 <= min_length <= max_length, got {min_length}, {max_length}")
        if not 0 <= max_n <= 1:
            raise ValueError(f"max_n must be in [0, 1], got {max_n}")
        self.min_length, self.max_length, self.max_n = min_length, max_length, max_n
        self.max_consecutive_skips = max_consecutive_skips
        self._lengths = np.array([region.length for region in self.regions], dtype=np.int64)
        self._longest = int(self._lengths.max())
        self._files = ", ".join(sorted({str(region.path) for region in self.regions}))
        if self._longest < min_length:
            raise CmxError(
                f"{self._files}: every region to sample from is shorter than the minimum "
                f"segment length ({self._longest:,} < {min_length:,} bp)",
                "lower the minimum segment length, or hold out a larger validation fraction",
            )
        self._mu = (math.log(min_length) + math.log(max_length)) / 2
        self._sigma = (math.log(max_length) - math.log(min_length)) / 4
        #: Segments rejected for their N share, since construction.
        self.skipped = 0

    def draw_length(self, rng: np.random.Generator) -> int:
        """Draw one segment length (see the class docstring)."""
        length = round(math.exp(rng.normal(self._mu, self._sigma)))
        return int(min(max(length, self.min_length), self.max_length, self._longest))

    def _draw(self, rng: np.random.Generator) -> Optional[PretrainSequence]:
        """Draw one segment, or None when it holds too much N."""
        length = self.draw_length(rng)
        starts = np.maximum(self._lengths - length + 1, 0)  # valid starts per region
        cumulative = np.cumsum(starts)
        pick = int(rng.integers(cumulative[-1]))
        index = int(np.searchsorted(cumulative, pick, side="right"))
        region = self.regions[index]
        start = region.start + pick - (int(cumulative[index - 1]) if index else 0)
        tokens, lowercase = self._fetch(region, start, start + length)
        if np.count_nonzero(tokens == alphabet.N) > self.max_n * length:
            self.skipped += 1
            return None
        return PretrainSequence(tokens, lowercase, region.label(start, start + length))

    def _stream(self, rng: np.random.Generator, augment: bool) -> Iterator[PretrainSequence]:
        """Yield usable segments forever; give up after too many rejections in a row."""
        while True:
            for _ in range(self.max_consecutive_skips):
                sequence = self._draw(rng)
                if sequence is not None:
                    break
            else:
                raise CmxError(
                    f"{self._files}: {self.max_consecutive_skips:,} segments in a row had more "
                    f"than {100 * self.max_n:g}% N, so no usable segment was found",
                    "raise --max-n, or check that the FASTA is not mostly N",
                )
            yield self._augment(sequence, rng) if augment else sequence

    def epoch(self, n_tokens: Optional[int], rng: np.random.Generator
              ) -> Iterator[PretrainSequence]:
        """Yield segments until their lengths add up to at least ``n_tokens`` (None: for
        ever)."""
        return _until(n_tokens, self._stream(rng, augment=True))

    def validation_set(self, n_tokens: int, seed: int = 0) -> list[PretrainSequence]:
        """A fixed set of segments (same seed, same set), never reverse-complemented,
        whose lengths add up to at least ``n_tokens``."""
        return list(_until(n_tokens, self._stream(np.random.default_rng(seed), augment=False)))


class RecordSampler(_Source):
    """Whole records of a gene-set FASTA, each one sequence.

    Records are not filtered by their N share (N is never a masked-base target anyway).

    Args:
        regions: Whole-record regions, e.g. ``plan.train`` of a records-mode plan.
        reverse_complement: Reverse-complement each training sample with probability 0.5.
    """

    skipped = 0

    def __len__(self) -> int:
        return len(self.regions)

    def read(self, index: int) -> PretrainSequence:
        """Read one record, as it is in the file."""
        region = self.regions[index]
        tokens, lowercase = self._fetch(region, region.start, region.end)
        return PretrainSequence(tokens, lowercase, f"{region.path}:{region.contig}")

    def epoch(
        self, n_tokens: Optional[int], rng: np.random.Generator
    ) -> Iterator[PretrainSequence]:
        """Yield every record once in a random order (``n_tokens`` None), or shuffled passes
        over the records until their lengths add up to at least ``n_tokens``."""
        passes = itertools.count() if n_tokens is not None else range(1)
        shuffled = (
            self._augment(self.read(int(index)), rng)
            for _ in passes
            for index in rng.permutation(len(self.regions))
        )
        return _until(n_tokens, shuffled)

    def validation_set(
        self, n_tokens: Optional[int] = None, seed: int = 0
    ) -> list[PretrainSequence]:
        """Every record in file order (``n_tokens`` None), or a seeded random subset whose
        lengths add up to at least ``n_tokens``; never reverse-complemented."""
        if n_tokens is None:
            return [self.read(index) for index in range(len(self.regions))]
        order = np.random.default_rng(seed).permutation(len(self.regions))
        return list(_until(n_tokens, (self.read(int(index)) for index in order)))


Sampler = Union[SegmentSampler, RecordSampler]


def make_sampler(
    plan: SourcePlan,
    split: Literal["train", "validation"],
    min_length: int = 1,
    max_n: float = DEFAULT_MAX_N,
    reverse_complement: bool = True,
) -> Sampler:
    """Build the sampler for one side of a plan; validation samples are never flipped.

    Args:
        plan: From :func:`plan_sources`; its ``max_length`` bounds segment lengths.
        split: ``"train"`` or ``"validation"``.
        min_length: Shortest segment in bp (segments mode).
        max_n: Largest share of N in a segment (segments mode).
        reverse_complement: Augment training samples with reverse complements.

    Raises:
        ValueError: ``split`` is "validation" and the plan holds nothing out.
    """
    regions = plan.train if split == "train" else plan.validation
    flip = reverse_complement and split == "train"
    if plan.mode == "records":
        return RecordSampler(regions, reverse_complement=flip)
    return SegmentSampler(regions, min_length, plan.max_length, max_n, reverse_complement=flip)
