"""examples/make_codon_variants.py: coding SNVs labelled nonsynonymous (1) or synonymous (0).

The fixture builds a tiny genome and GFF3 by hand, so that every coding sequence, its frame
and the genome position of each of its bases are known here without the script. Labels are
recomputed with a genetic code written out independently (amino acid -> codons).
"""
from __future__ import annotations

import ast
import importlib.util
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import pysam
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "make_codon_variants.py"


def _load_script():
    """Import the script as a module (it is not part of a package)."""
    spec = importlib.util.spec_from_file_location("make_codon_variants", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


mcv = _load_script()

AMINO_ACID_CODONS = {
    "F": "TTT TTC", "L": "TTA TTG CTT CTC CTA CTG", "I": "ATT ATC ATA", "M": "ATG",
    "V": "GTT GTC GTA GTG", "S": "TCT TCC TCA TCG AGT AGC", "P": "CCT CCC CCA CCG",
    "T": "ACT ACC ACA ACG", "A": "GCT GCC GCA GCG", "Y": "TAT TAC", "*": "TAA TAG TGA",
    "H": "CAT CAC", "Q": "CAA CAG", "N": "AAT AAC", "K": "AAA AAG", "D": "GAT GAC",
    "E": "GAA GAG", "C": "TGT TGC", "W": "TGG", "R": "CGT CGC CGA CGG AGA AGG",
    "G": "GGT GGC GGA GGG",
}
GENETIC_CODE = {
    codon: amino for amino, codons in AMINO_ACID_CODONS.items() for codon in codons.split()
}
PAIRS = {"A": "T", "C": "G", "G": "C", "T": "A", "N": "N"}
CROP = 160


def revcomp(sequence: str) -> str:
    """Reverse complement, written here independently of the script."""
    return "".join(PAIRS[base] for base in reversed(sequence.upper()))


def internal_stop(coding: str, offset: int) -> bool:
    """Whether a full codon other than the last one is a stop, reading from offset."""
    codons = [coding[i:i + 3] for i in range(offset, len(coding) - 2, 3)]
    return any(GENETIC_CODE[codon] == "*" for codon in codons[:-1])


@dataclass
class Gene:
    """What the test knows about one mRNA of the fixture."""

    name: str
    contig: str
    strand: str
    coding: str
    positions: List[int]  # 0-based genome position of each coding base
    offset: int

    def full_codon_indices(self) -> range:
        """Coding indices of the bases of full codons."""
        return range(self.offset, self.offset + (len(self.coding) - self.offset) // 3 * 3)


class ContigBuilder:
    """Appends pieces of sequence and tells where each one starts (0-based)."""

    def __init__(self, seed: int) -> None:
        self.parts: List[str] = []
        self.length = 0
        self.rng = random.Random(seed)

    def add(self, sequence: str) -> int:
        start = self.length
        self.parts.append(sequence)
        self.length += len(sequence)
        return start

    def filler(self, length: int) -> None:
        self.add("".join(self.rng.choice("ACGT") for _ in range(length)))

    def sequence(self) -> str:
        return "".join(self.parts)


@dataclass
class Fixture:
    fasta: Path
    gff3: Path
    contigs: Dict[str, str]  # as written (mixed case), in FASTA order
    genes: Dict[str, Gene]  # the mRNAs the script must use


def cds_row(contig: str, start0: int, length: int, strand: str, phase: str, attrs: str) -> str:
    return "\t".join(
        [contig, "test", "CDS", str(start0 + 1), str(start0 + length), ".", strand, phase, attrs]
    )


def build_fixture(folder: Path) -> Fixture:
    """c2 (genes S, F, D), c1 (genes A/A2 and B), c3 (no gene); gene E is on chrX (absent).

    A: plus strand, two CDS pieces around an intron, soft-masked (lowercase) first piece;
       its CDS rows also list A2 as parent (an identical isoform).
    B: minus strand, two pieces listed in ascending order, phase column 0 on both while
       the true frame starts at offset 1 (one leading base, two trailing bases).
    S: internal stop codons in all three frames: skipped.
    F: an N in the CDS: skipped.
    D: fine, but straddles base 160 of c2: left out with --max-contig-length 160.
    """
    c1, c2, c3 = ContigBuilder(1), ContigBuilder(2), ContigBuilder(3)
    rows: List[str] = []
    genes: Dict[str, Gene] = {}

    coding_a = "ATGGCTGAACTGTTTAAAGGCTCACGTTGGCAATAA"
    c1.filler(30)
    a1 = c1.add(coding_a[:14].lower())
    c1.add("GTAAGTCCCCTTTCAG")
    a2 = c1.add(coding_a[14:])
    parents = "Parent=mRNA:geneA,mRNA:geneA2"
    rows += [
        "\t".join(["c1", "test", "mRNA", str(a1 + 1), str(a2 + 22), ".", "+", ".",
                   "Note=isoform+1;ID=mRNA:geneA"]),
        cds_row("c1", a1, 14, "+", "0", parents),
        cds_row("c1", a2, 22, "+", "1", f"ID=cds-a2;{parents};Note=second+piece"),
    ]
    positions_a = list(range(a1, a1 + 14)) + list(range(a2, a2 + 22))
    for name in ("geneA", "geneA2"):
        genes[name] = Gene(name, "c1", "+", coding_a, positions_a, 0)

    coding_b = "C" + "ATGGCTAAGCTGACCGATCCATGGAAAGAGTAG" + "GA"
    first_b, second_b = coding_b[:20], coding_b[20:]
    c1.filler(20)
    b2 = c1.add(revcomp(second_b))
    c1.filler(12)
    b1 = c1.add(revcomp(first_b))
    c1.filler(25)
    rows += [
        cds_row("c1", b2, len(second_b), "-", "0", "ID=cds-b2;Parent=mRNA:geneB"),
        cds_row("c1", b1, len(first_b), "-", "0", "Note=first+in+transcription;Parent=mRNA:geneB"),
    ]
    positions_b = [b1 + len(first_b) - 1 - i for i in range(len(first_b))]
    positions_b += [b2 + len(second_b) - 1 - j for j in range(len(second_b))]
    genes["geneB"] = Gene("geneB", "c1", "-", coding_b, positions_b, 1)

    c2.filler(10)
    s0 = c2.add("TAAG" * 6)
    c2.filler(20)
    f0 = c2.add("ATGAAANNNCCCTAA")
    c2.filler(149 - c2.length)
    coding_d = "ATGAAACCCGGGTTTTAA"
    d0 = c2.add(coding_d)
    c2.filler(60)
    rows += [
        cds_row("c2", s0, 24, "+", "0", "Parent=mRNA:geneS"),
        cds_row("c2", f0, 15, "+", "0", "Parent=mRNA:geneF"),
        cds_row("c2", d0, len(coding_d), "+", "0", "Parent=mRNA:geneD"),
        cds_row("chrX", 0, 9, "+", "0", "Parent=mRNA:geneE"),
    ]
    genes["geneD"] = Gene("geneD", "c2", "+", coding_d, list(range(d0, d0 + 18)), 0)
    c3.filler(50)

    # The fixture itself must be what the docstring says.
    assert internal_stop(coding_b, 0) and internal_stop(coding_b, 2)
    assert not internal_stop(coding_b, 1)
    assert all(internal_stop("TAAG" * 6, offset) for offset in range(3))
    assert d0 < CROP < d0 + len(coding_d) and b1 + len(first_b) <= CROP < c1.length
    for gene in genes.values():
        assert not internal_stop(gene.coding, gene.offset)

    contigs = {"c2": c2.sequence(), "c1": c1.sequence(), "c3": c3.sequence()}
    fasta = folder / "genome.fa"
    with open(fasta, "w") as handle:
        for name, sequence in contigs.items():
            handle.write(f">{name} test contig\n")
            handle.writelines(sequence[i:i + 50] + "\n" for i in range(0, len(sequence), 50))
    gff3 = folder / "genes.gff3"
    gff3.write_text("##gff-version 3\n# a comment\n\n" + "\n".join(rows) + "\n")
    return Fixture(fasta, gff3, contigs, genes)


@pytest.fixture
def fixture(tmp_path) -> Fixture:
    return build_fixture(tmp_path)


def run(fixture: Fixture, out_dir: Path, *extra: str):
    """Run the script in-process; return its summary."""
    args = mcv.parse_args(
        ["--fasta", str(fixture.fasta), "--gff3", str(fixture.gff3), "--out-dir", str(out_dir),
         *extra]
    )
    return mcv.make_dataset(args)


Record = Tuple[str, int, str, str, int, str, int]


def read_vcf(path: Path) -> List[Record]:
    """(contig, 1-based pos, ref, alt, LABEL, GENE, CODON_POS) of every record."""
    with pysam.VariantFile(str(path)) as vcf:
        return [
            (rec.contig, rec.pos, rec.ref, rec.alts[0], rec.info["LABEL"], rec.info["GENE"],
             rec.info["CODON_POS"])
            for rec in vcf
        ]


def coding_sites(genes: List[Gene]) -> Dict[Tuple[str, int], List[Tuple[Gene, int]]]:
    """(contig, 0-based position) -> [(gene, coding index)] over the full codons of genes."""
    sites: Dict[Tuple[str, int], List[Tuple[Gene, int]]] = {}
    for gene in genes:
        for index in gene.full_codon_indices():
            sites.setdefault((gene.contig, gene.positions[index]), []).append((gene, index))
    return sites


def expected_label(gene: Gene, index: int, genome_ref: str, genome_alt: str) -> Tuple[int, int]:
    """(label, codon position) of an SNV, from the gene's known coding sequence."""
    coding_base = gene.coding[index]
    assert genome_ref == (coding_base if gene.strand == "+" else PAIRS[coding_base])
    coding_alt = genome_alt if gene.strand == "+" else PAIRS[genome_alt]
    within = (index - gene.offset) % 3
    codon_start = index - within
    codon = gene.coding[codon_start:codon_start + 3]
    mutated = codon[:within] + coding_alt + codon[within + 1:]
    assert mutated != codon
    return int(GENETIC_CODE[mutated] != GENETIC_CODE[codon]), within + 1


def check_records(records: List[Record], fixture: Fixture, genes: List[Gene]) -> None:
    """REF, labels, codon positions, genes and order of every record, against the fixture."""
    sites = coding_sites(genes)
    rank = {name: index for index, name in enumerate(fixture.contigs)}
    assert records == sorted(records, key=lambda rec: (rank[rec[0]], rec[1], rec[3]))
    assert len({rec[:4] for rec in records}) == len(records)
    for contig, pos, ref, alt, label, gene_name, codon_pos in records:
        assert ref == fixture.contigs[contig][pos - 1].upper()
        assert alt in "ACGT" and alt != ref
        covering = sites[(contig, pos - 1)]
        expectations = {expected_label(gene, index, ref, alt) for gene, index in covering}
        assert len({label for label, _ in expectations}) == 1, "conflicts must be dropped"
        names = {gene.name: expected_label(gene, index, ref, alt) for gene, index in covering}
        assert gene_name in names
        assert (label, codon_pos) == names[gene_name]


def test_every_full_codon_base_labelled(fixture, tmp_path):
    out = tmp_path / "all"
    summary = run(fixture, out, "--snvs-per-gene", "1000", "--tsv")
    genes = list(fixture.genes.values())

    records = read_vcf(out / "codon_snvs.vcf.gz")
    check_records(records, fixture, genes)
    assert {(rec[0], rec[1] - 1) for rec in records} == set(coding_sites(genes))
    # Gene B: the partial leading base and the two trailing bases are never drawn.
    partial = {fixture.genes["geneB"].positions[i] for i in (0, 34, 35)}
    assert not partial & {rec[1] - 1 for rec in records if rec[0] == "c1"}
    labels = [rec[4] for rec in records]
    assert 0 in labels and 1 in labels
    minus = [rec for rec in records if rec[5] == "geneB"]
    assert len(minus) == 33
    for contig, pos, ref, alt, *_ in minus:
        assert ref == fixture.contigs[contig][pos - 1].upper()
        coding_index = fixture.genes["geneB"].positions.index(pos - 1)
        assert ref == PAIRS[fixture.genes["geneB"].coding[coding_index]]

    assert summary.used == 4
    assert summary.corrected == 1
    assert dict(summary.skipped) == {"internal_stop": 1, "non_acgt": 1, "missing_contig": 1}
    assert summary.beyond_crop == 0 and summary.conflicting == 0
    assert not (out / "reference.fa").exists()

    with pysam.VariantFile(str(out / "codon_snvs.vcf.gz")) as vcf:
        assert {name: vcf.header.contigs[name].length for name in vcf.header.contigs} == {
            name: len(sequence) for name, sequence in fixture.contigs.items()
        }
        assert list(vcf.header.contigs) == list(fixture.contigs)
        assert len(list(vcf.fetch("c1"))) == sum(rec[0] == "c1" for rec in records)
    assert (out / "codon_snvs.vcf.gz.tbi").is_file()
    assert not list(out.glob("*partial*"))

    tsv = (out / "codon_snvs.tsv").read_text().splitlines()
    assert tsv[0].split("\t") == ["chrom", "pos", "ref", "alt", "label"]
    assert [line.split("\t") for line in tsv[1:]] == [
        [rec[0], str(rec[1]), rec[2], rec[3], str(rec[4])] for rec in records
    ]


def test_crop_writes_reference_and_keeps_genes_within(fixture, tmp_path):
    out = tmp_path / "crop"
    summary = run(fixture, out, "--snvs-per-gene", "1000", "--max-contig-length", str(CROP))
    kept = [fixture.genes[name] for name in ("geneA", "geneA2", "geneB")]

    records = read_vcf(out / "codon_snvs.vcf.gz")
    check_records(records, fixture, kept)
    assert {(rec[0], rec[1] - 1) for rec in records} == set(coding_sites(kept))
    assert summary.used == 3 and summary.beyond_crop == 1 and summary.corrected == 1

    cropped = {name: sequence[:CROP].upper() for name, sequence in fixture.contigs.items()}
    lines = (out / "reference.fa").read_text().splitlines()
    assert max(len(line) for line in lines) == 60
    with pysam.FastaFile(str(out / "reference.fa")) as reference:
        assert list(reference.references) == list(cropped)
        assert {name: reference.fetch(name) for name in reference.references} == cropped
    assert (out / "reference.fa.fai").is_file()
    with pysam.VariantFile(str(out / "codon_snvs.vcf.gz")) as vcf:
        assert {name: vcf.header.contigs[name].length for name in vcf.header.contigs} == {
            name: len(sequence) for name, sequence in cropped.items()
        }


def test_contigs_option_with_crop(fixture, tmp_path):
    out = tmp_path / "c1"
    summary = run(fixture, out, "--contigs", "c3,c1", "--max-contig-length", str(CROP))
    with pysam.FastaFile(str(out / "reference.fa")) as reference:
        assert list(reference.references) == ["c1", "c3"]
        assert reference.get_reference_length("c1") == CROP
    records = read_vcf(out / "codon_snvs.vcf.gz")
    assert {rec[0] for rec in records} == {"c1"}
    # 4 draws in each of geneA, geneA2 and geneB; identical isoform draws are merged.
    assert len(records) == 12 - summary.duplicates
    assert sum(rec[5] == "geneB" for rec in records) == 4
    check_records(records, fixture, [fixture.genes[n] for n in ("geneA", "geneA2", "geneB")])
    assert dict(summary.skipped) == {}  # genes elsewhere are not looked at


def test_same_seed_same_output(fixture, tmp_path):
    def records_for(folder: str, seed: str) -> List[Record]:
        run(fixture, tmp_path / folder, "--seed", seed)
        return read_vcf(tmp_path / folder / "codon_snvs.vcf.gz")

    first, again, other = records_for("a", "0"), records_for("b", "0"), records_for("c", "1")
    assert first == again
    assert first != other
    for records in (first, other):
        assert sum(rec[5] in ("geneB", "geneD") for rec in records) == 8
        check_records(records, fixture, list(fixture.genes.values()))


def test_overlaps_merged_and_conflicts_dropped():
    snv = mcv.Snv("c1", 10, "A", "G", 1, "g1", 2)
    summary = mcv.Summary()
    kept = mcv.merge_overlaps(
        [
            snv,
            mcv.Snv("c1", 10, "A", "G", 1, "g2", 1),  # same site, same label: a duplicate
            mcv.Snv("c1", 11, "C", "T", 0, "g1", 3),
            mcv.Snv("c1", 11, "C", "T", 1, "g3", 1),  # same site, other label: conflict
            mcv.Snv("c1", 11, "C", "A", 1, "g1", 3),  # other ALT: its own site
            mcv.Snv("c1", 12, "N", "A", 1, "g1", 1),  # not ACGT
        ],
        summary,
    )
    assert kept == [snv, mcv.Snv("c1", 11, "C", "A", 1, "g1", 3)]
    assert (summary.duplicates, summary.conflicting, summary.non_acgt_sites) == (2, 1, 1)


def test_main_reports_and_fails_cleanly(fixture, tmp_path, capsys):
    common = ["--gff3", str(fixture.gff3), "--out-dir", str(tmp_path / "o")]
    assert mcv.main(["--fasta", str(fixture.fasta), *common]) == 0
    err = capsys.readouterr().err
    assert "4 used (1 with the phase corrected)" in err and "c1:" in err

    def error_of(argv: List[str]) -> str:
        assert mcv.main(argv) == 1
        message = capsys.readouterr().err
        assert message.count("\n") == 1 and "Traceback" not in message
        return message

    assert "not found" in error_of(["--fasta", str(tmp_path / "missing.fa"), *common])
    assert "no SNV" in error_of(["--fasta", str(fixture.fasta), *common, "--contigs", "c3"])
    assert "chr9" in error_of(["--fasta", str(fixture.fasta), *common, "--contigs", "chr9"])
    elsewhere = tmp_path / "elsewhere.gff3"
    elsewhere.write_text(cds_row("chrX", 0, 9, "+", "0", "Parent=mRNA:geneE") + "\n")
    message = error_of(["--fasta", str(fixture.fasta), "--gff3", str(elsewhere),
                        "--out-dir", str(tmp_path / "o")])
    assert "chrX" in message


def test_script_is_standalone():
    tree = ast.parse(SCRIPT.read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported <= {
        "__future__", "argparse", "collections", "dataclasses", "numpy", "os", "pathlib",
        "pysam", "shlex", "sys", "time", "typing",
    }
    assert "/work/" not in SCRIPT.read_text()
