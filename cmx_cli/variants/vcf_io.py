"""Scoring the variants of a VCF or BCF file: the two passes, from input records to output.

Scoring makes two passes. :func:`preflight` reads every record before any model work
(DESIGN.md, "Variants"); :func:`score_variants` then streams the records in chunks of at
most ``chunk_alleles`` windows, so memory stays flat however large the VCF, and writes to a
temporary file in the target directory that is renamed when complete.

The parts live beside this module: reading in :mod:`cmx_cli.variants.reader`, the
pre-flight pass in :mod:`cmx_cli.variants.preflight`, writing in
:mod:`cmx_cli.variants.writer`. :func:`open_variants`, :func:`parse_region`,
:func:`preflight` and :class:`PreflightReport` are re-exported here.

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
from typing import Any, Callable, Optional, Sequence

import numpy as np

from cmx_cli.console import Reporter
from cmx_cli.errors import CmxError
from cmx_cli.io.output import check_not_input
from cmx_cli.io.reference import ReferenceGenome
from cmx_cli.variants.alleles import AlleleStatus, classify_record
from cmx_cli.variants.preflight import PreflightReport, preflight
from cmx_cli.variants.reader import (  # noqa: F401 - open_variants, parse_region re-exported
    PathLike, VariantReader, open_variants, parse_region)
from cmx_cli.variants.windows import AlleleWindow, make_windows
from cmx_cli.variants.writer import open_writer, output_kind

Scorer = Callable[[list[AlleleWindow]], np.ndarray]
Scorable = Callable[[AlleleWindow, str, str], Optional[str]]
RecordContext = Callable[[Any], tuple[Any, Optional[str]]]

DEFAULT_INFO_DESCRIPTION = "ChordMixer score of each ALT allele; . where not scored"
_TBI_MAX_POSITION = 2**29 - 1  # TBI: min_shift 14 and 5 levels cover 2^29 bp
_INFO_ID = re.compile(r"^[A-Za-z_][0-9A-Za-z_.]*$")  # VCF 4.3, section 1.6.1


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
    vcf_path: PathLike, reference: ReferenceGenome, output: PathLike, scorer: Scorer, *,
    regions: Sequence[str] = (), window: int = 1000, ref_mismatch: str = "skip",
    split_multiallelic: bool = False, info_id: str = "CMX",
    info_description: str = DEFAULT_INFO_DESCRIPTION, header_lines: Sequence[str] = (),
    tsv: bool = False, scorable: Optional[Scorable] = None,
    record_context: Optional[RecordContext] = None, chunk_alleles: int = 4096,
    reporter: Optional[Reporter] = None, report: Optional[PreflightReport] = None,
) -> ScoreSummary:
    """Score every scorable ALT allele of a VCF; write the VCF (or a TSV) with the scores.

    Args:
        vcf_path: The input VCF/BCF.
        reference: The reference genome.
        output: ``.vcf.gz``/``.vcf.bgz`` (BGZF + .tbi/.csi), ``.bcf`` (+ .csi), another
            name (plain VCF), or ``-`` (plain VCF or TSV on stdout).
        scorer: Called with at most ``chunk_alleles`` windows; returns one float each.
        regions: As :func:`open_variants`.
        window: The window length in bp.
        ref_mismatch: As :func:`preflight`.
        split_multiallelic: One output record per ALT allele
            (:func:`~cmx_cli.variants.alleles.split_record`).
        info_id: The INFO key of the scores (``Number=A``, ``Type=Float``).
        info_description: Its header description.
        header_lines: Extra ``##key=value`` header lines (``##cmx_model=...``).
        tsv: Write ``chrom pos id ref alt score`` rows, one per allele, instead of a VCF.
        scorable: Optional veto ``(window, ref, alt) -> reason or None`` for alleles that
            passed the checks (``"indel"`` for a model that scores SNVs only).
        record_context: Optional ``record -> (context, reason)``: the context is stored in
            the ``context`` of each of the record's windows (e.g. its group); a reason
            instead leaves the record's alleles unscored under that reason (``no_group``).
        chunk_alleles: The most windows per ``scorer`` call (and records held at once).
        reporter: Shows progress, and the pre-flight table and warnings when this call
            runs the pre-flight itself.
        report: A :func:`preflight` report of the same arguments, to skip that pass.

    Returns:
        Counts and timing.

    Raises:
        CmxError: Any input error (all before scoring), unsorted input for an indexed
            output, an output that cannot be written. Nothing is left under ``output``.
    """
    started = time.perf_counter()
    if not _INFO_ID.match(info_id):
        raise CmxError(f"--info-id {info_id!r} is not a valid INFO key",
                       "use letters, digits, '_' and '.', and do not start with a digit")
    if chunk_alleles < 1:
        raise ValueError(f"chunk_alleles must be at least 1, not {chunk_alleles}")
    kind = output_kind(str(output), tsv)
    check_not_input(output, vcf_path)
    arguments = (str(vcf_path), str(reference.path), tuple(regions), window, ref_mismatch)
    if report is None or (report.vcf, report.reference, report.regions, report.window,
                          report.ref_mismatch_policy) != arguments:
        report = preflight(vcf_path, reference, regions, window, ref_mismatch)
        if reporter is not None:
            reporter.table(report.table())
            for warning in report.warnings:
                reporter.warn(warning)
    if kind in ("bgzf", "bcf") and not report.is_sorted:
        raise CmxError.in_record(
            vcf_path, None, "the records are not sorted by position, so the output cannot be "
            "indexed", "sort it first (`bcftools sort`), or write plain .vcf output")
    outcomes: Counter = Counter()
    pending: list[tuple[Any, list[AlleleStatus], list[Optional[int]]]] = []
    windows: list[AlleleWindow] = []
    reader = VariantReader(vcf_path, regions, report.header_additions)
    use_csi = report.longest > _TBI_MAX_POSITION
    progress_bar = (reporter.progress("Scoring", total=report.records, unit="record")
                    if reporter is not None else contextlib.nullcontext())
    with reader, progress_bar as progress, open_writer(
            str(output), kind, reader.header, use_csi, info_id, info_description,
            header_lines) as writer:

        def flush() -> None:
            scores = _run_scorer(scorer, windows, chunk_alleles)
            for record, statuses, slots in pending:
                values: list[Optional[float]] = []
                for slot in slots:
                    value = None if slot is None else float(scores[slot])
                    if value is not None:
                        outcomes["scored" if np.isfinite(value) else "non_finite"] += 1
                    values.append(value if value is not None and np.isfinite(value) else None)
                writer.write(record, statuses, values, split_multiallelic)
            if progress is not None:
                progress.advance(len(pending))
            pending.clear()
            windows.clear()

        for record in reader:
            try:
                check = classify_record(record, reference, window, ref_mismatch)
            except (ValueError, OSError) as error:
                raise reader.record_error(error, current=True) from error
            built = [make_windows(reference, check.contig, record.pos, record.ref, status.alt,
                                  window) if status.scorable else None  # type: ignore[arg-type]
                     for status in check.alleles]
            context, context_veto = (None, None)
            if record_context is not None and any(item is not None for item in built):
                context, context_veto = record_context(record)
            if pending and len(windows) + sum(item is not None for item in built) > chunk_alleles:
                flush()
            statuses, slots = [], []
            for status, allele_window in zip(check.alleles, built):
                veto = (scorable(allele_window, record.ref, status.alt)
                        if allele_window is not None and scorable is not None else None)
                if allele_window is not None and not veto:
                    veto = context_veto
                    allele_window = replace(allele_window, context=context)
                if veto:
                    status, allele_window = replace(status, reason=veto), None
                if status.reason is not None:
                    outcomes[status.reason] += 1
                slots.append(None if allele_window is None else len(windows))
                if allele_window is not None:
                    windows.append(allele_window)
                statuses.append(status)
            pending.append((record, statuses, slots))
            if len(windows) >= chunk_alleles or len(pending) >= chunk_alleles:
                flush()
        flush()
    return ScoreSummary(str(output), writer.index_path, reader.records_read, writer.written,
                        sum(outcomes.values()), dict(outcomes), time.perf_counter() - started)


def _run_scorer(scorer: Scorer, windows: list[AlleleWindow], chunk_alleles: int) -> np.ndarray:
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
