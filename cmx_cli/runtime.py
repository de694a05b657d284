"""How the network runs: on which device, in which precision, compiled or not."""
from __future__ import annotations

import contextlib
import resource
from typing import Optional

import torch
from torch import nn

from cmx_cli.errors import CmxError, CmxUsageError
from cmx_cli.settings import Runtime
from models import cast_encoders_, set_compiled

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(name: str) -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a device, checking CUDA is there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CmxUsageError(
            f"--device {name}: no CUDA device is available",
            "use --device cpu, or check the NVIDIA driver and the CUDA build of torch.",
        )
    return torch.device(name)


def use_threads(threads: Optional[int]) -> None:
    """Cap the CPU threads torch uses within an operation (``--threads``); None keeps its
    default, one per core."""
    if threads is not None:
        torch.set_num_threads(threads)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16, which AMX CPUs have too), as
    torch's CPU feature check reports it."""
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(check is not None and check())


def resolve_precision(name: str, device: torch.device, inference: bool = False) -> str:
    """``auto`` is bf16 on CUDA; on the CPU it is bf16 for inference when the CPU has native
    bf16 (:func:`cpu_has_bf16`), and fp32 otherwise (and for training)."""
    if name == "auto":
        return "bf16" if device.type == "cuda" or (inference and cpu_has_bf16()) else "fp32"
    return name


def native_precisions(name: str, device: torch.device) -> tuple[str, ...]:
    """The precisions `cmx bench` measures: ``auto`` is fp32 and, where the device computes
    bf16 natively (CUDA, or a CPU with :func:`cpu_has_bf16`), bf16 too; a name is itself."""
    if name != "auto":
        return (name,)
    return ("fp32", "bf16") if device.type == "cuda" or cpu_has_bf16() else ("fp32",)


def peak_memory_bytes(device: torch.device) -> int:
    """This process's peak memory: allocated on a CUDA device, resident on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def ready_for_inference(model: nn.Module, runtime: Runtime) -> tuple[torch.device, str]:
    """Put a model where and how ``runtime`` says, for prediction only.

    With bf16 the encoder stacks are cast to bfloat16 once, weights and activations, instead
    of casting at every operation (autocast); pooling and heads stay float32.

    Returns:
        The device, and the precision to run the model under (``fp32`` when its encoders
        were cast: there is nothing left for autocast to do).
    """
    use_threads(runtime.threads)
    device = resolve_device(runtime.device)
    precision = resolve_precision(runtime.precision, device, inference=True)
    set_compiled(model, runtime.compile_blocks)
    model.eval().to(device)
    if precision == "bf16":
        cast_encoders_(model, torch.bfloat16)
        precision = "fp32"
    return device, precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context for a precision (a no-op for fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def compile_failures_as_user_errors():
    """Turn a failure of ``--compile`` (no C++ compiler, no Triton) into a one-line error.

    The compiler runs on the first batch, so the failure surfaces there.
    """
    try:
        yield
    except RuntimeError as error:
        from torch._dynamo.exc import BackendCompilerFailed

        if not isinstance(error, BackendCompilerFailed):
            raise
        reason = next((line for line in str(error).splitlines() if line.strip()), "")
        raise CmxError(
            f"--compile: torch.compile failed: {reason}",
            "run without --compile; on the CPU it needs a working C++ compiler (g++ or "
            "clang++, or the CXX variable), on CUDA the triton package.") from error


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block (e.g. weight initialisation) from a fixed torch seed without touching
    the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
