"""Data-parallel training: sharing batches, the torchrun environment, and 2-process gloo runs
of `cmx train`, `pretrain` and `finetune` that must equal single-process runs with the same
global batch."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cmx_cli.errors import CmxError
from cmx_cli.training.distributed import SINGLE, Processes, from_environment, share_members
from cmx_cli.training.loop import LossTerms, _step_loss
from tests.helpers import check_internal_error, cmx_command, cmx_environment

DEMO_DATA = Path(__file__).parent.parent / "cmx_cli" / "demo_data"


@given(st.lists(st.integers(1, 10_000), max_size=40), st.integers(1, 8))
def test_every_member_goes_to_exactly_one_share(lengths, parts):
    shares = share_members(lengths, parts)
    assert len(shares) == parts
    assert sorted(p for share in shares for p in share) == list(range(len(lengths)))
    assert all(share == sorted(share) for share in shares)


@given(st.lists(st.integers(1, 10_000), min_size=1, max_size=40), st.integers(1, 8))
def test_shares_are_balanced_within_the_longest_member(lengths, parts):
    loads = [sum(lengths[p] for p in share) for share in share_members(lengths, parts)]
    assert max(loads) - min(loads) <= max(lengths)


def test_shares_of_a_small_batch():
    assert share_members([5, 9, 7], 2) == [[1], [0, 2]]
    assert share_members([4], 3) == [[0], [], []]
    assert share_members([3, 3, 3, 3], 2) == [[0, 2], [1, 3]]


def test_environment_without_torchrun_is_one_process():
    assert from_environment({}) == SINGLE
    assert not SINGLE.parallel and SINGLE.is_main


def test_environment_of_torchrun():
    processes = from_environment({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert processes == Processes(rank=2, world_size=4, local_rank=0)
    assert processes.parallel and not processes.is_main


@pytest.mark.parametrize("environment", [
    {"WORLD_SIZE": "two", "RANK": "0"},
    {"WORLD_SIZE": "2", "RANK": "2"},
    {"WORLD_SIZE": "0"},
])
def test_broken_environment_is_a_user_error(environment):
    with pytest.raises(CmxError, match="Hint: start parallel training with torchrun"):
        from_environment(environment)


def test_one_process_needs_no_process_group():
    values = torch.tensor([1.5, 2.0])
    assert torch.equal(SINGLE.total(values), values)
    assert SINGLE.any(True) and not SINGLE.any(False)
    assert SINGLE.from_main({"a": 1}) == {"a": 1}


# --- 2 processes on the CPU (gloo), against one process with the same global batch ---

def _environment() -> dict:
    environment = {key: value for key, value in cmx_environment().items()
                   if key not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    environment["OMP_NUM_THREADS"] = "1"
    return environment


def _cmx(*arguments: str, processes: int = 1) -> subprocess.CompletedProcess:
    command = cmx_command(*arguments)  # python -m cmx_cli ARGUMENTS
    if processes > 1:  # torchrun runs the same module in each process
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc-per-node={processes}", *command[1:]]
    result = subprocess.run(command, capture_output=True, text=True, env=_environment(),
                            timeout=300)
    check_internal_error(arguments, result.stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _log(run_dir: Path) -> list[dict]:
    with open(run_dir / "log.tsv") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _assert_same_training(single: Path, parallel: Path) -> None:
    single_log, parallel_log = _log(single), _log(parallel)
    assert len(parallel_log) == len(single_log)  # one writer: no row twice
    for a, b in zip(single_log, parallel_log):
        assert (a["epoch"], a["step"], a["complete"]) == (b["epoch"], b["step"], b["complete"])
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-4)
    first = torch.load(single / "last.pt", weights_only=True)
    second = torch.load(parallel / "last.pt", weights_only=True)
    assert second["training_state"]["processes"] == 2
    for key, value in first["state_dict"].items():
        torch.testing.assert_close(second["state_dict"][key], value, rtol=1e-4, atol=1e-5)


def _summary_lines(result: subprocess.CompletedProcess, command: str) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith(f"cmx {command}:")]


def test_train_stopped_and_resumed_in_two_processes_equals_one_process(data_dir, tmp_path):
    capsule = data_dir / "capsule_small"
    arguments = ["train", "--fasta", f"{capsule / 'klebsiella.fa'}:Klebsiella",
                 "--fasta", f"{capsule / 'acinetobacter.fa'}:Acinetobacter",
                 "--track-size", "4", "--hidden-size", "16", "--dropout", "0", "--epochs", "3",
                 "--lr", "3e-3", "--seed", "1", "--device", "cpu", "--quiet"]
    for processes, max_tokens in ((1, "6000"), (2, "3000")):
        run_dir = tmp_path / f"run{processes}"
        # --max-time stops after the first step; --resume finishes the run.
        _cmx(*arguments, "--max-tokens", max_tokens, "--max-time", "1e-7", "--out", str(run_dir),
             processes=processes)
        assert [row["complete"] for row in _log(run_dir)] == ["False"]
        resumed = _cmx("train", "--resume", "--out", str(run_dir), "--max-time", "100",
                       "--quiet", processes=processes)
        assert len(_summary_lines(resumed, "train")) == 1  # only rank 0 prints
    _assert_same_training(tmp_path / "run1", tmp_path / "run2")
    assert [row["step"] for row in _log(tmp_path / "run2")][0] == "1"


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """A copy of the demo data (genome, VCF and their indexes), so that no run of these
    tests writes an index into the source tree."""
    copy = tmp_path_factory.mktemp("demo_data")
    for name in ("umaydis_demo.fa.gz", "codon_snvs.vcf.gz", "codon_snvs.vcf.gz.tbi"):
        shutil.copy2(DEMO_DATA / name, copy / name)
    return copy


def test_pretrain_in_two_processes_equals_one_process(demo_data, tmp_path):
    arguments = ["pretrain", "--fasta", str(demo_data / "umaydis_demo.fa.gz"),
                 "--min-length", "128", "--max-length", "512", "--tokens-per-epoch", "30000",
                 "--validation-tokens", "5000", "--epochs", "2", "--track-size", "4",
                 "--hidden-size", "16", "--dropout", "0", "--device", "cpu", "--quiet"]
    _cmx(*arguments, "--max-tokens", "4096", "--out", str(tmp_path / "one"))
    result = _cmx(*arguments, "--max-tokens", "2048", "--out", str(tmp_path / "two"), processes=2)
    assert len(_summary_lines(result, "pretrain")) == 1
    _assert_same_training(tmp_path / "one", tmp_path / "two")


def test_finetune_in_two_processes_equals_one_process(demo_data, tmp_path):
    arguments = ["finetune", "--vcf", str(demo_data / "codon_snvs.vcf.gz"),
                 "--reference", str(demo_data / "umaydis_demo.fa.gz"), "--label-field", "LABEL",
                 "--region", "chr01:1-60000", "--window", "64", "--no-rc", "--head-dropout", "0", "--epochs", "2",
                 "--track-size", "4", "--hidden-size", "16", "--dropout", "0", "--device", "cpu",
                 "--quiet"]
    _cmx(*arguments, "--max-tokens", "4096", "--out", str(tmp_path / "one"))
    _cmx(*arguments, "--max-tokens", "2048", "--out", str(tmp_path / "two"), processes=2)
    _assert_same_training(tmp_path / "one", tmp_path / "two")


class _RecordingTask:
    """Loss = sum of a weight times each member's length; records what it was given."""

    def __init__(self):
        self.seen = []

    def member_tokens(self, member):
        return member

    def loss(self, model, members, device):
        self.seen.append(list(members))
        total = model.weight * sum(members)
        return LossTerms(total.sum(), torch.tensor(float(len(members))))


class _LoneProcess(Processes):
    """Rank ``rank`` of two, with the other process's contribution taken to be zero."""

    def total(self, values):
        return values.detach().clone()

    def sum_gradients(self, model):
        pass


@pytest.mark.parametrize("rank, share", [(0, [9, 1]), (1, [7, 4])])
def test_a_process_computes_only_its_share(rank, share):
    task, model = _RecordingTask(), torch.nn.Linear(1, 1, bias=False)
    _step_loss(model, task, [9, 7, 4, 1], torch.device("cpu"), "fp32",
               _LoneProcess(rank=rank, world_size=2))
    assert task.seen == [share]


def test_a_process_without_members_contributes_nothing():
    task, model = _RecordingTask(), torch.nn.Linear(1, 1, bias=False)
    _step_loss(model, task, [9], torch.device("cpu"), "fp32", _LoneProcess(rank=1, world_size=2))
    assert task.seen == [[9]]  # computed to join the gradient exchange...
    assert model.weight.grad is not None and float(model.weight.grad.abs().sum()) == 0.0  # ...at weight 0
