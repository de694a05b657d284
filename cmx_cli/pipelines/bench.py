"""`cmx bench`: how fast cmx trains and predicts on this machine, and how close to its limits.

Every case runs in a fresh child process (``spawn``), so that its peak memory is its own
(peak RSS on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA) and a case that runs out
of memory is reported as such instead of ending the benchmark. On the CPU a case may use
only the memory that is free when it starts, so that it fails an allocation instead of
pushing the machine into swap. Times are medians over ``repeats`` runs after one warm-up
run: over more when they would take less than two seconds in all, over fewer when they would
take more than a minute (at least one).

The cases:

* a training step (forward, backward, AdamW step) and inference of a sequence classifier, on
  one sequence of each length and on a packed batch of variable lengths drawn like the
  paper's adding problem (log-normal, mean ``mean_length``), in tokens/s;
* a dot-product attention baseline (:class:`models.Transformer`, the same width and depth)
  on the same batches, until a case runs out of memory or past ``attention_seconds``;
* each of these in fp32 and, where the device computes bf16 natively, in bf16 (``--precision
  auto``; one precision when it is named): training under bf16 autocast, as `cmx train
  --precision bf16` runs; inference with the encoders cast to bf16, as `cmx predict` runs;
* `cmx predict` over a synthetic VCF with a fine-tuned and a pretrained (zero-shot) model,
  in variants/s (:mod:`cmx_cli.pipelines.bench_variants`);
* on the packed batch, in one more process, measurements timed in turns so that each ratio
  compares runs under the same conditions: the rotation alone, in GB/s (bytes read +
  written), of the packed batch and of the same tokens as one sequence (the slice-copy fast
  path), beside a plain copy of the same tensor (each writes into one existing tensor, so
  that no allocation is timed); the MLP of one block alone, in FLOP/s,
  beside plain matrix products of the same shapes; the training step's FLOP/s as a share of
  the matrix-product rate; and the training step with the authors' rotation (one
  ``torch.roll`` per sequence and per track, in a Python loop), for the speed-up.
"""
from __future__ import annotations

import math
import resource
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from queue import Empty
from typing import Callable, Optional

import numpy as np
import torch

from cmx_cli.console import Reporter
from cmx_cli.pipelines.bench_variants import KINDS, variant_case
from cmx_cli.runtime import (
    autocast, native_precisions, peak_memory_bytes, ready_for_inference, resolve_device,
    use_threads)
from cmx_cli.settings import EncoderShape, Runtime
from models import (
    ChordMixerConfig, ClassifierConfig, ReferenceRotationPlan, RotationPlan, SequenceClassifier,
    TransformerConfig, set_checkpointing, set_compiled)
from models.config import blocks_for_length

DEFAULT_LENGTHS = (1_000, 16_384, 131_072, 1_000_000)

#: A case's timed runs stop once they would pass this many seconds (after at least one): a
#: training step on a million bases takes minutes on a CPU.
CASE_SECONDS = 60.0
#: A case whose ``repeats`` runs take less than this many seconds is timed more often, until
#: they take about this long: the median of three 10 ms runs moves with any other process.
MIN_TIMED_SECONDS = 2.0

#: A case that failed an allocation says so in these words.
OUT_OF_MEMORY = "out of memory"
#: How torch's CPU and CUDA allocators say that an allocation failed.
ALLOCATION_FAILURES = ("can't allocate memory", "not enough memory", "out of memory")


@dataclass(frozen=True)
class BenchConfig:
    """What to measure."""

    lengths: tuple[int, ...] = DEFAULT_LENGTHS
    packed_tokens: int = 16_384
    mean_length: int = 1_000
    repeats: int = 3
    shape: EncoderShape = field(default_factory=EncoderShape)
    checkpointing: bool = False
    roll_reference: bool = True
    attention: bool = True
    attention_seconds: float = 300.0
    variant_records: int = 1000
    window: int = 1000
    runtime: Runtime = field(default_factory=Runtime)
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
    encoder = config.shape.encoder(longest)
    if attention:
        encoder = TransformerConfig.matching(encoder)
    return SequenceClassifier(ClassifierConfig(encoder, n_classes=2)).to(device)


def _batch(lengths: list[int], device: torch.device):
    offsets = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int64, device=device)
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 4, (sum(lengths),), generator=generator).to(device)
    return tokens, offsets


def _seconds(run: Callable[[], None], device: torch.device) -> float:
    """Wall-clock seconds of one call of ``run`` (waiting for the GPU to finish)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def _timed(run: Callable[[], None], repeats: int, device: torch.device) -> tuple[float, int]:
    """Median seconds of ``run`` after one warm-up call, and how many calls were timed.

    ``repeats`` calls are timed, more when they would take less than
    :data:`MIN_TIMED_SECONDS` in all, fewer when they would take more than
    :data:`CASE_SECONDS` (at least one).
    """
    warm_up = max(_seconds(run, device), 1e-6)
    count = max(repeats, math.ceil(MIN_TIMED_SECONDS / warm_up))
    count = max(1, min(count, int(CASE_SECONDS / warm_up)))
    return statistics.median(_seconds(run, device) for _ in range(count)), count


def _timed_together(runs: dict, repeats: int, device: torch.device) -> dict:
    """Median seconds of each of ``runs`` (name → callable), after one warm-up call each.

    The calls take turns, so that kernels compared with each other see the same state of
    the machine: on a shared or throttled machine, memory bandwidth drifts over seconds.
    """
    for run in runs.values():
        run()
    times: dict = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(_seconds(run, device))
    return {name: statistics.median(values) for name, values in times.items()}


def step_flops(lengths: list[int], config: ChordMixerConfig) -> float:
    """FLOPs of a training step's block MLPs: 3 × forward, 4·d·h per token and block."""
    per_token_block = 4.0 * config.d_model * config.hidden_size
    passes = sum(length * min(blocks_for_length(length), config.n_blocks) for length in lengths)
    return 3.0 * per_token_block * passes


def _runner(config: BenchConfig, lengths: list[int], mode: str, precision: str) -> tuple:
    """A fresh seeded network and one call of ``mode`` on the batch of ``lengths``.

    ``mode``: ``train``, ``inference``, ``reference`` (training with the per-sequence
    rotation), ``attention`` or ``attention-inference`` (the Transformer baseline).
    ``precision``: ``fp32`` or ``bf16``; inference runs as `cmx predict` runs it
    (:func:`~cmx_cli.runtime.ready_for_inference`), training under autocast.

    Returns:
        (the network, a callable that runs one training step or one inference).
    """
    use_threads(config.runtime.threads)
    device = resolve_device(config.runtime.device)
    model = _model(config, max(lengths), device, attention=mode.startswith("attention"))
    if mode == "reference":
        model.encoder.plan_type = ReferenceRotationPlan
    inference = mode.endswith("inference")
    set_checkpointing(model, config.checkpointing and not inference)
    # Compiles in the untimed warm-up call.
    if inference:
        device, precision = ready_for_inference(model, replace(config.runtime,
                                                               precision=precision))
    else:
        set_compiled(model, config.runtime.compile_blocks)
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

    return model, infer if inference else train_step


def _case_model(config: BenchConfig, lengths: list[int], mode: str, precision: str) -> dict:
    """Speed and peak memory of a training step or inference (runs in the child process)."""
    device = resolve_device(config.runtime.device)
    _, run = _runner(config, lengths, mode, precision)
    seconds, timed_runs = _timed(run, config.repeats, device)
    return {"tokens": sum(lengths), "sequences": len(lengths), "seconds": seconds,
            "timed_runs": timed_runs, "tokens_per_second": sum(lengths) / seconds,
            "peak_bytes": peak_memory_bytes(device)}


def _case_limits(config: BenchConfig, lengths: list[int], precision: str) -> dict:
    """The packed batch against the hardware's limits and the reference (child process),
    the training steps in ``precision``.

    Rotation vs copy bandwidth, block MLP and training step vs matrix-product FLOP/s, and
    the training step vs the per-sequence ``torch.roll`` network. Runs compared with each
    other are timed in turns (see :func:`_timed_together`), so that each ratio compares like
    with like.
    """
    device = resolve_device(config.runtime.device)
    model, train_step = _runner(config, lengths, "train", precision)
    encoder = model.config.encoder
    _, offsets = _batch(lengths, device)
    x = torch.randn(sum(lengths), encoder.d_model, device=device)  # (T, d)
    # The rotations and the copy all write into this one existing tensor: a new large CPU
    # tensor costs page faults, which would be timed too, and more on some runs than others.
    out = torch.empty_like(x)
    plan = RotationPlan.build(offsets, encoder.n_tracks)
    moved = 2.0 * x.numel() * x.element_size()  # read + write
    single = RotationPlan.build(torch.tensor([0, x.shape[0]], device=device),
                                encoder.n_tracks)  # the same tokens as one sequence
    torch.manual_seed(config.seed)
    mix = torch.nn.Sequential(
        torch.nn.Linear(encoder.d_model, encoder.hidden_size), torch.nn.GELU(),
        torch.nn.Linear(encoder.hidden_size, encoder.d_model)).to(device)
    first = torch.randn(encoder.d_model, encoder.hidden_size, device=device)
    second = torch.randn(encoder.hidden_size, encoder.d_model, device=device)
    flops = 4.0 * x.shape[0] * encoder.d_model * encoder.hidden_size
    # Three groups, each timed in turns: runs that follow each other see the same caches.
    steps = {"train": train_step}
    if config.roll_reference:
        steps["reference"] = _runner(config, lengths, "reference", precision)[1]
    seconds = _timed_together(steps, config.repeats * 5, device)
    with torch.no_grad():
        seconds |= _timed_together({"rotate": lambda: plan.rotate(x, out=out),
                                    "rotate_single": lambda: single.rotate(x, out=out),
                                    "copy": lambda: out.copy_(x)}, config.repeats * 20, device)
        seconds |= _timed_together({"mlp": lambda: mix(x), "matmul": lambda: (x @ first) @ second},
                                   config.repeats * 10, device)
    results = {"tokens": int(x.shape[0]),
               "rotation_gb_per_second": moved / seconds["rotate"] / 1e9,
               "single_rotation_gb_per_second": moved / seconds["rotate_single"] / 1e9,
               "copy_gb_per_second": moved / seconds["copy"] / 1e9,
               "mlp_flops_per_second": flops / seconds["mlp"],
               "matmul_flops_per_second": flops / seconds["matmul"],
               "train_tokens_per_second": x.shape[0] / seconds["train"],
               "train_flops_per_second": step_flops(lengths, encoder) / seconds["train"]}
    if config.roll_reference:
        results["reference_tokens_per_second"] = x.shape[0] / seconds["reference"]
    return results


def _child(queue, function, arguments, limit_memory: bool) -> None:
    if limit_memory:
        _limit_memory_to_available()
    try:
        queue.put(function(*arguments))
    except MemoryError:
        queue.put({"error": OUT_OF_MEMORY})
    except RuntimeError as error:  # torch's allocators, CUDA errors and similar
        message = " ".join(str(error).split())
        if any(failure in message.lower() for failure in ALLOCATION_FAILURES):
            message = OUT_OF_MEMORY
        queue.put({"error": message[:120]})
    except Exception as error:  # noqa: BLE001 - any failure is reported as the case's result
        queue.put({"error": f"{type(error).__name__}: {error}"[:120]})


def _limit_memory_to_available() -> None:
    """Let this process use no more memory than the machine has free now (Linux).

    A case that needs more then fails an allocation and is reported as out of memory,
    instead of pushing the machine into swap or waking the kernel's out-of-memory killer,
    which may stop another program. The limit is on address space: what the process has
    mapped already, plus the memory available.
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        available = int(fields["MemAvailable"].split()[0]) * 1024  # kB
        with open("/proc/self/statm", encoding="ascii") as statm:
            mapped = int(statm.read().split()[0]) * resource.getpagesize()
    except (OSError, KeyError, ValueError):
        return  # not Linux: no limit
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + available
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _run_case(function, *arguments, seconds: Optional[float] = None,
              limit_memory: bool = False) -> dict:
    """Run one case in a fresh process; a kill (out of memory) or a time-out is reported.

    With ``limit_memory`` (CPU cases), the process may use only the memory available when it
    starts (:func:`_limit_memory_to_available`).
    """
    context = get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, function, arguments, limit_memory),
                              daemon=True)
    process.start()
    started = time.monotonic()
    try:
        while True:  # poll, so that a killed child is noticed at once
            try:
                return queue.get(timeout=1.0)
            except Empty:
                if not process.is_alive():
                    return _ended_without_result(queue, process.exitcode)
                if seconds is not None and time.monotonic() - started > seconds:
                    return {"error": f"stopped after {seconds:.0f} s"}
    finally:
        if process.is_alive():
            process.kill()
        process.join()


def _ended_without_result(queue, exitcode: Optional[int]) -> dict:
    """What to report for a case whose process ended, unless its result arrived meanwhile."""
    try:
        return queue.get(timeout=1.0)  # put just before the process ended
    except Empty:
        pass
    if exitcode is not None and exitcode < 0:  # a signal: on Linux, the out-of-memory killer
        return {"error": "the process was killed (out of memory?)"}
    return {"error": f"the process ended with exit status {exitcode}"}


def run(config: BenchConfig, reporter: Optional[Reporter] = None) -> dict:
    """Measure every case.

    Returns:
        The results (what ``--json`` prints): the config, the device, the precisions, per
        batch the speed and peak memory of each mode in each precision (or its error), the
        packed batch against the hardware's limits, and the variant cases.
    """
    reporter = reporter or Reporter(quiet=True)
    use_threads(config.runtime.threads)  # the children take it from the config too
    device = resolve_device(config.runtime.device)
    precisions = native_precisions(config.runtime.precision, device)
    packed = packed_lengths(config.packed_tokens, config.mean_length, config.seed)
    batches = [(f"1 × {length:,}", [length]) for length in config.lengths]
    batches.append((f"packed {len(packed)} × ~{config.mean_length:,}", packed))
    results: dict = {"config": asdict(config), "device": str(device),
                     "precisions": list(precisions), "threads": torch.get_num_threads(),
                     "cases": []}
    modes = ("train", "inference") + (("attention", "attention-inference")
                                       if config.attention else ())
    kinds = KINDS if config.variant_records else ()
    failed: set = set()  # (attention mode, precision) that failed on a shorter sequence
    on_cpu = device.type == "cpu"
    total = (len(modes) * len(batches) + len(kinds)) * len(precisions) + 1
    with reporter.progress("Benchmark", total=total, unit="case") as progress:
        for name, lengths in batches:
            case: dict = {"batch": name, "max_length": max(lengths)}
            for mode in modes:
                case[mode] = {}
                for precision in precisions:
                    if (mode, precision) in failed and len(lengths) == 1:
                        case[mode][precision] = {"error": "skipped: a shorter sequence failed"}
                    else:
                        limit = config.attention_seconds if mode.startswith("attention") else None
                        case[mode][precision] = _run_case(
                            _case_model, config, lengths, mode, precision, seconds=limit,
                            limit_memory=on_cpu)
                        if mode.startswith("attention") and "error" in case[mode][precision]:
                            failed.add((mode, precision))
                    progress.advance()
            results["cases"].append(case)
        results["limits"] = _run_case(_case_limits, config, packed, precisions[0],
                                      limit_memory=on_cpu)
        progress.advance()
        results["variants"] = {}
        for kind in kinds:
            results["variants"][kind] = {}
            for precision in precisions:
                results["variants"][kind][precision] = _run_case(
                    variant_case, kind, config.variant_records, config.window, config.shape,
                    replace(config.runtime, precision=precision), config.seed,
                    limit_memory=on_cpu)
                progress.advance()
    _add_ratios(results)
    return results


#: The packed batch against its limits: (table row, share key, measured key, limit key,
#: unit the values are shown in). ``_add_ratios`` stores each share; the table shows it.
SHARES = (
    ("rotation vs copy (GB/s)", "rotation_share_of_copy", "rotation_gb_per_second",
     "copy_gb_per_second", 1.0),
    ("rotation of one sequence vs copy (GB/s)", "single_rotation_share_of_copy",
     "single_rotation_gb_per_second", "copy_gb_per_second", 1.0),
    ("block MLP vs matmul (GFLOP/s)", "mlp_share_of_matmul", "mlp_flops_per_second",
     "matmul_flops_per_second", 1e9),
    ("training step vs matmul (GFLOP/s)", "train_share_of_matmul", "train_flops_per_second",
     "matmul_flops_per_second", 1e9),
)


def _add_ratios(results: dict) -> None:
    limits = results["limits"]
    if "error" in limits:
        return  # the case failed; its error is shown instead
    for _, share, measured, limit, _ in SHARES:
        limits[share] = limits[measured] / limits[limit]
    if "reference_tokens_per_second" in limits:
        results["speedup_over_reference"] = (
            limits["train_tokens_per_second"] / limits["reference_tokens_per_second"])
