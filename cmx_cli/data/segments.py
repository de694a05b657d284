"""Training and validation sequences for masked-base pretraining (``cmx pretrain``).

Two sampling modes (the paper's appendix J pretrains on "randomly sampled gene segments"):

- ``records``: a gene-set FASTA; every record is one sequence, read whole.
- ``segments``: genomes; random segments are read through the FASTA index (pyfaidx random
  access), so a multi-gigabase genome is never loaded into memory.

:func:`plan_sources` decides the mode and the held-out validation part from the ``.fai``
index alone; :class:`SegmentSampler` and :class:`RecordSampler` then read the sequences.
Coordinates are 0-based and half-open inside the code; a sequence's ``source`` names them
1-based and inclusive, samtools-style, with ``(-)`` appended for a reverse complement
(as ``bedtools getfasta -s`` does).
"""
from __future__ import annotations

import itertools
import math
import struct
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator, Literal, Optional, Sequence, Union

import numpy as np
import pyfaidx

from cmx_cli import alphabet
from cmx_cli.errors import CmxError
from cmx_cli.io.fasta import DNA_ONLY_HINT, open_fasta

Mode = Literal["auto", "records", "segments"]
MODES = ("auto", "records", "segments")
#: With at least this many contigs, whole contigs are held out for validation; with fewer,
#: the end of every contig is.
MIN_CONTIGS_TO_HOLD_OUT = 5
DEFAULT_MAX_N = 0.1
#: Segments drawn in a row that may all be rejected (too much N) before giving up.
MAX_CONSECUTIVE_SKIPS = 1000
_FETCH_ERRORS = (pyfaidx.FetchError, OSError, ValueError, EOFError, struct.error, zlib.error)


@dataclass(frozen=True)
class PretrainSequence:
    """One pretraining sequence.

    Attributes:
        tokens: (L,) uint8 tokens A C G T N = 0-4.
        lowercase: (L,) bool, True at soft-masked letters (flipped with the tokens).
        source: Where it came from, e.g. ``"genome.fa:chr1:1001-2000"`` or
            ``"genome.fa:chr1:1001-2000(-)"`` (reverse complement) or ``"genes.fa:geneA"``.
    """

    tokens: np.ndarray
    lowercase: np.ndarray
    source: str

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


@dataclass(frozen=True)
class Region:
    """A stretch ``[start, end)`` (0-based) of one FASTA record."""

    path: Path
    contig: str
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def label(self, start: Optional[int] = None, end: Optional[int] = None) -> str:
        """Name a piece of this region (default: all of it) 1-based and inclusive."""
        start = self.start if start is None else start
        end = self.end if end is None else end
        return f"{self.path}:{self.contig}:{start + 1}-{end}"


@dataclass(frozen=True)
class SourcePlan:
    """Which sequences pretraining reads, and which part is held out for validation.

    Attributes:
        mode: ``"records"`` or ``"segments"`` (never ``"auto"``).
        train: Training regions (whole records, or the parts of contigs not held out).
        validation: Held-out regions; empty when there is no validation.
        validation_rule: ``"files"`` (validation files given), ``"records"`` (random
            records), ``"contigs"`` (random whole contigs), ``"tail"`` (the end of every
            contig) or ``"none"``.
        val_fraction: The share asked for.
        max_length: Longest sequence in bp.
        seed: Seed of the random hold-out.
    """

    mode: str
    train: tuple[Region, ...]
    validation: tuple[Region, ...]
    validation_rule: str
    val_fraction: float
    max_length: int
    seed: int

    def describe(self) -> str:
        """Say in one line what is trained on and what is held out, for the log."""
        unit = "record(s)" if self.mode == "records" else "contig(s)"
        kind = "whole records" if self.mode == "records" else "random segments"
        n_train, n_held = len(self.train), len(self.validation)
        files = ", ".join(sorted({str(region.path) for region in self.validation}))
        bases = f"{sum(region.length for region in self.validation):,} bp"
        percent = f"{100 * self.val_fraction:g}%"
        validation = {
            "none": "none (the validation fraction is 0)",
            "files": f"{n_held:,} {unit} of {files} ({bases})",
            "records": f"a random {percent} of records ({n_held:,} of {n_held + n_train:,}, "
            f"{bases}; seed {self.seed})",
            "contigs": f"{n_held:,} of {n_held + n_train:,} whole contigs held out at random "
            f"({bases}; seed {self.seed})",
            "tail": f"the last {percent} of each of {n_held:,} contig(s) ({bases})",
        }[self.validation_rule]
        return (
            f"training: {kind} of {n_train:,} {unit} "
            f"({sum(region.length for region in self.train):,} bp); validation: {validation}"
        )

    def to_dict(self) -> dict:
        """A JSON-ready summary for ``config.json``, regions as 1-based labels."""
        fields = ("mode", "validation_rule", "val_fraction", "max_length", "seed")
        summary = {name: getattr(self, name) for name in fields}
        summary["train"] = [region.label() for region in self.train]
        summary["validation"] = [region.label() for region in self.validation]
        return summary


def plan_sources(
    paths: Sequence[Path],
    val_paths: Sequence[Path] = (),
    val_fraction: float = 0.1,
    mode: Mode = "auto",
    max_length: int = 4096,
    seed: int = 0,
) -> SourcePlan:
    """Decide the sampling mode and the validation hold-out, from the FASTA indexes.

    Every record is also read once, so that a letter that is not DNA stops the run here,
    before training, rather than whenever a sampled segment first covers it.

    ``auto`` picks ``records`` when every record fits in ``max_length`` and a validation
    part exists (validation files, a zero fraction, or at least two records to split), else
    ``segments``. Validation is, by precedence: the records of ``val_paths``; nothing when
    ``val_fraction`` is 0; in records mode a seeded random share of the records; in segments
    mode a seeded random share of whole contigs when there are at least
    :data:`MIN_CONTIGS_TO_HOLD_OUT`, else the last ``val_fraction`` of every contig (training
    segments are drawn before it, so never overlap it). A random share holds at least one
    record or contig and leaves at least one for training.

    Args:
        paths: Training FASTA files.
        val_paths: Validation FASTA files (optional).
        val_fraction: Share to hold out when no validation files are given, in [0, 1).
        mode: ``"auto"``, ``"records"`` or ``"segments"``.
        max_length: Longest sequence in bp.
        seed: Seed of the random hold-out.

    Raises:
        CmxError: A file cannot be indexed, has an empty record or a letter that is not
            DNA, or is given both for training and validation; in records mode a record
            longer than ``max_length``, or a single record and nothing to validate on.
        ValueError: Arguments out of range (a programming error).
    """
    if mode not in MODES or not 0 <= val_fraction < 1 or not paths:
        raise ValueError(f"bad arguments: mode={mode!r}, val_fraction={val_fraction}, {paths=}")
    shared = {Path(p).resolve() for p in paths} & {Path(p).resolve() for p in val_paths}
    if shared:
        raise CmxError.in_record(
            sorted(shared)[0], None, "the file is given both for training and for validation",
            "give disjoint training and validation files",
        )
    records = [region for path in paths for region in _index(Path(path))]
    val_records = [region for path in val_paths for region in _index(Path(path))]
    splittable = bool(val_records) or val_fraction == 0 or len(records) >= 2
    too_long = [r for r in records + val_records if r.length > max_length]
    if mode == "auto":
        mode = "records" if not too_long and splittable else "segments"
    if mode == "records" and too_long:
        raise CmxError.in_record(
            too_long[0].path, too_long[0].contig,
            f"the record is {too_long[0].length:,} bp, longer than the maximum length "
            f"({max_length:,} bp), and records mode reads whole records",
            "sample random segments instead (segments mode), or raise --max-length",
        )
    if mode == "records" and not splittable:
        raise CmxError.in_record(
            records[0].path, None, "one record cannot be split into training and validation "
            "records", "sample segments instead (segments mode holds out the end of the "
            "record), or give a validation FASTA",
        )
    plan = partial(SourcePlan, mode=mode, val_fraction=val_fraction, max_length=max_length,
                   seed=seed)
    if val_records or val_fraction == 0:
        return plan(train=tuple(records), validation=tuple(val_records),
                    validation_rule="files" if val_records else "none")
    if mode == "records" or len(records) >= MIN_CONTIGS_TO_HOLD_OUT:
        n_held = min(max(1, round(len(records) * val_fraction)), len(records) - 1)
        chosen = np.random.default_rng(seed).choice(len(records), size=n_held, replace=False)
        held = set(chosen.tolist())
        return plan(
            train=tuple(r for i, r in enumerate(records) if i not in held),
            validation=tuple(r for i, r in enumerate(records) if i in held),
            validation_rule="records" if mode == "records" else "contigs",
        )
    train, validation = [], []
    for region in records:
        cut = region.end - round(region.length * val_fraction)
        train.append(Region(region.path, region.contig, region.start, cut))
        if cut < region.end:
            validation.append(Region(region.path, region.contig, cut, region.end))
    return plan(train=tuple(train), validation=tuple(validation), validation_rule="tail")


def _index(path: Path) -> list[Region]:
    """Every record of a FASTA file as a whole-record region, its letters checked."""
    with open_fasta(path) as fasta:
        regions = []
        for name, record in fasta.faidx.index.items():
            if record.rlen == 0:
                raise CmxError.in_record(
                    path, name, "the record has no sequence letters",
                    "remove the empty record, or check for a stray '>' line",
                )
            _check_letters(fasta, Region(path, name, 0, int(record.rlen)))
            regions.append(Region(path, name, 0, int(record.rlen)))
    return regions


def _check_letters(fasta: pyfaidx.Fasta, region: Region, chunk: int = 1 << 23) -> None:
    """Read a whole record once, so that a letter that is not DNA stops the run before
    training, not when a segment happens to cover it."""
    for start in range(region.start, region.end, chunk):
        _read(fasta, region, start, min(start + chunk, region.end))


def _read(fasta: pyfaidx.Fasta, region: Region, start: int, end: int) -> tuple[str, np.ndarray]:
    """The letters and tokens of bases ``[start, end)`` of a region's record, checked."""
    try:
        letters = fasta.get_seq(region.contig, start + 1, end)
    except _FETCH_ERRORS as error:
        raise CmxError.in_record(
            region.path, region.contig, f"cannot read bases {start + 1:,}-{end:,} ({error})",
            "check that the file is plain-text FASTA or BGZF-compressed FASTA",
        ) from error
    if len(letters) != end - start:
        raise CmxError.in_record(
            region.path, region.contig, "the sequence lines have inconsistent lengths",
            "rewrap the file, e.g. `seqkit seq -w 60 in.fa > out.fa`",
        )
    tokens = alphabet.encode(letters)
    bad = alphabet.first_invalid(tokens)
    if bad >= 0:
        raise CmxError.in_record(
            region.path, region.contig,
            f"invalid letter {letters[bad]!r} at position {start + bad + 1:,}", DNA_ONLY_HINT,
        )
    return letters, tokens


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

    def __init__(self, regions: Sequence[Region], reverse_complement: bool) -> None:
        if not regions:
            raise ValueError("no regions to read from")
        self.regions = tuple(regions)
        self.reverse_complement = reverse_complement
        self._handles: dict[Path, pyfaidx.Fasta] = {}  # opened on first use, one per file

    def _fetch(self, region: Region, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the tokens and soft-mask flags of ``[start, end)`` of a region's record."""
        fasta = self._handles.get(region.path)
        if fasta is None:
            fasta = self._handles[region.path] = open_fasta(region.path)
        letters, tokens = _read(fasta, region, start, end)
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
        regions: Regions to draw from, e.g. ``plan.train``.
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
        regions: Sequence[Region],
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

    def sample(self, n: int, rng: np.random.Generator) -> list[PretrainSequence]:
        """Draw ``n`` segments (reverse-complemented with probability 0.5 if enabled)."""
        return list(itertools.islice(self._stream(rng, augment=True), n))

    def epoch(self, n_tokens: int, rng: np.random.Generator) -> Iterator[PretrainSequence]:
        """Yield segments until their lengths add up to at least ``n_tokens``."""
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

    def sample(self, n: int, rng: np.random.Generator) -> list[PretrainSequence]:
        """Draw ``n`` records uniformly with replacement."""
        picks = rng.integers(len(self.regions), size=n)
        return [self._augment(self.read(int(index)), rng) for index in picks]

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
