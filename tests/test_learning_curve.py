"""The baselines and label subsets of examples/learning_curve.py."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pysam
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "learning_curve.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("learning_curve", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_context_counts_see_both_strands_and_skip_windows_with_n(script, tmp_path):
    fasta = tmp_path / "tiny.fa"
    fasta.write_text(">a\nAAACAAAN\n")
    counts = script.context_counts(fasta)
    # Forward: one 7-bp window, AAA C AAA (the N ends it); reverse: TTT G TTT.
    assert counts.sum() == 2
    aaa_aaa = 0  # context AAAAAA in base 4
    ttt_ttt = int("333333", 4)
    assert counts[aaa_aaa].tolist() == [0, 1, 0, 0]  # C in the middle
    assert counts[ttt_ttt].tolist() == [0, 0, 1, 0]  # G, its reverse complement


def test_context_log_ratio_reads_the_counts_of_the_site_context(script):
    counts = np.zeros((4 ** 6, 4), dtype=np.int64)
    context = int("012301", 4)  # ACG | TAC around the site
    counts[context] = [9, 0, 4, 1]
    reference = "TTACGATACTT"  # the site is index 5 (A), flanked by ACG and TAC
    ratio = script.context_log_ratio(counts, reference, 5, "A", "G")
    assert ratio == pytest.approx(math.log(5 / 10))  # add-one: (4 + 1) / (9 + 1)
    assert script.context_log_ratio(counts, "NNACGATACTT", 2, "A", "G") == 0.0  # no context


def test_label_subsets_are_seeded_and_keep_every_test_snv(script, tmp_path):
    header = pysam.VariantHeader()
    for contig in ("chr01", "chr02", "chr03", "chr04"):
        header.contigs.add(contig, length=10_000)
    header.add_line('##INFO=<ID=LABEL,Number=1,Type=Integer,Description="label">')
    source = tmp_path / "snvs.vcf.gz"
    with pysam.VariantFile(str(source), "wz", header=header) as sink:
        for contig, count in (("chr01", 50), ("chr04", 7)):
            for pos in range(count):
                record = sink.new_record(contig=contig, start=100 + 10 * pos, alleles=("A", "G"))
                record.info["LABEL"] = pos % 2
                sink.write(record)
    pysam.tabix_index(str(source), preset="vcf", force=True)
    data = tmp_path / "data"
    data.mkdir()

    def positions(path, contig):
        return [record.pos for record in pysam.VariantFile(str(path)).fetch(contig)]

    first = script.label_subset(source, "20", 0, data)
    again = script.label_subset(source, "20", 0, tmp_path)  # recomputed elsewhere
    other = script.label_subset(source, "20", 1, data)
    assert len(positions(first, "chr01")) == 20
    assert positions(first, "chr01") == positions(again, "chr01")
    assert positions(first, "chr01") != positions(other, "chr01")
    assert len(positions(first, "chr04")) == 7
    assert len(positions(script.label_subset(source, "all", 0, data), "chr01")) == 50
