"""Tests for cmx_cli.io.labels: argument parsing, label tables, rules and loading."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cmx_cli.errors import CmxError
from cmx_cli.io.fasta import iter_records
from cmx_cli.io.labels import (
    FastaSource,
    LabelRule,
    LabelledSequences,
    load_labelled,
    parse_fasta_argument,
    read_label_table,
    stem_label,
)
from tests.helpers import check_user_error

DATA = Path(__file__).parent / "data"
ORCHID_GENERA = [
    "Cypripedium", "Cypripedium", "Mexipedium", "Phragmipedium", "Paphiopedilum", "Paphiopedilum"
]


@pytest.fixture
def orchids(tmp_path) -> Path:
    """Six real orchid ITS records with ``genus=`` in the header, copied to tmp_path."""
    target = tmp_path / "orchids.fa"
    shutil.copyfile(DATA / "labels_orchids.fa", target)
    return target


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------ arguments, stems


@pytest.mark.parametrize(
    ("text", "path", "label"),
    [
        ("orchids.fa", "orchids.fa", None),
        ("orchids.fa:Orchid", "orchids.fa", "Orchid"),
        ("data/set 1/orchids.fa.gz:Orchid", "data/set 1/orchids.fa.gz", "Orchid"),
        ("a:b.fa:Label", "a:b.fa", "Label"),  # split at the last ':'
        ("orchids.fa:", "orchids.fa:", None),  # empty label: not a label
        (":Orchid", ":Orchid", None),  # empty path: not a label
        ("C:/genomes/x.fa", "C:/genomes/x.fa", None),  # '/' after ':': a path
        ("data/x.fa:sub/dir", "data/x.fa:sub/dir", None),
    ],
)
def test_parse_fasta_argument(text, path, label):
    assert parse_fasta_argument(text) == FastaSource(Path(path), label)


def test_existing_file_with_a_colon_is_not_split(tmp_path):
    odd = write(tmp_path / "odd:Name", ">a\nACGT\n")
    assert parse_fasta_argument(str(odd)) == FastaSource(odd, None)


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("Klebsiella.fa.gz", "Klebsiella"),
        ("Klebsiella.fa", "Klebsiella"),
        ("dir/sub/Acinetobacter.fasta", "Acinetobacter"),
        ("E_coli.fna.bgz", "E_coli"),
        ("x.fas.bgzf", "x"),
        ("genes.ffn", "genes"),
        ("reads.seq", "reads"),
        ("notes.txt", "notes"),
        ("UPPER.FA.GZ", "UPPER"),
        ("a.b.fa", "a.b"),
        ("twice.fa.fa", "twice.fa"),  # one FASTA suffix only
        ("only.gz", "only"),
        ("plain", "plain"),
        ("sample.vcf", "sample.vcf"),
        (".fa", ".fa"),  # nothing would be left
    ],
)
def test_stem_label(name, stem):
    assert stem_label(Path(name)) == stem
    assert stem_label(name) == stem


# --------------------------------------------------------------------- label tables


def test_read_label_table_skips_header_comments_blanks_and_extra_columns(tmp_path):
    path = tmp_path / "table.tsv"
    shutil.copyfile(DATA / "labels_table.tsv", path)
    assert read_label_table(path) == {"Z78533": "Cypripedium", "Z78515": "Mexipedium"}


@pytest.mark.parametrize(
    "text",
    [
        "Name\tLABEL\nr1\tx\nr2\ty\n",
        "r1\tx\r\nr2\ty\r\n",
        "  # comment\nr1 \t x\n\n\nr2\ty\textra\tmore\n",
    ],
    ids=["header-any-case", "crlf", "spaces-around-fields"],
)
def test_read_label_table_variants(tmp_path, text):
    assert read_label_table(write(tmp_path / "t.tsv", text)) == {"r1": "x", "r2": "y"}


def test_header_is_only_skipped_on_the_first_row(tmp_path):
    table = read_label_table(write(tmp_path / "t.tsv", "r1\tx\nname\tlabel\n"))
    assert table == {"r1": "x", "name": "label"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("labels_short_row.tsv", ["line 2", "'Z78515'"]),
        ("labels_conflict.tsv", ["line 3", "Z78533", "Paphiopedilum", "Cypripedium", "line 1"]),
    ],
)
def test_label_table_errors_in_data_files(tmp_path, name, expected):
    path = tmp_path / name
    shutil.copyfile(DATA / name, path)
    with pytest.raises(CmxError) as caught:
        read_label_table(path)
    check_user_error(caught.value, path, *expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("r1\tx\nr2 x\n", ["line 2"]),  # a space is not a tab
        ("r1\tx\nr2\t\n", ["line 2"]),  # empty label
        ("r1\tx\n\tx\n", ["line 2"]),  # empty name
        ("# nothing\nname\tlabel\n", ["no rows"]),
        ("", ["no rows"]),
    ],
)
def test_label_table_errors(tmp_path, text, expected):
    path = write(tmp_path / "bad.tsv", text)
    with pytest.raises(CmxError) as caught:
        read_label_table(path)
    check_user_error(caught.value, path, *expected)


def test_missing_label_table(tmp_path):
    with pytest.raises(CmxError) as caught:
        LabelRule.build(table_path=tmp_path / "absent.tsv")
    check_user_error(caught.value, tmp_path / "absent.tsv", "no such file")


def test_same_label_twice_is_fine(tmp_path):
    assert read_label_table(write(tmp_path / "t.tsv", "r1\tx\nr1\tx\n")) == {"r1": "x"}


# ------------------------------------------------------------------------ the rules


def test_invalid_regex(tmp_path):
    with pytest.raises(CmxError) as caught:
        LabelRule.build(regex="genus=(\\w+")
    check_user_error(caught.value, "--label-regex", "genus=(")


def test_build_reads_the_table(tmp_path):
    rule = LabelRule.build(regex="x", table_path=write(tmp_path / "t.tsv", "r1\tA\n"))
    assert rule == LabelRule(regex="x", table={"r1": "A"})


@pytest.mark.parametrize(
    ("regex", "description", "label"),
    [
        (r"genus=(\w+)", "Z78533 genus=Cypripedium", "Cypripedium"),
        (r"genus=\w+", "Z78533 genus=Cypripedium", "genus=Cypripedium"),  # no group
        (r"genus=(\w+)", "Z78533 family=Orchidaceae", None),
        (r"^(\w+)_", "Kleb_wzc locus 12", "Kleb"),  # searched from the line's start
        (r"\[(\w+)\]|label=(\w+)", "r label=x", None),  # group 1 did not take part
        (r"label=(\w*)", "r label=", None),  # empty match
    ],
)
def test_regex_labels(regex, description, label):
    rule = LabelRule(regex=regex)
    name = description.split()[0]
    assert rule.label_for(FastaSource(Path("in.fa")), name, description) == label


EXPLICIT = FastaSource(Path("data/Klebsiella.fa.gz"), "Given")
PLAIN = FastaSource(Path("data/Klebsiella.fa.gz"))
TABLE = {"r1": "FromTable"}


@pytest.mark.parametrize(
    ("source", "rule", "name", "label"),
    [
        (EXPLICIT, LabelRule(regex=r"g=(\w+)", table=TABLE), "r1", "Given"),
        (PLAIN, LabelRule(regex=r"g=(\w+)", table=TABLE), "r1", "FromTable"),
        (PLAIN, LabelRule(regex=r"g=(\w+)", table=TABLE), "r2", "FromRegex"),
        (PLAIN, LabelRule(regex=r"nomatch=(\w+)", table=TABLE), "r2", None),
        (PLAIN, LabelRule(table=TABLE), "r2", None),  # no stem once a table is given
        (PLAIN, LabelRule(regex=r"nomatch=(\w+)"), "r2", None),  # nor a regex
        (PLAIN, LabelRule(), "r2", "Klebsiella"),
        (EXPLICIT, LabelRule(), "r2", "Given"),
    ],
)
def test_label_precedence(source, rule, name, label):
    assert rule.label_for(source, name, f"{name} g=FromRegex") == label


# -------------------------------------------------------------------------- loading


def test_load_labelled_with_a_regex(orchids):
    labelled, warnings = load_labelled([FastaSource(orchids)], LabelRule.build(r"genus=(\w+)"))
    assert isinstance(labelled, LabelledSequences)
    assert len(labelled) == 6
    assert labelled.labels == ORCHID_GENERA
    assert labelled.names[:2] == ["Z78533", "Z78532"]
    assert labelled.sources == [str(orchids)] * 6
    for tokens, record in zip(labelled.tokens, list(iter_records(orchids))):
        assert np.array_equal(tokens, record.tokens)
    assert warnings == []


def test_unlabelled_records_are_counted_per_file(orchids, tmp_path):
    other = write(tmp_path / "other.fa", ">o1 genus=Phragmipedium\nACGT\n>o2\nGGCC\n")
    rule = LabelRule.build(r"genus=(P\w+)")
    labelled, warnings = load_labelled([FastaSource(orchids), FastaSource(other)], rule)
    assert labelled.labels == ["Phragmipedium", "Paphiopedilum", "Paphiopedilum", "Phragmipedium"]
    assert warnings == [
        f"{orchids}: 3 of 6 records have no label (no match for --label-regex) and were left out",
        f"{other}: 1 of 2 records have no label (no match for --label-regex) and were left out",
    ]


def test_table_and_regex_warnings(orchids, tmp_path):
    table = write(tmp_path / "t.tsv", "Z78533\tCyp\nZ78499\tPaph\nZ00001\tGone\nZ00002\tGone\n")
    rule = LabelRule.build(r"genus=(Ph\w+)", table)
    labelled, warnings = load_labelled([FastaSource(orchids)], rule)
    assert dict(zip(labelled.names, labelled.labels)) == {
        "Z78533": "Cyp", "Z78514": "Phragmipedium", "Z78499": "Paph"
    }
    assert warnings == [
        f"{orchids}: 3 of 6 records have no label "
        "(not in --label-table and no match for --label-regex) and were left out",
        "--label-table: 2 of 4 names are in no input file (e.g. 'Z00001')",
    ]


def test_file_stems_and_explicit_labels(tmp_path):
    kleb = write(tmp_path / "Klebsiella.fa", ">k1\nACGT\n>k2\nGG\n")
    acin = write(tmp_path / "Acinetobacter.fasta", ">a1\nTTTT\n")
    other = write(tmp_path / "misc.fa", ">m1\nCCCC\n")
    sources = [FastaSource(kleb), FastaSource(acin), parse_fasta_argument(f"{other}:Outgroup")]
    labelled, warnings = load_labelled(sources, LabelRule())
    assert labelled.names == ["k1", "k2", "a1", "m1"]
    assert labelled.labels == ["Klebsiella", "Klebsiella", "Acinetobacter", "Outgroup"]
    assert [tokens.tolist() for tokens in labelled.tokens] == [
        [0, 1, 2, 3], [2, 2], [3, 3, 3, 3], [1, 1, 1, 1]
    ]
    assert warnings == []


def test_same_record_in_two_files(tmp_path):
    first = write(tmp_path / "first.fa", ">shared\nACGT\n>only_first\nAC\n")
    second = write(tmp_path / "second.fa", ">other\nGG\n>shared\nACGT\n")
    with pytest.raises(CmxError) as caught:
        load_labelled([FastaSource(first), FastaSource(second)], LabelRule())
    check_user_error(caught.value, first, second, "'shared'")


def test_errors_from_the_FASTA_reader_pass_through(tmp_path):
    bad = write(tmp_path / "bad.fa", ">p\nMKLV\n")
    with pytest.raises(CmxError) as caught:
        load_labelled([FastaSource(bad, "X")], LabelRule())
    check_user_error(caught.value, bad, "'p'", "'L'")
