"""Scoring in shards: the regions that tile a VCF, and the Snakemake workflow of
examples/workflow, whose joined output must equal one unsharded `cmx predict` run."""
from __future__ import annotations

import gzip
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pysam
import pytest

from cmx_cli.errors import CmxError
from cmx_cli.io.reference import ReferenceGenome
from cmx_cli.io.vcf_reader import open_variants
from cmx_cli.pipelines.bench_variants import save_model
from cmx_cli.settings import EncoderShape
from cmx_cli.variants.shards import shard_regions
from tests.helpers import check_internal_error, check_user_error, cmx_environment, run_cmx

ROOT = Path(__file__).parent.parent
DEMO_DATA = ROOT / "cmx_cli" / "demo_data"
SNAKEFILE = ROOT / "examples" / "workflow" / "Snakefile"


@pytest.fixture
def demo(tmp_path) -> dict:
    """Copies of the demo VCF (with its index) and genome."""
    for name in ("codon_snvs.vcf.gz", "codon_snvs.vcf.gz.tbi", "umaydis_demo.fa.gz"):
        shutil.copy2(DEMO_DATA / name, tmp_path / name)
    return {"vcf": tmp_path / "codon_snvs.vcf.gz", "reference": tmp_path / "umaydis_demo.fa.gz"}


def _positions(vcf: Path, regions=()) -> list[tuple[str, int]]:
    with open_variants(vcf, regions) as variants:
        return [(record.chrom, record.pos) for record in variants]


def test_one_shard_per_contig_in_file_order(demo):
    assert shard_regions(demo["vcf"]) == ["chr01", "chr04"]


@pytest.mark.parametrize("chunk_size", [7_777, 100_000, 10**9])
def test_chunks_hold_every_record_once_in_file_order(demo, chunk_size):
    regions = shard_regions(demo["vcf"], chunk_size, demo["reference"])
    joined = [position for region in regions for position in _positions(demo["vcf"], [region])]
    assert joined == _positions(demo["vcf"])
    contigs = [region.split(":")[0] for region in regions]
    last_of_each = [region for region, following in zip(regions, contigs[1:] + [""])
                    if region.split(":")[0] != following]
    assert all(region.endswith("-") for region in last_of_each)
    assert not any(region.endswith("-") for region in regions if region not in last_of_each)


def _with_header(demo: dict, tmp_path: Path, contig_lines: str) -> Path:
    """The demo VCF with other ##contig lines, bgzipped and indexed."""
    with gzip.open(demo["vcf"], "rt") as source:
        text = re.sub(r"(##contig=<[^>]*>\n)+", contig_lines, source.read())
    plain = tmp_path / "edited.vcf"
    plain.write_text(text)
    compressed = pysam.tabix_index(str(plain), preset="vcf", force=True)
    return Path(compressed)


def test_a_record_past_the_stated_contig_length_still_lands_in_a_shard(demo, tmp_path):
    vcf = _with_header(demo, tmp_path, "##contig=<ID=chr01,length=300000>\n"
                                       "##contig=<ID=chr04,length=1000>\n")
    regions = shard_regions(vcf, 600)
    assert regions[-2:] == ["chr04:1-600", "chr04:601-"]
    assert regions[-3] == "chr01:299401-"
    joined = [position for region in regions for position in _positions(vcf, [region])]
    assert joined == _positions(vcf)


def test_lengths_come_from_the_reference_when_the_header_has_none(demo, tmp_path):
    vcf = _with_header(demo, tmp_path, "")
    with pytest.raises(CmxError) as caught:
        shard_regions(vcf, 50_000)
    check_user_error(caught.value, vcf, "no length for contig 'chr01'")
    regions = shard_regions(vcf, 50_000, demo["reference"])
    with ReferenceGenome(demo["reference"]) as genome:
        last_start = (genome.length("chr01") - 1) // 50_000 * 50_000 + 1
    assert regions[0] == "chr01:1-50000" and f"chr01:{last_start}-" in regions


def test_a_vcf_without_an_index_cannot_be_sharded(demo):
    demo["vcf"].with_name("codon_snvs.vcf.gz.tbi").unlink()
    with pytest.raises(CmxError) as caught:
        shard_regions(demo["vcf"])
    check_user_error(caught.value, demo["vcf"], "sharding needs an index")


@pytest.mark.skipif(shutil.which("bcftools") is None, reason="bcftools is not installed")
@pytest.mark.skipif(importlib.util.find_spec("snakemake") is None,
                    reason="snakemake is not installed (pip install '.[test]')")
def test_the_workflow_joins_two_shards_into_what_one_run_writes(demo, tmp_path):
    model = save_model(tmp_path / "model.pt", "fine-tuned", 64,
                       EncoderShape(track_size=4, hidden_size=16), seed=0)
    # The shards run the `cmx` of this environment, on this checkout's code.
    executables = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    joined = tmp_path / "joined" / "scored.vcf.gz"
    workflow = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--cores", "2",
         "--directory", str(tmp_path), "--quiet", "all", "--config", f"vcf={demo['vcf']}",
         f"reference={demo['reference']}", f"model={model}", f"output={joined}", "threads=1"],
        env=cmx_environment(executables), capture_output=True, text=True, timeout=600)
    # Each shard's `cmx predict` writes its stderr to its log (the Snakefile's `log:`).
    logs = sorted(joined.parent.glob("scored.vcf.gz.shards/*.log"))
    for log in logs:
        check_internal_error(["predict", "...", f"(shard {log.stem})"], log.read_text())
    check_internal_error(["(snakemake)"], workflow.stderr)
    assert workflow.returncode == 0, workflow.stderr
    assert len(logs) == len(shard_regions(demo["vcf"]))  # one log per shard, all checked
    single = tmp_path / "single.vcf.gz"
    predicted = run_cmx("predict", demo["vcf"], "--reference", demo["reference"], "--model",
                        model, "--output", single, "--quiet", env=executables, timeout=600)
    assert predicted.returncode == 0, predicted.stderr

    def body(path: Path) -> list[str]:
        with gzip.open(path, "rt") as stream:
            return [line for line in stream if not line.startswith("##")]

    records = body(single)
    assert len(records) == 1 + 2652  # the column line, then every record
    assert body(joined) == records  # same records, same order, same scores to the digit
    assert joined.with_name("scored.vcf.gz.tbi").is_file()
    assert not list(joined.parent.glob("scored.vcf.gz.shards/*.vcf"))  # shards removed
