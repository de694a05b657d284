"""What masked-base pretraining (``cmx pretrain``) reads, and which part it holds out.

Two sampling modes (the paper's appendix J pretrains on "randomly sampled gene segments"):

- ``records``: a gene-set FASTA; every record is one sequence, read whole.
- ``segments``: genomes; random segments are read through the FASTA index (pyfaidx random
  access), so a multi-gigabase genome is never loaded into memory.

:func:`plan_sources` decides the mode and the held-out validation part from the ``.fai``
index; the samplers of :mod:`cmx_cli.data.samplers` then read the sequences. Coordinates
are 0-based and half-open inside the code; a sequence's ``source`` names them 1-based and
inclusive, samtools-style, with ``(-)`` appended for a reverse complement (as ``bedtools
getfasta -s`` does).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np

from cmx_cli.errors import CmxError
from cmx_cli.io.fasta import FastaFile

Mode = Literal["auto", "records", "segments"]
MODES = ("auto", "records", "segments")
#: With at least this many contigs, whole contigs are held out for validation; with fewer,
#: the end of every contig is.
MIN_CONTIGS_TO_HOLD_OUT = 5


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
class RecordSpan:
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
    train: tuple[RecordSpan, ...]
    validation: tuple[RecordSpan, ...]
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
    records = [span for path in paths for span in _record_spans(Path(path))]
    val_records = [span for path in val_paths for span in _record_spans(Path(path))]
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
        train.append(RecordSpan(region.path, region.contig, region.start, cut))
        if cut < region.end:
            validation.append(RecordSpan(region.path, region.contig, cut, region.end))
    return plan(train=tuple(train), validation=tuple(validation), validation_rule="tail")


def _record_spans(path: Path) -> list[RecordSpan]:
    """Every record of a FASTA file as a whole-record span, its letters checked."""
    with FastaFile(path) as fasta:
        return [RecordSpan(path, name, 0, length)
                for name, length in fasta.check_letters().items()]
