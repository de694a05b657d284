"""What each ALT allele of a VCF record is: scorable, or skipped for a stated reason.

A multi-allelic record is judged per ALT allele (VCF ``Number=A``): ``A -> C,<DEL>`` has one
scorable allele and one symbolic one. A record without an ALT allele (ALT ``.``) gives one
result, ``missing_alt``, so that every record is accounted for.

The reasons have stable machine names (for ``--json`` output and tests) and human text
(:data:`SKIP_REASONS`). They are checked in this order, and an allele is counted under the
first that applies: ``contig_missing``; the allele's own form (``missing_alt``, ``star``,
``symbolic``, ``breakend``, ``invalid_allele``); the REF against the FASTA
(``out_of_range``, ``ref_mismatch``); and last ``too_long``.

REF against the FASTA: letters are compared case-insensitively, and as IUPAC sets, so an N
(or any ambiguity code) in the FASTA matches every base it stands for, and an IUPAC code in
REF matches the FASTA bases it includes (REF ``R`` matches ``A`` or ``G``). Anything else is
a mismatch. How a mismatch is handled is the caller's policy (``error``, ``warn``, ``skip``).

This module also splits a multi-allelic record into one record per ALT allele
(:func:`split_record`), following ``bcftools norm -m-``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from cmx_cli.io.reference import ReferenceGenome

#: Stable machine name -> human description of each reason an allele is not scored.
SKIP_REASONS: dict[str, str] = {
    "contig_missing": "contig not in the reference FASTA",
    "missing_alt": "no ALT allele ('.')",
    "star": "'*' allele (overlapping deletion)",
    "symbolic": "symbolic allele (<DEL>, <INS>, <*>, <NON_REF>, ...)",
    "breakend": "breakend allele (A[chr2:123[, .A, A.)",
    "invalid_allele": "letters other than A, C, G, T, N in REF or ALT",
    "no_change": "ALT equals REF (no change to score)",
    "out_of_range": "REF lies beyond the end of the FASTA contig",
    "ref_mismatch": "REF differs from the reference FASTA",
    "too_long": "allele longer than the window",
}
REF_MISMATCH_POLICIES = ("error", "warn", "skip")
#: INFO keys that describe a structural allele (VCF 4.2, section 3).
_STRUCTURAL_KEYS = frozenset({"END", "SVLEN", "SVTYPE"})

_ALT_LETTERS = frozenset("ACGTN")
#: IUPAC code -> the bases it stands for (U is not a VCF letter).
_IUPAC: dict[str, frozenset[str]] = {
    code: frozenset(bases)
    for code, bases in {
        "A": "A", "C": "C", "G": "G", "T": "T", "R": "AG", "Y": "CT", "S": "CG", "W": "AT",
        "K": "GT", "M": "AC", "B": "CGT", "D": "AGT", "H": "ACT", "V": "ACG", "N": "ACGT",
    }.items()
}


@dataclass(frozen=True)
class AlleleStatus:
    """The verdict on one ALT allele.

    Attributes:
        index: 0-based index among the record's ALT alleles (-1 for a record without ALT).
        alt: The ALT allele as written (``.`` when missing).
        reason: A key of :data:`SKIP_REASONS` (or a caller's own reason), None if scorable.
    """

    index: int
    alt: str
    reason: Optional[str] = None

    @property
    def scorable(self) -> bool:
        """Whether the allele can be scored."""
        return self.reason is None


@dataclass(frozen=True)
class RecordCheck:
    """The verdict on one record and each of its ALT alleles.

    Attributes:
        contig: The FASTA contig the record's CHROM resolves to, None when missing.
        ref_problem: ``"ref_mismatch"``, ``"out_of_range"`` or None (REF agrees, or the
            contig is missing so REF could not be checked).
        ref_detail: What the FASTA holds there, for messages ("" when REF agrees).
        alleles: One status per ALT allele (one ``missing_alt`` status without ALT).
        ambiguous_ref: REF agrees with the FASTA only as an IUPAC code: it holds N (or
            another ambiguity code) where the FASTA has a base.
    """

    contig: Optional[str]
    ref_problem: Optional[str]
    ref_detail: str
    alleles: tuple[AlleleStatus, ...]
    ambiguous_ref: bool = False


def is_snv(ref: str, alt: str) -> bool:
    """Whether REF -> ALT is a single-nucleotide variant (one base each, different bases)."""
    return (
        len(ref) == 1 and len(alt) == 1 and ref.upper() != alt.upper()
        and ref.upper() in _ALT_LETTERS and alt.upper() in _ALT_LETTERS
    )


def allele_kind(ref: str, alt: str) -> str:
    """Return ``"snv"``, ``"indel"`` (lengths differ) or ``"mnv"`` (other substitutions)."""
    change = allele_change(ref, alt)
    return "indel" if change in ("insertion", "deletion") else change


def allele_change(ref: str, alt: str) -> str:
    """Return ``"snv"``, ``"insertion"`` (ALT longer), ``"deletion"`` (ALT shorter) or
    ``"mnv"`` (other substitutions)."""
    if is_snv(ref, alt):
        return "snv"
    if len(alt) != len(ref):
        return "insertion" if len(alt) > len(ref) else "deletion"
    return "mnv"


def is_ambiguous_ref(ref: str, fasta_letters: str) -> bool:
    """Whether a REF holds N or another IUPAC code where the reference has a plain base."""
    return any(ours not in "ACGT" and theirs in "ACGT"
               for ours, theirs in zip(ref.upper(), fasta_letters.upper()))


def alt_form_reason(ref: str, alt: Optional[str]) -> Optional[str]:
    """Return why an ALT allele cannot be scored because of its form alone, or None.

    Args:
        ref: The REF allele.
        alt: The ALT allele (None or ``.`` when the record has none).

    Returns:
        ``missing_alt``, ``star``, ``symbolic``, ``breakend``, ``invalid_allele``,
        ``no_change`` or None.
    """
    if alt is None or alt in ("", "."):
        return "missing_alt"
    if alt == "*":
        return "star"
    if alt.startswith("<") and alt.endswith(">"):
        return "symbolic"
    # Mated breakends carry '[' or ']'; single breakends start or end with '.' (VCF 5.4.9).
    if "[" in alt or "]" in alt or (len(alt) > 1 and (alt.startswith(".") or alt.endswith("."))):
        return "breakend"
    if not set(alt.upper()) <= _ALT_LETTERS or not ref or not set(ref.upper()) <= _IUPAC.keys():
        return "invalid_allele"
    if alt.upper() == ref.upper():
        return "no_change"
    return None


def ref_agrees(vcf_ref: str, fasta_letters: str) -> bool:
    """Compare a VCF REF with the FASTA letters at its position (IUPAC-aware, any case)."""
    if len(vcf_ref) != len(fasta_letters):
        return False
    for ours, theirs in zip(vcf_ref.upper(), fasta_letters.upper()):
        if ours == theirs:
            continue
        # Letters outside IUPAC never match; the empty set makes the test fail.
        if not _IUPAC.get(ours, frozenset()) & _IUPAC.get(theirs, frozenset()):
            return False
    return True


def check_ref(
    reference: ReferenceGenome, contig: str, pos1: int, ref: str
) -> tuple[Optional[str], str]:
    """Check a REF allele against the FASTA.

    Args:
        reference: The reference genome.
        contig: The FASTA contig.
        pos1: The VCF POS.
        ref: The VCF REF allele.

    Returns:
        ``(problem, detail)``: problem is None, ``"out_of_range"`` or ``"ref_mismatch"``;
        detail describes what the FASTA holds, for messages.
    """
    length = reference.length(contig)
    if pos1 < 1:
        return "out_of_range", f"POS {pos1} lies before the first base of {contig}"
    if pos1 - 1 + len(ref) > length:
        return "out_of_range", (f"POS {pos1:,} with a {len(ref)} bp REF passes the end of "
                                f"{contig} ({length:,} bp)")
    letters = reference.fetch(contig, pos1 - 1, pos1 - 1 + len(ref)).decode("ascii", "replace")
    if ref_agrees(ref, letters):
        return None, ""
    return "ref_mismatch", (f"REF is {_short(ref)} but the FASTA has {_short(letters)} "
                            f"at {contig}:{pos1:,}")


def classify_record(
    record: Any, reference: ReferenceGenome, window: int, ref_mismatch: str = "skip"
) -> RecordCheck:
    """Judge one VCF record and each of its ALT alleles.

    Args:
        record: A ``pysam.VariantRecord`` or anything with ``chrom``, ``pos`` (1-based),
            ``ref`` and ``alts`` (a tuple, or None without ALT).
        reference: The reference genome (it resolves the contig name).
        window: The window length in bp (longer alleles are ``too_long``).
        ref_mismatch: ``"warn"`` leaves alleles of a mismatching record scorable;
            ``"skip"`` and ``"error"`` mark them ``ref_mismatch`` (the caller raises for
            ``"error"``). ``out_of_range`` alleles are never scorable.

    Returns:
        The record's verdict.
    """
    ref = record.ref or ""
    alts = tuple(record.alts) if record.alts else (None,)
    contig = reference.resolve(record.chrom)
    problem, detail, ambiguous = (None, "", False)
    ref_valid = bool(ref) and set(ref.upper()) <= _IUPAC.keys()
    if contig is not None and ref_valid:
        problem, detail = check_ref(reference, contig, record.pos, ref)
        if problem is None and not set(ref.upper()) <= set("ACGT"):
            letters = reference.fetch(contig, record.pos - 1, record.pos - 1 + len(ref))
            ambiguous = is_ambiguous_ref(ref, letters.decode("ascii", "replace"))
    statuses = []
    for index, alt in enumerate(alts):
        shown = alt if alt is not None else "."
        reason = "contig_missing" if contig is None else alt_form_reason(ref, alt)
        # Under "warn" a mismatching REF is still scored; past a contig end nothing can be.
        if reason is None and problem and (problem == "out_of_range" or ref_mismatch != "warn"):
            reason = problem
        if reason is None and max(len(ref), len(shown)) > window:
            reason = "too_long"
        statuses.append(AlleleStatus(index if alt is not None else -1, shown, reason))
    return RecordCheck(contig, problem, detail, tuple(statuses), ambiguous)


def split_record(record: Any, alt_index: int) -> Any:
    """Return a copy of a multi-allelic record that keeps one ALT allele.

    The rules follow ``bcftools norm -m-`` so that split output matches the usual tools:
    ``Number=A`` values keep the allele's entry; ``Number=R`` values keep REF's and the
    allele's; ``FORMAT Number=G`` values keep the three diploid genotypes (or the two
    haploid ones) that involve only REF and the allele, and become missing for other
    ploidies; in GT the allele becomes 1 and any other ALT allele becomes 0 (REF), as
    bcftools does. Fields of any other Number are copied as they are. ``INFO Number=G``
    fields are dropped: the VCF spec defines G for FORMAT only and pysam cannot read them.

    Args:
        record: A ``pysam.VariantRecord``.
        alt_index: 0-based index of the ALT allele to keep.

    Returns:
        A new ``pysam.VariantRecord`` on the same header.
    """
    header = record.header
    allele = alt_index + 1
    n_alleles = len(record.alleles)
    new = header.new_record(
        contig=record.chrom, start=record.start, stop=record.stop,
        alleles=(record.ref, record.alts[alt_index]), id=record.id, qual=record.qual,
        filter=list(record.filter.keys()),
    )
    # A symbolic allele's END, SVLEN and SVTYPE describe it alone: an SNV split off a
    # multi-allelic <DEL> site keeps none of them (issue 23, case 10).
    structural = alt_form_reason(record.ref, record.alts[alt_index]) in ("symbolic", "breakend")
    if structural and new.stop != record.stop:  # pysam keeps INFO/END as the stop
        new.stop = record.stop
    for key in record.info.keys():
        number = header.info[key].number if key in header.info else None
        if number == "G" or (not structural and key in _STRUCTURAL_KEYS):
            continue
        value = _subset(record.info[key], number, allele, n_alleles)
        if value is not None:
            new.info[key] = value
    for key in record.format.keys():
        number = header.formats[key].number
        for sample_index, sample in enumerate(record.samples.values()):
            target = new.samples[sample_index]
            if key == "GT":
                target["GT"] = tuple(_split_gt(index, allele) for index in sample.allele_indices)
                target.phased = sample.phased
                continue
            value = _subset(sample[key], number, allele, n_alleles)
            if value is not None:
                target[key] = value
    return new


def _split_gt(index: Optional[int], allele: int) -> Optional[int]:
    if index is None or index == 0:
        return index
    return 1 if index == allele else 0


def _subset(value: Any, number: Any, allele: int, n_alleles: int) -> Any:
    """Keep the entries of a Number=A/R/G value that belong to REF and ``allele``.

    A missing value ('.') stays missing (None: not set). A fixed-Number value with fewer
    entries than declared is padded with missing entries, which pysam can write back.
    """
    if isinstance(value, tuple) and all(entry is None for entry in value):
        return None
    if number not in ("A", "R", "G"):
        if isinstance(number, int) and isinstance(value, tuple) and len(value) < number:
            return value + (None,) * (number - len(value))
        return value
    if not isinstance(value, tuple):
        value = (value,)
    if number == "A":
        picks = [allele - 1]
    elif number == "R" or len(value) == n_alleles:  # R, or G of a haploid sample
        picks = [0, allele]
    elif len(value) == n_alleles * (n_alleles + 1) // 2:  # diploid G: index of j/k is k(k+1)/2+j
        picks = [0, allele * (allele + 1) // 2, allele * (allele + 1) // 2 + allele]
    else:
        return None
    return tuple(value[pick] if pick < len(value) else None for pick in picks)


def _short(letters: str, limit: int = 20) -> str:
    return repr(letters if len(letters) <= limit else letters[:limit] + "...")
