#!/usr/bin/env python3
"""Build a labelled SNV dataset from gene models: does a coding SNV change the amino acid?

The inputs are a genome FASTA and its GFF3 gene models (CDS rows whose ``Parent`` names an
mRNA, for example ``chr01 MIPS CDS 1449 2078 . - 0 Parent=mRNA:um06480;Note=...``). The
script:

1. groups the CDS rows per mRNA (a CDS with ``Parent=a,b`` belongs to both) and joins them
   into the coding sequence on the gene's strand: pieces ordered by start, reversed on the
   minus strand, each minus-strand piece reverse-complemented. It keeps, for every base of
   the coding sequence, its contig and 0-based genome position;
2. checks the reading frame. The first full codon starts after the ``phase`` of the first
   CDS piece in transcription order (the highest-coordinate piece on the minus strand).
   When that frame has an internal stop codon (a stop anywhere but in the last full
   codon), the offsets 0, 1 and 2 are tried: the single offset without an internal stop
   whose last full codon is a stop is used and the mRNA is counted as phase-corrected;
   when none or more than one works,
   the mRNA is skipped. mRNAs with a base other than A/C/G/T in the CDS, or without one
   full codon, are skipped too. Only the first piece's phase is read: the phase of later
   pieces follows from the joined sequence;
3. draws ``--snvs-per-gene`` distinct positions per mRNA, uniformly among the bases of its
   full codons, and for each an ALT base uniformly among the three others on the coding
   strand (numpy Generator seeded with ``--seed``; mRNAs in FASTA contig order, then by
   start, then by ID). The label is 1 when the mutated codon codes for another amino acid
   than the reference codon (nonsynonymous, stop gain and stop loss included) and 0 when it
   codes for the same one (synonymous), with the standard genetic code;
4. turns each SNV into genome coordinates: REF is the FASTA base (uppercase), ALT the
   coding-strand base, complemented on the minus strand. Where genes overlap, an SNV drawn
   twice with the same label is kept once and one drawn with conflicting labels is dropped;
5. writes ``codon_snvs.vcf.gz`` (VCFv4.2, BGZF, sorted in FASTA contig order, tabix index)
   with INFO ``LABEL`` (0/1), ``GENE`` (the mRNA ID without ``mRNA:``) and ``CODON_POS``
   (1-3 on the coding strand), and with ``--tsv`` also ``codon_snvs.tsv``
   (``chrom pos ref alt label``), then prints a summary to stderr.

``--contigs`` keeps only the named contigs. ``--max-contig-length N`` crops every kept
contig to its first N bp, writes them to ``reference.fa`` (with ``.fai``), which is then the
reference of the VCF, and keeps only the mRNAs whose every CDS piece lies within the first
N bp. Without it no reference is written: the input FASTA is the reference.

The frame check finds gene models that do not fit the sequence, but it cannot tell why. In
the U. maydis chr01-chr04 files it skips about 400 mRNAs and corrects none. Most skipped
models are on chr03 from about 689 kb on (around the 100-N gap at 690.8 kb), where the GFF3
coordinates lie 97 bp (after about 1.46 Mb, 94 bp) before the genes in the FASTA. Without
the final-stop condition about 60 of those shifted models would pass in some frame by
chance, with wrong labels. The wrong phase values of that file are on later CDS pieces of
minus-strand genes, which this script never reads (the pieces are joined first).

Example:
    python examples/make_codon_variants.py --fasta umaydis_chr01-04.fa \\
        --gff3 umaydis_chr01-04.gff3 --out-dir codon_snvs --snvs-per-gene 4 --seed 0 --tsv

    python examples/make_codon_variants.py --fasta umaydis_chr01-04.fa \\
        --gff3 umaydis_chr01-04.gff3 --out-dir codon_small --contigs chr01 \\
        --max-contig-length 500000
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np
import pysam

BASES = "ACGT"
COMPLEMENT = str.maketrans("ACGTNacgtn", "TGCANtgcan")
# The standard genetic code, codons in TCAG order (TTT, TTC, TTA, TTG, TCT, ...).
_TCAG = "TCAG"
_AMINO_ACIDS_TCAG = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"
CODON_TABLE: Dict[str, str] = {
    first + second + third: _AMINO_ACIDS_TCAG[16 * i + 4 * j + k]
    for i, first in enumerate(_TCAG)
    for j, second in enumerate(_TCAG)
    for k, third in enumerate(_TCAG)
}
STOP_CODONS = frozenset(codon for codon, amino in CODON_TABLE.items() if amino == "*")
MRNA_PREFIX = "mRNA:"
VCF_NAME = "codon_snvs.vcf.gz"
TSV_NAME = "codon_snvs.tsv"
REFERENCE_NAME = "reference.fa"
FASTA_LINE_WIDTH = 60
LABEL_DESCRIPTION = (
    "1: the SNV changes the amino acid (nonsynonymous, stop gain or loss); 0: synonymous"
)

# Reasons an mRNA is not used, in the order the summary lists them.
SKIP_REASONS = {
    "internal_stop": "internal stop in every frame (or no other frame ending in a stop)",
    "ambiguous_frame": "more than one frame without an internal stop",
    "non_acgt": "non-ACGT bases in the CDS",
    "no_full_codon": "no full codon",
    "missing_contig": "contig not in the FASTA",
    "outside_contig": "CDS beyond the end of the contig",
    "mixed_pieces": "CDS pieces on mixed contigs or strands, or no strand",
}


class ScriptError(Exception):
    """An error reported to the user as one line, without a traceback."""


@dataclass(frozen=True)
class CdsPiece:
    """One CDS row of the GFF3 file.

    Attributes:
        contig: The sequence ID (column 1).
        start: 1-based first base (column 4).
        end: 1-based last base, inclusive (column 5).
        strand: ``+``, ``-`` or something else (column 7).
        phase: Bases before the first full codon (column 8); 0 when ``.``.
    """

    contig: str
    start: int
    end: int
    strand: str
    phase: int


@dataclass
class Transcript:
    """The CDS pieces of one mRNA.

    Attributes:
        mrna_id: The ``Parent`` value, as in the GFF3 file.
        pieces: The CDS pieces, in file order until :func:`ordered_pieces` sorts them.
    """

    mrna_id: str
    pieces: List[CdsPiece] = field(default_factory=list)

    @property
    def contig(self) -> str:
        """The contig of the first piece."""
        return self.pieces[0].contig

    @property
    def strand(self) -> str:
        """The strand of the first piece."""
        return self.pieces[0].strand

    @property
    def start(self) -> int:
        """The lowest 1-based coordinate of any piece."""
        return min(piece.start for piece in self.pieces)

    @property
    def end(self) -> int:
        """The highest 1-based coordinate of any piece."""
        return max(piece.end for piece in self.pieces)

    @property
    def gene_name(self) -> str:
        """The mRNA ID without the ``mRNA:`` prefix, safe inside a VCF INFO field."""
        name = self.mrna_id
        if name.startswith(MRNA_PREFIX):
            name = name[len(MRNA_PREFIX):]
        return "".join("_" if char in ";=, \t" else char for char in name)


@dataclass
class CodingModel:
    """An mRNA whose coding sequence passed the frame check.

    Attributes:
        transcript: The mRNA.
        sequence: The coding sequence on the coding strand, uppercase.
        genome_positions: 0-based genome position of each base of ``sequence``.
        offset: Index in ``sequence`` of the first base of the first full codon.
        corrected: Whether ``offset`` differs from the phase column.
    """

    transcript: Transcript
    sequence: str
    genome_positions: np.ndarray
    offset: int
    corrected: bool

    @property
    def full_codon_bases(self) -> int:
        """How many bases the full codons hold, from ``offset`` on."""
        return (len(self.sequence) - self.offset) // 3 * 3


@dataclass(frozen=True)
class Snv:
    """One labelled SNV in genome coordinates.

    Attributes:
        contig: The sequence ID.
        position: 0-based genome position.
        ref: The FASTA base, uppercase.
        alt: The alternative base on the genome's plus strand.
        label: 1 if nonsynonymous, 0 if synonymous.
        gene: The mRNA ID without ``mRNA:``.
        codon_position: 1, 2 or 3: where the base lies in its codon, on the coding strand.
    """

    contig: str
    position: int
    ref: str
    alt: str
    label: int
    gene: str
    codon_position: int


@dataclass
class Summary:
    """What a run did, for the report and for tests.

    Attributes:
        used: mRNAs the SNVs were drawn from.
        corrected: Used mRNAs whose frame differs from the phase column.
        skipped: Skipped mRNAs per reason (keys of :data:`SKIP_REASONS`).
        beyond_crop: mRNAs left out because a CDS piece lies beyond ``--max-contig-length``.
        conflicting: SNV sites dropped because overlapping genes gave them different labels.
        duplicates: SNVs dropped as exact repeats of one already kept (overlapping genes).
        non_acgt_sites: SNVs dropped because the genome base is not A/C/G/T.
        snvs: The SNVs written, sorted.
    """

    used: int = 0
    corrected: int = 0
    skipped: Counter = field(default_factory=Counter)
    beyond_crop: int = 0
    conflicting: int = 0
    duplicates: int = 0
    non_acgt_sites: int = 0
    snvs: List[Snv] = field(default_factory=list)


# ----------------------------------------------------------------------------- sequences


def reverse_complement(sequence: str) -> str:
    """Return the reverse complement of a DNA string (other letters are kept as they are)."""
    return sequence.translate(COMPLEMENT)[::-1]


def complement_base(base: str) -> str:
    """Return the complement of one base."""
    return base.translate(COMPLEMENT)


def translate_codon(codon: str) -> str:
    """Translate one uppercase ACGT codon with the standard code (``*`` for a stop)."""
    return CODON_TABLE[codon]


def has_internal_stop(sequence: str, offset: int) -> bool:
    """Whether a stop codon occurs before the last full codon read from ``offset``.

    Args:
        sequence: Coding sequence, uppercase ACGT.
        offset: Index of the first base of the first full codon.

    Returns:
        True if any full codon except the last one is a stop codon.
    """
    n_codons = (len(sequence) - offset) // 3
    return any(
        sequence[offset + 3 * index: offset + 3 * index + 3] in STOP_CODONS
        for index in range(n_codons - 1)
    )


def ends_in_stop(sequence: str, offset: int) -> bool:
    """Whether the last full codon read from ``offset`` is a stop codon."""
    last = offset + 3 * ((len(sequence) - offset) // 3 - 1)
    return last >= offset and sequence[last:last + 3] in STOP_CODONS


def choose_offset(sequence: str, phase: int) -> Tuple[Optional[int], str]:
    """Pick the reading frame of a coding sequence.

    Args:
        sequence: Coding sequence, uppercase ACGT.
        phase: The phase column of the first CDS piece in transcription order.

    Returns:
        ``(offset, "")`` for a usable frame, else ``(None, reason)`` with a key of
        :data:`SKIP_REASONS`.
    """
    if len(sequence) - phase < 3:
        return None, "no_full_codon"
    if not has_internal_stop(sequence, phase):
        return phase, ""
    # A corrected frame must also read to a stop codon at the very end: without this, gene
    # models that sit off their gene (shifted coordinates) pass in some frame by chance.
    candidates = [
        offset
        for offset in range(3)
        if len(sequence) - offset >= 3 and not has_internal_stop(sequence, offset)
        and ends_in_stop(sequence, offset)
    ]
    if not candidates:
        return None, "internal_stop"
    if len(candidates) > 1:
        return None, "ambiguous_frame"
    return candidates[0], ""


# ----------------------------------------------------------------------------- inputs


def parse_attributes(text: str) -> Dict[str, str]:
    """Parse a GFF3 column 9 (``key=value;key=value``, any order) into a dict."""
    attributes: Dict[str, str] = {}
    for item in text.strip().split(";"):
        key, separator, value = item.strip().partition("=")
        if separator:
            attributes[key.strip()] = value.strip()
    return attributes


def parse_cds_row(columns: List[str], path: Path, number: int) -> CdsPiece:
    """Turn the columns of one CDS row into a :class:`CdsPiece`.

    Raises:
        ScriptError: The coordinates or the phase are not valid.
    """
    try:
        start, end = int(columns[3]), int(columns[4])
        phase = 0 if columns[7] == "." else int(columns[7])
    except ValueError:
        raise ScriptError(f"{path}, line {number}: bad start, end or phase") from None
    if start < 1 or end < start or phase not in (0, 1, 2):
        raise ScriptError(f"{path}, line {number}: bad coordinates {start}-{end} or phase")
    return CdsPiece(columns[0], start, end, columns[6], phase)


def read_transcripts(path: Path) -> Dict[str, Transcript]:
    """Read the CDS rows of a GFF3 file, grouped by parent mRNA.

    Comment and blank lines are skipped and reading stops at a ``##FASTA`` directive. A
    CDS row with several parents (``Parent=a,b``) is added to each of them; one without a
    parent is ignored.

    Args:
        path: The GFF3 file.

    Returns:
        Transcripts by mRNA ID, in order of first appearance.

    Raises:
        ScriptError: A row does not have 9 tab-separated columns or has bad numbers.
    """
    transcripts: Dict[str, Transcript] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if line.startswith("##FASTA"):
                break
            if not line.strip() or line.startswith("#"):
                continue
            columns = line.split("\t")
            if len(columns) != 9:
                raise ScriptError(f"{path}, line {number}: expected 9 tab-separated columns")
            if columns[2] != "CDS":
                continue
            piece = parse_cds_row(columns, path, number)
            parents = parse_attributes(columns[8]).get("Parent", "")
            for parent in filter(None, (name.strip() for name in parents.split(","))):
                transcripts.setdefault(parent, Transcript(parent)).pieces.append(piece)
    return transcripts


def read_fasta(path: Path, wanted: Optional[Set[str]]) -> Tuple[Dict[str, int], Dict[str, str]]:
    """Read a (possibly gzipped) FASTA file.

    Args:
        path: The FASTA file.
        wanted: Contigs whose sequence to keep; None keeps all.

    Returns:
        The length of every contig, in file order, and the uppercase sequence of the
        wanted ones.

    Raises:
        ScriptError: A contig name occurs twice or the file holds no sequence.
    """
    lengths: Dict[str, int] = {}
    sequences: Dict[str, str] = {}
    with pysam.FastxFile(str(path)) as handle:
        for record in handle:
            if record.name in lengths:
                raise ScriptError(f"{path}: contig {record.name} occurs twice")
            sequence = record.sequence or ""
            lengths[record.name] = len(sequence)
            if wanted is None or record.name in wanted:
                sequences[record.name] = sequence.upper()
    if not lengths:
        raise ScriptError(f"{path}: no sequence found")
    return lengths, sequences


# ----------------------------------------------------------------------------- gene models


def ordered_pieces(transcript: Transcript) -> List[CdsPiece]:
    """The CDS pieces in transcription order: by start, reversed on the minus strand."""
    pieces = sorted(transcript.pieces, key=lambda piece: (piece.start, piece.end))
    return pieces[::-1] if transcript.strand == "-" else pieces


def coding_sequence(transcript: Transcript, genome: str) -> Tuple[str, np.ndarray]:
    """Join the CDS pieces of an mRNA on its strand.

    Args:
        transcript: The mRNA, with pieces on one contig and one strand (``+`` or ``-``).
        genome: The uppercase sequence of its contig.

    Returns:
        The coding sequence and the 0-based genome position of each of its bases.
    """
    parts: List[str] = []
    positions: List[np.ndarray] = []
    for piece in ordered_pieces(transcript):
        bases = genome[piece.start - 1: piece.end]
        coordinates = np.arange(piece.start - 1, piece.end, dtype=np.int64)
        if transcript.strand == "-":
            bases, coordinates = reverse_complement(bases), coordinates[::-1]
        parts.append(bases)
        positions.append(coordinates)
    return "".join(parts), np.concatenate(positions)


def check_placement(
    transcript: Transcript, lengths: Dict[str, int], crop: Optional[int]
) -> str:
    """Check that an mRNA lies on one strand of one contig of the reference.

    Args:
        transcript: The mRNA.
        lengths: Length of every FASTA contig (uncropped).
        crop: ``--max-contig-length`` or None.

    Returns:
        ``""`` when it can be used, else ``"beyond_crop"`` or a key of :data:`SKIP_REASONS`.
    """
    if len({(piece.contig, piece.strand) for piece in transcript.pieces}) > 1:
        return "mixed_pieces"
    if transcript.strand not in ("+", "-"):
        return "mixed_pieces"
    if transcript.contig not in lengths:
        return "missing_contig"
    if transcript.end > lengths[transcript.contig]:
        return "outside_contig"
    if crop is not None and transcript.end > crop:
        return "beyond_crop"
    return ""


def build_models(
    transcripts: Iterable[Transcript],
    sequences: Dict[str, str],
    lengths: Dict[str, int],
    crop: Optional[int],
    summary: Summary,
) -> List[CodingModel]:
    """Build and frame-check the coding sequence of every mRNA, counting what is skipped.

    Args:
        transcripts: mRNAs on the kept contigs (or on contigs missing from the FASTA).
        sequences: Uppercase sequence of each kept contig.
        lengths: Length of every FASTA contig (uncropped).
        crop: ``--max-contig-length`` or None.
        summary: Counters to update.

    Returns:
        The usable mRNAs, sorted by FASTA contig order, start and ID.
    """
    contig_rank = {name: rank for rank, name in enumerate(lengths)}
    models: List[CodingModel] = []
    for transcript in transcripts:
        problem = check_placement(transcript, lengths, crop)
        if problem == "beyond_crop":
            summary.beyond_crop += 1
            continue
        if problem:
            summary.skipped[problem] += 1
            continue
        sequence, positions = coding_sequence(transcript, sequences[transcript.contig])
        if set(sequence) - set(BASES):
            summary.skipped["non_acgt"] += 1
            continue
        phase = ordered_pieces(transcript)[0].phase
        offset, reason = choose_offset(sequence, phase)
        if offset is None:
            summary.skipped[reason] += 1
            continue
        models.append(CodingModel(transcript, sequence, positions, offset, offset != phase))
    models.sort(
        key=lambda model: (
            contig_rank[model.transcript.contig], model.transcript.start, model.transcript.mrna_id
        )
    )
    summary.used = len(models)
    summary.corrected = sum(model.corrected for model in models)
    return models


# ----------------------------------------------------------------------------- SNVs


def draw_snvs(
    model: CodingModel, genome: str, count: int, rng: np.random.Generator
) -> List[Snv]:
    """Draw labelled SNVs at distinct full-codon positions of one mRNA.

    Args:
        model: The mRNA with its coding sequence and frame.
        genome: The uppercase sequence of its contig.
        count: How many SNVs to draw (fewer when the full codons hold fewer bases).
        rng: The random generator, shared by all mRNAs in a fixed order.

    Returns:
        The SNVs in genome coordinates, in coding order.
    """
    n_bases = model.full_codon_bases
    chosen = np.sort(rng.choice(n_bases, size=min(count, n_bases), replace=False))
    alt_choices = rng.integers(0, 3, size=len(chosen))
    minus = model.transcript.strand == "-"
    snvs: List[Snv] = []
    for relative, alt_choice in zip(chosen.tolist(), alt_choices.tolist()):
        index = model.offset + relative
        within_codon = relative % 3
        codon = model.sequence[index - within_codon: index - within_codon + 3]
        coding_alt = [base for base in BASES if base != model.sequence[index]][alt_choice]
        mutated = codon[:within_codon] + coding_alt + codon[within_codon + 1:]
        position = int(model.genome_positions[index])
        snvs.append(
            Snv(
                contig=model.transcript.contig,
                position=position,
                ref=genome[position],
                alt=complement_base(coding_alt) if minus else coding_alt,
                label=int(translate_codon(mutated) != translate_codon(codon)),
                gene=model.transcript.gene_name,
                codon_position=within_codon + 1,
            )
        )
    return snvs


def merge_overlaps(snvs: Iterable[Snv], summary: Summary) -> List[Snv]:
    """Resolve SNVs drawn more than once where genes overlap.

    An SNV (contig, position, alt) drawn with two different labels is dropped; one drawn
    again with the same label is kept once (the first one drawn). SNVs whose reference
    base is not A/C/G/T are dropped.

    Args:
        snvs: The SNVs in drawing order.
        summary: Counters to update.

    Returns:
        The kept SNVs, in drawing order.
    """
    kept: Dict[Tuple[str, int, str], Snv] = {}
    labels: Dict[Tuple[str, int, str], Set[int]] = {}
    for snv in snvs:
        if snv.ref not in BASES:
            summary.non_acgt_sites += 1
            continue
        key = (snv.contig, snv.position, snv.alt)
        if key in kept:
            summary.duplicates += 1
        else:
            kept[key] = snv
        labels.setdefault(key, set()).add(snv.label)
    conflicting = [key for key, seen in labels.items() if len(seen) > 1]
    for key in conflicting:
        del kept[key]
    summary.conflicting = len(conflicting)
    return list(kept.values())


# ----------------------------------------------------------------------------- outputs


def write_reference(path: Path, sequences: Dict[str, str], lengths: Dict[str, int]) -> None:
    """Write the cropped contigs as FASTA (60 columns) and index it with ``pysam.faidx``.

    Args:
        path: Where to write.
        sequences: The kept contigs' sequences.
        lengths: The cropped length of each kept contig, in output order.
    """
    temporary = path.with_name(path.name + ".partial")
    with open(temporary, "w", encoding="ascii") as handle:
        for name, length in lengths.items():
            handle.write(f">{name}\n")
            sequence = sequences[name][:length]
            for start in range(0, length, FASTA_LINE_WIDTH):
                handle.write(sequence[start: start + FASTA_LINE_WIDTH] + "\n")
    os.replace(temporary, path)
    Path(str(path) + ".fai").unlink(missing_ok=True)
    pysam.faidx(str(path))


def vcf_header(lengths: Dict[str, int], command: str, reference: str) -> List[str]:
    """The VCF header lines, ``#CHROM`` line included."""
    lines = [
        "##fileformat=VCFv4.2",
        f"##source=make_codon_variants.py {command}".rstrip(),
        f"##reference={reference}",
    ]
    lines += [f"##contig=<ID={name},length={length}>" for name, length in lengths.items()]
    lines += [
        f'##INFO=<ID=LABEL,Number=1,Type=Integer,Description="{LABEL_DESCRIPTION}">',
        '##INFO=<ID=GENE,Number=1,Type=String,Description="The mRNA the SNV was drawn '
        'from (GFF3 ID without the mRNA: prefix)">',
        '##INFO=<ID=CODON_POS,Number=1,Type=Integer,Description="Position of the SNV in '
        'its codon on the coding strand (1-3)">',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    return lines


def write_vcf(path: Path, snvs: List[Snv], header: List[str]) -> None:
    """Write sorted SNVs as a BGZF VCF with a tabix index, via temporary files.

    Args:
        path: The final ``.vcf.gz`` path; its index is ``path.tbi``.
        snvs: The SNVs, already sorted.
        header: The header lines.
    """
    plain = path.with_name("codon_snvs.partial.vcf")
    compressed = path.with_name("codon_snvs.partial.vcf.gz")
    try:
        with open(plain, "w", encoding="ascii") as handle:
            handle.write("\n".join(header) + "\n")
            for snv in snvs:
                info = f"LABEL={snv.label};GENE={snv.gene};CODON_POS={snv.codon_position}"
                handle.write(
                    f"{snv.contig}\t{snv.position + 1}\t.\t{snv.ref}\t{snv.alt}\t.\t.\t{info}\n"
                )
        pysam.tabix_compress(str(plain), str(compressed), force=True)
        pysam.tabix_index(str(compressed), preset="vcf", force=True)
        os.replace(compressed, path)
        os.replace(str(compressed) + ".tbi", str(path) + ".tbi")
    finally:
        for leftover in (plain, compressed, Path(str(compressed) + ".tbi")):
            leftover.unlink(missing_ok=True)


def write_tsv(path: Path, snvs: List[Snv]) -> None:
    """Write ``chrom pos ref alt label`` (1-based pos), tab-separated, via a temporary file."""
    temporary = path.with_name(path.name + ".partial")
    with open(temporary, "w", encoding="ascii") as handle:
        handle.write("chrom\tpos\tref\talt\tlabel\n")
        for snv in snvs:
            handle.write(f"{snv.contig}\t{snv.position + 1}\t{snv.ref}\t{snv.alt}\t{snv.label}\n")
    os.replace(temporary, path)


def report(summary: Summary, contigs: Iterable[str]) -> str:
    """The human-readable summary of a run."""
    skipped = sum(summary.skipped.values())
    lines = [
        f"mRNAs: {summary.used:,} used ({summary.corrected:,} with the phase corrected), "
        f"{skipped:,} skipped",
    ]
    lines += [
        f"  skipped, {text}: {summary.skipped[reason]:,}"
        for reason, text in SKIP_REASONS.items()
        if summary.skipped[reason]
    ]
    if summary.beyond_crop:
        lines.append(f"  left out, CDS beyond --max-contig-length: {summary.beyond_crop:,}")
    ones = sum(snv.label for snv in summary.snvs)
    lines.append(
        f"SNVs: {len(summary.snvs):,} written (label 1: {ones:,}, label 0: "
        f"{len(summary.snvs) - ones:,}); dropped {summary.conflicting:,} sites with conflicting "
        f"labels, {summary.duplicates:,} duplicates, {summary.non_acgt_sites:,} non-ACGT sites"
    )
    for contig in contigs:
        labels = [snv.label for snv in summary.snvs if snv.contig == contig]
        if labels:
            lines.append(
                f"  {contig}: {len(labels):,} (label 1: {sum(labels):,}, "
                f"label 0: {len(labels) - sum(labels):,})"
            )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- driver


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Draw coding SNVs from GFF3 gene models and label them nonsynonymous (1) "
        "or synonymous (0); write a tabix-indexed VCF."
    )
    parser.add_argument("--fasta", type=Path, required=True, help="genome FASTA (may be gzipped)")
    parser.add_argument("--gff3", type=Path, required=True, help="gene models with CDS rows")
    parser.add_argument("--out-dir", type=Path, required=True, help="output folder")
    parser.add_argument("--snvs-per-gene", type=positive_int, default=4, help="default 4")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--contigs", default=None, help="comma-separated contigs to keep")
    parser.add_argument(
        "--max-contig-length", type=positive_int, default=None,
        help="crop kept contigs to their first N bp and write reference.fa",
    )
    parser.add_argument("--tsv", action="store_true", help="also write codon_snvs.tsv")
    args = parser.parse_args(argv)
    args.command = shlex.join(sys.argv[1:] if argv is None else list(argv))
    return args


def requested_contigs(option: Optional[str]) -> Optional[List[str]]:
    """The names given to ``--contigs``, or None when the option is absent."""
    if option is None:
        return None
    return [name.strip() for name in option.split(",") if name.strip()]


def kept_contigs(requested: Optional[List[str]], lengths: Dict[str, int], fasta: Path) -> List[str]:
    """The contigs to work on, in FASTA order.

    Raises:
        ScriptError: ``--contigs`` names a contig that the FASTA lacks, or none at all.
    """
    if requested is None:
        return list(lengths)
    missing = [name for name in requested if name not in lengths]
    if missing or not requested:
        raise ScriptError(f"--contigs: not in {fasta}: {', '.join(missing) or '(none given)'}")
    return [name for name in lengths if name in set(requested)]


def select_transcripts(
    transcripts: Dict[str, Transcript], contigs: List[str], restricted: bool,
    lengths: Dict[str, int], fasta: Path,
) -> List[Transcript]:
    """The mRNAs to use: those on the kept contigs, and without ``--contigs`` also those on
    contigs missing from the FASTA (so that they are counted).

    Raises:
        ScriptError: None of the GFF3 contigs is in the FASTA.
    """
    gff_contigs = {transcript.contig for transcript in transcripts.values()}
    if not gff_contigs & set(lengths):
        shown = ", ".join(sorted(gff_contigs)[:5])
        more = ", ..." if len(gff_contigs) > 5 else ""
        raise ScriptError(f"none of the GFF3 contigs ({shown}{more}) is in {fasta}")
    keep = set(contigs)
    return [
        transcript
        for transcript in transcripts.values()
        if transcript.contig in keep or (not restricted and transcript.contig not in lengths)
    ]


def make_dataset(args: argparse.Namespace) -> Summary:
    """Build the dataset described by the parsed arguments and write its files.

    Args:
        args: From :func:`parse_args`.

    Returns:
        The counts and the SNVs written.

    Raises:
        ScriptError: Missing inputs, contigs absent from the FASTA, or no SNV at all.
    """
    for option, path in (("--fasta", args.fasta), ("--gff3", args.gff3)):
        if not path.is_file():
            raise ScriptError(f"{option}: file not found: {path}")
    transcripts = read_transcripts(args.gff3)
    if not transcripts:
        raise ScriptError(f"{args.gff3}: no CDS rows with a Parent attribute")
    requested = requested_contigs(args.contigs)
    all_lengths, sequences = read_fasta(
        args.fasta, wanted=None if requested is None else set(requested)
    )
    contigs = kept_contigs(requested, all_lengths, args.fasta)
    selected = select_transcripts(
        transcripts, contigs, requested is not None, all_lengths, args.fasta
    )

    summary = Summary()
    crop = args.max_contig_length
    models = build_models(selected, sequences, all_lengths, crop, summary)
    rng = np.random.default_rng(args.seed)
    drawn = [
        snv
        for model in models
        for snv in draw_snvs(model, sequences[model.transcript.contig], args.snvs_per_gene, rng)
    ]
    rank = {name: index for index, name in enumerate(all_lengths)}
    summary.snvs = sorted(
        merge_overlaps(drawn, summary), key=lambda snv: (rank[snv.contig], snv.position, snv.alt)
    )
    if not summary.snvs:
        raise ScriptError("no SNV drawn: no usable mRNA on the selected contigs")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    if crop is None:
        header_lengths, reference = all_lengths, str(args.fasta)
    else:
        header_lengths = {name: min(all_lengths[name], crop) for name in contigs}
        reference = str(args.out_dir / REFERENCE_NAME)
        write_reference(args.out_dir / REFERENCE_NAME, sequences, header_lengths)
    header = vcf_header(header_lengths, args.command, reference)
    write_vcf(args.out_dir / VCF_NAME, summary.snvs, header)
    if args.tsv:
        write_tsv(args.out_dir / TSV_NAME, summary.snvs)
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the script; return the exit code (1 with a one-line message on an error)."""
    started = time.perf_counter()
    args = parse_args(argv)
    try:
        summary = make_dataset(args)
    except (ScriptError, OSError, ValueError) as error:
        print(f"make_codon_variants.py: error: {error}", file=sys.stderr)
        return 1
    contigs = list(dict.fromkeys(snv.contig for snv in summary.snvs))
    print(report(summary, contigs), file=sys.stderr)
    written = [VCF_NAME, VCF_NAME + ".tbi"] + ([TSV_NAME] if args.tsv else [])
    if args.max_contig_length is not None:
        written += [REFERENCE_NAME, REFERENCE_NAME + ".fai"]
    print(f"wrote {', '.join(written)} to {args.out_dir} in "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
