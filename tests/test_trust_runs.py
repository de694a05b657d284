"""Issue 23, run directories and resume: what `train`, `pretrain` and `finetune` write, and what
a `--resume` trusts.

Each test runs cmx's command line (``run_cli`` in this process; ``run_cmx`` or a subprocess
where a real entry point, a signal or a kill matters) and failed on the main branch of the day
it was written (75ef33f), for the reason in its name.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import DATA
from tests.helpers import (
    check_internal_error, run_cli, run_cmx, start_cmx, wait_until, write_gc_classes)

TINY_TRAIN = ["--track-size", "4", "--hidden-size", "16", "--max-len", "64", "--kmer-k", "3",
              "--dropout", "0", "--device", "cpu"]
TINY_PRETRAIN = ["--min-length", "64", "--max-length", "256", "--tokens-per-epoch", "3000",
                 "--validation-tokens", "1000", "--track-size", "4", "--hidden-size", "16",
                 "--decoder-track-size", "2", "--decoder-hidden-size", "8", "--markov-order",
                 "2", "--device", "cpu"]
#: A learning rate too small to change a float32 weight: every validation score repeats the
#: first, so ``--patience 1`` ends the run after its second epoch.
STILL = ["--lr", "1e-12", "--patience", "1"]


# --- helpers and shared runs -----------------------------------------------------------------

def _snapshot(directory: Path) -> dict:
    """Every file of a run directory but its lock, with its mtime and bytes."""
    return {path.name: (path.stat().st_mtime_ns, path.read_bytes())
            for path in sorted(directory.iterdir()) if path.name != ".cmx.lock"}


def _one_line_error(output: str, *fragments: str) -> str:
    """The house rule for errors: one 'Error: ... Hint: ...' line (after timestamped notes)."""
    lines = [line for line in output.strip().splitlines()
             if not re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", line)]
    assert len(lines) == 1, output
    assert lines[0].startswith("Error: ") and "Hint:" in lines[0], lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _log_epochs(run: Path) -> list[str]:
    rows = (run / "log.tsv").read_text().splitlines()
    assert rows[0].startswith("epoch\t"), rows
    return [row.split("\t")[0] for row in rows[1:]]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """Two classes of short sequences (GC-rich A, AT-rich B)."""
    return write_gc_classes(tmp_path_factory.mktemp("tiny"))


def _train_arguments(data: Path, out: Path, *extra) -> list:
    return ["train", "--fasta", f"{data / 'a.fa'}:A", "--fasta", f"{data / 'b.fa'}:B",
            "--out", out, *TINY_TRAIN, *extra]


def _copy_data(tiny: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(tiny, data)
    return data


@pytest.fixture(scope="module")
def stopped_run(tiny, tmp_path_factory) -> Path:
    """A run of 3 epochs stopped by --max-time after one step (resumable), with its inputs
    beside it in ``data/``: copy the whole folder to change anything."""
    home = tmp_path_factory.mktemp("stopped")
    data = _copy_data(tiny, home)
    result = run_cli(*_train_arguments(data, home / "run", "--epochs", "3", "--max-time",
                                       "1e-9", "--local-context", "0"))
    assert result.exit_code == 0, result.output
    assert "stopped by max-time" in result.output
    return home


def _stopped_copy(stopped_run: Path, tmp_path: Path) -> Path:
    """A private copy of the stopped run and its data (config.json names the data's paths)."""
    home = tmp_path / "home"
    shutil.copytree(stopped_run, home, symlinks=True)
    for name in ("config.json", "split.tsv", "inputs.json"):  # the data's paths
        path = home / "run" / name
        if path.exists():
            path.write_text(path.read_text().replace(str(stopped_run), str(home)))
    return home


# --- 1. a lock that is a symbolic link -------------------------------------------------------

def test_a_lock_that_is_a_symbolic_link_never_writes_its_target(stopped_run, tmp_path):
    home = _stopped_copy(stopped_run, tmp_path)
    precious = tmp_path / "notes.txt"
    precious.write_text("a user's notes\n" * 100)
    before = precious.stat().st_mtime_ns
    lock = home / "run" / ".cmx.lock"
    lock.unlink()
    lock.symlink_to(precious)
    result = run_cli("train", "--resume", "--out", home / "run", "--max-time", "1e-9")
    assert result.exit_code == 0, result.output
    assert precious.read_text() == "a user's notes\n" * 100, "the lock wrote through its link"
    assert precious.stat().st_mtime_ns == before
    assert not lock.is_symlink() and lock.is_file(), "the run did not take a lock of its own"


def test_a_lock_that_is_not_a_regular_file_is_refused_by_name(stopped_run, tmp_path):
    home = _stopped_copy(stopped_run, tmp_path)
    lock = home / "run" / ".cmx.lock"
    lock.unlink()
    os.mkfifo(lock)  # opened for writing by mistake, a pipe would block or fail obscurely
    before = _snapshot(home / "run")
    result = run_cli("train", "--resume", "--out", home / "run", "--max-time", "1e-9")
    assert result.exit_code == 1, result.output
    _one_line_error(result.output, str(lock), "not a regular file")
    assert _snapshot(home / "run") == before


# --- 2. a run directory copied as links ------------------------------------------------------

@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_a_run_copied_as_links_resumes_into_files_of_its_own(link, stopped_run, tmp_path):
    home = _stopped_copy(stopped_run, tmp_path)
    original = home / "run"
    copy = tmp_path / "copy"
    copy.mkdir()
    for entry in original.iterdir():  # `cp -rs original copy` (or `cp -al`)
        if link == "symbolic":
            (copy / entry.name).symlink_to(entry)
        else:
            os.link(entry, copy / entry.name)
    before = _snapshot(original)
    result = run_cli("train", "--resume", "--out", copy, "--max-time", "1e-9")
    assert result.exit_code == 0, result.output
    assert _snapshot(original) == before, "resuming the copy changed the original run"
    assert _log_epochs(copy) == ["1", "2"] and _log_epochs(original) == ["1"]
    for entry in copy.iterdir():
        assert not entry.is_symlink() and entry.stat().st_nlink == 1, \
            f"{entry.name} of the copy is still a link"


# --- 5. resuming a finished run --------------------------------------------------------------

def _check_finished(arguments: list, run: Path, reason: str) -> None:
    before = _snapshot(run)
    result = run_cli(*arguments)
    assert result.exit_code == 0, result.output
    assert "finished" in result.output and reason in result.output, result.output
    assert _snapshot(run) == before, "resuming a finished run changed its files"


def test_resuming_a_run_that_early_stopping_ended_changes_nothing(tiny, tmp_path):
    run = tmp_path / "pat"
    result = run_cli(*_train_arguments(tiny, run, "--epochs", "6", *STILL))
    assert result.exit_code == 0, result.output
    assert "stopped by early-stopping" in result.output and _log_epochs(run) == ["1", "2"]
    _check_finished(["train", "--resume", "--out", run], run, "early stopping")
    # Neither does a longer --max-time: a finished run stays finished.
    _check_finished(["train", "--resume", "--out", run, "--max-time", "60"], run,
                    "early stopping")


def test_resuming_a_run_whose_epochs_all_ran_changes_nothing(stopped_run, tmp_path):
    home = _stopped_copy(stopped_run, tmp_path)
    run = home / "run"
    result = run_cli("train", "--resume", "--out", run, "--max-time", "60")  # epochs 2 and 3
    assert result.exit_code == 0, result.output
    assert _log_epochs(run) == ["1", "2", "3"]
    _check_finished(["train", "--resume", "--out", run], run, "all 3 epochs ran")


def test_resuming_a_pretraining_run_that_early_stopping_ended_changes_nothing(tmp_path):
    fasta = tmp_path / "lambda.fa"
    shutil.copy(DATA / "pretrain_lambda.fa", fasta)
    run = tmp_path / "pre"
    result = run_cli("pretrain", "--fasta", fasta, "--out", run, "--epochs", "6", *STILL,
                     *TINY_PRETRAIN)
    assert result.exit_code == 0, result.output
    assert _log_epochs(run) == ["1", "2"]
    _check_finished(["pretrain", "--resume", "--out", run], run, "early stopping")


def test_a_finished_run_killed_during_its_evaluation_is_evaluated_not_trained(
        stopped_run, tmp_path):
    home = _stopped_copy(stopped_run, tmp_path)
    run = home / "run"
    assert run_cli("train", "--resume", "--out", run, "--max-time", "60").exit_code == 0
    (run / "metrics.json").unlink()  # killed after its last epoch, before metrics.json
    last = (run / "last.pt").read_bytes()
    result = run_cli("train", "--resume", "--out", run)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "metrics.json").read_text())["training"]["epochs_completed"] == 3
    assert _log_epochs(run) == ["1", "2", "3"] and (run / "last.pt").read_bytes() == last


# --- 8. resume checks the inputs' content ----------------------------------------------------

def test_resume_refuses_a_training_fasta_whose_content_changed(stopped_run, tmp_path):
    home = _stopped_copy(stopped_run, tmp_path)
    fasta = home / "data" / "a.fa"
    lines = fasta.read_text().splitlines(keepends=True)
    lines[1] = ("T" if lines[1][0] != "T" else "A") + lines[1][1:]  # one base, same length
    fasta.write_text("".join(lines))
    before = _snapshot(home / "run")
    result = run_cli("train", "--resume", "--out", home / "run", "--max-time", "1e-9")
    assert result.exit_code == 1, result.output
    _one_line_error(result.output, str(fasta), "changed")
    assert _snapshot(home / "run") == before


def test_a_run_made_before_input_digests_resumes_with_one_warning(stopped_run, tmp_path):
    home = _stopped_copy(stopped_run, tmp_path)
    (home / "run" / "inputs.json").unlink()
    result = run_cli("train", "--resume", "--out", home / "run", "--max-time", "1e-9")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "inputs.json" in line]
    assert len(warnings) == 1 and "Warning:" in warnings[0], result.output
    assert (home / "run" / "inputs.json").is_file(), "the digests are not kept from now on"


# --- 11. resume from the checkpoint's model config -------------------------------------------

def test_a_run_made_before_the_local_stem_resumes_as_the_same_network(stopped_run, tmp_path):
    # A run written before `local_radius` existed: neither its config.json nor its last.pt
    # name the field, and its network is the paper's (no local stem). Today's default is 4.
    home = _stopped_copy(stopped_run, tmp_path)
    run = home / "run"
    config = json.loads((run / "config.json").read_text())
    del config["shape"]["local_radius"]
    (run / "config.json").write_text(json.dumps(config, indent=2))
    payload = torch.load(run / "last.pt", weights_only=True)
    del payload["model_config"]["encoder"]["local_radius"]
    torch.save(payload, run / "last.pt")
    names = sorted(payload["state_dict"])
    result = run_cli("train", "--resume", "--out", run, "--max-time", "1e-9")
    assert result.exit_code == 0, result.output
    resumed = torch.load(run / "last.pt", weights_only=True)
    assert sorted(resumed["state_dict"]) == names
    assert resumed["model_config"]["encoder"]["local_radius"] == 0
    assert _log_epochs(run) == ["1", "2"]


# --- kill -9 while a run writes its first files ----------------------------------------------

def test_a_run_killed_before_its_first_checkpoint_restarts_with_the_same_command(tiny, tmp_path):
    run = tmp_path / "run"
    arguments = _train_arguments(tiny, run, "--epochs", "1")
    assert run_cli(*arguments).exit_code == 0
    # What a kill -9 during the first epoch's checkpoints leaves: the settings, the log row
    # and best model of epoch 1, and half a last.pt under its temporary name.
    for name in ("last.pt", "metrics.json", "test_predictions.tsv"):
        (run / name).unlink()
    (run / ".last.pt.k9x2ab7q.tmp").write_bytes(b"\0" * 4096)
    resumed = run_cli("train", "--resume", "--out", run)
    assert resumed.exit_code == 1
    _one_line_error(resumed.output, "same command", "without --resume")
    again = run_cli(*arguments)  # the same command
    assert again.exit_code == 0, again.output
    assert not list(run.glob(".*.tmp")), "the killed run's temporary file stayed"
    assert _log_epochs(run) == ["1"] and (run / "metrics.json").is_file()


def test_a_log_row_whose_last_pt_a_kill_cut_short_is_not_written_twice(stopped_run, tmp_path):
    home = _stopped_copy(stopped_run, tmp_path)
    log = home / "run" / "log.tsv"
    rows = log.read_text().splitlines(keepends=True)
    log.write_text("".join(rows) + "2" + rows[1][1:])  # epoch 2's row, then the kill
    result = run_cli("train", "--resume", "--out", home / "run", "--max-time", "1e-9")
    assert result.exit_code == 0, result.output
    assert _log_epochs(home / "run") == ["1", "2"]


def test_a_real_kill_9_during_the_first_epoch_leaves_a_restartable_run(tiny, tmp_path):
    run = tmp_path / "run"
    arguments = _train_arguments(tiny, run, "--epochs", "1", "--max-tokens", "256")
    process = start_cmx(*arguments, cwd=tmp_path)
    try:
        # Killed between the first epoch's best model and its last.pt (which is written
        # last, through a temporary file, and synced to disk: a window of milliseconds).
        wait_until(process, (run / "model.pt").exists, timeout=180, poll=0.0005,
                   what="model.pt")
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    if (run / "last.pt").exists():
        pytest.skip("the first epoch's last.pt was written before the kill")
    again = run_cmx(*arguments, cwd=tmp_path)  # the same command
    assert again.returncode == 0, again.stderr
    assert (run / "metrics.json").is_file() and _log_epochs(run) == ["1"]
    assert not list(run.glob(".*.tmp"))


# --- pretrain's Ctrl-C gives train's resume hint ---------------------------------------------

def test_ctrl_c_of_pretrain_says_how_to_resume_it(tmp_path):
    fasta = tmp_path / "lambda.fa"
    shutil.copy(DATA / "pretrain_lambda.fa", fasta)
    run = tmp_path / "pre"
    # One short epoch, then seconds of evaluation (the Markov baseline is fitted on 2 million
    # bases): the interrupt lands there, after the loop's steps.
    arguments = ["pretrain", "--fasta", fasta, "--out", run, "--epochs", "1", *TINY_PRETRAIN]
    process = start_cmx(*arguments, cwd=tmp_path)
    try:
        wait_until(process, (run / "last.pt").exists, timeout=180, what="last.pt")
        time.sleep(0.2)
        assert process.poll() is None, "the run ended before the interrupt"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    check_internal_error(arguments, stderr)
    assert process.returncode == 130, stderr
    last_line = stderr.strip().splitlines()[-1]
    assert f"`cmx pretrain --resume --out {run}`" in last_line, stderr
    assert not (run / "metrics.json").exists()
    resumed = run_cli("pretrain", "--resume", "--out", run)  # the hint holds: it evaluates
    assert resumed.exit_code == 0, resumed.output
    assert _log_epochs(run) == ["1"] and (run / "metrics.json").is_file()
