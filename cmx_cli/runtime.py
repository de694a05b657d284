"""How the network runs: on which device, in which precision, compiled or not."""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

from cmx_cli.errors import CmxError, CmxUsageError

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


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` is bf16 autocast on CUDA and fp32 on the CPU."""
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return name


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
