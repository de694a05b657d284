"""Dropout that is fast on the CPU.

``torch.nn.Dropout`` draws one Bernoulli variable per element from the CPU generator, which
took a quarter of a CPU training step (profiled on the packed batch of ``cmx bench``). Here
the CPU draws 64 random bits per call and reads them as four 16-bit numbers, one per
element: a fifth of the time, with the drop probability rounded to a multiple of 1/65,536.
The kept elements are scaled by 1 / (1 − that probability), so the expected output is the
input, as with ``torch.nn.Dropout``. Backward keeps only a one-byte mask. On CUDA,
``torch.nn.functional.dropout`` is already fast and is used as it is, and so it is inside a
compiled graph (``--compile``), where the compiler generates its own random numbers.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = 65536


def keep_mask(shape: torch.Size, p: float) -> tuple[torch.Tensor, float]:
    """A CPU 0/1 uint8 mask, 0 with probability p (rounded to a multiple of 1/65,536), and
    the scale 1 / (1 − p) of the kept elements."""
    count = math.prod(shape)
    dropped_levels = round(p * LEVELS)
    words = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-2**63, 2**63 - 1)
    lanes = words.view(torch.int16)[:count].view(shape)  # uniform on [-32768, 32767]
    keep = lanes >= dropped_levels - LEVELS // 2
    # Multiplying by a uint8 mask is twice as fast as by a bool one (or a masked fill).
    return keep.view(torch.uint8), LEVELS / (LEVELS - dropped_levels)


class _MaskedScale(torch.autograd.Function):
    """y = x · keep · scale; backward applies the same mask and scale."""

    @staticmethod
    def forward(ctx, x, keep, scale):  # noqa: D102 - autograd protocol
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad_output):  # noqa: D102 - autograd protocol
        (keep,) = ctx.saved_tensors
        return grad_output.mul(keep).mul_(ctx.scale), None, None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout: zero each element with probability p while training."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0 or torch.compiler.is_compiling():
        return F.dropout(x, p, training=True)
    keep, scale = keep_mask(x.shape, p)
    return _MaskedScale.apply(x, keep, scale)


class Dropout(nn.Module):
    """Drop-in for ``torch.nn.Dropout`` (no parameters, the same state dict)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply dropout in training mode; the identity in eval mode."""
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        """Shown by ``print(model)``."""
        return f"p={self.p}"
