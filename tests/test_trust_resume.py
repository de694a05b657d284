"""Issue 23, case 9: a run stopped by a real signal and resumed in a new process ends with the
very weights, optimizer state, schedule and log of a run that was never stopped.

The way users hit it: ``cmx train --threads 1`` in its own process, Ctrl-C (SIGINT) or a
scheduler's SIGTERM half-way through an epoch, then ``cmx train --resume`` in a new process,
without typing ``--threads`` again. Dropout is on, so that the random numbers of the resumed
steps are checked too, and the batches are shuffled anew every epoch.

Before the fix, the resume ran on every core (torch's default) instead of the run's one thread:
torch then sums in another order, and 34 of 42 tensors of last.pt differed by up to 6e-8 (the
issue saw 74 of 78 by up to 2.4e-7). SIGTERM killed the run at once, and a Ctrl-C threw away
the steps of the unfinished epoch, or, landing between log.tsv's row and last.pt, the epoch
that log.tsv had just reported.
"""
from __future__ import annotations

import csv
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import check_internal_error, run_cmx, start_cmx, wait_until

BASES = "ACGT"
#: Five epochs of 12 steps of 42 sequences, all of one length (a new shape costs the CPU
#: kernels time on its first use, which would make the first epoch much slower than the
#: others). One thread: the resume is not told it again, as users do, and must keep it (with
#: 2,016 tokens a batch, torch sums in another order on two threads than on one).
TRAIN = ["--track-size", "4", "--hidden-size", "16", "--max-len", "64", "--kmer-k", "3",
         "--dropout", "0.1", "--max-tokens", "2048", "--epochs", "5", "--seed", "5",
         "--device", "cpu", "--threads", "1"]
#: log.tsv columns that measure time, not training.
TIMING = {"tokens_per_second", "seconds"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Two classes of 300 sequences of 48 bp each (GC-rich A, AT-rich B)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(11)

    def sequence(gc: float) -> str:
        weights = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
        return "".join(rng.choice(list(BASES), 48, p=weights))

    for name, gc in (("a", 0.6), ("b", 0.4)):
        (root / f"{name}.fa").write_text(
            "".join(f">{name}{i}\n{sequence(gc)}\n" for i in range(300)))
    return root


def _train_arguments(data: Path, out: Path) -> list:
    return ["train", "--fasta", f"{data / 'a.fa'}:A", "--fasta", f"{data / 'b.fa'}:B",
            "--out", out, "--quiet", *TRAIN]


@pytest.fixture(scope="module")
def whole(data, tmp_path_factory) -> Path:
    """The run, never stopped."""
    out = tmp_path_factory.mktemp("whole") / "run"
    result = run_cmx(*_train_arguments(data, out), timeout=600)
    assert result.returncode == 0, result.stderr
    return out


def _stop_mid_epoch(data: Path, out: Path, number: signal.Signals) -> tuple[int, str]:
    """Start the run, send ``number`` in the middle of its third epoch (or of a later one, on a
    machine whose load changes), and wait for its end."""
    arguments = _train_arguments(data, out)
    process = start_cmx(*arguments)
    try:
        # Two epochs are logged whole (the first, slower one warms up the CPU kernels).
        wait_until(process, lambda: len(_rows(out)) >= 2 and bool(_rows(out)[1].get("best")),
                   timeout=300, what="two logged epochs")
        # A third of an epoch on: the second epoch's time is known, and the third is as long.
        time.sleep(float(_rows(out)[1]["seconds"]) / 3)
        assert process.poll() is None, "the run ended before the signal"
        process.send_signal(number)
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            stream.close()
    check_internal_error(arguments, stderr)
    return process.returncode, stderr


def _rows(run: Path) -> list[dict]:
    """The rows of a run's log.tsv (none before the first epoch's end)."""
    if not (run / "log.tsv").exists():
        return []
    with open(run / "log.tsv") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _log(run: Path) -> list[dict]:
    """The rows of log.tsv without the columns that measure time."""
    return [{key: value for key, value in row.items() if key not in TIMING}
            for row in _rows(run)]


def _same_tensors(first, second, where: str = "") -> None:
    """Every tensor of two nested structures is bit-identical, and the rest equal."""
    if isinstance(first, torch.Tensor):
        assert isinstance(second, torch.Tensor) and first.dtype == second.dtype, where
        if not torch.equal(first, second):
            pytest.fail(f"{where}: differs by up to "
                        f"{(first.double() - second.double()).abs().max():.3g}", pytrace=False)
    elif isinstance(first, dict) and first and all(
            isinstance(value, torch.Tensor) for value in first.values()):
        assert set(first) == set(second), (where, set(first) ^ set(second))
        differ = [key for key in first if not torch.equal(first[key], second[key])]
        if differ:
            largest = max((first[key].double() - second[key].double()).abs().max().item()
                          for key in differ)
            pytest.fail(f"{where}: {len(differ)} of {len(first)} tensors differ, by up to "
                        f"{largest:.3g} (first {differ[0]})", pytrace=False)
    elif isinstance(first, dict):
        assert set(first) == set(second), (where, set(first) ^ set(second))
        for key in first:
            _same_tensors(first[key], second[key], f"{where}/{key}")
    elif isinstance(first, (list, tuple)):
        assert len(first) == len(second), where
        for index, (one, other) in enumerate(zip(first, second)):
            _same_tensors(one, other, f"{where}[{index}]")
    else:
        assert first == second, (where, first, second)


@pytest.mark.parametrize("number, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_and_a_resume_in_a_new_process_give_the_same_run(
        data, whole, tmp_path, number, status):
    out = tmp_path / "run"
    code, stderr = _stop_mid_epoch(data, out, number)
    # The signal is handled, not fatal: the run stops at a step boundary and says so.
    assert code == status, stderr
    message = stderr.strip().splitlines()[-1]
    assert message.startswith("Interrupted: ") and "--resume" in message, stderr
    # The steps of the unfinished epoch taken before the signal are kept, not thrown away.
    stopped = torch.load(out / "last.pt", weights_only=True)["training_state"]
    epoch_ends = [int(row["step"]) for row in _log(whole)]
    assert stopped["step"] not in epoch_ends and stopped["step"] > epoch_ends[1], \
        (stopped["step"], stderr)
    assert f"step {stopped['step']}" in message, message
    # No row for the unfinished epoch.
    assert _log(out) == _log(whole)[:stopped["epoch"]], "a row for an unfinished epoch"

    resumed = run_cmx("train", "--resume", "--out", out, "--quiet", timeout=600)
    assert resumed.returncode == 0, resumed.stderr

    for name in ("last.pt", "model.pt"):
        expected = torch.load(whole / name, weights_only=True)
        got = torch.load(out / name, weights_only=True)
        _same_tensors(expected["state_dict"], got["state_dict"], f"{name} weights")
    expected = torch.load(whole / "last.pt", weights_only=True)["training_state"]
    got = torch.load(out / "last.pt", weights_only=True)["training_state"]
    # The optimizer's moments and step counts, the learning-rate schedule, the counters.
    _same_tensors({key: value for key, value in expected.items() if key != "seconds"},
                  {key: value for key, value in got.items() if key != "seconds"},
                  "training_state")
    assert _log(out) == _log(whole)  # each epoch once, with the same loss and learning rate
    assert (out / "test_predictions.tsv").read_bytes() == \
        (whole / "test_predictions.tsv").read_bytes()



# --- the loop itself: a signal during validation, and a second signal -----------------------

class _Regression:
    """A task of 16 random members, batches of 4, a dropout network; ``signals`` maps a
    validation call (1 = the first) to the signal that arrives while it runs."""

    score_name = "loss"
    higher_is_better = False

    def __init__(self, signals: dict) -> None:
        generator = torch.Generator().manual_seed(0)
        self.inputs = torch.randn(16, 8, generator=generator)
        self.targets = torch.randn(16, 1, generator=generator)
        self.signals, self.validations = signals, 0

    def epoch_batches(self, rng: np.random.Generator, processes: int) -> list:
        order = [int(member) for member in rng.permutation(16)]
        return [order[start:start + 4] for start in range(0, 16, 4)]

    def member_tokens(self, member: int) -> int:
        return 1

    def loss(self, model, members: list, device):
        from cmx_cli.training.loop import LossTerms

        error = model(self.inputs[members]) - self.targets[members]
        return LossTerms((error ** 2).sum(), torch.tensor(float(len(members))))

    def validate(self, model):
        from cmx_cli import interrupts

        self.validations += 1
        if self.validations in self.signals:
            signal.raise_signal(self.signals[self.validations])
            interrupts.raise_if_interrupted()  # as every inference batch does
        model.eval()  # as cmx's validations do; the loop sets training mode again
        with torch.no_grad():
            return {"score": float(((model(self.inputs) - self.targets) ** 2).mean())}


def _network() -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                               torch.nn.Linear(16, 1))


def _fit(run_dir: Path, task: _Regression, resume: bool = False):
    from cmx_cli.console import Reporter
    from cmx_cli.io.checkpoint import Checkpoint
    from cmx_cli.settings import TrainingSettings
    from cmx_cli.training.loop import fit

    run_dir.mkdir(exist_ok=True)
    model, state = _network(), None
    if resume:
        saved = torch.load(run_dir / "last.pt", weights_only=True)
        model.load_state_dict(saved["state_dict"])
        state = saved["training_state"]
    return fit(model, task, TrainingSettings(epochs=3, seed=2, patience=None), run_dir,
               torch.device("cpu"), "fp32", Reporter(quiet=True),
               lambda weights, training: Checkpoint("classifier", {}, weights,
                                                    training_state=training), state)


@pytest.fixture
def signals_handled(monkeypatch):
    """cmx's handlers of SIGINT and SIGTERM, as `cmx` installs them, for one test."""
    from cmx_cli import interrupts

    monkeypatch.setattr(interrupts, "_state", {"interrupted": False})
    previous = {number: signal.getsignal(number) for number in interrupts.SIGNALS}
    hook = sys.unraisablehook
    interrupts.install()
    yield interrupts
    for number, handler in previous.items():
        signal.signal(number, handler)
    sys.unraisablehook = hook


@pytest.mark.parametrize("signals, kept_steps", [
    ({2: signal.SIGTERM}, 8),  # during the second validation: its epoch's 4 steps are kept
    ({1: signal.SIGINT}, 4),
], ids=["SIGTERM-second-validation", "SIGINT-first-validation"])
def test_a_signal_during_validation_keeps_the_epoch_and_the_resume_validates_it(
        tmp_path, signals_handled, signals, kept_steps):
    from cmx_cli.training.loop import TrainingInterrupted

    _fit(tmp_path / "whole", _Regression({}))
    with pytest.raises(TrainingInterrupted) as stopped:
        _fit(tmp_path / "cut", _Regression(signals))
    assert stopped.value.resumable and stopped.value.step == kept_steps, str(stopped.value)
    state = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["training_state"]
    assert (state["step"], state["epoch_batches_done"]) == (kept_steps, 4)
    signals_handled.reset()
    _fit(tmp_path / "cut", _Regression({}), resume=True)
    for name in ("last.pt", "model.pt"):
        expected = torch.load(tmp_path / "whole" / name, weights_only=True)
        got = torch.load(tmp_path / "cut" / name, weights_only=True)
        _same_tensors({key: value for key, value in expected.items() if key != "training_state"},
                      {key: value for key, value in got.items() if key != "training_state"},
                      name)
    assert _log(tmp_path / "cut") == _log(tmp_path / "whole")
