"""Optional ``torch.compile`` of every block's per-position part (``--compile``).

Only Norm → MLP of each block (``feed_forward``) is compiled: there the compiler can fuse
the norm, GELU, dropout and bias into few kernels around the matrix products. The rotation
and the attention's padding stay as they are. Shapes are dynamic, so a batch with a new
number of tokens does not compile again. The first batch pays for the compilation (tens of
seconds; the compiler caches its work on disk for later runs).

Measured with ``cmx bench --compile`` on a 2-core CPU, compiling made a training step
slower; it is meant for CUDA, where unfused elementwise kernels cost more of a step.
"""
from __future__ import annotations

import torch
from torch import nn

from models.chordmixer import ChordMixerBlock
from models.transformer import TransformerLayer


def set_compiled(model: nn.Module, enabled: bool) -> None:
    """Compile (or stop compiling) the per-position part of every block inside ``model``.

    Compilation itself happens on the first batch. Outputs are those of the eager network
    within float rounding; dropout then draws from the compiler's own random stream.
    """
    for module in model.modules():
        if isinstance(module, (ChordMixerBlock, TransformerLayer)):
            module.compiled_feed_forward = (
                torch.compile(module.feed_forward, dynamic=True) if enabled else None)
