"""The pre-flight pass: read every VCF record once, before any model work, and report.

:func:`preflight` checks contigs, REF alleles and sort order and counts what can be scored
(DESIGN.md, "Variants"). A command runs it before
:func:`~cmx_cli.variants.scoring.score_variants`, so every input error surfaces before
scoring starts.

Contigs that records use without a header line (htslib declares them while reading) are
collected in :attr:`PreflightReport.header_additions`, with their FASTA length, so that the
scoring pass can declare them before it reads (see :mod:`cmx_cli.variants.scoring`).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rich.table import Table

from cmx_cli.errors import CmxError
from cmx_cli.io.reference import ReferenceGenome
from cmx_cli.variants.alleles import (REF_MISMATCH_POLICIES, SKIP_REASONS, allele_kind,
                                      alt_form_reason, classify_record)
from cmx_cli.io.vcf_reader import PathLike, open_variants


#: The VCF specification's definitions of the INFO keys that symbolic alleles use.
SYMBOLIC_ALLELE_KEYS = {
    "END": '##INFO=<ID=END,Number=1,Type=Integer,Description="End position of the variant '
           'described in this record">',
    "SVLEN": '##INFO=<ID=SVLEN,Number=A,Type=Integer,Description="Difference in length '
             'between REF and ALT alleles">',
    "SVTYPE": '##INFO=<ID=SVTYPE,Number=1,Type=String,Description="Type of structural '
              'variant">',
}
#: What htslib declares for an INFO key that a record uses without a header line.
_UNDECLARED_INFO = re.compile(r'^##INFO=<ID=([^,>]+),Number=1,Type=String,Description="Dummy">$')


@dataclass
class PreflightReport:
    """What :func:`preflight` found, before any model work.

    Attributes:
        records, alt_alleles, multiallelic_records: Counts over the records read.
        alleles: One result per ALT allele plus one per record without ALT
            (``missing_alt``): ``scorable_alleles + sum(skipped.values()) == alleles``.
        kinds: ALT alleles of A/C/G/T/N letters by kind: ``snv``, ``indel``, ``mnv``.
        skipped: Unscorable alleles by reason (:data:`~cmx_cli.variants.alleles.SKIP_REASONS`).
        missing_contigs: VCF contig -> number of its records, for contigs not in the FASTA.
        aliases_applied: VCF contig -> FASTA contig, where the names differ.
        ref_mismatches, out_of_range: Records whose REF disagrees with the FASTA, or
            passes a contig end; ``ref_mismatch_examples`` describes the first five.
        ambiguous_refs: Scorable records whose REF holds N or another IUPAC code where the
            FASTA has a base (scored against the FASTA's base).
        length_mismatches: Contig -> (length in the VCF header, length in the FASTA).
        is_sorted: Whether the records are sorted (indexed output needs it).
        warnings: One line per problem worth telling the user.
    """

    vcf: str
    reference: str
    regions: tuple[str, ...]
    window: int
    ref_mismatch_policy: str
    records: int = 0
    alleles: int = 0
    alt_alleles: int = 0
    multiallelic_records: int = 0
    kinds: Counter = field(default_factory=Counter)  # snv, indel, mnv
    scorable_alleles: int = 0
    skipped: Counter = field(default_factory=Counter)
    missing_contigs: Counter = field(default_factory=Counter)  # VCF name -> records
    aliases_applied: dict[str, str] = field(default_factory=dict)
    ref_mismatches: int = 0
    out_of_range: int = 0
    ambiguous_refs: int = 0
    ref_mismatch_examples: list[str] = field(default_factory=list)
    length_mismatches: dict[str, tuple[int, int]] = field(default_factory=dict)
    is_sorted: bool = True
    longest: int = 0  # longest contig or record end, to choose TBI or CSI
    warnings: list[str] = field(default_factory=list)
    header_additions: list[str] = field(default_factory=list)

    @property
    def snvs(self) -> int:
        """SNV alleles."""
        return self.kinds["snv"]

    @property
    def indels(self) -> int:
        """Insertion and deletion alleles."""
        return self.kinds["indel"]

    def table(self) -> Table:
        """The report as one rich table (for stderr)."""
        table = Table(title=f"Pre-flight: {Path(self.vcf).name}", title_justify="left")
        table.add_column("check")
        table.add_column("result", justify="right")
        rows: list[tuple[str, Any]] = [
            ("records", self.records), ("ALT alleles", self.alt_alleles),
            ("multi-allelic records", self.multiallelic_records), ("SNVs", self.snvs),
            ("indels", self.indels), ("other substitutions (MNVs)", self.kinds["mnv"]),
            (f"REF mismatches ({self.ref_mismatch_policy})", self.ref_mismatches),
            ("REF beyond a contig end", self.out_of_range),
        ]
        rows += [(f"skipped: {SKIP_REASONS.get(reason, reason)}", count)
                 for reason, count in sorted(self.skipped.items())]
        rows.append(("scorable alleles", self.scorable_alleles))
        if self.missing_contigs:
            rows.append(("contigs not in the FASTA", ", ".join(sorted(self.missing_contigs))))
        if self.aliases_applied:
            rows.append(("contig names matched", ", ".join(
                f"{name} -> {target}" for name, target in sorted(self.aliases_applied.items()))))
        for label, value in rows:
            table.add_row(label, f"{value:,}" if isinstance(value, int) else value)
        return table

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (without the internal header lines)."""
        data = {key: value for key, value in vars(self).items() if key != "header_additions"}
        data.update(
            regions=list(self.regions), kinds=dict(self.kinds), skipped=dict(self.skipped),
            missing_contigs=dict(self.missing_contigs), snvs=self.snvs, indels=self.indels,
            length_mismatches={name: list(pair) for name, pair in self.length_mismatches.items()},
        )
        return data


def preflight(
    vcf_path: PathLike, reference: ReferenceGenome, regions: Sequence[str] = (),
    window: int = 1000, ref_mismatch: str = "skip",
) -> PreflightReport:
    """Read every record once and report what can be scored (DESIGN.md, "Variants").

    Args:
        vcf_path: The VCF/BCF file.
        reference: The reference genome.
        regions: As :func:`open_variants`.
        window: The window length in bp.
        ref_mismatch: ``error`` raises on the first REF that disagrees with the FASTA or
            passes a contig end; ``warn`` counts mismatches and scores them anyway;
            ``skip`` counts them and leaves them unscored.

    Returns:
        The report.

    Raises:
        CmxError: A reading error; no record's contig is in the FASTA; a REF mismatch
            under ``error``.
    """
    if ref_mismatch not in REF_MISMATCH_POLICIES:
        raise ValueError(f"ref_mismatch must be one of {REF_MISMATCH_POLICIES}: {ref_mismatch!r}")
    if window < 1:
        raise ValueError(f"window must be at least 1 bp, not {window}")
    report = PreflightReport(str(vcf_path), str(reference.path), tuple(regions), window,
                             ref_mismatch)
    order: dict[str, int] = {}
    last = (-1, -1)
    with open_variants(vcf_path, regions) as reader:
        for record in reader:
            try:
                check = classify_record(record, reference, window, ref_mismatch)
                alts = record.alts or ()
                place = (order.setdefault(record.chrom, len(order)), record.pos)
                report.longest = max(report.longest, record.stop)
            except (ValueError, OSError) as error:
                raise reader.record_error(error, current=True) from error
            if record.pos < 1 and any(status.reason != "breakend" for status in check.alleles):
                raise CmxError.in_record(
                    vcf_path, reader.last_location, f"POS {record.pos} lies before the first base "
                    "of the contig: VCF positions start at 1 (0 is for telomeric breakends only)",
                    "fix the record's position, or remove the record")
            report.records += 1
            report.ambiguous_refs += check.ambiguous_ref and any(
                status.scorable for status in check.alleles)
            report.alt_alleles += len(alts)
            report.multiallelic_records += len(alts) > 1
            report.is_sorted &= place >= last
            last = place
            if check.contig is None:
                report.missing_contigs[record.chrom] += 1
            if check.ref_problem is not None:
                if ref_mismatch == "error":
                    raise CmxError.in_record(
                        vcf_path, reader.last_location, check.ref_detail,
                        f"check that the VCF was called against {reference.path.name} (same "
                        "assembly), or pass --ref-mismatch warn or skip",
                    )
                report.ref_mismatches += check.ref_problem == "ref_mismatch"
                report.out_of_range += check.ref_problem == "out_of_range"
                if len(report.ref_mismatch_examples) < 5:
                    report.ref_mismatch_examples.append(check.ref_detail)
            for status in check.alleles:
                report.alleles += 1
                report.scorable_alleles += status.scorable
                if status.reason is not None:
                    report.skipped[status.reason] += 1
                if status.index >= 0 and alt_form_reason(record.ref, status.alt) is None:
                    report.kinds[allele_kind(record.ref, status.alt)] += 1
        report.warnings.extend(reader.warnings)
        report.header_additions = _declare_standard_keys(
            _declare_contigs(reader.header_additions(), reference))
        if report.skipped["symbolic"]:
            # htslib gives a symbolic allele an END when it writes the record, and fails when
            # the header does not define one; bcftools adds the standard definitions too.
            report.header_additions += [line for key, line in SYMBOLIC_ALLELE_KEYS.items()
                                        if key != "SVTYPE" and key not in reader.header.info]
        for name in reader.header.contigs:
            declared, fasta_name = reader.header.contigs[name].length or 0, reference.resolve(name)
            actual = reference.length(fasta_name) if fasta_name else 0
            report.longest = max(report.longest, declared, actual)
            if declared and actual and declared != actual:
                report.length_mismatches[name] = (declared, actual)
    report.aliases_applied = {
        name: target for name, target in reference.aliases_applied.items() if name in order}
    _check_contigs(report, reference)
    return report


def _check_contigs(report: PreflightReport, reference: ReferenceGenome) -> None:
    """Raise when no record can be placed on the FASTA; collect the warnings."""
    missing = sorted(report.missing_contigs)
    if report.records and sum(report.missing_contigs.values()) == report.records:
        raise CmxError(
            f"{report.vcf}: none of its contigs ({', '.join(missing[:8])}) is in the FASTA "
            f"{reference.path}, even with chr/MT aliases",
            "check the assembly, or map names with --contig-map (vcf_name<TAB>fasta_name "
            f"lines); the FASTA has {reference.describe_contigs()}",
        )
    if missing:
        report.warnings.append(
            f"{sum(report.missing_contigs.values()):,} record(s) on contigs that are not in the "
            f"FASTA are left unscored: {', '.join(missing[:8])}")
    if report.ref_mismatches or report.out_of_range:
        action = "scored anyway" if report.ref_mismatch_policy == "warn" else "left unscored"
        report.warnings.append(
            f"{report.ref_mismatches:,} REF mismatch(es) with the FASTA ({action}) and "
            f"{report.out_of_range:,} REF(s) beyond a contig end; first: "
            f"{report.ref_mismatch_examples[0]}")
    if report.ambiguous_refs:
        report.warnings.append(
            f"{report.ambiguous_refs:,} record(s) have an ambiguous REF (N or another IUPAC "
            "code) where the FASTA has a base: their windows take the FASTA's base")
    if report.length_mismatches:
        name, (declared, actual) = next(iter(report.length_mismatches.items()))
        report.warnings.append(
            f"{len(report.length_mismatches)} contig(s) differ in length between the VCF header "
            f"and the FASTA ({name}: {declared:,} vs {actual:,} bp): another assembly?")
    if not report.records:
        report.warnings.append(f"{report.vcf} holds no records"
                               + (" in the given regions" if report.regions else ""))


def _declare_standard_keys(lines: list[str]) -> list[str]:
    """Give END, SVLEN and SVTYPE, used without a header line, the VCF specification's
    definitions instead of htslib's stand-in (a String, which htslib cannot write as END:
    issue 23, case 10)."""
    declared = []
    for line in lines:
        undeclared = _UNDECLARED_INFO.match(line)
        key = undeclared.group(1) if undeclared else None
        declared.append(SYMBOLIC_ALLELE_KEYS.get(key, line) if key else line)
    return declared


def _declare_contigs(lines: list[str], reference: ReferenceGenome) -> list[str]:
    """Give the contig lines that htslib made up (without a length) the FASTA length."""
    declared = []
    for line in lines:
        bare = re.fullmatch(r"##contig=<ID=([^,>]+)>", line)
        fasta_name = reference.resolve(bare.group(1)) if bare else None
        if bare and fasta_name:
            line = f"##contig=<ID={bare.group(1)},length={reference.length(fasta_name)}>"
        declared.append(line)
    return declared
