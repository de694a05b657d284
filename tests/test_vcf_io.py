"""Reading VCF/BCF, the pre-flight pass, scoring and writing: formats, errors, atomicity."""
import csv
import gzip
import io
import math
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Optional

import numpy as np
import pysam
import pytest
from rich.console import Console

from cmx_cli.console import Reporter
from cmx_cli.errors import CmxError
from cmx_cli.io.reference import ReferenceGenome
from cmx_cli.io.vcf_reader import open_variants, parse_region
from cmx_cli.variants.alleles import classify_record, is_snv
from cmx_cli.variants.preflight import preflight
from cmx_cli.variants.scoring import ScoreOutput, ScoreSummary, score_variants
from cmx_cli.variants.windows import make_windows
from tests.helpers import check_user_error, run_cli

DATA = Path(__file__).parent / "data" / "vcf"
DWV_FASTA = DATA / "DWV_NC_004830.2.fa"
DWV_VCF = DATA / "DWV_3genomes_vs_NC_004830.vcf"
DWV_GZ = DATA / "DWV_3genomes_vs_NC_004830.vcf.gz"
DWV_BCF = DATA / "DWV_3genomes_vs_NC_004830.bcf"
CONTIG = "NC_004830.2"
HAVE_BCFTOOLS = shutil.which("bcftools") is not None and shutil.which("tabix") is not None
with pysam.VariantFile(str(DWV_VCF)) as _variants:
    IN_100_200 = sum(100 <= rec.pos <= 200 for rec in _variants)  # POS in 100-200: 15


def gc_scorer(windows):
    """A deterministic stand-in for a model: GC fraction of the ALT window minus the REF's."""
    def gc(tokens):
        return float(np.isin(tokens, (1, 2)).mean())
    return np.array([gc(window.alt_tokens) - gc(window.ref_tokens) for window in windows])


class FunctionScorer:
    """An :class:`~cmx_cli.variants.scoring.AlleleScorer` made of plain functions."""

    description = "test scores"
    scope = None

    def __init__(self, score, veto=None):
        self.score, self._veto = score, veto

    def veto(self, window, ref, alt):
        return self._veto(window, ref, alt) if self._veto else None

    @staticmethod
    def record_context(record):
        return None, None

    def __call__(self, windows):
        return self.score(windows)


def score(vcf, reference, output, scorer, *, regions=(), window=1000, ref_mismatch="skip",
          split_multiallelic=False, info_id="CMX", header_lines=(), tsv=False, scorable=None,
          chunk_alleles=4096, reporter=None) -> ScoreSummary:
    """Pre-flight, then score, as `cmx predict` does (the reporter sees the pre-flight)."""
    report = preflight(vcf, reference, regions, window, ref_mismatch)
    if reporter is not None:
        reporter.table(report.table())
        for warning in report.warnings:
            reporter.warn(warning)
    return score_variants(report, reference, FunctionScorer(scorer, scorable),
                          ScoreOutput(str(output), tsv, split_multiallelic, info_id,
                                      tuple(header_lines)), reporter, chunk_alleles)


class RecordingScorer:
    def __init__(self, fail_after: Optional[int] = None, error: type = RuntimeError):
        self.sizes: list[int] = []
        self.fail_after, self.error = fail_after, error

    def __call__(self, windows):
        if self.fail_after is not None and len(self.sizes) >= self.fail_after:
            raise self.error("the model broke")
        self.sizes.append(len(windows))
        return gc_scorer(windows)


@pytest.fixture(scope="module")
def dwv():
    with ReferenceGenome(DWV_FASTA) as reference:
        yield reference


def read_back(path) -> list:
    with pysam.VariantFile(str(path)) as variants:
        return [(rec.chrom, rec.pos, rec.id, rec.ref, rec.alts, rec.qual, list(rec.filter),
                 dict(rec.info), [dict(sample) for sample in rec.samples.values()])
                for rec in variants]


def expected_scores(vcf, reference, window=1000) -> list[list[Optional[float]]]:
    """Score each allele independently of score_variants, with the same rules."""
    result = []
    with pysam.VariantFile(str(vcf)) as variants:
        for rec in variants:
            check = classify_record(rec, reference, window)
            result.append([gc_scorer([make_windows(reference, check.contig, rec.pos, rec.ref, status.alt, window)])[0]
                           if status.scorable else None for status in check.alleles if status.index >= 0])
    return result


def write_fasta(path: Path, records: dict[str, str]) -> Path:
    path.write_text("".join(f">{name}\n{sequence}\n" for name, sequence in records.items()))
    return path


def write_vcf(path: Path, rows: list[str], contigs=("chr1",), extra_header: str = "") -> Path:
    header = "##fileformat=VCFv4.2\n" + "".join(f"##contig=<ID={name}>\n" for name in contigs)
    header += extra_header + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    path.write_text(header + "".join(row.replace(" ", "\t") + "\n" for row in rows))
    return path


def leftovers(directory: Path, keep=()) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name not in keep)


# --- Robustness: every file of the collection gives a result or one clear error ----------

with (DATA / "MANIFEST.tsv").open() as _manifest:
    MANIFEST = list(csv.DictReader(_manifest, delimiter="\t"))


def fasta_matching(vcf: Path, directory: Path, cap: int = 400_000) -> Path:
    """A FASTA whose bases agree with every REF that fits in contigs of at most ``cap`` bp."""
    records = [line.split("\t") for line in vcf.read_text().splitlines() if line and not line.startswith("#")]
    contigs: dict[str, bytearray] = {}
    for chrom, pos, _, ref, *_ in records:
        end = min(int(pos) + len(ref) + 50, cap)
        sequence = contigs.setdefault(chrom, bytearray())
        sequence.extend(b"ACGT" * ((end - len(sequence)) // 4 + 1))
        del sequence[cap:]
    for chrom, pos, _, ref, *_ in records:
        start = int(pos) - 1
        if start + len(ref) <= len(contigs[chrom]):
            contigs[chrom][start:start + len(ref)] = ref.encode()
    sequences = {name: seq.decode() for name, seq in contigs.items()} or {"unused": "ACGT"}
    return write_fasta(directory / "matching.fa", sequences)


@pytest.mark.parametrize("row", MANIFEST, ids=[row["file"] for row in MANIFEST])
def test_robustness_collection(tmp_path, row):
    vcf = DATA / row["file"]
    expectation = row["pysam_0.24.1_result"]
    if expectation.startswith("ok"):
        expected_records = int(expectation[3:-1])
        fasta = fasta_matching(vcf, tmp_path)
        with ReferenceGenome(fasta) as reference:
            summary = score(vcf, reference, tmp_path / "out.vcf.gz", gc_scorer)
        assert summary.records == expected_records
        back = read_back(tmp_path / "out.vcf.gz")
        assert len(back) == expected_records
        assert [(chrom, pos) for chrom, pos, *_ in back] == [
            (line.split("\t")[0], int(line.split("\t")[1])) for line in vcf.read_text().splitlines()
            if line and not line.startswith("#")]
        assert (tmp_path / "out.vcf.gz.tbi").exists() or (tmp_path / "out.vcf.gz.csi").exists()
    else:
        output = tmp_path / "out.vcf.gz"
        with ReferenceGenome(DWV_FASTA) as reference, pytest.raises(CmxError) as caught:
            score(vcf, reference, output, gc_scorer)
        check_user_error(caught.value, vcf.name)
        assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name, words", [
    ("htslib-test__emptyfile", ["empty"]),
    ("python-pyvcf-examples__freebayes.vcf.gz", ["plain gzip", "bgzip -c >"]),
    ("emboss-test__valid-4.1_BCF1.bcf", ["legacy BCF1"]),
    ("bedtools-test__a_vcfSVtest.vcf", ["no '#CHROM' line"]),
    ("pypi_pyvcf3__example-4.2.vcf", ["not tab-separated"]),
    ("pypi_pyvcf3__gatk_26_meta.vcf", ["FORMAT column but no sample"]),
    ("pypi_pyvcf3__issue-16.vcf", ["20:1234568", "line 20", "9 tab-separated columns", "has 12"]),
    ("pypi_pyvcf3__strelka.vcf", ["1:1666175", "line 55", "sample column(s) 2, 4 are empty"]),
    ("htslib-test__noroundtrip.vcf", ["3:50", "line 5", "repeated"]),
])
def test_input_errors_name_the_problem(name, words):
    with pytest.raises(CmxError) as caught:
        with open_variants(DATA / name) as records:
            list(records)
    check_user_error(caught.value, name, *words)


def test_truncated_missing_fileformat_and_bad_pos(tmp_path):
    truncated = tmp_path / "cut.vcf.gz"
    truncated.write_bytes(DWV_GZ.read_bytes()[:5000])
    no_fileformat = tmp_path / "bare.vcf"
    no_fileformat.write_text("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n1\t5\t.\tA\tC\t.\t.\t.\n")
    bad_pos = write_vcf(tmp_path / "pos.vcf", ["chr1 7 . A C . . .", "chr1 x12 . A C . . ."])
    for path, words in ((truncated, ["truncated"]), (no_fileformat, ["##fileformat"]),
                        (bad_pos, ["chr1:x12", "line 5", "POS 'x12'"])):
        with pytest.raises(CmxError) as caught:
            with open_variants(path) as records:
                list(records)
        check_user_error(caught.value, path.name, *words)


def test_non_vcf_and_missing_files(tmp_path):
    for path, words in ((DWV_FASTA, ["not VCF", ">NC_004830"]), (tmp_path / "absent.vcf", ["no such file"]),
                        (tmp_path, ["directory"])):
        with pytest.raises(CmxError) as caught:
            open_variants(path)
        check_user_error(caught.value, *words)


def test_htslib_stays_quiet(capfd):
    with pytest.raises(CmxError):
        with open_variants(DATA / "pypi_pyvcf3__strelka.vcf") as records:
            list(records)
    with open_variants(DATA / "pypi_pyvcf3__bad-info-character.vcf") as records:
        list(records)  # an undeclared contig: htslib would warn
    assert capfd.readouterr().err == ""


# --- Reading and regions ----------------------------------------------------------------

def test_three_formats_read_the_same_records():
    results = []
    for path in (DWV_VCF, DWV_GZ, DWV_BCF):
        with open_variants(path) as records:
            results.append([(rec.chrom, rec.pos, rec.ref, rec.alts) for rec in records])
    assert len(results[0]) == 1698
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize("text, expected", [
    ("chr1", ("chr1", 0, None)),
    ("chr1:1001-2000", ("chr1", 1000, 2000)),
    ("chr1:1,001-2,000", ("chr1", 1000, 2000)),
    ("chr1:500", ("chr1", 499, None)),
    ("chr1:500-", ("chr1", 499, None)),
    ("HLA-A*01:01", ("HLA-A*01:01", 0, None)),  # a known contig name with ':'
])
def test_parse_region(text, expected):
    assert parse_region(text, ["HLA-A*01:01"]) == expected


@pytest.mark.parametrize("text", ["chr1:0-5", "chr1:10-5", ":5-10"])
def test_parse_region_rejects_bad_coordinates(text):
    with pytest.raises(CmxError) as caught:
        parse_region(text)
    check_user_error(caught.value, text)


@pytest.mark.parametrize("path", [DWV_GZ, DWV_BCF], ids=["vcf.gz", "bcf"])
def test_regions_select_records_by_pos(path):
    with open_variants(DWV_VCF) as records:
        everything = [(rec.pos, rec.ref, rec.alts) for rec in records]
    in_range = [item for item in everything if 250 <= item[0] <= 340 or 5000 <= item[0] <= 5100]
    # Out of order and overlapping on purpose: sorted, merged, no duplicates.
    with open_variants(path, [f"{CONTIG}:5000-5100", f"{CONTIG}:300-340", f"{CONTIG}:250-310"]) as records:
        assert [(rec.pos, rec.ref, rec.alts) for rec in records] == in_range
    with open_variants(path, [CONTIG]) as records:
        assert sum(1 for _ in records) == 1698
    # A deletion at 254 (GT -> G) overlaps 255 but starts before it: not selected.
    with open_variants(path, [f"{CONTIG}:255-256"]) as records:
        assert [rec.pos for rec in records] == []


def test_region_errors(tmp_path):
    with pytest.raises(CmxError) as caught:
        open_variants(DWV_VCF, [f"{CONTIG}:1-100"])
    check_user_error(caught.value, "index", "bgzip")
    unindexed = tmp_path / "copy.vcf.gz"
    shutil.copy(DWV_GZ, unindexed)
    with pytest.raises(CmxError) as caught:
        open_variants(unindexed, [f"{CONTIG}:1-100"])
    check_user_error(caught.value, "copy.vcf.gz", "bcftools index", "tabix -p vcf")
    with pytest.raises(CmxError) as caught:
        open_variants(DWV_GZ, ["chr7:1-100"])
    check_user_error(caught.value, "chr7", CONTIG)


def test_region_contig_alias(tmp_path):
    vcf = write_vcf(tmp_path / "a.vcf", ["chr1 3 . G A . . ."])
    pysam.tabix_index(str(vcf), preset="vcf", force=True)
    with open_variants(tmp_path / "a.vcf.gz", ["1:1-10"]) as records:
        assert [rec.pos for rec in records] == [3]


# --- Pre-flight ---------------------------------------------------------------------------

def test_preflight_counts_real_data(dwv):
    report = preflight(DWV_GZ, dwv)
    assert (report.records, report.alt_alleles, report.multiallelic_records) == (1698, 1757, 59)
    assert (report.snvs, report.indels, report.kinds["mnv"]) == (1744, 12, 1)
    assert report.scorable_alleles == report.alleles == 1757
    assert report.ref_mismatches == 0 and not report.skipped and not report.missing_contigs
    assert report.is_sorted and report.warnings == []
    data = report.to_dict()
    assert data["records"] == 1698 and data["skipped"] == {} and "header_additions" not in data
    assert report.table().row_count >= 8


SKIP_ROWS = [
    "chr1 2 ok A G . . .",
    "chr1 3 sym G <DEL> . . .",
    "chr1 4 bnd T T[chr1:8[ . . .",
    "chr1 5 single A .A . . .",
    "chr1 6 star C * . . .",
    "chr1 7 none G . . . .",
    "chr1 8 iupac T R . . .",
    "chr1 9 long A AAAAAAAAAAAAAAAAAAAAA . . .",
    "chr1 10 mismatch T A . . .",
    "chr1 11 beyond AA A . . .",
    "chrZ 1 nocontig A C . . .",
    "chr1 2 multi A G,<*>,C . . .",
]
SKIP_FASTA = {"1": "AAGTACGTAC", "chrQ": "A"}  # chr1 -> 1 through the alias; no chrZ


@pytest.fixture
def skip_case(tmp_path):
    vcf = write_vcf(tmp_path / "skips.vcf", SKIP_ROWS, contigs=("chr1", "chrZ"))
    fasta = write_fasta(tmp_path / "ref.fa", SKIP_FASTA)
    with ReferenceGenome(fasta) as reference:
        yield vcf, reference


def test_every_skip_reason(skip_case, tmp_path):
    vcf, reference = skip_case
    report = preflight(vcf, reference, window=20)
    assert dict(report.skipped) == {
        "symbolic": 2, "breakend": 2, "star": 1, "missing_alt": 1, "invalid_allele": 1,
        "too_long": 1, "ref_mismatch": 1, "out_of_range": 1, "contig_missing": 1}
    assert report.scorable_alleles == 3 and report.alleles == 14 and report.alt_alleles == 13
    assert report.missing_contigs == {"chrZ": 1} and report.aliases_applied == {"chr1": "1"}
    assert any("chrZ" in warning for warning in report.warnings)
    summary = score(vcf, reference, tmp_path / "out.vcf", gc_scorer, window=20)
    assert summary.outcomes == {"scored": 3, **report.skipped}
    scores = {rec.id: rec.info.get("CMX") for rec in pysam.VariantFile(str(tmp_path / "out.vcf"))}
    assert scores["multi"][1] is None and scores["multi"][0] is not None and scores["multi"][2] is not None
    assert all(scores[name] is None for name in scores if name not in ("ok", "multi"))


def test_reporter_gets_table_warnings_and_progress(skip_case, tmp_path):
    vcf, reference = skip_case
    console = Console(file=io.StringIO(), force_terminal=True, width=150)
    reporter = Reporter(console=console)
    score(vcf, reference, tmp_path / "out.vcf", gc_scorer, window=20, reporter=reporter)
    shown = console.file.getvalue()
    assert "Pre-flight: skips.vcf" in shown and "chr1 -> 1" in shown and "Scoring" in shown
    assert any("chrZ" in warning for warning in reporter.warnings)
    assert any("REF mismatch" in warning for warning in reporter.warnings)


def test_all_contigs_missing_is_an_error(tmp_path):
    vcf = write_vcf(tmp_path / "a.vcf", ["chr9 3 . G A . . ."], contigs=("chr9",))
    with ReferenceGenome(DWV_FASTA) as reference, pytest.raises(CmxError) as caught:
        score(vcf, reference, tmp_path / "out.vcf", gc_scorer)
    check_user_error(caught.value, "chr9", CONTIG, "--contig-map")
    assert leftovers(tmp_path) == ["a.vcf"]


def test_contig_map_resolves_names(tmp_path):
    vcf = write_vcf(tmp_path / "a.vcf", ["virus 14 . C G . . ."], contigs=("virus",))
    mapping = tmp_path / "map.tsv"
    mapping.write_text(f"virus\t{CONTIG}\n")
    with ReferenceGenome(DWV_FASTA, contig_map=mapping) as reference:
        report = preflight(vcf, reference)
        assert report.aliases_applied == {"virus": CONTIG} and report.scorable_alleles == 1


def test_alias_chr1_to_1(tmp_path):
    fasta = write_fasta(tmp_path / "ref.fa", {"1": "ACGTACGTACGT"})
    vcf = write_vcf(tmp_path / "a.vcf", ["chr1 3 . G A . . .", "chr1 5 . A AT . . ."])
    with ReferenceGenome(fasta) as reference:
        summary = score(vcf, reference, tmp_path / "out.vcf", gc_scorer, window=4)
    assert summary.outcomes == {"scored": 2}
    assert [rec.chrom for rec in pysam.VariantFile(str(tmp_path / "out.vcf"))] == ["chr1", "chr1"]


def example_40_fasta(tmp_path) -> Path:
    """chr20 (the VCF says 20) agreeing with every REF of the VCF example but the first."""
    sequence = bytearray(b"ACGT" * 308_650)
    for pos, ref in ((14370, "A"), (17330, "T"), (1110696, "A"), (1230237, "T"), (1231234, "AT"),
                     (1234567, "GTCT")):
        sequence[pos - 1:pos - 1 + len(ref)] = ref.encode()
    return write_fasta(tmp_path / "chr20.fa", {"chr20": sequence.decode()})


@pytest.mark.parametrize("policy, scored, mismatch_scored", [("warn", 7, True), ("skip", 6, False)])
def test_ref_mismatch_policies(tmp_path, policy, scored, mismatch_scored):
    vcf = DATA / "pypi_pyvcf3__example-4.0.vcf"
    with ReferenceGenome(example_40_fasta(tmp_path)) as reference:
        report = preflight(vcf, reference, ref_mismatch=policy)
        assert report.ref_mismatches == 1 and report.aliases_applied == {"20": "chr20"}
        assert "20:14,370" in report.ref_mismatch_examples[0] or "chr20:14,370" in report.ref_mismatch_examples[0]
        summary = score(vcf, reference, tmp_path / "out.vcf", gc_scorer, ref_mismatch=policy)
    assert summary.scored == scored
    assert summary.outcomes.get("ref_mismatch", 0) == (0 if mismatch_scored else 1)
    first = next(iter(pysam.VariantFile(str(tmp_path / "out.vcf"))))
    assert ("CMX" in first.info) is mismatch_scored


def test_ref_mismatch_error_names_the_record(tmp_path):
    vcf = DATA / "pypi_pyvcf3__example-4.0.vcf"
    with ReferenceGenome(example_40_fasta(tmp_path)) as reference, pytest.raises(CmxError) as caught:
        score(vcf, reference, tmp_path / "out.vcf", RecordingScorer(fail_after=0), ref_mismatch="error")
    check_user_error(caught.value, vcf.name, "20:14370", "'G'", "'A'", "--ref-mismatch")
    assert leftovers(tmp_path) == ["chr20.fa", "chr20.fa.fai"]


# --- Output formats -----------------------------------------------------------------------

@pytest.mark.parametrize("name, index", [
    ("out.vcf", None), ("out.vcf.gz", ".tbi"), ("out.vcf.bgz", ".tbi"), ("out.bcf", ".csi")])
@pytest.mark.parametrize("source", [DWV_VCF, DWV_BCF], ids=["from-vcf", "from-bcf"])
def test_output_round_trip(tmp_path, dwv, name, index, source):
    output = tmp_path / name
    summary = score(source, dwv, output, gc_scorer, header_lines=["##cmx_version=0.0-test"])
    assert isinstance(summary, ScoreSummary) and summary.records == summary.written_records == 1698
    assert summary.scored == 1757 and summary.alleles == 1757
    assert summary.index == (None if index is None else f"{output}{index}")
    assert leftovers(tmp_path) == sorted([name] + ([name + index] if index else []))
    original, written = read_back(DWV_VCF), read_back(output)
    assert len(written) == len(original)
    for before, after in zip(original, written):
        info = dict(after[7])
        scores = info.pop("CMX")
        assert after[:7] == before[:7] and info == before[7] and after[8] == before[8]
        assert len(scores) == len(before[4])
    expected = expected_scores(DWV_VCF, dwv)
    for (*_, info, _samples), values in zip(written, expected):
        assert info["CMX"] == pytest.approx(tuple(values), abs=1e-6)
    with pysam.VariantFile(str(output)) as variants:
        header = str(variants.header)
        assert "##cmx_version=0.0-test" in header and "##INFO=<ID=CMX,Number=A,Type=Float" in header
        if index:
            assert sum(1 for _ in variants.fetch(CONTIG, 99, 200)) == IN_100_200


@pytest.mark.skipif(not HAVE_BCFTOOLS, reason="bcftools/tabix not installed")
def test_outputs_pass_bcftools_and_tabix(tmp_path, dwv):
    for name in ("out.vcf.gz", "out.bcf"):
        score(DWV_GZ, dwv, tmp_path / name, gc_scorer)
        result = subprocess.run(["bcftools", "view", "-H", str(tmp_path / name), f"{CONTIG}:100-200"],
                                capture_output=True, text=True, check=True)
        assert len(result.stdout.splitlines()) == IN_100_200 and "CMX=" in result.stdout
        assert result.stderr == ""
    result = subprocess.run(["tabix", str(tmp_path / "out.vcf.gz"), f"{CONTIG}:100-200"],
                            capture_output=True, text=True, check=True)
    assert len(result.stdout.splitlines()) == IN_100_200


def test_shards_by_region_join_into_the_whole(tmp_path, dwv):
    """Shards cut by --region hold every record once (a deletion across a cut is in the shard
    of its POS), in order, so their outputs join into the unsharded output."""
    whole = tmp_path / "whole.vcf.gz"
    score(DWV_GZ, dwv, whole, gc_scorer)
    shards = []
    for number, region in enumerate([f"{CONTIG}:1-254", f"{CONTIG}:255-5000", f"{CONTIG}:5001"]):
        shards.append(tmp_path / f"shard{number}.vcf.gz")
        score(DWV_GZ, dwv, shards[-1], gc_scorer, regions=[region])
    joined = [record for shard in shards for record in read_back(shard)]
    assert joined == read_back(whole)
    assert any(rec.start < 254 < rec.stop for rec in pysam.VariantFile(str(DWV_VCF)))  # a cut deletion
    if HAVE_BCFTOOLS:
        concatenated = tmp_path / "concat.vcf.gz"
        subprocess.run(["bcftools", "concat", "-Oz", "-o", str(concatenated), *map(str, shards)],
                       check=True, capture_output=True)
        assert read_back(concatenated) == read_back(whole)


def test_tsv_output(tmp_path, dwv):
    summary = score(DWV_GZ, dwv, tmp_path / "scores.tsv", gc_scorer, tsv=True)
    rows = (tmp_path / "scores.tsv").read_text().splitlines()
    assert rows[0] == "chrom\tpos\tid\tref\talt\tscore"
    assert len(rows) - 1 == summary.written_records == 1757
    expected = [value for values in expected_scores(DWV_VCF, dwv) for value in values]
    assert [float(row.split("\t")[5]) for row in rows[1:]] == pytest.approx(expected, abs=1e-5)
    assert rows[16].split("\t")[:5] == [CONTIG, "173", ".", "N", "A"]
    assert rows[17].split("\t")[:5] == [CONTIG, "173", ".", "N", "C"]


def test_tsv_marks_unscored_alleles(skip_case, tmp_path):
    vcf, reference = skip_case
    score(vcf, reference, tmp_path / "s.tsv", gc_scorer, tsv=True, window=20)
    rows = [row.split("\t") for row in (tmp_path / "s.tsv").read_text().splitlines()[1:]]
    assert len(rows) == 14
    assert [row[5] == "." for row in rows if row[2] == "multi"] == [False, True, False]
    assert ["none", "G", "."] == [rows[5][2], rows[5][3], rows[5][4]]


def test_stdout_output(capsys, dwv):
    summary = score(DWV_GZ, dwv, "-", gc_scorer, regions=[f"{CONTIG}:100-200"])
    out = capsys.readouterr().out
    assert out.startswith("##fileformat=VCF")
    body = [line for line in out.splitlines() if not line.startswith("#")]
    assert len(body) == summary.records == IN_100_200 and all("CMX=" in line for line in body)
    score(DWV_GZ, dwv, "-", gc_scorer, regions=[f"{CONTIG}:100-200"], tsv=True)
    assert len(capsys.readouterr().out.splitlines()) == 1 + summary.alleles


def test_long_contig_gets_csi(tmp_path):
    vcf = DATA / "htslib-test__large_chr.vcf"
    with ReferenceGenome(fasta_matching(vcf, tmp_path)) as reference:
        report = preflight(vcf, reference)
        summary = score(vcf, reference, tmp_path / "out.vcf.gz", gc_scorer)
    assert summary.index == f"{tmp_path / 'out.vcf.gz'}.csi"
    assert not (tmp_path / "out.vcf.gz.tbi").exists()
    # chr11 is cut to 400 kb: its 3 records and the 3 past 400 kb on chr20 are out of range.
    assert report.out_of_range == 6 and report.skipped["missing_alt"] == 1
    with pysam.VariantFile(str(tmp_path / "out.vcf.gz")) as variants:
        assert [rec.pos for rec in variants.fetch("chr20", 2147483640)] == [2147483647]


def test_stale_index_of_the_other_kind_is_removed(tmp_path, dwv):
    (tmp_path / "out.vcf.gz.csi").write_bytes(b"stale")
    score(DWV_GZ, dwv, tmp_path / "out.vcf.gz", gc_scorer)
    assert leftovers(tmp_path) == ["out.vcf.gz", "out.vcf.gz.tbi"]


def test_undeclared_contig_is_declared_with_its_length(tmp_path):
    vcf = DATA / "pypi_pyvcf3__bad-info-character.vcf"  # chr1 has no ##contig line
    fasta = write_fasta(tmp_path / "ref.fa", {"1": "ACGT" * 24 + "ACGG" + "ACGT" * 25})
    with ReferenceGenome(fasta) as reference:
        summary = score(vcf, reference, tmp_path / "out.bcf", gc_scorer)
    assert summary.scored == 1
    with pysam.VariantFile(str(tmp_path / "out.bcf")) as variants:
        assert variants.header.contigs["chr1"].length == 200
        rec = next(iter(variants))
        assert rec.info["NOTEMPTY_3"] == (1.0, 2.0, 3.0) and rec.info["FLAG"] is True


def test_undeclared_info_key_survives_bcf_output(tmp_path, dwv):
    vcf = write_vcf(tmp_path / "u.vcf", [f"{CONTIG} 14 . C G . . FOO=3;BAR", "other 5 . A C . . FOO=4"],
                    contigs=())
    summary = score(vcf, dwv, tmp_path / "out.bcf", gc_scorer)
    assert summary.outcomes == {"scored": 1, "contig_missing": 1}
    with pysam.VariantFile(str(tmp_path / "out.bcf")) as variants:
        assert variants.header.contigs[CONTIG].length == 10140
        assert variants.header.contigs["other"].length is None
        assert [(rec.info["FOO"], "BAR" in rec.info) for rec in variants] == [("3", True), ("4", False)]


def test_unsorted_input_cannot_be_indexed(tmp_path, dwv):
    vcf = write_vcf(tmp_path / "u.vcf", [f"{CONTIG} 72 . A G . . .", f"{CONTIG} 14 . C G . . ."],
                    contigs=(CONTIG,))
    with pytest.raises(CmxError) as caught:
        score(vcf, dwv, tmp_path / "out.vcf.gz", gc_scorer)
    check_user_error(caught.value, "not sorted", "bcftools sort")
    summary = score(vcf, dwv, tmp_path / "out.vcf", gc_scorer)  # plain VCF keeps order
    assert [rec.pos for rec in pysam.VariantFile(str(tmp_path / "out.vcf"))] == [72, 14]
    assert summary.scored == 2


# --- Atomicity, streaming, options ----------------------------------------------------------

@pytest.mark.parametrize("name", ["out.vcf", "out.vcf.gz", "out.bcf", "out.tsv"])
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failed_run_leaves_nothing(tmp_path, dwv, name, error):
    scorer = RecordingScorer(fail_after=2, error=error)
    with pytest.raises(error):
        score(DWV_GZ, dwv, tmp_path / name, scorer, chunk_alleles=100, tsv=name.endswith(".tsv"))
    assert scorer.sizes == [100, 100]
    assert leftovers(tmp_path) == []


def test_failed_run_keeps_an_existing_output(tmp_path, dwv):
    output = tmp_path / "out.vcf"
    output.write_text("previous\n")
    with pytest.raises(RuntimeError):
        score(DWV_GZ, dwv, output, RecordingScorer(fail_after=0))
    assert output.read_text() == "previous\n" and leftovers(tmp_path) == ["out.vcf"]


@pytest.mark.parametrize("chunk", [1, 7, 500, 4096])
def test_scorer_sees_chunks_of_at_most_chunk_alleles(tmp_path, dwv, chunk):
    scorer = RecordingScorer()
    summary = score(DWV_GZ, dwv, tmp_path / "out.vcf", scorer, chunk_alleles=chunk)
    assert max(scorer.sizes) <= chunk and sum(scorer.sizes) == summary.scored == 1757
    assert len(scorer.sizes) <= math.ceil(1757 / chunk) + 60  # a multi-allelic record is never cut
    assert [rec.pos for rec in pysam.VariantFile(str(tmp_path / "out.vcf"))] == [
        rec.pos for rec in pysam.VariantFile(str(DWV_VCF))]


def test_split_multiallelic(tmp_path, dwv):
    summary = score(DWV_GZ, dwv, tmp_path / "split.vcf.gz", gc_scorer, split_multiallelic=True)
    assert summary.records == 1698 and summary.written_records == 1757
    written = read_back(tmp_path / "split.vcf.gz")
    assert all(len(alts) == 1 and len(info["CMX"]) == 1 for _, _, _, _, alts, _, _, info, _ in written)
    flat = [value for values in expected_scores(DWV_VCF, dwv) for value in values]
    assert [info["CMX"][0] for *_, info, _ in written] == pytest.approx(flat, abs=1e-6)
    site = [item for item in written if item[1] == 173]
    assert [item[4] for item in site] == [("A",), ("C",)]
    # Original genotypes 1, 2, 1: the other ALT allele becomes REF, as in bcftools norm -m-.
    assert [[sample["GT"] for sample in item[8]] for item in site] == [[(1,), (0,), (1,)], [(0,), (1,), (0,)]]


def test_multiallelic_kept_with_one_value_per_alt(tmp_path, dwv):
    score(DWV_GZ, dwv, tmp_path / "out.vcf", gc_scorer)
    written = read_back(tmp_path / "out.vcf")
    multi = [item for item in written if len(item[4]) > 1]
    assert len(multi) == 59 and all(len(item[7]["CMX"]) == len(item[4]) for item in multi)


def test_scorable_veto_and_non_finite_scores(tmp_path, dwv):
    def snvs_only(window, ref, alt):
        return None if is_snv(ref, alt) else "indel"

    def nan_on_gain(windows):
        scores = gc_scorer(windows)
        return np.where(scores > 0, np.nan, scores)

    summary = score(DWV_GZ, dwv, tmp_path / "out.tsv", nan_on_gain, tsv=True, scorable=snvs_only)
    assert summary.outcomes["indel"] == 13  # 12 indels and 1 MNV
    assert summary.outcomes["non_finite"] > 0
    assert summary.scored + summary.outcomes["non_finite"] + 13 == 1757
    rows = [row.split("\t") for row in (tmp_path / "out.tsv").read_text().splitlines()[1:]]
    assert sum(row[5] == "." for row in rows) == 13 + summary.outcomes["non_finite"]
    assert "variants/s" in summary.line() and summary.to_dict()["outcomes"]["indel"] == 13


def test_existing_score_key(tmp_path, dwv):
    score(DWV_GZ, dwv, tmp_path / "once.vcf", gc_scorer)
    score(tmp_path / "once.vcf", dwv, tmp_path / "twice.vcf", lambda w: np.zeros(len(w)))
    assert all(set(info["CMX"]) == {0.0} for *_, info, _ in read_back(tmp_path / "twice.vcf"))
    assert str(pysam.VariantFile(str(tmp_path / "twice.vcf")).header).count("ID=CMX,") == 1
    clash = write_vcf(tmp_path / "clash.vcf", [f"{CONTIG} 14 . C G . . CMX=3"], contigs=(CONTIG,),
                      extra_header='##INFO=<ID=CMX,Number=1,Type=Integer,Description="other">\n')
    with pytest.raises(CmxError) as caught:
        score(clash, dwv, tmp_path / "out.vcf", gc_scorer)
    check_user_error(caught.value, "INFO/CMX", "--info-id")
    summary = score(clash, dwv, tmp_path / "out.vcf", gc_scorer, info_id="CMX_DWV")
    assert summary.scored == 1 and "CMX_DWV" in read_back(tmp_path / "out.vcf")[0][7]


@pytest.mark.parametrize("kwargs, words", [
    ({"info_id": "1bad"}, ["--info-id"]),
    ({"output": "missing_dir/out.vcf"}, ["does not exist"]),
])
def test_bad_options(tmp_path, dwv, kwargs, words):
    output = tmp_path / kwargs.pop("output", "out.vcf")
    with pytest.raises(CmxError) as caught:
        score(DWV_GZ, dwv, output, gc_scorer, **kwargs)
    check_user_error(caught.value, *words)


def test_output_must_not_replace_input(tmp_path):
    vcf = tmp_path / "in.vcf"
    shutil.copy(DWV_VCF, vcf)
    before = vcf.read_bytes()
    result = run_cli("predict", str(vcf), "--reference", str(DWV_FASTA),
                     "--model", str(tmp_path), "-o", str(vcf))
    assert result.exit_code == 1 and "replace the input" in result.output, result.output
    assert vcf.read_bytes() == before


def test_bgzf_output_is_real_bgzf(tmp_path, dwv):
    score(DWV_GZ, dwv, tmp_path / "out.vcf.gz", gc_scorer)
    head = (tmp_path / "out.vcf.gz").read_bytes()[:16]
    assert head[:2] == b"\x1f\x8b" and head[12:14] == b"BC"
    with gzip.open(tmp_path / "out.vcf.gz", "rt") as handle:
        assert handle.readline().startswith("##fileformat=VCF")


def test_output_that_is_a_directory_is_refused_before_scoring(tmp_path, dwv):
    (tmp_path / "scores").mkdir()
    scored = []

    def counting_scorer(*arguments):
        scored.append(1)
        return gc_scorer(*arguments)

    with pytest.raises(CmxError) as caught:
        score(DWV_VCF, dwv, tmp_path / "scores", counting_scorer)
    check_user_error(caught.value, "is a directory")
    assert scored == [] and leftovers(tmp_path) == ["scores"]


@pytest.mark.parametrize("name", ["out.vcf", "out.vcf.gz"])
def test_vcf_output_through_a_symbolic_link_keeps_the_link_and_indexes_its_name(
        tmp_path, dwv, name):
    (tmp_path / "data").mkdir()
    link = tmp_path / name
    link.symlink_to(tmp_path / "data" / name)
    score(DWV_VCF, dwv, link, gc_scorer)
    assert link.is_symlink() and (tmp_path / "data" / name).stat().st_size > 0
    if name.endswith(".gz"):
        assert (tmp_path / f"{name}.tbi").exists()  # where htslib looks for it
        with pysam.VariantFile(str(link)) as variants:
            assert next(variants.fetch(next(iter(variants.header.contigs)))) is not None


def test_vcf_output_to_dev_null_leaves_the_device(dwv):
    score(DWV_VCF, dwv, os.devnull, gc_scorer)
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
