"""Command-line reproductions of issue 23's VCF cases: a stale index that hides a region (3),
labels that are not labels (4), re-scoring a scored VCF (6), alleles a model never saw (7),
symbolic alleles whose header lacks END (10), an index that does not fit on the disk, and
finetune's plain log of what it left out.

Each test runs cmx as a user does and failed on main at 75ef33f, for the reason in its name.
"""
from __future__ import annotations

import gzip
import os
import re
import shutil
from pathlib import Path

import pyfaidx
import pysam
import pytest

from tests.helpers import ROOT, fill_disk, run_cli, run_cmx
from tests.test_trust import (  # noqa: F401  (fixtures)
    CONTIG, TINY_FINETUNE, _one_line_error, _vcf_text, dwv, finetune_run, variants)

DEMO = ROOT / "cmx_cli" / "demo_data"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


def _demo_lines() -> tuple[list[str], list[str]]:
    """The header lines and the record lines of the demo's VCF (1,536 chr01 and 1,116
    chr04 records)."""
    with gzip.open(DEMO / "codon_snvs.vcf.gz", "rt") as handle:
        lines = handle.readlines()
    return ([line for line in lines if line.startswith("#")],
            [line for line in lines if not line.startswith("#")])


@pytest.fixture(scope="module")
def demo_reference(tmp_path_factory) -> Path:
    """The demo's reference, uncompressed (chr01 and chr04 are those of the VCF)."""
    path = tmp_path_factory.mktemp("demo") / "ref.fa"
    with gzip.open(DEMO / "umaydis_demo.fa.gz", "rb") as source, open(path, "wb") as target:
        shutil.copyfileobj(source, target)
    pyfaidx.Fasta(str(path)).close()
    return path


def _first_records(count_chr01: int, count_chr04: int) -> str:
    header, body = _demo_lines()
    chr01 = [line for line in body if line.startswith("chr01\t")][:count_chr01]
    chr04 = [line for line in body if line.startswith("chr04\t")][:count_chr04]
    return "".join(header + chr01 + chr04)


def _stale_index(tmp_path: Path, how: str) -> Path:
    """calls.vcf.gz whose index was built from an earlier version of the file (200 chr01 and
    100 chr04 records), then the index touched (issue 23, case 3)."""
    small = tmp_path / "small.vcf"
    small.write_text(_first_records(200, 100))
    calls = tmp_path / "calls.vcf.gz"
    if how == "htslib-blocks":  # as `bcftools view -Oz` writes: the header in its own block
        with pysam.VariantFile(str(small)) as source, \
                pysam.VariantFile(str(calls), "wz", header=source.header) as target:
            for record in source:
                target.write(record)
    else:
        pysam.tabix_compress(str(small), str(calls), force=True)
    pysam.tabix_index(str(calls), preset="vcf", force=True)
    index = Path(f"{calls}.tbi")
    if how == "shifted-records":
        # The same records after one more header line, in one BGZF block: the index's
        # offsets now point into the middle of a record.
        text = small.read_text().replace("##fileformat=VCFv4.2\n", "##fileformat=VCFv4.2\n"
                                         "##comment=one more line shifts every record\n")
        (tmp_path / "shifted.vcf").write_text(text)
        pysam.tabix_compress(str(tmp_path / "shifted.vcf"), str(calls), force=True)
    else:  # the whole demo file copied over it
        shutil.copy(DEMO / "codon_snvs.vcf.gz", calls)
    os.utime(index)  # `touch`: the index looks newer than the file
    return calls


@pytest.mark.parametrize("command", ["predict", "explain"])
@pytest.mark.parametrize("how", ["bgzip-blocks", "htslib-blocks", "shifted-records"])
def test_a_stale_index_that_hides_a_region_is_refused_naming_the_index(
        how, command, tmp_path, demo_reference, finetune_run):
    calls = _stale_index(tmp_path, how)
    output = tmp_path / ("scores.tsv" if command == "predict" else "context.tsv")
    result = run_cli(command, calls, "--region", "chr04:1-300000", "--reference",
                     demo_reference, "--model", finetune_run, "-o", output,
                     *(["--tsv"] if command == "predict" else []))
    assert result.exit_code == 1, f"read through a stale index: {result.stderr}"
    line = _one_line_error(result.stderr, "calls.vcf.gz.tbi", "stale", "bcftools index -f",
                           absent=("malformed", "cannot be read", "truncated"))
    assert "holds no records" not in result.stderr, line
    assert not output.exists()


def test_a_sound_index_and_an_empty_region_still_just_warn(tmp_path, demo_reference,
                                                          finetune_run):
    calls = tmp_path / "calls.vcf.gz"
    (tmp_path / "small.vcf").write_text(_first_records(200, 100))
    pysam.tabix_compress(str(tmp_path / "small.vcf"), str(calls))
    pysam.tabix_index(str(calls), preset="vcf")
    # chr04's first 100 records lie before 150 kb; past them the region is truly empty.
    result = run_cli("predict", calls, "--region", "chr04:290000-300000", "--reference",
                     demo_reference, "--model", finetune_run, "--tsv", "-o", tmp_path / "s.tsv")
    assert result.exit_code == 0, result.stderr
    assert "holds no records in the given regions" in result.stderr
    whole = run_cli("predict", calls, "--region", "chr04", "--reference", demo_reference,
                    "--model", finetune_run, "--tsv", "-o", tmp_path / "w.tsv")
    assert whole.exit_code == 0, whole.stderr
    assert len((tmp_path / "w.tsv").read_text().splitlines()) == 101


# --- case 4: labels that are not labels --------------------------------------------------------

def test_a_label_that_is_not_a_number_is_an_error_naming_the_record(tmp_path, variants):
    lines = (variants / "train.vcf").read_text().splitlines(keepends=True)
    records = [i for i, line in enumerate(lines) if not line.startswith("#")]
    for number in records[10::7]:  # 26 of 180 records say "maybe"
        lines[number] = re.sub(r"PATHOGENIC=\d", "PATHOGENIC=maybe", lines[number])
    first = lines[records[10]].split("\t")
    (tmp_path / "labels.vcf").write_text("".join(lines))
    result = run_cli("finetune", "--vcf", tmp_path / "labels.vcf", "--reference",
                     variants / "genome.fa", "--label-field", "PATHOGENIC", "--window", "33",
                     "--val-contigs", "c2", "--test-contigs", "c3", "--epochs", "1",
                     "--out", tmp_path / "ft", *TINY_FINETUNE)
    assert result.exit_code == 1, f"trained without the 'maybe' records: {result.stderr}"
    _one_line_error(result.stderr, "labels.vcf", f"{first[0]}:{first[1]}", "'maybe'")
    assert not (tmp_path / "ft" / "model.pt").exists()


# --- the plain log counts what the terminal table counts ------------------------------------

def test_finetunes_plain_log_counts_the_alleles_dropped_for_conflicting_labels(tmp_path,
                                                                                variants):
    lines = (variants / "train.vcf").read_text().splitlines(keepends=True)
    conflicting = []
    for line in lines:
        conflicting.append(line)
        if line.startswith("c1\t") and len(conflicting) % 9 == 0:  # the same allele, relabelled
            label = re.search(r"PATHOGENIC=(\d)", line).group(1)
            conflicting.append(line.replace(f"PATHOGENIC={label}",
                                            f"PATHOGENIC={1 - int(label)}"))
    (tmp_path / "conflicts.vcf").write_text("".join(conflicting))
    repeated = len(conflicting) - len(lines)
    assert repeated > 0
    result = run_cli("finetune", "--vcf", tmp_path / "conflicts.vcf", "--reference",
                     variants / "genome.fa", "--label-field", "PATHOGENIC", "--window", "33",
                     "--val-contigs", "c2", "--test-contigs", "c3", "--epochs", "1",
                     "--out", tmp_path / "ft", *TINY_FINETUNE)
    assert result.exit_code == 0, result.stderr
    logged = [line for line in result.stderr.splitlines() if "conflict" in line
              or "different labels" in line]
    assert logged, f"the log does not say that alleles were dropped:\n{result.stderr}"
    assert f"{2 * repeated:,}" in logged[0], logged[0]  # every copy of each is dropped
    assert all(TIMESTAMP.match(line) for line in logged)
    used = 180 - repeated
    assert re.search(rf"\bused {used:,}\b", logged[0]), logged[0]


# --- case 6: re-scoring a scored VCF ----------------------------------------------------------

def _cmx_model_lines(header) -> list:
    return [record for record in header.records if record.key == "cmx_model"]


def test_rescoring_a_scored_vcf_replaces_the_description_and_keeps_one_model_line(
        tmp_path, variants, finetune_run):
    first = tmp_path / "first.vcf"
    result = run_cli("predict", variants / "train.vcf", "--reference", variants / "genome.fa",
                     "--model", finetune_run, "-o", first)
    assert result.exit_code == 0, result.stderr
    with pysam.VariantFile(str(first)) as scored:
        description = scored.header.info["CMX"].description
    # As another model (or an older cmx) left it: another meaning, an unnamed model line.
    text = first.read_text().replace(description, "probability of label 1 (INFO/OTHER = 1)")
    text = text.replace("##fileformat=VCFv4.2\n", "##fileformat=VCFv4.2\n"
                        "##cmx_model=/elsewhere/other/model.pt\n##cmx_version=0.0.1\n")
    old = tmp_path / "scored_by_another.vcf"
    old.write_text(text)
    for output in ("again.vcf", "again.vcf.gz", "again.bcf"):
        result = run_cli("predict", old, "--reference", variants / "genome.fa", "--model",
                         finetune_run, "-o", tmp_path / output)
        assert result.exit_code == 0, result.stderr
        with pysam.VariantFile(str(tmp_path / output)) as scored:
            header = scored.header
            assert header.info["CMX"].description == description, output
            lines = _cmx_model_lines(header)
            assert len(lines) == 1, [str(line) for line in lines]
            assert lines[0].get("ID") == "CMX"
            assert str(finetune_run) in str(lines[0])
            assert not [record for record in header.records if record.key == "cmx_version"]
    # Another field beside it: one model line per field.
    result = run_cli("predict", tmp_path / "again.vcf", "--reference", variants / "genome.fa",
                     "--model", finetune_run, "--info-id", "CMX2", "-o", tmp_path / "two.vcf")
    assert result.exit_code == 0, result.stderr
    with pysam.VariantFile(str(tmp_path / "two.vcf")) as scored:
        assert sorted(line.get("ID") for line in _cmx_model_lines(scored.header)) == \
            ["CMX", "CMX2"]


# --- case 7: alleles the model never saw -----------------------------------------------------

@pytest.fixture(scope="module")
def indels(variants, tmp_path_factory) -> Path:
    """Two SNVs, an insertion and a deletion on c1 of the `variants` genome."""
    sequence = __import__("json").loads((variants / "genome.json").read_text())["c1"]

    def other(base: str) -> str:
        return "G" if base != "G" else "A"

    rows = [("c1", 200, "snv", sequence[199], other(sequence[199]), ".", ".", "."),
            ("c1", 400, "ins", sequence[399], sequence[399] + "AC", ".", ".", "."),
            ("c1", 600, "del", sequence[599:603], sequence[599], ".", ".", "."),
            ("c1", 800, "snv2", sequence[799], other(sequence[799]), ".", ".", ".")]
    path = tmp_path_factory.mktemp("indels") / "indels.vcf"
    path.write_text(_vcf_text(rows, {"c1": 1500}))
    return path


def _unseen_warning(stderr: str) -> list[str]:
    return [line[line.index("Warning: ") + len("Warning: "):] for line in stderr.splitlines()
            if "Warning: " in line and "never saw" in line]


def test_explain_warns_about_unseen_allele_kinds_as_predict_does(tmp_path, indels, variants,
                                                                 finetune_run):
    common = ["--reference", variants / "genome.fa", "--model", finetune_run]
    predicted = run_cli("predict", indels, *common, "--tsv", "-o", tmp_path / "p.tsv")
    explained = run_cli("explain", indels, *common, "--flank", "2", "-o", tmp_path / "e.tsv")
    assert predicted.exit_code == 0 and explained.exit_code == 0, explained.stderr
    warning = _unseen_warning(predicted.stderr)
    assert len(warning) == 1 and "1 indel (deletion), 1 indel (insertion)" in warning[0]
    assert _unseen_warning(explained.stderr) == warning, explained.stderr


def test_allele_kinds_seen_leaves_the_unseen_kinds_unscored_in_predict_and_explain(
        tmp_path, indels, variants, finetune_run):
    common = ["--reference", variants / "genome.fa", "--model", finetune_run,
              "--allele-kinds", "seen"]
    predicted = run_cli("predict", indels, *common, "--tsv", "-o", tmp_path / "p.tsv")
    assert predicted.exit_code == 0, predicted.stderr
    scores = {row.split("\t")[2]: row.split("\t")[5]
              for row in (tmp_path / "p.tsv").read_text().splitlines()[1:]}
    assert scores["ins"] == scores["del"] == "." and "." not in (scores["snv"], scores["snv2"])
    assert "2 unseen_kind" in predicted.stderr.splitlines()[-1]
    assert not _unseen_warning(predicted.stderr)
    explained = run_cli("explain", indels, *common, "--flank", "2", "-o", tmp_path / "e.tsv")
    assert explained.exit_code == 0, explained.stderr
    explained_ids = {row.split("\t")[1] for row in
                     (tmp_path / "e.tsv").read_text().splitlines()[1:]}
    assert explained_ids == {"200", "800"}
    assert not _unseen_warning(explained.stderr)
    assert "2 allele(s) of kinds the model never saw left out" in \
        explained.stderr.splitlines()[-1], explained.stderr


def test_allele_kinds_is_for_vcf_input(tmp_path, finetune_run):
    fasta = tmp_path / "q.fa"
    fasta.write_text(">q\nACGTACGTAC\n")
    result = run_cli("predict", fasta, "--model", finetune_run, "--allele-kinds", "seen")
    assert result.exit_code == 2 and "--allele-kinds" in result.stderr


# --- case 10: symbolic alleles whose header lacks END ----------------------------------------

@pytest.fixture(scope="module")
def symbolic(dwv, tmp_path_factory) -> Path:
    """A <DEL> with END= and a multi-allelic SNV + <DEL> site, no END/SVTYPE header lines."""
    reference = pyfaidx.Fasta(str(dwv / "DWV_NC_004830.2.fa"))
    sequence = str(reference[CONTIG][:])
    reference.close()

    def other(base: str) -> str:
        return "G" if base != "G" else "A"

    path = tmp_path_factory.mktemp("symbolic") / "sv.vcf"
    path.write_text(_vcf_text([
        (CONTIG, 14, "snv", sequence[13], other(sequence[13]), ".", ".", "."),
        (CONTIG, 100, "del", sequence[99], "<DEL>", ".", ".", "END=150"),
        (CONTIG, 200, "multi", sequence[199], f"{other(sequence[199])},<DEL>", ".", ".",
         "END=260;SVTYPE=DEL;SVLEN=0,-60"),
        (CONTIG, 300, "snv2", sequence[299], other(sequence[299]), ".", ".", "."),
    ], {CONTIG: len(sequence)}))
    return path


STANDARD = {"END": (1, "Integer", "End position of the variant described in this record"),
            "SVTYPE": (1, "String", "Type of structural variant")}


@pytest.mark.parametrize("name,split", [("out.vcf.gz", False), ("out.bcf", False),
                                        ("out.vcf", True), ("out.vcf.gz", True),
                                        ("out.bcf", True)])
def test_a_symbolic_allele_with_an_undeclared_end_is_written_with_the_standard_header(
        name, split, symbolic, tmp_path, dwv, finetune_run):
    output = tmp_path / name
    result = run_cli("predict", symbolic, "--reference", dwv / "DWV_NC_004830.2.fa", "--model",
                     finetune_run, "-o", output, *(["--split-multiallelic"] if split else []))
    assert result.exit_code == 0, result.stderr
    with pysam.VariantFile(str(output)) as scored:
        for key, (number, kind, description) in STANDARD.items():
            declared = scored.header.info[key]
            assert (declared.number, declared.type, declared.description) == \
                (number, kind, description)
        records = [(record.id, record.alts, str(record).split("\t")[7], record.stop)
                   for record in scored]
    deletion = next(record for record in records if record[0] == "del")
    assert "END=150" in deletion[2] and deletion[3] == 150
    if split:
        snv, structural = [record for record in records if record[0] == "multi"]
        assert snv[1] != ("<DEL>",) and structural[1] == ("<DEL>",)
        assert not re.search(r"(^|;)(END|SVTYPE|SVLEN)=", snv[2]), snv
        assert snv[3] == 200 and "CMX=" in snv[2]
        assert "END=260" in structural[2] and "SVTYPE=DEL" in structural[2]
        assert structural[3] == 260


# --- room for the VCF but not its index ------------------------------------------------------


@pytest.mark.parametrize("name", ["out.vcf.gz", "out.bcf"])
def test_room_for_the_vcf_but_not_its_index_says_the_device_is_full(name, small_disk,
                                                                    tmp_path, variants,
                                                                    finetune_run):
    arguments = ["predict", variants / "train.vcf", "--reference", variants / "genome.fa",
                 "--model", finetune_run]
    fits = run_cli(*arguments, "-o", tmp_path / name)
    assert fits.exit_code == 0, fits.stderr
    size = (tmp_path / name).stat().st_size
    fill_disk(small_disk, leave=-(-size // 4096) * 4096)  # whole pages for the VCF, none more
    result = run_cmx(*arguments, "-o", small_disk / name, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    index = f"{small_disk / name}{'.csi' if name.endswith('.bcf') else '.tbi'}"
    line = _one_line_error(result.stderr, index, "full", absent=("building of index",))
    assert "neither" in line
    assert sorted(os.listdir(small_disk)) == ["filler"], "a file was left behind"
