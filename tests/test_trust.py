"""Command-line reproductions of defects that break a user's trust in cmx's outputs.

Each test runs cmx as a user does (``run_cli`` in this process, or ``python -m cmx_cli`` in a
subprocess where real processes, signals, locks or full disks matter, through ``run_cmx`` or
``cmx_command``; each fails a call that ends in an internal error) and asserts the behaviour cmx
should have. They were written against code that does not have it yet: every test here
failed on the main branch of the day it was written, each for the reason in its name.
"""
from __future__ import annotations

import gzip
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyfaidx
import pysam
import pytest
import torch

from cmx_cli.io.checkpoint import load_checkpoint
from tests.conftest import DATA
from tests.helpers import (check_internal_error, cmx_command, cmx_environment, fill_disk,
                           run_cli, run_cmx, run_cmx_and_probe, start_cmx, wait_until,
                           write_gc_classes)

ROOT = Path(__file__).resolve().parents[1]
VCF_DATA = DATA / "vcf"
CONTIG = "NC_004830.2"  # the DWV genome, 10,140 bp
BASES = "ACGT"
TINY_TRAIN = ["--track-size", "4", "--hidden-size", "16", "--max-len", "64", "--kmer-k", "3",
              "--dropout", "0", "--device", "cpu"]
TINY_FINETUNE = ["--track-size", "4", "--hidden-size", "16", "--head-hidden", "16",
                 "--dropout", "0", "--device", "cpu"]
TIMESTAMP = re.compile(r"^\[?(\d{4}-\d\d-\d\d[T ])?\d\d:\d\d:\d\d\b")
BGZF_MAGIC = b"\x1f\x8b\x08\x04"


# --- helpers -------------------------------------------------------------------------------

def _env() -> dict:
    """The environment of a cmx subprocess: this checkout's code first."""
    return cmx_environment()


def _cmx_command(*arguments) -> list[str]:
    return cmx_command(*arguments)


def _cmx(*arguments, cwd, timeout=300, internal_error=False) -> subprocess.CompletedProcess:
    """Run ``python -m cmx_cli`` through the real entry point, as a user does; fail on an
    internal error unless the test provokes one (``internal_error``)."""
    return run_cmx(*arguments, cwd=cwd, timeout=timeout, internal_error=internal_error)


def _invoke(*arguments, internal_error=False):
    """Run cmx in this process (stderr is not a terminal); fail on an internal error unless
    the test provokes one (``internal_error``)."""
    return run_cli(*arguments, internal_error=internal_error)


def _one_line_error(stderr: str, *fragments: str, absent: tuple = ()) -> str:
    """The house rule for errors: one line, 'Error: ... Hint: ...', no traceback (after the
    timestamped progress lines a run prints when stderr is not a terminal)."""
    lines = [line for line in stderr.strip().splitlines() if not TIMESTAMP.match(line)]
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("Error: ") and "Hint:" in line, line
    assert "internal error" not in line and "Traceback" not in stderr, line
    for fragment in absent:  # the misleading words first: they are the defect
        assert fragment not in line, (fragment, line)
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def _last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def _snapshot(directory: Path) -> dict:
    """Every file of a directory with its mtime and bytes."""
    return {path.name: (path.stat().st_mtime_ns, path.read_bytes())
            for path in sorted(directory.iterdir())}


def _touch_newer(index: Path, data: Path, seconds: float = 10.0) -> None:
    """Give an index an mtime newer than its data file's (or older, with seconds < 0)."""
    status = data.stat()
    shifted = status.st_mtime_ns + int(seconds * 1e9)
    os.utime(index, ns=(shifted, shifted))


def _write_fasta(path: Path, records: dict, width: int = 60) -> Path:
    with open(path, "w") as handle:
        for name, sequence in records.items():
            handle.write(f">{name}\n")
            handle.writelines(sequence[i:i + width] + "\n" for i in range(0, len(sequence), width))
    return path


def _vcf_text(rows: list, contigs: dict, info_lines: tuple = ()) -> str:
    header = ["##fileformat=VCFv4.2", *info_lines]
    header += [f"##contig=<ID={name},length={length}>" for name, length in contigs.items()]
    header.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO")
    return "\n".join(header + ["\t".join(map(str, row)) for row in rows]) + "\n"


def _tsv_rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


# --- shared data and runs --------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """Two classes of short sequences (GC-rich A, AT-rich B) and a query file."""
    return write_gc_classes(tmp_path_factory.mktemp("tiny"), "classes", header_labels=True)


@pytest.fixture(scope="module")
def classifier_run(tiny, tmp_path_factory) -> Path:
    """A tiny `cmx train` run (classes A and B), trained once for the module."""
    out = tmp_path_factory.mktemp("classifier") / "run"
    result = _invoke("train", "--fasta", f"{tiny / 'a.fa'}:A", "--fasta", f"{tiny / 'b.fa'}:B",
                     "--out", out, "--epochs", "1", "--quiet", *TINY_TRAIN)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> Path:
    """A 3-contig genome and SNVs labelled by INFO/PATHOGENIC (SNVs only)."""
    root = tmp_path_factory.mktemp("variants")
    rng = np.random.default_rng(7)
    contigs = {name: "".join(rng.choice(list(BASES), 1500)) for name in ("c1", "c2", "c3")}
    _write_fasta(root / "genome.fa", contigs)
    rows = []
    for name, sequence in contigs.items():
        for position in sorted(rng.choice(np.arange(20, 1480), 60, replace=False)):
            ref = sequence[position]
            alt = rng.choice([b for b in BASES if b != ref])
            rows.append((name, position + 1, ".", ref, alt, ".", ".",
                         f"PATHOGENIC={int(sequence[position - 4] in 'GC')}"))
    (root / "train.vcf").write_text(_vcf_text(
        rows, {n: len(s) for n, s in contigs.items()},
        ('##INFO=<ID=PATHOGENIC,Number=1,Type=Integer,Description="label">',)))
    (root / "genome.json").write_text(json.dumps(contigs))
    return root


@pytest.fixture(scope="module")
def finetune_run(variants, tmp_path_factory) -> Path:
    """A tiny `cmx finetune` run on SNVs only (window 33, label field PATHOGENIC)."""
    out = tmp_path_factory.mktemp("finetune") / "ft"
    result = _invoke("finetune", "--vcf", variants / "train.vcf", "--reference",
                     variants / "genome.fa", "--label-field", "PATHOGENIC", "--window", "33",
                     "--val-contigs", "c2", "--test-contigs", "c3", "--epochs", "1", "--quiet",
                     "--out", out, *TINY_FINETUNE)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def dwv(tmp_path_factory) -> Path:
    """The DWV reference and calls, copied so that no index is written into tests/data."""
    root = tmp_path_factory.mktemp("dwv")
    for name in ("DWV_NC_004830.2.fa", "DWV_3genomes_vs_NC_004830.vcf",
                 "DWV_3genomes_vs_NC_004830.vcf.gz", "DWV_3genomes_vs_NC_004830.vcf.gz.tbi"):
        shutil.copy(VCF_DATA / name, root / name)  # data first, then its index: fresh
    pyfaidx.Fasta(str(root / "DWV_NC_004830.2.fa")).close()
    return root


def _genome(variants: Path) -> dict:
    return json.loads((variants / "genome.json").read_text())


# --- 1. --resume --out DIR resumes DIR and only DIR -----------------------------------------

@pytest.fixture(scope="module")
def relative_run(tiny, tmp_path_factory) -> Path:
    """A run started with relative paths (`--fasta a.fa:A --out run`) from its directory,
    stopped by --max-time after one step, so it can be resumed."""
    home = tmp_path_factory.mktemp("relative")
    for name in ("a.fa", "b.fa"):
        shutil.copy(tiny / name, home / name)
    result = _cmx("train", "--fasta", "a.fa:A", "--fasta", "b.fa:B", "--out", "run",
                  "--epochs", "3", "--max-time", "1e-9", *TINY_TRAIN, cwd=home)
    assert result.returncode == 0, result.stderr
    assert "stopped by max-time" in result.stderr
    return home


def test_resume_writes_only_the_given_directory(relative_run, tmp_path):
    # The user's directory, with the run in ./run; the run is copied elsewhere and the copy
    # is resumed from the same working directory.
    home = tmp_path / "home"
    shutil.copytree(relative_run, home)
    original = home / "run"
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(original, copy)
    before = _snapshot(original)
    copy_log = (copy / "log.tsv").read_text()
    resumed = _cmx("train", "--resume", "--out", copy, "--max-time", "1e-9", cwd=home)
    assert resumed.returncode == 0, resumed.stderr
    assert _snapshot(original) == before, "resuming the copy wrote into the original run"
    assert (copy / "log.tsv").read_text() != copy_log, "the copy was not resumed"


def test_config_json_stores_input_paths_absolute(relative_run):
    config = json.loads((relative_run / "run" / "config.json").read_text())
    for argument in config["fasta"]:
        path = argument.rsplit(":", 1)[0]
        assert os.path.isabs(path), config["fasta"]
        assert Path(path).is_file()


# --- 2. an output never replaces an input of the same command ------------------------------

def _replace_case(case: str, tmp_path: Path, tiny: Path, classifier_run: Path, finetune_run: Path,
                  variants: Path) -> tuple[list, Path, Path]:
    """(command, -o path, the input it must not replace) for one case."""
    run = tmp_path / "run"
    shutil.copytree(classifier_run, run)
    query = tmp_path / "q.fa"
    shutil.copy(tiny / "q.fa", query)
    ft = tmp_path / "ft"
    shutil.copytree(finetune_run, ft)
    reference = tmp_path / "genome.fa"
    shutil.copy(variants / "genome.fa", reference)
    vcf = tmp_path / "train.vcf"
    shutil.copy(variants / "train.vcf", vcf)
    fasta_predict = ["predict", query, "--model", run]
    vcf_predict = ["predict", vcf, "--reference", reference, "--model", ft]
    if case == "fasta-model":
        return fasta_predict, run / "model.pt", run / "model.pt"
    if case == "fasta-model-through-a-link":
        (tmp_path / "p.tsv").symlink_to(run / "model.pt")
        return fasta_predict, tmp_path / "p.tsv", run / "model.pt"
    if case == "fasta-index":
        pyfaidx.Fasta(str(query)).close()
        return fasta_predict, tmp_path / "q.fa.fai", tmp_path / "q.fa.fai"
    if case == "labels-table":
        labels = tmp_path / "labels.tsv"
        labels.write_text("".join(f"q{i}\t{'AB'[i % 2]}\n" for i in range(10)))
        return fasta_predict + ["--labels", labels], labels, labels
    if case == "vcf-reference":
        return vcf_predict, reference, reference
    if case == "vcf-reference-through-a-link":
        (tmp_path / "scored.vcf").symlink_to(reference)
        return vcf_predict, tmp_path / "scored.vcf", reference
    if case == "vcf-reference-index":
        pyfaidx.Fasta(str(reference)).close()
        return vcf_predict, tmp_path / "genome.fa.fai", tmp_path / "genome.fa.fai"
    if case == "vcf-model":
        return vcf_predict, ft / "model.pt", ft / "model.pt"
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "fasta-model", "fasta-model-through-a-link", "fasta-index", "labels-table",
    "vcf-reference", "vcf-reference-through-a-link", "vcf-reference-index", "vcf-model"])
def test_an_output_never_replaces_an_input(case, tmp_path, tiny, classifier_run, finetune_run,
                                           variants):
    command, output, protected = _replace_case(case, tmp_path, tiny, classifier_run,
                                               finetune_run, variants)
    before = protected.read_bytes()
    result = _invoke(*command, "-o", output)
    assert result.exit_code != 0, f"-o {output.name} replaced an input: {result.stderr}"
    line = _one_line_error(result.stderr)
    assert str(output) in line or str(protected) in line, line
    assert protected.read_bytes() == before
    assert not list(protected.parent.glob(f".{protected.name}.*"))  # refused before any work


# --- 3. one run directory, one writer --------------------------------------------------------

def _train_arguments(tiny: Path, out: Path, *extra) -> list:
    return ["train", "--fasta", f"{tiny / 'a.fa'}:A", "--fasta", f"{tiny / 'b.fa'}:B",
            "--out", out, *TINY_TRAIN, *extra]


def test_a_second_writer_of_a_run_directory_fails_at_once_naming_the_holder(tiny, tmp_path):
    out = tmp_path / "run"
    arguments = _train_arguments(tiny, out, "--epochs", "100000", "--patience", "100000",
                                 "--max-time", "0.25")
    first = start_cmx(*arguments, cwd=tmp_path)
    try:
        wait_until(first, (out / "config.json").exists, poll=0.05, what="config.json")
        second = _cmx(*arguments, cwd=tmp_path, timeout=120)
        assert first.poll() is None, "the first run ended before the second started"
        assert second.returncode != 0, second.stderr
        line = _one_line_error(second.stderr, str(out))
        assert re.search(rf"\b{first.pid}\b", line), f"the lock holder's pid is not named: {line}"
        _, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    check_internal_error(arguments, stderr)
    assert first.returncode == 0, stderr
    assert "stopped by max-time" in stderr and (out / "metrics.json").is_file()


def test_a_lock_left_by_a_killed_run_does_not_block_a_later_resume(tiny, tmp_path):
    out = tmp_path / "run"
    arguments = _train_arguments(tiny, out, "--epochs", "100000", "--patience", "100000")
    first = start_cmx(*arguments, cwd=tmp_path)
    try:
        wait_until(first, (out / "last.pt").exists, poll=0.05, what="last.pt")
        # While it runs, the directory is locked (a second writer is refused)...
        refused = _cmx("train", "--resume", "--out", out, "--max-time", "0.05", cwd=tmp_path,
                       timeout=120)
        assert first.poll() is None
        assert refused.returncode != 0 and str(first.pid) in refused.stderr, refused.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        _, stderr = first.communicate()
    check_internal_error(arguments, stderr)
    # ... and the lock the killed process left does not block a resume.
    resumed = _cmx("train", "--resume", "--out", out, "--max-time", "1e-9", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "stopped by max-time" in resumed.stderr


# --- 4. disk full --------------------------------------------------------------------------

def _says_full(line: str) -> bool:
    return bool(re.search(r"(?i)\bfull\b|no space left", line))


@pytest.mark.parametrize("name", ["out.vcf.gz", "out.bcf", "out.vcf", "out.tsv"])
def test_predict_on_a_full_disk_says_so_in_one_line_and_leaves_nothing(name, small_disk, dwv,
                                                                       finetune_run, tmp_path):
    fill_disk(small_disk)
    output = small_disk / name
    result = _cmx("predict", dwv / "DWV_3genomes_vs_NC_004830.vcf", "--reference",
                  dwv / "DWV_NC_004830.2.fa", "--model", finetune_run, "-o", output,
                  *(["--tsv"] if name.endswith(".tsv") else []), cwd=tmp_path)
    assert result.returncode != 0
    line = _one_line_error(result.stderr, str(output))
    assert _says_full(line), line
    assert sorted(os.listdir(small_disk)) == ["filler"], "a temporary file was left behind"


def test_fasta_predict_on_a_full_disk_says_so_in_one_line(small_disk, tiny, classifier_run,
                                                          tmp_path):
    fill_disk(small_disk)
    output = small_disk / "p.tsv"
    result = _cmx("predict", tiny / "q.fa", "--model", classifier_run, "-o", output,
                  cwd=tmp_path)
    assert result.returncode != 0
    line = _one_line_error(result.stderr, str(output))
    assert _says_full(line), line
    assert sorted(os.listdir(small_disk)) == ["filler"]


@pytest.mark.parametrize("free", [16384, 65536], ids=["16k-free", "64k-free"])
def test_train_on_a_full_disk_names_the_file_and_keeps_the_previous_checkpoints(
        free, small_disk, tiny, tmp_path):
    out = small_disk / "run"
    started = _cmx(*_train_arguments(tiny, out, "--epochs", "3", "--max-time", "1e-9"),
                   cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    kept = {name: (out / name).read_bytes() for name in ("model.pt", "last.pt", "metrics.json")}
    fill_disk(small_disk, leave=free)
    resumed = _cmx("train", "--resume", "--out", out, "--max-time", "1e-9", cwd=tmp_path)
    assert resumed.returncode != 0
    line = _one_line_error(resumed.stderr, str(out))
    assert _says_full(line), line
    for name, content in kept.items():
        now = (out / name).read_bytes()
        if name == "model.pt" and now != content:
            # The resumed epoch scored better and its model fitted on the disk before last.pt
            # did not: it must then be whole.
            assert load_checkpoint(out, "classifier").state_dict, "model.pt was damaged"
        else:
            assert now == content, f"{name} was damaged"
    assert not [name for name in os.listdir(out) if name.endswith(".tmp")]


# --- 5. a stale FASTA index is never trusted -------------------------------------------------

QUERY = (">r1 first\nACGTACGTAAACCCGGGTTT\nACGTAC\n"
         ">r2\nGGGGCCCCAAAATTTTACGTACGTAC\n"
         ">r3\nACGTTTTACG\n")
CHANGES = {
    "appended-record": QUERY + ">r4\nACGTACGTACGTGGCA\n",
    "lengthened-record": QUERY.replace("ACGTTTTACG\n", "ACGTTTTACGAAAAAATTTT\n"),
    "longer-header": QUERY.replace(">r1 first", ">r1 first, with a longer description"),
}


def _true_lengths(text: str) -> dict:
    lengths, name = {}, None
    for line in text.splitlines():
        if line.startswith(">"):
            name = line[1:].split()[0]
            lengths[name] = 0
        else:
            lengths[name] += len(line.strip())
    return lengths


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_stale_fasta_index_newer_than_its_fasta_is_not_trusted(change, tmp_path,
                                                                  classifier_run):
    fasta = tmp_path / "query.fa"
    fasta.write_text(QUERY)
    first = _invoke("predict", fasta, "--model", classifier_run, "-o", tmp_path / "first.tsv")
    assert first.exit_code == 0, first.output
    fai = tmp_path / "query.fa.fai"
    old_index = fai.read_bytes()
    fasta.write_text(CHANGES[change])
    _touch_newer(fai, fasta)  # e.g. restored from a backup, or on a coarse-mtime file system
    result = _invoke("predict", fasta, "--model", classifier_run, "-o", tmp_path / "p.tsv")
    assert result.exit_code == 0, result.stderr
    rows = _tsv_rows(tmp_path / "p.tsv")[1:]
    assert {row[0]: int(row[1]) for row in rows} == _true_lengths(CHANGES[change])
    summary = _last_line(result.stderr)
    assert "warning" in summary and re.search(r"(?i)index|\.fai", summary), summary
    assert fai.read_bytes() == old_index or ".fai" in summary, \
        "the user's .fai was overwritten without a word"


def test_a_stale_reference_index_does_not_shift_the_windows(tmp_path, dwv, finetune_run):
    vcf = dwv / "DWV_3genomes_vs_NC_004830.vcf"
    stale = tmp_path / "stale.fa"
    shutil.copy(dwv / "DWV_NC_004830.2.fa", stale)
    pyfaidx.Fasta(str(stale)).close()
    text = stale.read_text().replace("Deformed wing virus", "DWV", 1)  # a shorter header
    stale.write_text(text)
    _touch_newer(tmp_path / "stale.fa.fai", stale)
    fresh = tmp_path / "fresh.fa"
    fresh.write_text(text)
    outcomes = {}
    for reference in (stale, fresh):
        output = tmp_path / f"{reference.stem}.tsv"
        outcomes[reference.stem] = _invoke("predict", vcf, "--reference", reference, "--model",
                                           finetune_run, "--tsv", "-o", output)
        assert outcomes[reference.stem].exit_code == 0, outcomes[reference.stem].output
    assert (tmp_path / "stale.tsv").read_text() == (tmp_path / "fresh.tsv").read_text()
    summary = _last_line(outcomes["stale"].stderr)
    assert re.search(r"(?i)warning.*(index|\.fai)", summary), summary


# --- 6. a stale VCF index never drops records ----------------------------------------------

@pytest.mark.parametrize("index_age", [10.0, -10.0], ids=["index-newer", "index-older"])
def test_a_stale_vcf_index_is_refused_not_used(index_age, tmp_path, dwv, finetune_run):
    lines = (dwv / "DWV_3genomes_vs_NC_004830.vcf").read_text().splitlines(keepends=True)
    header = [line for line in lines if line.startswith("#")]
    body = [line for line in lines if not line.startswith("#")]
    (tmp_path / "short.vcf").write_text("".join(header + body[:400]))
    (tmp_path / "long.vcf").write_text("".join(header + body))
    pysam.tabix_compress(str(tmp_path / "short.vcf"), str(tmp_path / "short.vcf.gz"))
    pysam.tabix_index(str(tmp_path / "short.vcf.gz"), preset="vcf")
    # The VCF grew (same name, same first records), its old index stayed.
    calls = tmp_path / "calls.vcf.gz"
    pysam.tabix_compress(str(tmp_path / "long.vcf"), str(calls))
    shutil.copy(tmp_path / "short.vcf.gz.tbi", tmp_path / "calls.vcf.gz.tbi")
    _touch_newer(tmp_path / "calls.vcf.gz.tbi", calls, index_age)
    output = tmp_path / "scores.tsv"
    result = _invoke("predict", calls, "--region", f"{CONTIG}:1-10140", "--reference",
                     dwv / "DWV_NC_004830.2.fa", "--model", finetune_run, "--tsv", "-o", output)
    assert result.exit_code != 0, (f"scored through a stale index: {len(_tsv_rows(output)) - 1}"
                                   f" of 1757 alleles; {result.stderr}")
    line = _one_line_error(result.stderr, "calls.vcf.gz")
    assert "bcftools index -f" in line or "tabix -f" in line, line
    assert not output.exists()


# --- 7. symbolic alleles in every output format ----------------------------------------------

@pytest.mark.parametrize("name", ["out.vcf.gz", "out.bcf"])
def test_a_symbolic_allele_without_end_or_svlen_is_kept_in_every_format(name, tmp_path, dwv,
                                                                         finetune_run):
    reference = pyfaidx.Fasta(str(dwv / "DWV_NC_004830.2.fa"))
    sequence = str(reference[CONTIG][:])
    reference.close()
    vcf = tmp_path / "sv.vcf"
    vcf.write_text(_vcf_text([
        (CONTIG, 14, "snv", sequence[13], "G" if sequence[13] != "G" else "A", ".", ".", "."),
        (CONTIG, 100, "del", sequence[99], "<DEL>", ".", ".", "."),
        (CONTIG, 300, "snv2", sequence[299], "G" if sequence[299] != "G" else "A", ".", ".", "."),
    ], {CONTIG: len(sequence)}))  # no INFO/END, no INFO/SVLEN definition
    output = tmp_path / name
    result = _invoke("predict", vcf, "--reference", dwv / "DWV_NC_004830.2.fa", "--model",
                     finetune_run, "-o", output)
    assert result.exit_code == 0, result.stderr or repr(result.exception)
    with pysam.VariantFile(str(output)) as scored:
        records = list(scored)
    assert [record.id for record in records] == ["snv", "del", "snv2"]
    assert records[1].alts == ("<DEL>",) and records[1].info.get("CMX") is None
    assert "symbolic" in _last_line(result.stderr)


# --- 8. compressed outputs are compressed ----------------------------------------------------

def _assert_bgzf(path: Path, first_line: str) -> None:
    head = path.read_bytes()[:16]
    assert head[:4] == BGZF_MAGIC and head[12:14] == b"BC", f"{path.name} is not BGZF: {head!r}"
    with gzip.open(path, "rt") as handle:
        assert handle.readline().startswith(first_line)


def test_a_variant_tsv_named_gz_is_bgzf_and_indexable(tmp_path, dwv, finetune_run):
    output = tmp_path / "scores.tsv.gz"
    result = _invoke("predict", dwv / "DWV_3genomes_vs_NC_004830.vcf", "--reference",
                     dwv / "DWV_NC_004830.2.fa", "--model", finetune_run, "--tsv", "-o", output)
    assert result.exit_code == 0, result.stderr
    _assert_bgzf(output, "chrom\tpos")
    if not any(Path(f"{output}{suffix}").exists() for suffix in (".tbi", ".csi")):
        pysam.tabix_index(str(output), seq_col=0, start_col=1, end_col=1, line_skip=1)
    with pysam.TabixFile(str(output)) as indexed:
        assert len(list(indexed.fetch(CONTIG, 99, 200))) == 16  # 15 records, one with 2 ALTs


def test_a_fasta_prediction_named_gz_is_bgzf(tmp_path, tiny, classifier_run):
    output = tmp_path / "q.tsv.gz"
    result = _invoke("predict", tiny / "q.fa", "--model", classifier_run, "-o", output)
    assert result.exit_code == 0, result.stderr
    _assert_bgzf(output, "name\tlength\tpredicted")


# --- 9. a model says when it is outside what it learnt ---------------------------------------

def _c1_vcf(variants: Path, path: Path, extra_rows: list) -> Path:
    sequence = _genome(variants)["c1"]
    snv = ("c1", 100, "snv", sequence[99], "A" if sequence[99] != "A" else "C", ".", ".", ".")
    path.write_text(_vcf_text([snv, *extra_rows], {"c1": len(sequence)}))
    return path


def test_indels_scored_by_an_snv_only_model_are_counted_in_the_summary(tmp_path, variants,
                                                                       finetune_run):
    sequence = _genome(variants)["c1"]
    vcf = _c1_vcf(variants, tmp_path / "indel.vcf", [
        ("c1", 200, "del", sequence[199:202], sequence[199], ".", ".", "."),
        ("c1", 300, "ins", sequence[299], sequence[299] + "GT", ".", ".", ".")])
    result = _invoke("predict", vcf, "--reference", variants / "genome.fa", "--model",
                     finetune_run, "-o", tmp_path / "out.vcf")
    assert result.exit_code == 0, result.stderr
    summary = _last_line(result.stderr)
    assert re.search(r"(?i)warning.*\b2\b.*indel.*SNV", summary), summary


def test_an_alt_equal_to_its_ref_gets_no_score_and_a_counted_reason(tmp_path, variants,
                                                                    finetune_run):
    sequence = _genome(variants)["c1"]
    vcf = _c1_vcf(variants, tmp_path / "same.vcf",
                  [("c1", 300, "same", sequence[299], sequence[299], ".", ".", ".")])
    output = tmp_path / "out.tsv"
    result = _invoke("predict", vcf, "--reference", variants / "genome.fa", "--model",
                     finetune_run, "--tsv", "-o", output)
    assert result.exit_code == 0, result.stderr
    scores = {row[2]: row[5] for row in _tsv_rows(output)[1:]}
    assert scores["snv"] != "." and scores["same"] == ".", scores
    summary = _last_line(result.stderr)
    assert re.search(r"not scored: [^)]*\b1 \S*(same|equal|ref|no_change|unchanged)", summary,
                     re.IGNORECASE), summary


def test_windows_longer_than_the_models_max_len_are_counted_and_warned(tmp_path, variants,
                                                                       finetune_run):
    vcf = _c1_vcf(variants, tmp_path / "snv.vcf", [])
    result = _invoke("predict", vcf, "--reference", variants / "genome.fa", "--model",
                     finetune_run, "--window", "200", "-o", tmp_path / "out.vcf")
    assert result.exit_code == 0, result.stderr
    summary = _last_line(result.stderr)
    assert re.search(r"(?i)warning.*\b1\b.*max_len", summary), summary


@pytest.mark.parametrize("code", ["N", "R"])
def test_an_ambiguous_ref_where_the_reference_has_a_base_is_counted(code, tmp_path, variants,
                                                                    finetune_run):
    sequence = _genome(variants)["c1"]
    vcf = _c1_vcf(variants, tmp_path / "ambiguous.vcf", [
        ("c1", 400, "amb", code, "A" if sequence[399] != "A" else "C", ".", ".", ".")])
    result = _invoke("predict", vcf, "--reference", variants / "genome.fa", "--model",
                     finetune_run, "--tsv", "-o", tmp_path / "out.tsv")
    assert result.exit_code == 0, result.stderr
    summary = _last_line(result.stderr)
    assert re.search(rf"(?i)(warning|not scored).*\b1\b.*(REF {code}\b|\b{code}\b|IUPAC|ambiguous)",
                     summary), summary


def test_the_score_header_says_what_label_1_is(tmp_path, variants, finetune_run):
    vcf = _c1_vcf(variants, tmp_path / "snv.vcf", [])
    output = tmp_path / "out.vcf"
    result = _invoke("predict", vcf, "--reference", variants / "genome.fa", "--model",
                     finetune_run, "-o", output)
    assert result.exit_code == 0, result.stderr
    with pysam.VariantFile(str(output)) as scored:
        description = scored.header.info["CMX"].description
    assert "PATHOGENIC" in description, description


# --- 10. shards equal the whole, with the real network ------------------------------------------

def test_region_shards_join_into_the_whole_with_the_real_network(tmp_path, dwv, finetune_run):
    """Every score string of the joined shards equals the unsharded run's, with the model's
    own window and with --rc (other batch companions must not change a score, not even in
    its last printed digit)."""
    calls = dwv / "DWV_3genomes_vs_NC_004830.vcf.gz"

    def score(output: Path, options: list, *regions: str) -> list[str]:
        arguments = [a for region in regions for a in ("--region", region)]
        result = _invoke("predict", calls, "--reference", dwv / "DWV_NC_004830.2.fa", "--model",
                         finetune_run, *options, *arguments, "-o", output)
        assert result.exit_code == 0, result.stderr
        with pysam.VariantFile(str(output)) as scored:
            return [str(record) for record in scored]

    differing = {}
    for options in ([], ["--rc"]):
        name = "-".join(options) or "default"
        whole = score(tmp_path / f"{name}.vcf.gz", options)
        joined = [record for number, region in enumerate(
            [f"{CONTIG}:1-254", f"{CONTIG}:255-5000", f"{CONTIG}:5001"])
            for record in score(tmp_path / f"{name}-shard{number}.vcf.gz", options, region)]
        assert len(joined) == len(whole) == 1698
        cmx = re.compile(r"CMX=[^\t;]*")
        differing[name] = [(w.split("\t")[1], cmx.search(w).group(), cmx.search(j).group())
                           for w, j in zip(whole, joined) if w != j]
    assert differing == {name: [] for name in differing}


# --- 11. messages that point at the real cause --------------------------------------------------

def test_a_mac_cr_only_fasta_is_named_as_such(tmp_path, classifier_run):
    fasta = tmp_path / "mac.fa"
    fasta.write_bytes(b">a\rACGTACGTAC\rACGT\r>b\rACGTTT\r")
    result = _cmx("predict", fasta, "--model", classifier_run, "-o", tmp_path / "p.tsv",
                  cwd=tmp_path)
    assert result.returncode == 1
    line = _one_line_error(result.stderr, "mac.fa", absent=("no sequence letters",))
    assert re.search(r"(?i)carriage|\\r|\bCR\b|line end|Mac", line), line


def _dwv_vcf(path: Path, rows: list, samples: bool = False) -> Path:
    header = ["##fileformat=VCFv4.2", f"##contig=<ID={CONTIG},length=10140>"]
    columns = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"
    if samples:
        header.append('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">')
        columns += "\tFORMAT\ts1"
    path.write_text("\n".join(header + [columns] + rows) + "\n")
    return path


def test_a_malformed_genotype_is_not_called_a_truncated_file(tmp_path, dwv, finetune_run):
    vcf = _dwv_vcf(tmp_path / "gt.vcf", [f"{CONTIG}\t14\t.\tC\tG\t.\t.\t.\tGT\t0/1",
                                         f"{CONTIG}\t72\t.\tA\tG\t.\t.\t.\tGT\tx/y"],
                   samples=True)
    result = _cmx("predict", vcf, "--reference", dwv / "DWV_NC_004830.2.fa", "--model",
                  finetune_run, "-o", tmp_path / "out.vcf", cwd=tmp_path)
    assert result.returncode == 1
    line = _one_line_error(result.stderr, "gt.vcf", absent=("truncated",))
    assert re.search(r"\bGT\b|genotype", line), line


def test_pos_0_is_not_called_past_the_contig_end(tmp_path, dwv, finetune_run):
    vcf = _dwv_vcf(tmp_path / "pos0.vcf", [f"{CONTIG}\t0\t.\tC\tG\t.\t.\t."])
    result = _cmx("predict", vcf, "--reference", dwv / "DWV_NC_004830.2.fa", "--model",
                  finetune_run, "-o", tmp_path / "out.vcf", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    _one_line_error(result.stderr, "pos0.vcf", "POS 0", absent=("passes the end",))


def test_a_latin1_byte_in_a_description_is_not_called_binary(tmp_path, classifier_run):
    fasta = tmp_path / "latin.fa"
    fasta.write_bytes(b">r1 caf\xe9 au lait\nACGTACGTAAAC\n>r2\nACGTTTAC\n")
    result = _cmx("predict", fasta, "--model", classifier_run, "-o", tmp_path / "p.tsv",
                  cwd=tmp_path)
    if result.returncode == 0:  # accepted
        assert [row[0] for row in _tsv_rows(tmp_path / "p.tsv")[1:]] == ["r1", "r2"]
    else:  # or rejected naming the record
        _one_line_error(result.stderr, "latin.fa", "r1", absent=("not text",))


def test_a_utf8_bom_at_the_start_of_a_fasta_is_ignored(tmp_path, classifier_run):
    fasta = tmp_path / "bom.fa"
    fasta.write_bytes(b"\xef\xbb\xbf>r1\nACGTACGTAAAC\n>r2\nACGTTTAC\n")
    result = _invoke("predict", fasta, "--model", classifier_run, "-o", tmp_path / "p.tsv")
    assert result.exit_code == 0, result.stderr
    assert [row[:2] for row in _tsv_rows(tmp_path / "p.tsv")[1:]] == [["r1", "12"], ["r2", "8"]]


def test_a_vcf_is_recognised_by_its_content_not_its_name(tmp_path, dwv, finetune_run):
    calls = tmp_path / "calls.txt"
    shutil.copy(dwv / "DWV_3genomes_vs_NC_004830.vcf", calls)
    output = tmp_path / "out.vcf"
    result = _invoke("predict", calls, "--reference", dwv / "DWV_NC_004830.2.fa", "--model",
                     finetune_run, "-o", output)
    assert result.exit_code == 0, result.stderr
    with pysam.VariantFile(str(output)) as scored:
        assert sum(1 for _ in scored) == 1698


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain") / "pre"
    fasta = out.parent / "lambda.fa"
    shutil.copy(DATA / "pretrain_lambda.fa", fasta)
    result = _invoke("pretrain", "--fasta", fasta, "--out", out, "--min-length", "64",
                     "--max-length", "256", "--tokens-per-epoch", "3000", "--validation-tokens",
                     "1000", "--track-size", "4", "--hidden-size", "16", "--decoder-track-size",
                     "2", "--decoder-hidden-size", "8", "--markov-order", "2", "--epochs", "1",
                     "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    return out


def test_a_corrupt_baselines_file_is_named_without_unsafe_advice(tmp_path, pretrain_run):
    run = tmp_path / "pre"
    shutil.copytree(pretrain_run, run)
    (run / "baselines.pt").write_bytes(b"garbage")
    result = _cmx("evaluate", "--model", run, "--fasta", pretrain_run.parent / "lambda.fa",
                  "--max-bases", "2000", cwd=tmp_path)
    assert result.returncode == 1
    _one_line_error(result.stderr, "baselines.pt", absent=("weights_only",))


def test_a_protocol_4_pickle_as_model_is_exactly_one_line(tmp_path, tiny):
    model = tmp_path / "model.pt"
    with open(model, "wb") as handle:
        pickle.dump({"state_dict": {}}, handle, protocol=4)
    result = _cmx("predict", tiny / "q.fa", "--model", model, cwd=tmp_path)
    assert result.returncode == 1
    _one_line_error(result.stderr, "model.pt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_a_gpu_is_a_usage_error(tmp_path, tiny, classifier_run):
    result = _cmx("predict", tiny / "q.fa", "--model", classifier_run, "--device", "cuda",
                  cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "cuda" in result.stderr.lower()


def test_ctrl_c_during_predict_says_what_was_interrupted(tmp_path, classifier_run):
    rng = np.random.default_rng(0)
    fasta = tmp_path / "big.fa"
    with open(fasta, "w") as handle:
        for number in range(48000):  # long enough that the interrupt lands mid-run
            handle.write(f">r{number}\n{''.join(rng.choice(list(BASES), 300))}\n")
    out = tmp_path / "out"
    out.mkdir()
    arguments = ["predict", fasta, "--model", classifier_run, "-o", out / "p.tsv"]
    process = start_cmx(*arguments, cwd=tmp_path)
    wait_until(process, lambda: bool(list(out.glob(".p.tsv.*"))), poll=0.02,
               what="the start of scoring")
    time.sleep(0.2)
    assert process.poll() is None, "the prediction ended before the interrupt"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    check_internal_error(arguments, stderr)
    assert process.returncode == 130
    lines = stderr.strip().splitlines()
    assert lines != ["Aborted."] and len(lines) == 1, stderr
    assert re.search(r"(?i)interrupt", lines[0]) and "predict" in lines[0], stderr
    assert re.search(r"(?i)nothing (was )?written|not written|no output", lines[0]), stderr
    assert os.listdir(out) == []


def _small_genome(root: Path, names: tuple, length: int) -> tuple[Path, Path]:
    """Contigs of ``length`` bp and an SNV every 10 bp, labelled 0 and 1 in turn."""
    rng = np.random.default_rng(0)
    contigs = {name: "".join(rng.choice(list(BASES), length)) for name in names}
    fasta = _write_fasta(root / "small.fa", contigs)
    rows = [(name, position + 1, ".", sequence[position],
             "A" if sequence[position] != "A" else "C", ".", ".", f"PATHOGENIC={number % 2}")
            for name, sequence in contigs.items()
            for number, position in enumerate(range(10, length - 10, 10))]
    vcf = root / "small.vcf"
    vcf.write_text(_vcf_text(rows, {name: length for name in names}, (
        '##INFO=<ID=PATHOGENIC,Number=1,Type=Integer,Description="label">',)))
    return fasta, vcf


def test_holding_out_the_only_contig_says_no_training_variants_are_left(tmp_path):
    fasta, vcf = _small_genome(tmp_path, ("chrA",), 400)
    result = _cmx("finetune", "--vcf", vcf, "--reference", fasta, "--label-field", "PATHOGENIC",
                  "--window", "33", "--test-contigs", "chrA", "--epochs", "1",
                  "--out", tmp_path / "ft", *TINY_FINETUNE, cwd=tmp_path)
    assert result.returncode != 0
    line = _one_line_error(result.stderr, "chrA", absent=("label (none)",))
    assert re.search(r"(?i)no training variants?|leaves? no (training )?variants?|"
                     r"no variants? (are )?left", line), line


def test_a_window_longer_than_every_contig_is_said_before_training(tmp_path):
    fasta, vcf = _small_genome(tmp_path, ("c1", "c2", "c3"), 300)
    out = tmp_path / "ft"
    result = _cmx("finetune", "--vcf", vcf, "--reference", fasta, "--label-field", "PATHOGENIC",
                  "--window", "1000", "--val-contigs", "c2", "--test-contigs", "c3",
                  "--epochs", "1", "--out", out, *TINY_FINETUNE, cwd=tmp_path)
    if result.returncode != 0:
        _one_line_error(result.stderr, "--window")
        assert not (out / "last.pt").exists()
    else:
        warnings = json.loads((out / "metrics.json").read_text())["warnings"]
        assert any("window" in w and "contig" in w for w in warnings), warnings
        assert "warning" in _last_line(result.stderr)


# --- 12. runs people can watch ---------------------------------------------------------------

def test_train_prints_timestamped_progress_lines_when_stderr_is_not_a_terminal(tiny, tmp_path):
    shown = _invoke(*_train_arguments(tiny, tmp_path / "shown", "--epochs", "2"))
    assert shown.exit_code == 0, shown.output
    lines = shown.stderr.strip().splitlines()
    stamped = [line for line in lines if TIMESTAMP.match(line)]
    assert len(stamped) >= 2, f"no timestamped line per epoch: {lines}"
    assert any("epoch" in line for line in stamped), stamped
    quiet = _invoke(*_train_arguments(tiny, tmp_path / "quiet", "--epochs", "2", "--quiet"))
    assert quiet.exit_code == 0, quiet.output
    assert len(quiet.stderr.strip().splitlines()) == 1
    assert quiet.stderr.startswith("cmx train: ")


THREADS_PROBE = """
import torch
print("threads", status, torch.get_num_threads())
"""


def test_predict_threads_caps_torch_threads(tmp_path, tiny, classifier_run):
    probe = run_cmx_and_probe(THREADS_PROBE, "predict", tiny / "q.fa", "--model", classifier_run,
                              "--threads", "1", "-o", tmp_path / "p.tsv", cwd=tmp_path)
    assert probe.stdout.split() == ["threads", "0", "1"], probe.stdout + probe.stderr


@pytest.mark.parametrize("command", ["train", "predict", "finetune", "pretrain"])
def test_every_heavy_command_accepts_threads(command):
    result = _invoke(command, "--threads", "1", "--help")
    assert result.exit_code == 0, result.output
    assert "--threads" in result.output
