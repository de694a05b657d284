"""Scoring the variants of a VCF or BCF file: from input records to annotated output.

Scoring takes two passes. The caller runs :func:`~cmx_cli.variants.preflight.preflight`
first, which reads every record before any model work (DESIGN.md, "Variants");
:func:`score_variants` then streams the records in chunks of at most ``chunk_alleles``
windows, so memory stays flat however large the VCF, and writes to a temporary file in the
target directory that is renamed when complete.

What a score means is the scorer's (:class:`AlleleScorer`): a variant classifier
(:mod:`cmx_cli.tasks.variant`) or zero-shot scores (:mod:`cmx_cli.tasks.masked_bases`).

Decisions:

* ``.vcf.gz``/``.vcf.bgz`` output gets a .tbi index, or .csi when a contig (declared in the
  header or in the FASTA) or a record reaches past 2^29 - 1, the TBI limit; ``.bcf`` output
  always gets .csi, as ``bcftools index`` does.
* Contigs and keys that records use without a header line (htslib declares them while
  reading) are declared in the output header, contigs with their FASTA length, so BCF
  output and indexing work. Declaring them before the second pass also matters for safety:
  htslib ends the process when it is asked to convert a record it flagged as undeclared.
"""
from __future__ import annotations

import contextlib
import re
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Iterator, Optional, Protocol, Sequence

import numpy as np

from cmx_cli.console import Reporter
from cmx_cli.errors import CmxError
from cmx_cli.io.reference import ReferenceGenome
from cmx_cli.io.vcf_reader import VariantReader
from cmx_cli.io.vcf_writer import open_writer, output_kind
from cmx_cli.variants.alleles import AlleleStatus, allele_change, classify_record
from cmx_cli.variants.background import Background
from cmx_cli.variants.preflight import PreflightReport
from cmx_cli.variants.windows import AlleleWindow, group_index, make_windows

_TBI_MAX_POSITION = 2**29 - 1  # TBI: min_shift 14 and 5 levels cover 2^29 bp
_INFO_ID = re.compile(r"^[A-Za-z_][0-9A-Za-z_.]*$")  # VCF 4.3, section 1.6.1


class TrainingScope:
    """What a model learnt from, and how much it is asked to score outside it: counted and
    said, never silent (DESIGN.md, "Trust").

    The rule on allele kinds is one for `cmx predict` and `cmx explain` (issue 23, case 7):
    a fine-tuned model records the kinds of allele it learnt from; alleles of other kinds
    are scored and warned about (``--allele-kinds all``), or left unscored under the reason
    ``unseen_kind`` (``--allele-kinds seen``). A zero-shot model records no kinds: it scores
    whatever its method can score.

    Args:
        max_len: The longest input the encoder was sized for, in bp.
        reach: The longest input of which every position reaches every other (2^blocks).
        alleles: Training alleles by change (``snv``, ``insertion``, ``deletion``, ``mnv``);
            None when the model saw no variants (a pretrained model) or its checkpoint
            does not say.
        seen_only: Leave alleles of kinds the model never saw unscored.
    """

    _NAMES = {"snv": "SNV", "insertion": "indel (insertion)", "deletion": "indel (deletion)",
              "mnv": "MNV"}

    def __init__(self, max_len: int, reach: int,
                 alleles: Optional[dict[str, int]] = None, seen_only: bool = False) -> None:
        self.max_len, self.reach, self.alleles = max_len, reach, alleles
        self.seen_only = seen_only
        self.unseen: Counter = Counter()
        self.too_long = 0

    def note(self, window: AlleleWindow, ref: str, alt: str) -> Optional[str]:
        """Count one allele about to be scored; return ``unseen_kind`` when it is of a kind
        the model never saw and only seen kinds are scored (then it is not counted)."""
        change = allele_change(ref, alt)
        unseen = self.alleles is not None and not self.alleles.get(change)
        if unseen and self.seen_only:
            return "unseen_kind"
        if max(len(window.ref_tokens), len(window.alt_tokens)) > self.reach:
            self.too_long += 1
        if unseen:
            self.unseen[change] += 1
        return None

    def warnings(self) -> list[str]:
        """One line per way the scored alleles went beyond the training."""
        lines = []
        if self.unseen:
            kinds = ", ".join(f"{count:,} {self._NAMES[kind]}"
                              for kind, count in sorted(self.unseen.items()))
            trained = " and ".join(f"{count:,} {self._NAMES[kind]}"
                                   for kind, count in sorted(self.alleles.items()) if count)
            lines.append(f"{sum(self.unseen.values()):,} allele(s) of a kind the model never "
                         f"saw in training were scored ({kinds}); it was trained on "
                         f"{trained or 'no variants'} only (--allele-kinds seen leaves such "
                         "alleles unscored)")
        if self.too_long:
            lines.append(f"{self.too_long:,} variant window(s) are longer than the model's "
                         f"max_len ({self.max_len:,} bp) and its reach ({self.reach:,} bp): "
                         "they passed every block, but not every position could reach every "
                         "other")
        return lines


class AlleleScorer(Protocol):
    """What scores alleles: a model, with what it can score and how to say what it gives."""

    #: The header description of the scores (INFO ``Number=A``, ``Type=Float``).
    description: str
    #: What the model learnt from (None: nothing to check).
    scope: Optional[TrainingScope]

    def veto(self, window: AlleleWindow, ref: str, alt: str) -> Optional[str]:
        """Why an allele that passed the checks cannot be scored (e.g. ``indel`` for a
        model of SNVs only), or None."""

    def record_context(self, record: Any) -> tuple[Any, Optional[str]]:
        """``(context, None)``: the context goes into every window of the record (a group
        index, say); ``(None, reason)`` leaves the record's alleles unscored."""

    def __call__(self, windows: Sequence[AlleleWindow]) -> np.ndarray:
        """One score per window."""


@dataclass(frozen=True)
class ScoreOutput:
    """Where and how the scores are written.

    Attributes:
        path: ``.vcf.gz``/``.vcf.bgz`` (BGZF + .tbi/.csi), ``.bcf`` (+ .csi), another name
            (plain VCF), or ``-`` (plain VCF or TSV on stdout).
        tsv: Write ``chrom pos id ref alt score`` rows, one per allele, instead of a VCF.
        split_multiallelic: One output record per ALT allele
            (:func:`~cmx_cli.variants.alleles.split_record`).
        info_id: The INFO key of the scores.
        header_lines: Extra ``##key=value`` header lines (``##cmx_model=...``).
    """

    path: str = "-"
    tsv: bool = False
    split_multiallelic: bool = False
    info_id: str = "CMX"
    header_lines: tuple[str, ...] = ()


@dataclass
class ScoreSummary:
    """What :func:`score_variants` did.

    Attributes:
        output: Where the scores went (``-`` for stdout).
        index: The index file written, or None.
        records: Input records read.
        written_records: Records (or TSV rows) written; more than ``records`` when split.
        alleles: Allele results (one per ALT, one per record without ALT).
        outcomes: Count per outcome: ``scored``, each skip reason, each reason returned by
            the ``scorable`` veto, and ``non_finite`` for NaN/inf scores (written ``.``).
        seconds: Wall time of the whole call, pre-flight included.
    """

    output: str
    index: Optional[str]
    records: int
    written_records: int
    alleles: int
    outcomes: dict[str, int]
    seconds: float

    @property
    def scored(self) -> int:
        """Alleles that received a score."""
        return self.outcomes.get("scored", 0)

    @property
    def variants_per_second(self) -> float:
        """Input records per second."""
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {**vars(self), "outcomes": dict(self.outcomes),
                "variants_per_second": self.variants_per_second}

    def line(self) -> str:
        """One summary line for people."""
        skipped = ", ".join(f"{count:,} {reason}" for reason, count in sorted(self.outcomes.items())
                            if reason != "scored")
        return (f"Scored {self.scored:,} of {self.alleles:,} alleles in {self.records:,} records"
                + (f" (not scored: {skipped})" if skipped else "")
                + f" in {self.seconds:.1f} s ({self.variants_per_second:,.0f} variants/s)")


def score_variants(
    report: PreflightReport, reference: ReferenceGenome, scorer: AlleleScorer,
    output: ScoreOutput, reporter: Optional[Reporter] = None, chunk_alleles: int = 4096,
    background: Optional[Background] = None,
) -> ScoreSummary:
    """Score every scorable ALT allele of a VCF; write the VCF (or a TSV) with the scores.

    Args:
        report: The pre-flight report of the VCF: it names the file, the regions, the
            window and the REF policy, and what the header lacks.
        reference: The reference genome it was made with.
        scorer: Called with at most ``chunk_alleles`` windows.
        output: Where and how to write.
        reporter: Shows progress.
        chunk_alleles: The most windows per ``scorer`` call (and records held at once).
        background: Scores of random SNVs: each score's percentile among them goes into
            INFO/``<info_id>_PCT`` (a ``percentile`` column in a TSV).

    Returns:
        Counts and timing.

    Raises:
        CmxError: An input error, unsorted input for an indexed output, an output that
            cannot be written. Nothing is left under ``output.path``.
    """
    started = time.perf_counter()
    if not _INFO_ID.match(output.info_id):
        raise CmxError(f"--info-id {output.info_id!r} is not a valid INFO key",
                       "use letters, digits, '_' and '.', and do not start with a digit")
    if chunk_alleles < 1:
        raise ValueError(f"chunk_alleles must be at least 1, not {chunk_alleles}")
    kind = output_kind(output.path, output.tsv)
    if kind in ("bgzf", "bcf", "tsv-bgzf") and not report.is_sorted:
        raise CmxError.in_record(
            report.vcf, None, "the records are not sorted by position, so the output cannot be "
            "indexed", "sort it first (`bcftools sort`), or write plain .vcf output")
    window, ref_mismatch = report.window, report.ref_mismatch_policy
    outcomes: Counter = Counter()
    pending: list[tuple[Any, list[AlleleStatus], list[Optional[int]]]] = []
    windows: list[AlleleWindow] = []
    reader = VariantReader(report.vcf, report.regions, report.header_additions)
    use_csi = report.longest > _TBI_MAX_POSITION
    progress_bar = (reporter.progress("Scoring", total=report.records, unit="record")
                    if reporter is not None else contextlib.nullcontext())
    percentile = (None if background is None else
                  (f"{output.info_id}_PCT", background.description))
    with reader, progress_bar as progress, open_writer(
            output.path, kind, reader.header, use_csi, output.info_id, scorer.description,
            output.header_lines, percentile) as writer:

        def flush() -> None:
            scores = _run_scorer(scorer, windows, chunk_alleles)
            ranks = None if background is None else background.percentiles(
                scores, np.array([group_index(window) for window in windows], dtype=np.int64))
            for record, statuses, slots in pending:
                values: list[Optional[float]] = []
                percentiles: list[Optional[float]] = []
                for slot in slots:
                    value = None if slot is None else float(scores[slot])
                    if value is not None:
                        outcomes["scored" if np.isfinite(value) else "non_finite"] += 1
                    finite = value is not None and np.isfinite(value)
                    values.append(value if finite else None)
                    percentiles.append(float(ranks[slot]) if finite and ranks is not None
                                       else None)
                writer.write(record, statuses, values, output.split_multiallelic,
                             percentiles if background is not None else None)
            if progress is not None:
                progress.advance(len(pending))
            pending.clear()
            windows.clear()

        for item in record_windows(reader, reference, scorer, window, ref_mismatch):
            built = sum(allele_window is not None for allele_window in item.windows)
            if pending and len(windows) + built > chunk_alleles:
                flush()
            slots = []
            for status, allele_window in zip(item.statuses, item.windows):
                if status.reason is not None:
                    outcomes[status.reason] += 1
                slots.append(None if allele_window is None else len(windows))
                if allele_window is not None:
                    windows.append(allele_window)
            pending.append((item.record, item.statuses, slots))
            if len(windows) >= chunk_alleles or len(pending) >= chunk_alleles:
                flush()
        flush()
    if reporter is not None:
        warn_scope(scorer, reporter)
    return ScoreSummary(output.path, writer.index_path, reader.records_read, writer.written,
                        sum(outcomes.values()), dict(outcomes), time.perf_counter() - started)


def warn_scope(scorer: AlleleScorer, reporter: Reporter) -> None:
    """Say how far the alleles scored went beyond what the model learnt (the same lines for
    every command that scores VCF alleles)."""
    if scorer.scope is not None:
        for warning in scorer.scope.warnings():
            reporter.warn(warning)


@dataclass
class RecordWindows:
    """One VCF record, each ALT allele's status, and its windows (None where unscored)."""

    record: Any
    statuses: list[AlleleStatus]
    windows: list[Optional[AlleleWindow]]


def record_windows(reader: VariantReader, reference: ReferenceGenome, scorer: AlleleScorer,
                   window: int, ref_mismatch: str) -> Iterator[RecordWindows]:
    """Each record of ``reader`` with the windows ``scorer`` is to score: the checks of
    :func:`~cmx_cli.variants.alleles.classify_record`, then the scorer's vetoes and record
    context (a group, say); what the scorer is asked to score is noted in its scope.

    Raises:
        CmxError: A record that cannot be read, named with its line.
    """
    for record in reader:
        try:
            check = classify_record(record, reference, window, ref_mismatch)
        except (ValueError, OSError) as error:
            raise reader.record_error(error, current=True) from error
        built = [make_windows(reference, check.contig, record.pos, record.ref, status.alt,
                              window) if status.scorable else None  # type: ignore[arg-type]
                 for status in check.alleles]
        context, context_veto = (None, None)
        if any(item is not None for item in built):
            context, context_veto = scorer.record_context(record)
        statuses, windows = [], []
        for status, allele_window in zip(check.alleles, built):
            veto = (scorer.veto(allele_window, record.ref, status.alt)
                    if allele_window is not None else None)
            if allele_window is not None and not veto:
                veto = context_veto
                allele_window = replace(allele_window, context=context)
            if allele_window is not None and not veto and scorer.scope is not None:
                veto = scorer.scope.note(allele_window, record.ref, status.alt)
            if veto:
                status, allele_window = replace(status, reason=veto), None
            statuses.append(status)
            windows.append(allele_window)
        yield RecordWindows(record, statuses, windows)


def _run_scorer(scorer: AlleleScorer, windows: list[AlleleWindow], chunk_alleles: int) -> np.ndarray:
    """Call the scorer on slices of at most ``chunk_alleles`` windows; check its answers."""
    scores = np.empty(len(windows), dtype=np.float64)
    for start in range(0, len(windows), chunk_alleles):
        part = windows[start:start + chunk_alleles]
        result = np.asarray(scorer(part), dtype=np.float64).reshape(-1)
        if result.shape[0] != len(part):
            raise ValueError(
                f"the scorer returned {result.shape[0]} scores for {len(part)} windows")
        scores[start:start + len(part)] = result
    return scores
