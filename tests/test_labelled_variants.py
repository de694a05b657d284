"""Labelled variants for `cmx finetune`: INFO and TSV labels, groups, skips, repeats, windows.

Every expectation is written out by hand from the tiny FASTA below (or computed from it
with this file's own encoder), never echoed back from the module under test.
"""
import random
from pathlib import Path
from typing import Optional

import numpy as np
import pysam
import pytest
from rich.console import Console

from cmx_cli.errors import CmxError
from cmx_cli.io.reference import ReferenceGenome
from cmx_cli.variants.alleles import SKIP_REASONS
from cmx_cli.variants.labelled import LabelledVariants, load_labelled_variants, parse_label
from tests.helpers import check_user_error

WINDOW = 11
SEQ = "".join(random.Random(20240607).choice("ACGT") for _ in range(80))
CODES = {"A": 0, "C": 1, "G": 2, "T": 3}
INFO_HEADER = "".join(f'##INFO=<ID={key},Number={number},Type={kind},Description="{key}">\n'
                      for key, number, kind in [
                          ("LAB", "1", "Integer"), ("LABA", "A", "Integer"),
                          ("SICK", "0", "Flag"), ("CLS", "1", "String"),
                          ("TISSUE", "1", "String")])


# --- Helpers ---------------------------------------------------------------------------------

def ref(pos: int, length: int = 1) -> str:
    """The FASTA letters of chr1 at a 1-based position."""
    return SEQ[pos - 1:pos - 1 + length]


def other(base: str, skip: str = "") -> str:
    """A base different from ``base`` (and from the letters of ``skip``)."""
    return next(letter for letter in "ACGT" if letter != base and letter not in skip)


def encode(letters: str) -> list[int]:
    return [CODES[letter] for letter in letters.upper()]


def row(pos: int, ref_allele: str, alt: str, info: str = ".", chrom: str = "chr1") -> str:
    return "\t".join([chrom, str(pos), ".", ref_allele, alt, ".", ".", info])


def write_vcf(path: Path, rows: list[str], contigs=("chr1", "chr9")) -> Path:
    header = "##fileformat=VCFv4.2\n" + "".join(f"##contig=<ID={name}>\n" for name in contigs)
    header += INFO_HEADER + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    path.write_text(header + "".join(line + "\n" for line in rows))
    return path


def write_tsv(path: Path, lines: list) -> Path:
    """Lines are strings (written as they are) or sequences (joined by tabs)."""
    text = [line if isinstance(line, str) else "\t".join(map(str, line)) for line in lines]
    path.write_text("".join(line + "\n" for line in text))
    return path


@pytest.fixture
def fasta(tmp_path) -> Path:
    path = tmp_path / "ref.fa"
    path.write_text(f">chr1\n{SEQ}\n>chr2\n{SEQ[::-1]}\n")
    return path


@pytest.fixture
def load(fasta):
    """Load labelled variants against the tiny FASTA (pyfaidx indexes it on first use)."""

    def run(**options) -> LabelledVariants:
        options.setdefault("window", WINDOW)
        with ReferenceGenome(fasta) as reference:
            return load_labelled_variants(reference, **options)

    return run


def load_vcf(load, tmp_path, rows, field: Optional[str] = "LAB", **options):
    vcf = write_vcf(tmp_path / "labels.vcf", rows)
    return load(vcf=str(vcf), label_field=field, **options)


def load_tsv(load, tmp_path, lines, **options):
    table = write_tsv(tmp_path / "labels.tsv", lines)
    return load(labels_table=str(table), **options)


def used(result: LabelledVariants) -> list[tuple]:
    return [(v.chrom, v.pos, v.ref, v.alt, v.label, v.group) for v in result.variants]


def raises_user_error(call, *names) -> str:
    with pytest.raises(CmxError) as caught:
        call()
    return check_user_error(caught.value, *names)


# --- Labels from INFO ------------------------------------------------------------------------

def test_single_info_value_applies_to_every_alt(load, tmp_path):
    base = ref(10)
    first, second = other(base), other(base, skip=other(base))
    result = load_vcf(load, tmp_path, [row(10, base, f"{first},{second}", "LAB=1"),
                                       row(20, ref(20), other(ref(20)), "LAB=0")])
    assert used(result) == [("chr1", 10, base, first, 1, ""), ("chr1", 10, base, second, 1, ""),
                            ("chr1", 20, ref(20), other(ref(20)), 0, "")]
    assert result.counts["records"] == 2
    assert result.counts["alleles"] == 3
    assert result.left_out() == {}


def test_number_a_field_gives_one_label_per_alt(load, tmp_path):
    base = ref(12)
    first, second = other(base), other(base, skip=other(base))
    result = load_vcf(load, tmp_path, [row(12, base, f"{first},{second}", "LABA=1,0"),
                                       row(30, ref(30), other(ref(30)), "LABA=0")], field="LABA")
    assert [(v.alt, v.label) for v in result.variants] == [(first, 1), (second, 0),
                                                           (other(ref(30)), 0)]


def test_number_a_field_with_one_missing_entry(load, tmp_path):
    base = ref(12)
    first, second = other(base), other(base, skip=other(base))
    result = load_vcf(load, tmp_path, [row(12, base, f"{first},{second}", "LABA=.,1")],
                      field="LABA")
    assert [(v.alt, v.label) for v in result.variants] == [(second, 1)]
    assert result.left_out() == {"no_label": 1}


def test_flag_field_is_one_when_present_and_zero_when_absent(load, tmp_path):
    rows = [row(15, ref(15), other(ref(15)), "SICK"), row(25, ref(25), other(ref(25))),
            row(35, ref(35), other(ref(35)), "LAB=1;SICK")]
    result = load_vcf(load, tmp_path, rows, field="SICK")
    assert [(v.pos, v.label) for v in result.variants] == [(15, 1), (25, 0), (35, 1)]
    assert result.left_out() == {}


def test_text_labels_true_false_yes_no_any_case(load, tmp_path):
    words = {15: "true", 25: "FALSE", 35: "Yes", 45: "no", 55: "1", 65: "0"}
    rows = [row(pos, ref(pos), other(ref(pos)), f"CLS={word}") for pos, word in words.items()]
    result = load_vcf(load, tmp_path, rows, field="CLS")
    assert [(v.pos, v.label) for v in result.variants] == [
        (15, 1), (25, 0), (35, 1), (45, 0), (55, 1), (65, 0)]


@pytest.mark.parametrize("field, value", [("LAB", "2"), ("CLS", "pathogenic"), ("CLS", "0.5")])
def test_non_binary_label_is_a_user_error_naming_the_record(load, tmp_path, field, value):
    rows = [row(15, ref(15), other(ref(15)), f"{field}=1"),
            row(42, ref(42), other(ref(42)), f"{field}={value}")]
    message = raises_user_error(lambda: load_vcf(load, tmp_path, rows, field=field),
                                "labels.vcf", "chr1:42", value)
    assert "chr1:15" not in message


@pytest.mark.parametrize("value, expected", [(True, 1), (False, 0), (1, 1), (0, 0),
                                             (" Yes ", 1), ("NO", 0), ("TRUE", 1)])
def test_parse_label_values(value, expected):
    assert parse_label(value, "x.tsv", "line 1") == expected


def test_missing_label_counts_as_no_label(load, tmp_path):
    rows = [row(15, ref(15), other(ref(15)), "LAB=1"), row(25, ref(25), other(ref(25))),
            row(35, ref(35), other(ref(35)), "CLS=yes"), row(45, ref(45), other(ref(45)), "LAB=0")]
    result = load_vcf(load, tmp_path, rows)
    assert [(v.pos, v.label) for v in result.variants] == [(15, 1), (45, 0)]
    assert result.counts["records"] == 4
    assert result.counts["alleles"] == 4
    assert result.left_out() == {"no_label": 2}


@pytest.mark.parametrize("options", [{"field": "PATHO"}, {"group_field": "ORGAN"}])
def test_undeclared_info_field_lists_the_declared_ones(load, tmp_path, options):
    rows = [row(15, ref(15), other(ref(15)), "LAB=1")]
    missing = options.get("field") or options["group_field"]
    raises_user_error(lambda: load_vcf(load, tmp_path, rows, **options),
                      "labels.vcf", missing, "LAB", "LABA", "SICK", "CLS", "TISSUE")


def test_exactly_one_label_source_is_required(load, tmp_path):
    table = write_tsv(tmp_path / "t.tsv", [["chr1", 15, ref(15), other(ref(15)), 1]])
    with pytest.raises(ValueError):
        load(labels_table=str(table), label_field="LAB")
    with pytest.raises(ValueError):
        load()


# --- Skips and windows -----------------------------------------------------------------------

def skip_rows(mismatch: str) -> list[str]:
    """One record of each skip reason, three usable ones and a half-usable multi-allelic."""
    long_alt = ref(60) + "ACGTACGTACGT"  # 13 bp > WINDOW
    return [
        row(5, ref(5), "<DEL>", "LAB=1"),                                    # symbolic
        row(12, ref(12), "*", "LAB=1"),                                      # star
        row(14, ref(14), ".", "LAB=0"),                                      # missing_alt
        row(20, ref(20), other(ref(20)), "LAB=1"),                           # used (SNV)
        row(28, mismatch, other(mismatch), "LAB=0"),                         # ref_mismatch
        row(40, ref(40, 3), ref(40), "LAB=0"),                               # used (deletion)
        row(50, ref(50), f"{other(ref(50))},<INS>", "LAB=1"),                # used + symbolic
        row(60, ref(60), long_alt, "LAB=1"),                                 # too_long
        row(66, ref(66), ref(66) + "GA", "LAB=1"),                           # used (insertion)
        row(3, "A", "C", "LAB=1", chrom="chr9"),                             # contig_missing
    ]


def load_skips(load, tmp_path, policy="skip"):
    return load_vcf(load, tmp_path, skip_rows(other(ref(28))), ref_mismatch=policy)


def expected_used(with_mismatch: bool = False) -> list[tuple]:
    mismatch = other(ref(28))
    kept = [("chr1", 20, ref(20), other(ref(20)), 1, "")]
    if with_mismatch:
        kept.append(("chr1", 28, mismatch, other(mismatch), 0, ""))
    kept += [("chr1", 40, ref(40, 3), ref(40), 0, ""),
             ("chr1", 50, ref(50), other(ref(50)), 1, ""),
             ("chr1", 66, ref(66), ref(66) + "GA", 1, "")]
    return kept


def test_skipped_alleles_are_counted_by_reason(load, tmp_path):
    result = load_skips(load, tmp_path)
    assert used(result) == expected_used()
    assert result.contigs == ["chr1"] * 4
    assert result.counts["records"] == 10
    assert result.counts["alleles"] == 11
    expected = {"symbolic": 2, "star": 1, "missing_alt": 1, "ref_mismatch": 1,
                "too_long": 1, "contig_missing": 1}
    assert result.left_out() == expected
    assert set(expected) <= set(SKIP_REASONS)


def test_windows_are_centred_on_the_ref_allele(load, tmp_path):
    result = load_skips(load, tmp_path)
    assert len(result.windows) == len(result.variants) == 4
    for variant, window in zip(result.variants, result.windows):
        k = len(variant.ref)
        left = (WINDOW - k) // 2
        right = WINDOW - k - left
        start = variant.pos - 1 - left
        ref_letters = SEQ[start:variant.pos - 1 + k + right]
        assert len(ref_letters) == WINDOW
        assert window.ref_span == (left, left + k)
        assert window.alt_span == (left, left + len(variant.alt))
        assert window.ref_tokens.tolist() == encode(ref_letters)
        assert window.ref_tokens[left:left + k].tolist() == encode(variant.ref)
        # The ALT window differs from the REF window only in the allele.
        alt = window.alt_tokens.tolist()
        assert len(alt) == WINDOW - k + len(variant.alt)
        assert alt[:left] == encode(ref_letters[:left])
        assert alt[left:left + len(variant.alt)] == encode(variant.alt)
        assert alt[left + len(variant.alt):] == encode(ref_letters[left + k:])
    snv = result.windows[0]
    assert snv.ref_span == ((WINDOW - 1) // 2, (WINDOW + 1) // 2)
    assert np.flatnonzero(snv.ref_tokens != snv.alt_tokens).tolist() == [(WINDOW - 1) // 2]


def test_ref_mismatch_warn_keeps_the_allele(load, tmp_path):
    result = load_skips(load, tmp_path, policy="warn")
    assert used(result) == expected_used(with_mismatch=True)
    assert "ref_mismatch" not in result.left_out()
    # The window's REF letters come from the FASTA, not from the VCF's wrong REF.
    window = result.windows[1]
    assert window.ref_tokens[window.ref_span[0]:window.ref_span[1]].tolist() == encode(ref(28))


def test_ref_mismatch_error_names_the_record(load, tmp_path):
    raises_user_error(lambda: load_skips(load, tmp_path, policy="error"),
                      "labels.vcf", "chr1:28", "--ref-mismatch")


def test_all_contigs_missing_hints_at_contig_map(load, tmp_path):
    rows = [row(3, "A", "C", "LAB=1", chrom="chr9"), row(8, "G", "T", "LAB=0", chrom="chr9")]
    message = raises_user_error(lambda: load_vcf(load, tmp_path, rows),
                                "labels.vcf", "--contig-map")
    assert f"2 {SKIP_REASONS['contig_missing']}" in message


def test_nothing_usable_for_other_reasons_gives_the_general_hint(load, tmp_path):
    rows = [row(3, "A", "C", "LAB=1", chrom="chr9"), row(12, ref(12), "*", "LAB=1")]
    message = raises_user_error(lambda: load_vcf(load, tmp_path, rows), "labels.vcf")
    assert "--contig-map" not in message
    assert SKIP_REASONS["star"] in message


# --- Labels from a TSV -----------------------------------------------------------------------

def tsv_rows() -> list[list]:
    return [["chr1", 15, ref(15), other(ref(15)), "1"],
            ["chr1", 40, ref(40, 3), ref(40), "no"],
            ["chr1", 66, ref(66), ref(66) + "T", "TRUE"]]


TSV_USED = [("chr1", 15, ref(15), other(ref(15)), 1, ""),
            ("chr1", 40, ref(40, 3), ref(40), 0, ""),
            ("chr1", 66, ref(66), ref(66) + "T", 1, "")]


@pytest.mark.parametrize("header", [[], [["chrom", "pos", "ref", "alt", "label"]],
                                    [["CHROM", "POS", "REF", "ALT", "LABEL", "group"]]],
                         ids=["no-header", "header", "header-with-group"])
def test_tsv_with_and_without_header(load, tmp_path, header):
    lines = ["# labels from the clinic", *header, *tsv_rows()[:2], "", "#chr1\t1\tA\tC\t1",
             tsv_rows()[2]]
    result = load_tsv(load, tmp_path, lines)
    assert used(result) == TSV_USED
    assert result.counts["records"] == 3
    assert result.source == "labels.tsv"


@pytest.mark.parametrize("bad", [
    "chr1\t15\tA\tC",
    "chr1\tfifteen\tA\tC\t1",
    "chr1\t0\tA\tC\t1",
    "chr1\t15\tA\tC\tbenign",
], ids=["four-columns", "word-pos", "zero-pos", "bad-label"])
def test_tsv_bad_row_names_the_line(load, tmp_path, bad):
    lines = ["# comment", tsv_rows()[0], bad, tsv_rows()[1]]
    message = raises_user_error(lambda: load_tsv(load, tmp_path, lines), "labels.tsv", "line 3")
    assert "line 2" not in message


def test_tsv_without_rows_is_a_user_error(load, tmp_path):
    raises_user_error(lambda: load_tsv(load, tmp_path, ["chrom\tpos\tref\talt\tlabel", "# x"]),
                      "labels.tsv")


def test_missing_tsv_is_a_user_error(load, tmp_path):
    raises_user_error(lambda: load(labels_table=str(tmp_path / "absent.tsv")), "absent.tsv")


def test_tsv_sixth_column_is_the_group(load, tmp_path):
    lines = [[*line, group] for line, group in zip(tsv_rows(), ["liver", "brain", "liver"])]
    result = load_tsv(load, tmp_path, lines)
    assert [v.group for v in result.variants] == ["liver", "brain", "liver"]
    assert result.left_out() == {}


def test_tsv_rows_without_group_are_dropped_when_others_have_one(load, tmp_path):
    rows = tsv_rows()
    lines = [[*rows[0], "liver"], rows[1], [*rows[2], ""], ["chr1", 20, ref(20), "N", 0, "lung"]]
    result = load_tsv(load, tmp_path, lines)
    assert used(result) == [TSV_USED[0][:5] + ("liver",), ("chr1", 20, ref(20), "N", 0, "lung")]
    assert result.left_out() == {"no_group": 2}
    assert len(result.windows) == len(result.contigs) == 2


def test_tsv_skips_use_the_same_checks(load, tmp_path):
    lines = [*tsv_rows(), ["chr9", 3, "A", "C", 1], ["chr1", 28, other(ref(28)), ref(28), 0],
             ["chr1", 12, ref(12), "<DEL>", 1]]
    result = load_tsv(load, tmp_path, lines)
    assert used(result) == TSV_USED
    assert result.left_out() == {"contig_missing": 1, "ref_mismatch": 1, "symbolic": 1}


def test_tsv_labels_matching_vcf_alleles(load, tmp_path):
    base = ref(30)
    first, second = other(base), other(base, skip=other(base))
    vcf = write_vcf(tmp_path / "calls.vcf", [
        row(15, ref(15), other(ref(15))), row(30, base, f"{first},{second}"),
        row(40, ref(40, 3), ref(40)), row(66, ref(66), ref(66) + "T")])
    table = write_tsv(tmp_path / "labels.tsv", [
        ["chr1", 30, base, second, 0],             # the second ALT of a multi-allelic record
        ["chr1", 66, ref(66), ref(66) + "T", 1],
        ["chr1", 15, ref(15), other(ref(15)), "yes"],
        ["chr1", 16, ref(16), other(ref(16)), 1],  # no such VCF record
        ["chr1", 40, ref(40, 3), ref(40) + "A", 0]])  # no such allele
    result = load(vcf=str(vcf), labels_table=str(table))
    assert used(result) == [("chr1", 15, ref(15), other(ref(15)), 1, ""),
                            ("chr1", 30, base, second, 0, ""),
                            ("chr1", 66, ref(66), ref(66) + "T", 1, "")]
    assert result.counts["records"] == 4
    assert result.counts["alleles"] == 3
    assert result.source == "calls.vcf, labels.tsv"
    unmatched = [warning for warning in result.warnings if "match no VCF allele" in warning]
    assert len(unmatched) == 1 and unmatched[0].startswith("2 rows")


def test_tsv_matching_every_vcf_allele_gives_no_warning(load, tmp_path):
    vcf = write_vcf(tmp_path / "calls.vcf", [row(15, ref(15), other(ref(15)))])
    table = write_tsv(tmp_path / "labels.tsv", [["chr1", 15, ref(15), other(ref(15)), 0]])
    result = load(vcf=str(vcf), labels_table=str(table))
    assert used(result) == [("chr1", 15, ref(15), other(ref(15)), 0, "")]
    assert result.warnings == []


# --- Repeats ---------------------------------------------------------------------------------

def test_identical_repeat_keeps_one_and_conflicts_drop_every_copy(load, tmp_path):
    snv = {pos: ["chr1", pos, ref(pos), other(ref(pos))] for pos in (15, 20, 25, 35)}
    lines = [[*snv[15], 1], [*snv[20], 1], [*snv[15], "true"],  # 15: a duplicate
             [*snv[20], 0],                                      # 20: two conflicting copies
             [*snv[25], 1], [*snv[25], 0], [*snv[25], 0],        # 25: three conflicting copies
             [*snv[35], 0]]
    result = load_tsv(load, tmp_path, lines)
    assert used(result) == [(*snv[15], 1, ""), (*snv[35], 0, "")]
    assert result.counts["alleles"] == 8
    assert result.left_out() == {"duplicate": 1, "conflicting_label": 5}
    assert [window.ref_span for window in result.windows] == [(5, 6), (5, 6)]
    assert result.contigs == ["chr1", "chr1"]


def test_same_allele_in_two_groups_conflicts(load, tmp_path):
    snv = ["chr1", 15, ref(15), other(ref(15))]
    result = load_tsv(load, tmp_path, [[*snv, 1, "liver"], [*snv, 1, "brain"],
                                       ["chr1", 20, ref(20), other(ref(20)), 0, "liver"]])
    assert [v.pos for v in result.variants] == [20]
    assert result.left_out() == {"conflicting_label": 2}


def test_repeated_tsv_rows_labelling_a_vcf_allele_count_as_repeats(load, tmp_path):
    snv = {pos: ["chr1", pos, ref(pos), other(ref(pos))] for pos in (15, 20, 25, 30)}
    vcf = write_vcf(tmp_path / "calls.vcf", [row(pos, ref(pos), other(ref(pos)))
                                             for pos in (15, 20, 25)])
    table = write_tsv(tmp_path / "labels.tsv", [
        [*snv[15], 1], [*snv[15], 0],   # conflicting: both copies dropped
        [*snv[20], 1], [*snv[20], 1],   # identical: one kept
        [*snv[25], 0],
        [*snv[30], 1], [*snv[30], 1]])  # two rows that match nothing
    result = load(vcf=str(vcf), labels_table=str(table))
    assert used(result) == [(*snv[20], 1, ""), (*snv[25], 0, "")]
    assert result.counts["alleles"] == 5
    assert result.left_out() == {"duplicate": 1, "conflicting_label": 2}
    assert [w for w in result.warnings if w.startswith("2 rows")]


def test_vcf_repeat_through_a_contig_alias_is_a_duplicate(load, tmp_path):
    rows = [row(15, ref(15), other(ref(15)), "LAB=1"),
            row(15, ref(15), other(ref(15)), "LAB=1", chrom="1"),
            row(20, ref(20), other(ref(20)), "LAB=1"),
            row(20, ref(20).lower(), other(ref(20)).lower(), "LAB=0")]
    vcf = write_vcf(tmp_path / "labels.vcf", rows, contigs=("chr1", "1"))
    result = load(vcf=str(vcf), label_field="LAB")
    assert used(result) == [("chr1", 15, ref(15), other(ref(15)), 1, "")]
    assert result.left_out() == {"duplicate": 1, "conflicting_label": 2}


# --- Groups ----------------------------------------------------------------------------------

def test_group_field_from_info(load, tmp_path):
    rows = [row(15, ref(15), other(ref(15)), "LAB=1;TISSUE=liver"),
            row(20, ref(20), other(ref(20)), "LAB=0;TISSUE=brain"),
            row(25, ref(25), other(ref(25)), "LAB=1"),            # no group
            row(35, ref(35), other(ref(35)), "TISSUE=liver"),     # no label
            row(45, ref(45), "*", "LAB=1")]                       # star, no group either
    result = load_vcf(load, tmp_path, rows, group_field="TISSUE")
    assert used(result) == [("chr1", 15, ref(15), other(ref(15)), 1, "liver"),
                            ("chr1", 20, ref(20), other(ref(20)), 0, "brain")]
    assert result.left_out() == {"no_group": 1, "no_label": 1, "star": 1}


def test_group_field_that_no_record_carries_leaves_nothing(load, tmp_path):
    rows = [row(15, ref(15), other(ref(15)), "LAB=1"), row(20, ref(20), other(ref(20)), "LAB=0")]
    message = raises_user_error(lambda: load_vcf(load, tmp_path, rows, group_field="TISSUE"),
                                "labels.vcf", "2 no group")
    assert "--contig-map" not in message


# --- Regions ---------------------------------------------------------------------------------

def test_regions_read_only_variants_inside(load, tmp_path):
    positions = [10, 19, 20, 30, 40, 41, 60]
    rows = [row(pos, ref(pos), other(ref(pos)), f"LAB={pos % 2}") for pos in positions]
    plain = write_vcf(tmp_path / "sorted.vcf", rows)
    compressed = pysam.tabix_index(str(plain), preset="vcf", force=True)
    assert Path(compressed).name == "sorted.vcf.gz"
    result = load(vcf=compressed, label_field="LAB", regions=["chr1:20-40", "chr1:60"])
    assert [(v.pos, v.label) for v in result.variants] == [(20, 0), (30, 0), (40, 0), (60, 0)]
    assert result.counts["records"] == 4
    result = load(vcf=compressed, label_field="LAB", regions=["chr1:11-19"])
    assert [(v.pos, v.label) for v in result.variants] == [(19, 1)]


# --- Report ----------------------------------------------------------------------------------

def table_cells(result: LabelledVariants) -> dict[str, str]:
    console = Console(record=True, width=120)
    console.print(result.table())
    cells = {}
    for line in console.export_text().splitlines():
        parts = [part.strip() for part in line.split("│")]
        if len(parts) == 4:
            cells[parts[1]] = parts[2]
    return cells


def test_table_and_left_out(load, tmp_path):
    result = load_skips(load, tmp_path)
    cells = table_cells(result)
    assert cells["used"] == "4"
    assert cells["label 1"] == "3"
    assert cells["label 0"] == "1"
    assert cells["records"] == "10"
    assert cells["labelled alleles"] == "11"
    assert cells[f"left out: {SKIP_REASONS['symbolic']}"] == "2"
    assert cells[f"left out: {SKIP_REASONS['contig_missing']}"] == "1"
    assert not any("no label" in name or "duplicate" in name for name in cells)


def test_left_out_holds_only_non_zero_reasons(load, tmp_path):
    result = load_tsv(load, tmp_path, [*tsv_rows(), tsv_rows()[0]])
    assert result.left_out() == {"duplicate": 1}
    assert all(count > 0 for count in result.left_out().values())
    assert "records" not in result.left_out() and "alleles" not in result.left_out()
    cells = table_cells(result)
    assert cells["used"] == "3"
    assert [name for name in cells if name.startswith("left out")] == [
        "left out: same allele listed again (first copy kept)"]
