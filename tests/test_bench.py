"""`cmx bench`: its batches, its FLOP count, and one tiny run through child processes."""
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from rich.console import Console

from cmx_cli.pipelines import bench
from cmx_cli.cli.render import bench_tables
from cmx_cli.pipelines.bench import _run_case, _timed, _timed_together, packed_lengths, step_flops
from cmx_cli.pipelines.bench_variants import variant_case, write_inputs
from cmx_cli.runtime import native_precisions
from cmx_cli.settings import EncoderShape, Runtime
from models import ChordMixerConfig
from tests.helpers import run_cli


@pytest.mark.parametrize("total, mean", [(16384, 1000), (300, 100), (40, 1000)])
def test_packed_lengths_fill_the_budget_exactly(total, mean):
    lengths = packed_lengths(total, mean, seed=3)
    assert sum(lengths) == total
    assert min(lengths) >= 16 or len(lengths) == 1
    assert packed_lengths(total, mean, seed=3) == lengths


def test_packed_lengths_average_near_the_mean():
    lengths = packed_lengths(2_000_000, 1000, seed=0)
    assert 800 < sum(lengths) / len(lengths) < 1200


def test_step_flops_count_each_sequences_own_blocks():
    config = ChordMixerConfig(max_len=1024, track_size=4, hidden_size=8)
    per_token_block = 4 * config.d_model * 8
    # 1,024 bp passes 10 blocks, 3 bp passes 2 blocks, 1 bp passes 1 block.
    assert step_flops([1024, 3, 1], config) == 3 * per_token_block * (1024 * 10 + 3 * 2 + 1)


def test_a_tiny_benchmark_reports_every_case(tmp_path):
    result = run_cli(
        "bench", "--lengths", "64", "--packed-tokens", "256", "--mean-length", "50",
        "--repeats", "1", "--track-size", "4", "--hidden-size", "16", "--variant-records", "30",
        "--window", "64", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    # fp32, and bf16 beside it where this CPU computes bf16 natively.
    assert report["precisions"] == list(native_precisions("auto", torch.device("cpu")))
    assert [case["batch"] for case in report["cases"]][0] == "1 × 64"
    for case in report["cases"]:
        for mode in ("train", "inference", "attention", "attention-inference"):
            assert set(case[mode]) == set(report["precisions"])
            for measured in case[mode].values():
                assert measured["tokens_per_second"] > 0 and measured["peak_bytes"] > 0
    assert report["cases"][-1]["train"]["fp32"]["tokens"] == 256
    assert report["speedup_over_reference"] > 0
    limits = report["limits"]
    assert limits["rotation_share_of_copy"] > 0 and limits["mlp_share_of_matmul"] > 0
    assert limits["single_rotation_share_of_copy"] > 0 and limits["train_share_of_matmul"] > 0
    assert report["speedup_over_reference"] == pytest.approx(
        limits["train_tokens_per_second"] / limits["reference_tokens_per_second"])
    assert set(report["variants"]) == {"fine-tuned", "zero-shot"}
    for by_precision in report["variants"].values():
        assert set(by_precision) == set(report["precisions"])
        for measured in by_precision.values():
            assert measured["records"] == 30 and measured["scored"] >= 30  # some multi-allelic
            assert measured["variants_per_second"] == pytest.approx(30 / measured["seconds"])
    console = Console(width=400, record=True)
    for table in bench_tables(report):
        console.print(table)
    text = console.export_text()
    for row in ("rotation vs copy", "training step vs matmul", "per-sequence torch.roll",
                "fine-tuned", "zero-shot", "variants/s"):
        assert row in text
    title = bench_tables(report)[0].title
    assert title == f"cmx bench on cpu ({report['threads']} threads)"
    assert bench_tables(report)[0].caption is None
    report["cases"][0]["train"]["fp32"] = {"error": "out of memory"}
    assert "--checkpointing or --reversible" in bench_tables(report)[0].caption
    report["config"]["checkpointing"] = report["config"]["runtime"]["compile_blocks"] = True
    assert bench_tables(report)[0].title.endswith("threads, checkpointing, compiled blocks)")
    assert bench_tables(report)[0].caption is None


def test_the_variant_case_writes_the_snvs_it_was_asked_for(tmp_path):
    reference, vcf = write_inputs(tmp_path, records=200, window=64, seed=5)
    rows = [line.split("\t") for line in vcf.read_text().splitlines()
            if not line.startswith("#")]
    genome = "".join(reference.read_text().split("\n")[1:])
    assert len(rows) == 200
    positions = [int(row[1]) for row in rows]
    assert positions == sorted(set(positions))
    for row in rows:
        ref, alts = row[3], row[4].split(",")
        assert ref == genome[int(row[1]) - 1] and ref not in alts and len(set(alts)) == len(alts)
    multi_allelic = sum(len(row[4].split(",")) == 2 for row in rows)
    assert 5 <= multi_allelic <= 40  # about one in ten


@pytest.mark.parametrize("kind", ["fine-tuned", "zero-shot"])
def test_a_variant_case_scores_every_allele(kind, tmp_path):
    measured = variant_case(kind, 12, 64, EncoderShape(track_size=4, hidden_size=16),
                            Runtime(device="cpu", precision="fp32"), seed=0)
    assert measured["records"] == 12 and measured["scored"] >= 12
    assert measured["seconds"] > 0 and measured["peak_bytes"] > 0


def test_compared_runs_take_turns():
    calls = []
    seconds = _timed_together({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                              repeats=2, device=torch.device("cpu"))
    assert calls == ["a", "b"] * 3  # one warm-up each, then two timed turns
    assert set(seconds) == {"a", "b"} and all(value >= 0 for value in seconds.values())


def test_bad_lengths_are_a_usage_error():
    result = run_cli("bench", "--lengths", "10,abc")
    assert result.exit_code == 2 and "lengths" in result.output


def test_a_case_past_its_time_limit_killed_or_failing_is_reported_not_fatal():
    import time

    from cmx_cli.pipelines.bench import _run_case
    result = _run_case(time.sleep, 30, seconds=2)
    assert result == {"error": "stopped after 2 s"}
    assert _run_case(_kill_this_process, seconds=60) == {
        "error": "the process was killed (out of memory?)"}
    assert _run_case(os._exit, 3, seconds=60) == {"error": "the process ended with exit status 3"}
    assert _run_case(_fail_with_a_bug, seconds=60) == {
        "error": "NameError: name 'math' is not defined"}


def _kill_this_process() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _fail_with_a_bug() -> None:
    raise NameError("name 'math' is not defined")


def test_long_cases_are_timed_fewer_times(monkeypatch):
    import time
    monkeypatch.setattr(bench, "CASE_SECONDS", 0.2)
    calls = []
    _, timed_runs = _timed(lambda: calls.append(time.sleep(0.08)), 5, torch.device("cpu"))
    assert timed_runs == 2 and len(calls) == 3  # one warm-up, then 0.2 s / 0.08 s runs
    monkeypatch.setattr(bench, "MIN_TIMED_SECONDS", 0.0)
    _, timed_runs = _timed(lambda: None, 5, torch.device("cpu"))
    assert timed_runs == 5


def test_short_cases_are_timed_more_times(monkeypatch):
    monkeypatch.setattr(bench, "_seconds", lambda run, device: 0.05)  # every run takes 50 ms
    _, timed_runs = _timed(lambda: None, 3, torch.device("cpu"))
    assert timed_runs == 40  # 2 s / 0.05 s, not 3
    monkeypatch.setattr(bench, "_seconds", lambda run, device: 1.5)
    _, timed_runs = _timed(lambda: None, 3, torch.device("cpu"))
    assert timed_runs == 3


def _allocate(size: int) -> dict:
    return {"bytes": torch.empty(size, dtype=torch.uint8).numel()}


def _address_space_limit() -> dict:
    import resource
    return {"limit": resource.getrlimit(resource.RLIMIT_AS)[0]}


def _memory_bytes(field: str) -> int:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        fields = dict(line.split(":", 1) for line in meminfo)
    return int(fields[field].split()[0]) * 1024


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="needs Linux /proc")
def test_a_cpu_case_may_use_only_the_free_memory():
    import resource
    limit = _run_case(_address_space_limit, limit_memory=True)["limit"]
    assert limit != resource.RLIM_INFINITY
    # What the fresh process had mapped (a few GiB at most) plus what was free then.
    assert _memory_bytes("MemAvailable") // 2 < limit < _memory_bytes("MemTotal") + 2**33
    assert _run_case(_address_space_limit, limit_memory=False) == {
        "limit": resource.getrlimit(resource.RLIMIT_AS)[0]}
    assert _run_case(_allocate, 2**20, limit_memory=True) == {"bytes": 2**20}
    too_much = 2 * _memory_bytes("MemTotal")
    assert _run_case(_allocate, too_much, limit_memory=True) == {"error": "out of memory"}
