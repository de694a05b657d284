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
import subprocess
from pathlib import Path

import pyfaidx
import pysam
import pytest

from tests.helpers import ROOT, run_cli, run_cmx
from tests.test_trust import (  # noqa: F401  (fixtures)
    CONTIG, TINY_FINETUNE, _fill, _one_line_error, _vcf_text, dwv, finetune_run, variants)

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
