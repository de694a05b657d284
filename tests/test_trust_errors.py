"""Issue 23, "every error a user can cause says what happened": command-line tests.

Numeric options that are not finite numbers, read-only and full outputs, file-size limits,
damaged runs given to `cmx report`, very long FASTA names and `evaluate --max-bases`. Each
test runs cmx as a user does, through :func:`tests.helpers.run_cli` or
:func:`tests.helpers.run_cmx`, which fail any call that ends in an internal error.
"""
from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import click
import pyfaidx
import pytest

from cmx_cli.cli import cli
from tests.helpers import (
    check_internal_error, cmx_command, cmx_environment, fill_disk, run_cli, run_cmx,
    write_gc_classes)

TINY_TRAIN = ["--track-size", "4", "--hidden-size", "16", "--max-len", "64", "--kmer-k", "3",
              "--dropout", "0", "--device", "cpu"]
TINY_PRETRAIN = ["--track-size", "4", "--hidden-size", "16", "--decoder-track-size", "4",
                 "--decoder-hidden-size", "16", "--max-length", "64", "--min-length", "32",
                 "--tokens-per-epoch", "2000", "--validation-tokens", "1000",
                 "--markov-order", "2", "--dropout", "0", "--device", "cpu"]


def _error_line(output: str) -> str:
    """The one ``Error:`` line of a failed command (progress lines aside)."""
    lines = [line for line in output.strip().splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, output
    assert "internal error" not in lines[0] and "Traceback" not in output, output
    return lines[0]


# --- shared data and runs --------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """Two classes of short sequences (GC-rich A, AT-rich B) and a query file."""
    root = write_gc_classes(tmp_path_factory.mktemp("tiny"), "neutral")
    pyfaidx.Fasta(str(root / "q.fa")).close()  # its index, before any test limits writes
    return root


@pytest.fixture(scope="module")
def classifier_run(tiny, tmp_path_factory) -> Path:
    """A tiny `cmx train` run, trained once for the module."""
    out = tmp_path_factory.mktemp("classifier") / "run"
    result = run_cli("train", "--fasta", f"{tiny / 'a.fa'}:A", "--fasta", f"{tiny / 'b.fa'}:B",
                     "--out", out, "--epochs", "2", "--quiet", *TINY_TRAIN)
    assert result.exit_code == 0, result.output
    return out


# --- NaN and infinity in numeric options ----------------------------------------------------

def _float_options() -> list[tuple[str, click.Option]]:
    """Every float option of every command, found by walking the command line itself, so
    that an option added later is checked too."""
    return [(name, param) for name, command in sorted(cli.commands.items())
            for param in command.params
            if isinstance(param, click.Option)
            and isinstance(param.type, click.types.FloatParamType)]


def test_the_walk_finds_the_float_options():
    found = {(name, param.opts[0]) for name, param in _float_options()}
    assert {("train", "--lr"), ("pretrain", "--mask"), ("finetune", "--head-dropout"),
            ("bench", "--attention-seconds"), ("evaluate", "--mask")} <= found


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "infinity"])
@pytest.mark.parametrize("command,param", _float_options(),
                         ids=lambda item: item if isinstance(item, str) else item.opts[0])
def test_no_float_option_takes_nan_or_infinity(command, param, value, tmp_path):
    out = tmp_path / "out"
    arguments = [command, f"{param.opts[0]}={value}"]
    names = {p.name for p in cli.commands[command].params}
    if "out" in names:
        arguments += ["--out", out]
    if "output" in names:
        arguments += ["--output", out]
    if "threads" in names:  # a tripwire: a command that took the value fails here, not later
        arguments += ["--threads", "0"]
    result = run_cli(*arguments)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{param.opts[0]}'" in result.output, result.output
    assert "finite" in result.output or "range" in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_nan_learning_rate_is_refused_before_the_run_directory_is_made(tiny, tmp_path):
    result = run_cli("train", "--fasta", f"{tiny / 'a.fa'}:A", "--fasta", f"{tiny / 'b.fa'}:B",
                     "--out", tmp_path / "run", "--lr", "nan", *TINY_TRAIN)
    assert result.exit_code == 2, result.output
    assert "'--lr': 'nan' is not a finite number" in result.output
    assert not (tmp_path / "run").exists(), "split.tsv was written before the error"


@pytest.mark.parametrize("command", ["train", "pretrain", "finetune", "evaluate"])
def test_a_negative_seed_is_a_usage_error(command, tmp_path):
    result = run_cli(command, "--seed", "-5", "--out", tmp_path / "out") \
        if command != "evaluate" else run_cli(command, "--seed", "-5")
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--seed': -5 is not in the range 0<=x" in result.output
    assert list(tmp_path.iterdir()) == []


def test_every_seed_option_is_bounded():
    for name, command in cli.commands.items():
        for param in command.params:
            if param.name == "seed":
                assert isinstance(param.type, click.IntRange), name
                assert param.type.min == 0 and param.type.max is not None, name


def test_bench_lengths_refuse_infinity():
    result = run_cli("bench", "--lengths", "1000,inf")
    assert result.exit_code == 2, result.output
    assert "is not a comma-separated list of lengths" in result.output


# --- outputs that cannot be written: one message for every output --------------------------

def _command(name: str, tiny: Path, run: Path, output: Path) -> list:
    return {"predict": ["predict", tiny / "q.fa", "--model", run, "-o", output],
            "explain": ["explain", tiny / "q.fa", "--model", run, "--region", "q0:1-20",
                        "-o", output, "--plot"],
            "report": ["report", run, "-o", output]}[name]


@pytest.mark.parametrize("name,output", [("predict", "p.tsv"), ("explain", "e.tsv"),
                                         ("report", "report.html"), ("report", "report.png"),
                                         ("predict-vcf", "scored.vcf.gz")])
def test_a_read_only_disk_output_directory_is_said_in_one_line(name, output, tiny, classifier_run,
                                                          read_only_disk, request):
    if name == "predict-vcf":  # a zero-shot score of SNVs on the pretraining records
        pretrained = request.getfixturevalue("pretrain_run")
        command = ["predict", pretrained / "snvs.vcf", "--reference", pretrained / "genes.fa",
                   "--model", pretrained / "pre", "-o", read_only_disk / output]
        result = run_cli(*command)
    else:
        result = run_cli(*_command(name, tiny, classifier_run, read_only_disk / output))
    assert result.exit_code == 1, result.output
    line = _error_line(result.output)
    assert str(read_only_disk) in line and "the file system is read-only" in line, line
    assert "nothing was written" in line and "Hint: write the output to another" in line, line


def test_demo_into_a_read_only_disk_directory_is_said_in_one_line(read_only_disk):
    result = run_cli("demo", "--out", read_only_disk / "demo", "--device", "cpu")
    assert result.exit_code == 1, result.output
    assert "the file system is read-only" in _error_line(result.output)


def _file_size_limit(limit: int):
    """A ``preexec_fn`` that limits the size of any file the process writes (ulimit -f)."""
    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_files


@pytest.mark.parametrize("name,output,limit", [
    ("predict", "p.tsv", 100), ("report", "report.html", 4096),  # the TSVs fit, the page not
    ("train", "run", 100), ("fasta-index", "q.fa.fai", 20)])
def test_a_file_size_limit_is_not_a_full_device(name, output, limit, tiny, classifier_run,
                                                tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    if name == "train":
        command = ["train", "--fasta", f"{tiny / 'a.fa'}:A", "--fasta", f"{tiny / 'b.fa'}:B",
                   "--out", target / output, *TINY_TRAIN]
    elif name == "fasta-index":  # the index of a FASTA that has none yet
        shutil.copy(tiny / "q.fa", target / "q.fa")
        command = ["predict", target / "q.fa", "--model", classifier_run, "-o", "-"]
    else:
        command = _command(name, tiny, classifier_run, target / output)
    result = run_cmx(*command, cwd=tmp_path, env={"PYTHONDONTWRITEBYTECODE": "1"},
                     preexec_fn=_file_size_limit(limit))
    assert result.returncode == 1, result.stderr
    line = _error_line(result.stderr)
    assert "device is full" not in line, line
    assert f"Error: {target / output.split('.')[0]}" in line and "ulimit -f" in line, line
    assert "cannot write, the file exceeds the file-size limit (File too large)" in line, line
    left = sorted(path.name for path in target.iterdir())
    if name in ("predict", "report", "train"):  # train: no half of split.tsv, no run dir
        assert left == [], f"a file of the output was left behind: {left}"
    if name == "fasta-index":
        assert left == ["q.fa"], left


def test_standard_output_on_a_full_device_is_said_in_one_line(tiny, classifier_run, tmp_path):
    arguments = ["predict", tiny / "q.fa", "--model", classifier_run, "-o", "-"]
    with open("/dev/full", "w") as full:  # run_cmx captures stdout; this test cannot
        result = subprocess.run(cmx_command(*arguments), stdout=full, stderr=subprocess.PIPE,
                                text=True, cwd=tmp_path, env=cmx_environment(), timeout=300)
    check_internal_error(arguments, result.stderr)
    assert result.returncode == 1, result.stderr
    assert "standard output: cannot write, the device is full" in _error_line(result.stderr)


def test_report_on_a_full_disk_writes_none_of_its_files(classifier_run, small_disk):
    fill_disk(small_disk, leave=100_000)  # room for the TSVs, not for the page
    result = run_cli("report", classifier_run, "-o", small_disk / "report.html")
    assert result.exit_code == 1, result.output
    line = _error_line(result.output)
    assert "the device is full" in line and "none of the report's 5 files was written" in line
    assert sorted(path.name for path in small_disk.iterdir()) == ["filler"]


# --- cmx report on damaged runs --------------------------------------------------------------

@pytest.fixture
def damaged(classifier_run, tmp_path) -> Path:
    """A copy of the classifier run, to damage."""
    run = tmp_path / "run"
    shutil.copytree(classifier_run, run)
    return run


@pytest.mark.parametrize("cut,warning", [
    ("in-a-row", "line 3 has 5 of 12 columns (cut short or edited); the training curves "
                 "leave out 1 damaged line(s)"),
    ("in-the-header", "holds no epoch (cut short?); the report has no training curves"),
    ("binary", "cannot be read (it is not a text table); the report has no training curves")],
    ids=["in-a-row", "in-the-header", "binary"])
def test_report_warns_about_a_damaged_log(cut, warning, damaged, tmp_path):
    log = damaged / "log.tsv"
    text = log.read_bytes()
    lines = text.splitlines(keepends=True)
    log.write_bytes({"in-a-row": b"".join(lines[:2]) + lines[2][:20],
                     "in-the-header": lines[0][:30],
                     "binary": b"\x1f\x8b\x08\x04\x00\xff" * 20}[cut])
    result = run_cli("report", damaged, "-o", tmp_path / "report.html")
    assert result.exit_code == 0, result.output
    assert f"Warning: {log}: {warning}" in result.output, result.output
    rows = (tmp_path / "report.training.tsv")
    if cut == "in-a-row":  # the first epoch is still drawn
        assert [line.split("\t")[1] for line in rows.read_text().splitlines()[1:]] == ["1"] * 4
    else:
        assert not rows.exists()


@pytest.mark.parametrize("damage,message", [
    ("nan", "line 3 (NAME) holds a probability that is not a number from 0 to 1 (nan)"),
    ("two", "line 3 (NAME) holds a probability that is not a number from 0 to 1 (2.0)"),
    ("binary", "not a held-out predictions table (bytes that are not UTF-8)"),
    ("nul", "line 2 () does not fit the header: 1 columns")],
    ids=["nan", "two", "binary", "nul"])
def test_report_names_a_damaged_predictions_table(damage, message, damaged, tmp_path):
    table = damaged / "test_predictions.tsv"
    lines = table.read_text().splitlines(keepends=True)
    fields = lines[2].split("\t")
    if damage in ("nan", "two"):
        fields[5] = {"nan": "nan", "two": "2"}[damage]
        lines[2] = "\t".join(fields)
        table.write_text("".join(lines))
    else:
        table.write_bytes({"binary": b"\x1f\x8b\x08\x04\xff\xfe" * 50,
                           "nul": lines[0].encode() + b"test\0\0\0\n"}[damage])
    result = run_cli("report", damaged, "-o", tmp_path / "report.html")
    assert result.exit_code == 1, result.output
    line = _error_line(result.output)
    assert f"{table}: {message.replace('NAME', fields[1])}" in line, line
    assert not list(tmp_path.glob("report*"))


# --- smaller ones ----------------------------------------------------------------------------

LONG_NAME = "x" * 2_000_000


def test_a_fresh_index_of_a_two_megabyte_header_line_is_used(classifier_run, tmp_path):
    fasta = tmp_path / "long.fa"
    fasta.write_text(f">{LONG_NAME} description\n{'ACGT' * 12}\n>short\n{'ACGTTG' * 8}\n")
    result = run_cli("predict", fasta, "--model", classifier_run, "-o", tmp_path / "p.tsv")
    assert result.exit_code == 0, result.output[:2000]
    assert "does not describe" not in result.output, result.output[:2000]
    assert LONG_NAME not in result.output and len(result.output) < 2000, result.output[:2000]
    assert (tmp_path / "long.fa.fai").read_text().startswith(LONG_NAME + "\t48\t")
    rows = (tmp_path / "p.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in rows[1:]] == [LONG_NAME, "short"]


def test_a_message_shortens_a_very_long_record_name(classifier_run, tmp_path):
    fasta = tmp_path / "bad.fa"
    fasta.write_text(f">{LONG_NAME}\nACGTEFIL\n")
    result = run_cli("predict", fasta, "--model", classifier_run, "-o", tmp_path / "p.tsv")
    assert result.exit_code == 1
    line = _error_line(result.output)
    assert f"record '{'x' * 60}… (2,000,000 characters)': invalid letter 'E'" in line, line[:300]
    assert len(line) < 400, line[:300]


@pytest.fixture(scope="module")
def pretrain_run(tiny, tmp_path_factory) -> Path:
    """A tiny `cmx pretrain` run on the two classes' sequences (records of 40-63 bp)."""
    root = tmp_path_factory.mktemp("pretrain")
    genome = root / "genes.fa"
    genome.write_text((tiny / "a.fa").read_text() + (tiny / "b.fa").read_text())
    result = run_cli("pretrain", "--fasta", genome, "--out", root / "pre", "--epochs", "1",
                     "--quiet", *TINY_PRETRAIN)
    assert result.exit_code == 0, result.output
    records = dict(line.split("\n", 1) for line in genome.read_text().split(">")[1:])
    rows = [f"{name}\t{position}\t.\t{records[name][position - 1]}\t"
            f"{'A' if records[name][position - 1] != 'A' else 'C'}\t.\t.\t."
            for name in ("a0", "a1") for position in (10, 20)]
    (root / "snvs.vcf").write_text("\n".join(
        ["##fileformat=VCFv4.2", *(f"##contig=<ID={name},length={len(records[name]) - 1}>"
                                   for name in ("a0", "a1")),
         "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO", *rows]) + "\n")
    return root


@pytest.mark.parametrize("bases", [1, 7, 100])
def test_evaluate_scores_at_most_the_bases_asked_for(bases, pretrain_run):
    result = run_cli("evaluate", "--model", pretrain_run / "pre", "--fasta",
                     pretrain_run / "genes.fa", "--max-bases", bases, "--mask", "0.99", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    scored = sum(metrics["model"]["by_corruption"][kind]["n"]
                 for kind in ("mask", "random", "kept"))
    assert 0 < scored <= bases, metrics["model"]
