"""`cmx bench`: how fast cmx trains and predicts on this machine, and how close to its limits.

Every case runs in a fresh child process (``spawn``), so that its peak memory is its own
(peak RSS on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA) and a case that runs out
of memory is reported as such instead of ending the benchmark. Times are medians over
``repeats`` runs after one warm-up run.

The cases:

* a training step (forward, backward, AdamW step) and inference of a sequence classifier, on
  one sequence of each length and on a packed batch of variable lengths drawn like the
  paper's adding problem (log-normal, mean ``mean_length``), in tokens/s;
* the same training step on the packed batch with the authors' rotation (one ``torch.roll``
  per sequence and per track, in a Python loop): the speed-up is the ratio of the two;
* a dot-product attention baseline (:class:`models.Transformer`, the same width and depth)
  on the same batches, until a case runs out of memory or past ``attention_seconds``;
* the rotation alone, in GB/s (bytes read + written), of the packed batch and of the same
  tokens as one sequence (the slice-copy fast path), beside a plain copy of the same tensor;
* the MLP of one block alone, in FLOP/s, beside plain matrix products of the same shapes, and
  the whole training step's FLOP/s as a share of the matrix-product rate.
"""
from __future__ import annotations

import json
import resource
import statistics
import time
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from queue import Empty
from typing import Callable, Optional

import numpy as np
import torch
from rich.table import Table

from cmx_cli.console import Reporter
from cmx_cli.runtime import autocast, resolve_device, resolve_precision
from models import (
    ChordMixerConfig, ClassifierConfig, ReferenceRotationPlan, RotationPlan, SequenceClassifier,
    TransformerConfig, set_checkpointing, set_compiled)
from models.config import blocks_for_length

DEFAULT_LENGTHS = (1_000, 16_384, 131_072)


@dataclass(frozen=True)
class BenchConfig:
    """What to measure."""

    lengths: tuple = DEFAULT_LENGTHS
    packed_tokens: int = 16_384
    mean_length: int = 1_000
    repeats: int = 3
    track_size: int = 16
    hidden_size: int = 128
    checkpointing: bool = False
    compile_blocks: bool = False
    reference: bool = True
    attention: bool = True
    attention_seconds: float = 300.0
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0


def packed_lengths(total: int, mean_length: int, seed: int) -> list[int]:
    """Log-normal lengths (σ = 1, mean ``mean_length``, at least 16) adding up to ``total``."""
    rng = np.random.default_rng(seed)
    sigma = 1.0
    lengths: list[int] = []
    while sum(lengths) < total:
        draw = rng.lognormal(np.log(mean_length) - sigma**2 / 2, sigma)
        lengths.append(int(min(max(16, draw), total - sum(lengths))))
    if lengths[-1] < 16 and len(lengths) > 1:
        lengths[-2] += lengths.pop()
    return lengths


def _model(config: BenchConfig, longest: int, device: torch.device,
           attention: bool = False) -> SequenceClassifier:
    torch.manual_seed(config.seed)
    trunk = ChordMixerConfig(max_len=longest, track_size=config.track_size,
                             hidden_size=config.hidden_size)
    if attention:
        trunk = TransformerConfig.matching(trunk)
    return SequenceClassifier(ClassifierConfig(trunk, n_classes=2)).to(device)


def _batch(lengths: list[int], device: torch.device):
    offsets = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int64, device=device)
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 4, (sum(lengths),), generator=generator).to(device)
    return tokens, offsets


def _timed(run: Callable[[], None], repeats: int, device: torch.device) -> float:
    """Median seconds of ``run`` over ``repeats`` calls, after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def step_flops(lengths: list[int], config: ChordMixerConfig) -> float:
    """FLOPs of a training step's block MLPs: 3 × forward, 4·d·h per token and block."""
    per_token_block = 4.0 * config.d_model * config.hidden_size
    passes = sum(length * min(blocks_for_length(length), config.n_blocks) for length in lengths)
    return 3.0 * per_token_block * passes


def _case_model(config: BenchConfig, lengths: list[int], mode: str) -> dict:
    """A training step or inference on one batch (runs in the child process).

    ``mode``: ``train``, ``inference``, ``reference`` (training with the per-sequence
    rotation), ``attention`` or ``attention-inference`` (the Transformer baseline).
    """
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    model = _model(config, max(lengths), device, attention=mode.startswith("attention"))
    if mode == "reference":
        model.trunk.plan_type = ReferenceRotationPlan
    inference = mode.endswith("inference")
    set_checkpointing(model, config.checkpointing and not inference)
    set_compiled(model, config.compile_blocks)  # compiles in the untimed warm-up call
    tokens, offsets = _batch(lengths, device)
    labels = torch.zeros(len(lengths), dtype=torch.int64, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            logits = model(tokens, offsets)
        torch.nn.functional.cross_entropy(logits.float(), labels).backward()
        optimizer.step()

    @torch.no_grad()
    def infer() -> None:
        with autocast(device, precision):
            model(tokens, offsets)

    if inference:
        model.eval()
    seconds = _timed(infer if inference else train_step, config.repeats, device)
    result = {"tokens": sum(lengths), "sequences": len(lengths), "seconds": seconds,
              "tokens_per_second": sum(lengths) / seconds, "peak_bytes": _peak_bytes(device)}
    if mode in ("train", "reference"):
        result["flops_per_second"] = step_flops(lengths, model.config.trunk) / seconds
    return result


def _case_kernels(config: BenchConfig, lengths: list[int]) -> dict:
    """Rotation vs copy bandwidth, and block MLP vs matrix-product FLOP/s (child process)."""
    device = resolve_device(config.device)
    trunk = ChordMixerConfig(max_len=max(lengths), track_size=config.track_size,
                             hidden_size=config.hidden_size)
    _, offsets = _batch(lengths, device)
    x = torch.randn(sum(lengths), trunk.d_model, device=device)  # (T, d)
    plan = RotationPlan.build(offsets, trunk.n_tracks, trunk.track_size)
    moved = 2.0 * x.numel() * x.element_size()  # read + write
    rotate = _timed(lambda: plan.rotate(x), config.repeats * 5, device)
    single = RotationPlan.build(torch.tensor([0, x.shape[0]], device=device), trunk.n_tracks,
                                trunk.track_size)  # the same tokens as one sequence
    rotate_single = _timed(lambda: single.rotate(x), config.repeats * 5, device)
    copy = _timed(lambda: x.clone(), config.repeats * 5, device)
    torch.manual_seed(config.seed)
    mix = torch.nn.Sequential(torch.nn.Linear(trunk.d_model, trunk.hidden_size), torch.nn.GELU(),
                              torch.nn.Linear(trunk.hidden_size, trunk.d_model)).to(device)
    first = torch.randn(trunk.d_model, trunk.hidden_size, device=device)
    second = torch.randn(trunk.hidden_size, trunk.d_model, device=device)
    flops = 4.0 * x.shape[0] * trunk.d_model * trunk.hidden_size
    with torch.no_grad():
        mlp = _timed(lambda: mix(x), config.repeats * 5, device)
        matmul = _timed(lambda: (x @ first) @ second, config.repeats * 5, device)
    return {"tokens": int(x.shape[0]), "rotation_gb_per_second": moved / rotate / 1e9,
            "single_rotation_gb_per_second": moved / rotate_single / 1e9,
            "copy_gb_per_second": moved / copy / 1e9, "mlp_flops_per_second": flops / mlp,
            "matmul_flops_per_second": flops / matmul}


def _child(queue, function, arguments) -> None:
    try:
        queue.put(function(*arguments))
    except MemoryError:
        queue.put({"error": "out of memory"})
    except RuntimeError as error:  # CUDA out of memory and similar
        queue.put({"error": " ".join(str(error).split())[:120]})


def _run_case(function, *arguments, seconds: Optional[float] = None) -> dict:
    """Run one case in a fresh process; a kill (out of memory) or a time-out is reported."""
    context = get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, function, arguments), daemon=True)
    process.start()
    started = time.monotonic()
    try:
        while True:  # poll, so that a killed child is noticed at once
            try:
                return queue.get(timeout=1.0)
            except Empty:
                if not process.is_alive():
                    return {"error": "the process was killed (out of memory?)"}
                if seconds is not None and time.monotonic() - started > seconds:
                    return {"error": f"stopped after {seconds:.0f} s"}
    finally:
        if process.is_alive():
            process.kill()
        process.join()


def run(config: BenchConfig, reporter: Optional[Reporter] = None, as_json: bool = False) -> dict:
    """Measure every case and print a table (or JSON on stdout).

    Returns:
        The results, as printed with ``--json``.
    """
    reporter = reporter or Reporter(quiet=True)
    device = resolve_device(config.device)
    packed = packed_lengths(config.packed_tokens, config.mean_length, config.seed)
    batches = [(f"1 × {length:,}", [length]) for length in config.lengths]
    batches.append((f"packed {len(packed)} × ~{config.mean_length:,}", packed))
    results: dict = {"config": asdict(config), "device": str(device),
                     "precision": resolve_precision(config.precision, device),
                     "threads": torch.get_num_threads(), "cases": []}
    modes = ("train", "inference") + (("attention", "attention-inference")
                                       if config.attention else ())
    failed: set = set()  # attention modes that already failed on a shorter sequence
    with reporter.progress("Benchmark", total=len(modes) * len(batches) + 2,
                           unit="case") as progress:
        for name, lengths in batches:
            case = {"batch": name, "max_length": max(lengths)}
            for mode in modes:
                if mode in failed and len(lengths) == 1:
                    case[mode] = {"error": "skipped: a shorter sequence failed"}
                else:
                    limit = config.attention_seconds if mode.startswith("attention") else None
                    case[mode] = _run_case(_case_model, config, lengths, mode, seconds=limit)
                    if mode.startswith("attention") and "error" in case[mode]:
                        failed.add(mode)
                progress.advance()
            results["cases"].append(case)
        if config.reference:
            results["reference_train"] = _run_case(_case_model, config, packed, "reference")
        progress.advance()
        results["kernels"] = _run_case(_case_kernels, config, packed)
        progress.advance()
    _add_ratios(results)
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        for table in bench_tables(results):
            reporter.console.print(table)
    return results


def _add_ratios(results: dict) -> None:
    packed_train = results["cases"][-1]["train"]
    reference = results.get("reference_train", {})
    if "tokens_per_second" in packed_train and "tokens_per_second" in reference:
        results["speedup_over_reference"] = (
            packed_train["tokens_per_second"] / reference["tokens_per_second"])
    kernels = results["kernels"]
    if "rotation_gb_per_second" in kernels:
        kernels["rotation_share_of_copy"] = (
            kernels["rotation_gb_per_second"] / kernels["copy_gb_per_second"])
        kernels["single_rotation_share_of_copy"] = (
            kernels["single_rotation_gb_per_second"] / kernels["copy_gb_per_second"])
        kernels["mlp_share_of_matmul"] = (
            kernels["mlp_flops_per_second"] / kernels["matmul_flops_per_second"])
        if "flops_per_second" in packed_train:
            kernels["packed_step_share_of_matmul"] = (
                packed_train["flops_per_second"] / kernels["matmul_flops_per_second"])


def _gib(value: int) -> str:
    return f"{value / 2**30:.2f} GiB"


def bench_tables(results: dict) -> list[Table]:
    """The results as rich tables."""
    config = results["config"]
    setup = [f"{results['threads']} threads", results["precision"]]
    setup += [name for name, on in (("checkpointing", config["checkpointing"]),
                                    ("compiled blocks", config["compile_blocks"])) if on]
    table = Table(title=f"cmx bench on {results['device']} ({', '.join(setup)})")
    modes = [mode for mode in ("train", "inference", "attention", "attention-inference")
             if mode in results["cases"][0]]
    table.add_column("batch")
    for mode in modes:
        name = {"train": "train", "inference": "inference", "attention": "attention train",
                "attention-inference": "attention inference"}[mode]
        table.add_column(f"{name} tok/s", justify="right")
        table.add_column(f"{name} peak", justify="right")
    for case in results["cases"]:
        cells = [case["batch"]]
        for mode in modes:
            measured = case[mode]
            if "error" in measured:
                cells += [measured["error"], ""]
            else:
                cells += [f"{measured['tokens_per_second']:,.0f}", _gib(measured["peak_bytes"])]
        table.add_row(*cells)
    limits = Table(title="Against the hardware's limits (packed batch of the table's last row)")
    limits.add_column("measure")
    limits.add_column("cmx", justify="right")
    limits.add_column("limit", justify="right")
    limits.add_column("share", justify="right")
    kernels = results["kernels"]
    if "rotation_gb_per_second" in kernels:
        limits.add_row("rotation vs copy (GB/s)", f"{kernels['rotation_gb_per_second']:.1f}",
                       f"{kernels['copy_gb_per_second']:.1f}",
                       f"{kernels['rotation_share_of_copy']:.0%}")
        limits.add_row("rotation of one sequence vs copy (GB/s)",
                       f"{kernels['single_rotation_gb_per_second']:.1f}",
                       f"{kernels['copy_gb_per_second']:.1f}",
                       f"{kernels['single_rotation_share_of_copy']:.0%}")
        limits.add_row("block MLP vs matmul (GFLOP/s)", f"{kernels['mlp_flops_per_second'] / 1e9:.1f}",
                       f"{kernels['matmul_flops_per_second'] / 1e9:.1f}",
                       f"{kernels['mlp_share_of_matmul']:.0%}")
        if "packed_step_share_of_matmul" in kernels:
            step = results["cases"][-1]["train"]["flops_per_second"]
            limits.add_row("training step vs matmul (GFLOP/s)", f"{step / 1e9:.1f}",
                           f"{kernels['matmul_flops_per_second'] / 1e9:.1f}",
                           f"{kernels['packed_step_share_of_matmul']:.0%}")
    if "speedup_over_reference" in results:
        reference = results["reference_train"]["tokens_per_second"]
        packed = results["cases"][-1]["train"]["tokens_per_second"]
        limits.add_row("training step vs per-sequence torch.roll (tok/s)", f"{packed:,.0f}",
                       f"{reference:,.0f}", f"{results['speedup_over_reference']:.1f}×")
    return [table, limits]
