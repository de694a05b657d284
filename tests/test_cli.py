"""The `cmx` command as users run it: help, exit codes, one-line errors, no tracebacks."""
import json
from pathlib import Path

import pysam
import pytest

from cmx_cli import __version__
from cmx_cli.cli import cli
from cmx_cli.pipelines import pretrain
from tests.helpers import run_cli, run_cmx


def test_every_folder_of_the_code_is_an_installed_package():
    from setuptools import find_packages

    root = Path(__file__).parent.parent
    folders = {".".join(path.relative_to(root).parts) for top in ("cmx_cli", "models")
               for path in [root / top, *(root / top).rglob("*")]
               if path.is_dir() and path.name != "__pycache__" and any(path.glob("*.py"))}
    assert folders <= set(find_packages(str(root), include=["cmx_cli", "cmx_cli.*", "models",
                                                            "models.*"]))


def test_version():
    result = run_cli("--version")
    assert result.exit_code == 0
    assert __version__ in result.output


@pytest.mark.parametrize("command", ["train", "pretrain", "finetune", "evaluate", "predict", "demo",
                                     "report", "explain"])
def test_help_ends_with_an_example(command):
    result = run_cli(command, "--help")
    assert result.exit_code == 0
    assert "Example: cmx " in result.output


@pytest.mark.parametrize("command, new, old, value", [
    ("predict", "--average-strands", "--rc", True),
    ("pretrain", "--no-flip-strands", "--no-rc", False),
    ("finetune", "--flip-strands", "--rc", True),
    ("bench", "--no-roll-reference", "--no-reference", False),
])
def test_renamed_options_keep_their_old_spelling_hidden(command, new, old, value, tmp_path):
    shown = run_cli(command, "--help").output
    assert new in shown and f"{old} " not in shown and f"{old}," not in shown
    parameter = next(p for p in cli.commands[command].params if new in p.opts + p.secondary_opts)
    fasta = tmp_path / "a.fa"
    fasta.write_text(">a\nACGT\n")
    required = {"predict": [str(fasta), "--model", str(tmp_path)], "bench": []}.get(
        command, ["--out", str(tmp_path / "run")])
    for flag in (new, old):
        context = cli.commands[command].make_context(command, required + [flag])
        assert context.params[parameter.name] is value, flag


@pytest.mark.parametrize("command, rate", [("pretrain", 3e-3), ("train", 1e-3), ("finetune", 1e-3)])
def test_pretraining_has_its_own_default_learning_rate(command, rate, tmp_path):
    context = cli.commands[command].make_context(command, ["--out", str(tmp_path / "run")])
    assert context.params["lr"] == rate
    assert f"[default: {rate}" in run_cli(command, "--help").output
    if command == "pretrain":  # the same default without the command line
        assert pretrain.PretrainConfig(fasta=("a.fa",), out="pre").training.learning_rate == rate


def test_train_and_predict_through_the_cli(data_dir, tmp_path):
    capsule = data_dir / "capsule_small"
    trained = run_cli(
        "train", "--fasta", f"{capsule / 'klebsiella.fa'}:Klebsiella",
        "--fasta", f"{capsule / 'acinetobacter.fa'}:Acinetobacter", "--out", str(tmp_path / "run"),
        "--track-size", "4", "--hidden-size", "16", "--epochs", "1", "--kmer-k", "3",
        "--device", "cpu")
    assert trained.exit_code == 0, trained.output
    assert trained.stdout == ""  # stdout is for data; train writes none
    assert "cmx train: test ROC-AUC" in trained.stderr
    predicted = run_cli("predict", str(capsule / "query.fa"), "--model",
                        str(tmp_path / "run"), "--device", "cpu")
    assert predicted.exit_code == 0, predicted.output
    lines = predicted.stdout.splitlines()
    assert lines[0].split("\t") == ["name", "length", "predicted", "p_Acinetobacter", "p_Klebsiella"]
    assert len(lines) == 21
    assert "cmx predict: 20 sequences" in predicted.stderr

    resumed = run_cli("train", "--resume", "--out", str(tmp_path / "run"),
                      "--epochs", "3", "--compile", "--checkpointing")
    assert resumed.exit_code == 2
    assert "drop --epochs (only" in " ".join(resumed.stderr.split())  # the others may change


def test_reversible_attention_is_a_usage_error(data_dir, tmp_path):
    result = run_cli("train", "--fasta", str(data_dir / "capsule_small" / "query.fa"),
                     "--arch", "transformer", "--reversible",
                     "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "--reversible is a ChordMixer option" in result.stderr


def test_held_out_shares_must_leave_training_data(data_dir, tmp_path):
    result = run_cli("train", "--fasta", str(data_dir / "capsule_small" / "query.fa"),
                     "--val-fraction", "0.6", "--test-fraction", "0.6",
                     "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "must be below 1" in result.stderr
    assert not (tmp_path / "run").exists()


def test_train_without_fasta_is_a_usage_error(tmp_path):
    result = run_cli("train", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "--fasta" in result.stderr


def _assert_one_line_error(result, *fragments):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Hint:" in lines[0]
    for fragment in fragments:
        assert fragment in lines[0]


def test_protein_fasta_is_a_one_line_error(data_dir, tmp_path):
    result = run_cmx("train", "--fasta", data_dir / "fasta_protein.fa", "--fasta",
                     data_dir / "capsule_small" / "klebsiella.fa", "--out", tmp_path / "run")
    _assert_one_line_error(result, "fasta_protein.fa", "record")


def test_vcf_needs_a_reference(data_dir, tmp_path):
    result = run_cli("predict", str(data_dir / "vcf" / "DWV_3genomes_vs_NC_004830.vcf"),
                     "--model", str(data_dir / "capsule_small" / "query.fa"))
    assert result.exit_code == 2
    assert "--reference" in result.stderr


def test_vcf_with_a_foreign_model_is_a_one_line_error(data_dir, tmp_path):
    model = tmp_path / "model.pt"
    model.write_text("x")
    result = run_cmx("predict", data_dir / "vcf" / "DWV_3genomes_vs_NC_004830.vcf", "--reference",
                     data_dir / "vcf" / "DWV_NC_004830.2.fa", "--model", model, "-o", tmp_path / "out.vcf")
    _assert_one_line_error(result, "model.pt", "not a cmx checkpoint")
    assert not (tmp_path / "out.vcf").exists()


def test_foreign_model_file_is_a_one_line_error(data_dir, tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(b"\x00\x01 not a checkpoint")
    result = run_cmx("predict", data_dir / "capsule_small" / "query.fa", "--model", model)
    _assert_one_line_error(result, "model.pt", "not a cmx checkpoint")


def test_debug_shows_the_traceback(tmp_path):
    model = tmp_path / "model.pt"
    model.write_text("x")
    fasta = tmp_path / "x.fa"
    fasta.write_text(">a\nACGT\n")
    result = run_cmx("--debug", "predict", fasta, "--model", model)
    assert result.returncode == 1
    assert "Traceback" in result.stderr


@pytest.mark.slow
def test_demo_runs_from_any_directory(tmp_path):
    # The Quick start's first command: the data ship inside the package.
    result = run_cmx("demo", "--out", tmp_path / "demo", cwd=tmp_path, timeout=1200)
    assert result.returncode == 0, result.stderr
    demo = tmp_path / "demo"
    for line in ("cmx pretrain: validation", "cmx train: test ROC-AUC", "cmx predict: 80 sequences",
                 "cmx finetune: test ROC-AUC", "cmx predict: Scored 2,652 of 2,652 alleles",
                 "cmx report: 6 figure(s) of 3 run(s)",
                 f"Report: {tmp_path / 'demo' / 'report.html'}"):
        assert line in result.stderr, line
    # Each step shows the command that redoes it, also when stderr is not a terminal.
    assert result.stderr.count("  $ cmx ") == 6
    assert (tmp_path / "demo" / "report.roc.tsv").is_file()
    rows = (demo / "query_predictions.tsv").read_text().splitlines()
    assert len(rows) == 81
    with pysam.VariantFile(str(demo / "codon_scored.vcf.gz")) as scored:
        scores = [record.info["CMX"][0] for record in scored]
    assert len(scores) == 2652 and all(0.0 <= score <= 1.0 for score in scores)
    assert (demo / "codon_scored.vcf.gz.tbi").is_file()
    for run in ("pretrain", "run", "finetune"):
        assert (demo / run / "model.pt").is_file() and (demo / run / "metrics.json").is_file()
    # The printed commands are the ones that ran: what the scored VCF records, and every
    # setting a run saved.
    printed = [line[len("  $ "):] for line in result.stderr.splitlines() if line.startswith("  $ cmx ")]
    with pysam.VariantFile(str(demo / "codon_scored.vcf.gz")) as scored:
        recorded = [line.value for line in scored.header.records if line.key == "cmx_command"]
    assert recorded == [printed[4]]
    saved = json.loads((demo / "pretrain" / "config.json").read_text())
    assert f"--validation-tokens {saved['validation_tokens']}" in printed[0]
    assert f"Demo data copied to {demo / 'data'}" in result.stderr
