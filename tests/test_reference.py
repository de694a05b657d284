"""The reference genome of variant scoring: contig aliases, the contig map, fetching."""
from pathlib import Path

import pytest

from cmx_cli.errors import CmxError
from cmx_cli.io.reference import ReferenceGenome, contig_aliases
from tests.helpers import check_user_error

DWV = Path(__file__).parent / "data" / "vcf" / "DWV_NC_004830.2.fa"


def write_fasta(path: Path, records: dict[str, str]) -> Path:
    path.write_text("".join(f">{name}\n{sequence}\n" for name, sequence in records.items()))
    return path


@pytest.fixture
def genome(tmp_path):
    path = write_fasta(tmp_path / "ref.fa", {
        "1": "ACGTACGTAC", "X": "acgtNNNNac", "MT": "GGGGCCCC", "chr22": "TTTTAAAA", "scaffold_7": "ACGT",
    })
    with ReferenceGenome(path) as reference:
        yield reference


@pytest.mark.parametrize("name, expected", [
    ("chr1", ["1"]),
    ("1", ["chr1", "Chr1", "CHR1"]),
    ("chrX", ["X"]),
    ("Chr2", ["2"]),
    ("chrM", ["chrMT", "MT", "M"]),
    ("MT", ["chrM", "chrMT", "M", "ChrMT", "CHRMT"]),
    ("M", ["chrM", "chrMT", "MT", "ChrM", "CHRM"]),
])
def test_contig_aliases(name, expected):
    assert contig_aliases(name) == expected


@pytest.mark.parametrize("vcf_name, fasta_name", [
    ("1", "1"), ("chr1", "1"), ("chrX", "X"), ("chrM", "MT"), ("M", "MT"), ("chrMT", "MT"),
    ("22", "chr22"), ("scaffold_7", "scaffold_7"), ("chr2", None), ("Y", None),
])
def test_resolve_applies_aliases(genome, vcf_name, fasta_name):
    assert genome.resolve(vcf_name) == fasta_name
    assert (vcf_name in genome) == (fasta_name is not None)


def test_aliases_applied_records_only_renamed_contigs(genome):
    for name in ("1", "chr1", "chrM", "chr2"):
        genome.resolve(name)
    assert genome.aliases_applied == {"chr1": "1", "chrM": "MT"}


def test_exact_name_wins_over_alias(tmp_path):
    path = write_fasta(tmp_path / "both.fa", {"chr1": "AAAA", "1": "CCCC"})
    with ReferenceGenome(path) as reference:
        assert reference.resolve("chr1") == "chr1"
        assert reference.resolve("1") == "1"
        assert reference.aliases_applied == {}


def test_length_and_fetch_are_half_open_and_clipped(genome):
    assert genome.length("1") == 10
    assert genome.length("chr1") == 10  # a VCF name that resolves works too
    assert genome.fetch("1", 0, 4) == b"ACGT"
    assert genome.fetch("1", 8, 10) == b"AC"
    assert genome.fetch("1", -5, 2) == b"AC"
    assert genome.fetch("1", 8, 500) == b"AC"
    assert genome.fetch("1", 10, 20) == b""
    assert genome.fetch("chrX", 0, 6) == b"acgtNN"  # case is kept
    assert genome.contigs == ["1", "X", "MT", "chr22", "scaffold_7"]


def test_unknown_contig_is_a_user_error(genome):
    with pytest.raises(CmxError) as caught:
        genome.fetch("chrUn", 0, 1)
    check_user_error(caught.value, "chrUn", "contig-map")


def test_contig_map_takes_precedence(tmp_path, genome):
    mapping = tmp_path / "map.tsv"
    mapping.write_text("# vcf\tfasta\n\nchr1\tscaffold_7\nNC_012920 MT\n")
    with ReferenceGenome(genome.path, contig_map=mapping) as reference:
        assert reference.contig_map == {"chr1": "scaffold_7", "NC_012920": "MT"}
        assert reference.resolve("chr1") == "scaffold_7"
        assert reference.resolve("NC_012920") == "MT"
        assert reference.resolve("1") == "1"
        assert reference.aliases_applied == {"chr1": "scaffold_7", "NC_012920": "MT"}


@pytest.mark.parametrize("text, line, words", [
    ("chr1\t1\nchr2\t2\textra\n", 2, ["found 3"]),
    ("chr1\n", 1, ["found 1"]),
    ("chr1\t1\nchr1\tX\n", 2, ["mapped twice"]),
    ("chr1\tchr1\n", 1, ["not in the FASTA"]),
])
def test_malformed_contig_map_names_file_and_line(tmp_path, genome, text, line, words):
    mapping = tmp_path / "bad_map.tsv"
    mapping.write_text(text)
    with pytest.raises(CmxError) as caught:
        ReferenceGenome(genome.path, contig_map=mapping)
    check_user_error(caught.value, mapping, f"line {line}", *words)


def test_missing_contig_map_file(tmp_path, genome):
    with pytest.raises(CmxError) as caught:
        ReferenceGenome(genome.path, contig_map=tmp_path / "absent.tsv")
    check_user_error(caught.value, "absent.tsv")


def test_real_reference_length():
    with ReferenceGenome(DWV) as reference:
        assert reference.contigs == ["NC_004830.2"]
        assert reference.length("NC_004830.2") == 10140
        assert reference.fetch("NC_004830.2", 150, 156) == b"TTTNCA"


def test_bgzf_reference(tmp_path):
    from Bio import bgzf

    path = tmp_path / "ref.fa.gz"
    with bgzf.BgzfWriter(str(path), "wb") as handle:
        handle.write(b">1\nACGTACGTAC\n")
    with ReferenceGenome(path) as reference:
        assert reference.resolve("chr1") == "1"
        assert reference.fetch("chr1", 2, 5) == b"GTA"
