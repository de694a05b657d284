"""Classification of ALT alleles into scorable or a skip reason; splitting multi-allelic records."""
import shutil
import subprocess
from types import SimpleNamespace

import pysam
import pytest

from cmx_cli.io.reference import ReferenceGenome
from cmx_cli.variants.alleles import (SKIP_REASONS, allele_kind, alt_form_reason, check_ref,
                                      classify_record, is_snv, ref_agrees, split_record)

#              idx 0123456789
SEQUENCE = "ACGTNacgtR"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("alleles") / "ref.fa"
    path.write_text(f">1\n{SEQUENCE}\n")
    with ReferenceGenome(path) as genome:
        yield genome


def record(chrom="chr1", pos=1, ref="A", alts=("C",)):
    return SimpleNamespace(chrom=chrom, pos=pos, ref=ref, alts=alts)


@pytest.mark.parametrize("ref, alt, reason", [
    ("A", "C", None),
    ("A", "c", None),
    ("A", "N", None),
    ("AT", "A", None),
    ("A", "ATTT", None),
    ("A", None, "missing_alt"),
    ("A", ".", "missing_alt"),
    ("A", "*", "star"),
    ("A", "<DEL>", "symbolic"),
    ("A", "<INS:ME:ALU>", "symbolic"),
    ("A", "<*>", "symbolic"),
    ("A", "<NON_REF>", "symbolic"),
    ("G", "G]17:198982]", "breakend"),
    ("T", "]13:123456]T", "breakend"),
    ("C", "C[2:321682[", "breakend"),
    ("A", "[17:198983[A", "breakend"),
    ("A", ".A", "breakend"),
    ("A", "A.", "breakend"),
    ("A", "R", "invalid_allele"),   # IUPAC codes are not ALT letters
    ("A", "A-T", "invalid_allele"),
    ("A", "U", "invalid_allele"),
    ("X", "A", "invalid_allele"),   # REF outside IUPAC
    ("", "A", "invalid_allele"),
    ("R", "A", None),               # IUPAC REF: judged against the FASTA later
])
def test_alt_form_reason(ref, alt, reason):
    assert alt_form_reason(ref, alt) == reason
    assert reason is None or reason in SKIP_REASONS


@pytest.mark.parametrize("vcf_ref, fasta, agrees", [
    ("ACGT", "ACGT", True),
    ("acgt", "ACGT", True),
    ("ACGT", "acgt", True),
    ("A", "N", True),     # an N in the FASTA matches anything
    ("A", "n", True),
    ("N", "N", True),
    ("N", "C", True),     # N in REF stands for any base
    ("R", "A", True),     # R = A or G
    ("R", "G", True),
    ("R", "C", False),
    ("A", "R", True),     # an ambiguity code in the FASTA matches the bases it stands for
    ("C", "R", False),
    ("A", "C", False),
    ("AC", "A", False),   # the FASTA ends inside REF
    ("X", "X", True),     # the same letter always agrees; validity is checked elsewhere
    ("X", "A", False),
])
def test_ref_agrees(vcf_ref, fasta, agrees):
    assert ref_agrees(vcf_ref, fasta) is agrees


@pytest.mark.parametrize("ref, alt, snv, kind", [
    ("A", "C", True, "snv"),
    ("a", "T", True, "snv"),
    ("A", "A", False, "mnv"),
    ("A", "AT", False, "indel"),
    ("AT", "A", False, "indel"),
    ("AT", "GC", False, "mnv"),
])
def test_is_snv_and_kind(ref, alt, snv, kind):
    assert is_snv(ref, alt) is snv
    assert allele_kind(ref, alt) == kind


def test_check_ref(reference):
    assert check_ref(reference, "1", 1, "ACG") == (None, "")
    assert check_ref(reference, "1", 5, "G")[0] is None  # FASTA N
    assert check_ref(reference, "1", 7, "C")[0] is None  # FASTA lowercase c
    assert check_ref(reference, "1", 10, "G")[0] is None  # FASTA R
    problem, detail = check_ref(reference, "1", 2, "G")
    assert problem == "ref_mismatch" and "'C'" in detail and "1:2" in detail
    assert check_ref(reference, "1", 10, "RA")[0] == "out_of_range"
    assert check_ref(reference, "1", 11, "A")[0] == "out_of_range"
    assert check_ref(reference, "1", 0, "A")[0] == "out_of_range"


@pytest.mark.parametrize("variant, policy, reasons", [
    (record(), "skip", [None]),
    (record(chrom="1"), "skip", [None]),
    (record(chrom="chr9"), "skip", ["contig_missing"]),
    (record(chrom="chr9", alts=("<DEL>",)), "skip", ["contig_missing"]),
    (record(ref="G"), "skip", ["ref_mismatch"]),
    (record(ref="G"), "error", ["ref_mismatch"]),
    (record(ref="G"), "warn", [None]),           # warn: scored anyway
    (record(ref="G", alts=("*",)), "skip", ["star"]),  # the allele's form comes first
    (record(pos=10, ref="RA"), "warn", ["out_of_range"]),  # never scorable
    (record(pos=2, ref="CGT", alts=("C",)), "skip", ["too_long"]),
    (record(ref="A", alts=("ACGT",)), "skip", ["too_long"]),
    (record(alts=None), "skip", ["missing_alt"]),
    (record(alts=("C", "<DEL>", "*", "G]1:5]", "AT", "R")), "skip",
     [None, "symbolic", "star", "breakend", None, "invalid_allele"]),
])
def test_classify_record(reference, variant, policy, reasons):
    check = classify_record(variant, reference, window=2, ref_mismatch=policy)
    assert [status.reason for status in check.alleles] == reasons
    assert [status.scorable for status in check.alleles] == [reason is None for reason in reasons]


def test_classify_record_details(reference):
    check = classify_record(record(alts=("C", "G")), reference, window=10)
    assert check.contig == "1" and check.ref_problem is None
    assert [(status.index, status.alt) for status in check.alleles] == [(0, "C"), (1, "G")]
    missing = classify_record(record(alts=None), reference, window=10)
    assert [(status.index, status.alt) for status in missing.alleles] == [(-1, ".")]
    mismatch = classify_record(record(ref="T"), reference, window=10)
    assert mismatch.ref_problem == "ref_mismatch" and "'A'" in mismatch.ref_detail


MULTI_VCF = """##fileformat=VCFv4.2
##contig=<ID=1,length=1000>
##INFO=<ID=AC,Number=A,Type=Integer,Description="x">
##INFO=<ID=RC,Number=R,Type=Integer,Description="x">
##INFO=<ID=DB,Number=0,Type=Flag,Description="x">
##INFO=<ID=END,Number=1,Type=Integer,Description="x">
##INFO=<ID=SVT,Number=1,Type=String,Description="x">
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
##FORMAT=<ID=AD,Number=R,Type=Integer,Description="x">
##FORMAT=<ID=PL,Number=G,Type=Integer,Description="x">
##FORMAT=<ID=AF,Number=A,Type=Float,Description="x">
##FORMAT=<ID=FT,Number=1,Type=String,Description="x">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\tS2\tS3
1\t10\trs1\tA\tC,G\t50\tPASS\tAC=1,2;RC=5,6,7;DB;SVT=x\tGT:AD:PL:AF:FT\t1|2:1,2,3:0,1,2,3,4,5:0.5,0.25:ok\t2:4,5,6:7,8,9:.:.\t./.:.:.:.:.
1\t20\tsv1\tA\t<DEL>,C\t.\t.\tEND=100;AC=3,4\tGT\t1/2\t0/0\t2/2
"""

# What `bcftools norm -m-` (1.16) writes for MULTI_VCF, the reference for the split rules.
BCFTOOLS_SPLIT = [
    "1\t10\trs1\tA\tC\t50\tPASS\tAC=1;RC=5,6;DB;SVT=x\tGT:AD:PL:AF:FT\t1|0:1,2:0,1,2:0.5:ok\t0:4,5:7,8:.:.\t./.:.:.:.:.",
    "1\t10\trs1\tA\tG\t50\tPASS\tAC=2;RC=5,7;DB;SVT=x\tGT:AD:PL:AF:FT\t0|1:1,3:0,3,5:0.25:ok\t1:4,6:7,9:.:.\t./.:.:.:.:.",
    "1\t20\tsv1\tA\t<DEL>\t.\t.\tEND=100;AC=3\tGT\t1/0\t0/0\t0/0",
    "1\t20\tsv1\tA\tC\t.\t.\tEND=100;AC=4\tGT\t0/1\t0/0\t1/1",
]


def _semantic(line: str) -> tuple:
    """A VCF line with empty and all-missing values made equal ('.', '.,.' and '')."""
    fields = line.rstrip("\n").split("\t")

    def missing(value: str) -> str:
        return "." if set(value) <= {".", ","} else value

    samples = [tuple(missing(value) for value in sample.split(":")) for sample in fields[9:]]
    return tuple(fields[:9]) + tuple(samples)


def _cmx_split(line: str) -> str:
    """A line of `bcftools norm -m-` as cmx splits it: an allele that is not symbolic keeps
    no END, SVTYPE or SVLEN of a structural allele beside it (issue 23, case 10)."""
    fields = line.split("\t")
    if not fields[4].startswith("<"):
        kept = [item for item in fields[7].split(";")
                if item.split("=")[0] not in ("END", "SVTYPE", "SVLEN")]
        fields[7] = ";".join(kept) or "."
    return "\t".join(fields)


@pytest.fixture
def multi_vcf(tmp_path):
    path = tmp_path / "multi.vcf"
    path.write_text(MULTI_VCF)
    return path


def test_split_record_follows_bcftools_norm(multi_vcf):
    with pysam.VariantFile(str(multi_vcf)) as variants:
        lines = [str(split_record(rec, index)) for rec in variants for index in range(len(rec.alts))]
    assert [_semantic(line) for line in lines] == [_semantic(_cmx_split(line))
                                                   for line in BCFTOOLS_SPLIT]


@pytest.mark.skipif(shutil.which("bcftools") is None, reason="bcftools is not installed")
def test_split_record_matches_installed_bcftools(multi_vcf):
    result = subprocess.run(["bcftools", "norm", "-m-", str(multi_vcf)], capture_output=True,
                            text=True, check=True)
    expected = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    with pysam.VariantFile(str(multi_vcf)) as variants:
        lines = [str(split_record(rec, index)) for rec in variants for index in range(len(rec.alts))]
    assert [_semantic(line) for line in lines] == [_semantic(_cmx_split(line))
                                                   for line in expected]


def test_split_record_drops_info_number_g(tmp_path):
    path = tmp_path / "info_g.vcf"
    path.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=1>\n"
        '##INFO=<ID=GL,Number=G,Type=Float,Description="x">\n'
        '##INFO=<ID=AC,Number=A,Type=Integer,Description="x">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        "1\t5\t.\tA\tC,G\t.\t.\tGL=1,2,3,4,5,6;AC=7,8\n")
    with pysam.VariantFile(str(path)) as variants:
        rec = next(iter(variants))
        assert str(split_record(rec, 1)).split("\t")[7].strip() == "AC=8"


def test_split_record_keeps_missing_and_short_fixed_number_values(tmp_path):
    # The VCF spec's own example has HQ (Number=2) as '.'; pysam reads it as one value.
    path = tmp_path / "fixed.vcf"
    path.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=1>\n"
        '##INFO=<ID=X2,Number=2,Type=Integer,Description="x">\n'
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="x">\n'
        '##FORMAT=<ID=HQ,Number=2,Type=Integer,Description="x">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\tS2\n"
        "1\t5\t.\tA\tC,G\t.\t.\tX2=.\tGT:HQ\t1/2:.\t0/1:7\n")
    with pysam.VariantFile(str(path)) as variants:
        rec = next(iter(variants))
        fields = str(split_record(rec, 1)).rstrip("\n").split("\t")
    assert fields[4] == "G" and "X2" not in fields[7]
    assert _semantic("\t".join(fields))[9:] == (("0/1", "."), ("0/0", "7,."))
