"""Reversible ChordMixer blocks: training memory that does not grow with depth.

The paper notes (§3.3) that training on a length-N sequence keeps O(d·N·log2 N) activations,
and that the reversible residual trick (Gomez et al., 2017) brings this down to O(d·N). A
reversible block splits the channels into two halves, each holding every track at half the
track size, and updates them in turn with two ChordMixer blocks of half width (F and G,
each Rotate → Norm → MLP):

    y1 = x1 + F(x2)
    y2 = x2 + G(y1)

Its input can be rebuilt from its output: x2 = y2 − G(y1), then x1 = y1 − F(x2). So training
keeps only the output of the whole stack, and backward rebuilds each block's input on the
way down, recomputing that one block's graph to get its gradients. Dropout draws the same
masks again, from the random state saved before each half. A sequence still passes exactly
its own ⌈log2 L⌉ blocks: a block updates only the leading rows of the sequences still
passing (``models.depth_order``), and leaves the others as they are, which is just as
invertible.

The rebuilt inputs equal the originals only up to float rounding, so gradients match those
of ordinary backpropagation through the same network to within rounding, not bit for bit.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from models.packed import add_to_leading_rows
from models.rotate import RotationPlan


class ReversibleBlock(nn.Module):
    """(x1, x2) → (x1 + F(x2), x2 + G(x1 + F(x2))), with F and G modules (x, plan) → update."""

    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__()
        self.first = first
        self.second = second

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, rows: int, plan: RotationPlan
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both halves updated on their first ``rows`` rows, by ordinary autograd (inference).

        Args:
            x1, x2: (T, d/2) the two halves of the packed activations.
            rows: How many leading rows pass this block (the others are left as they are).
            plan: The rotation plan of those rows.

        Returns:
            (y1, y2), each (T, d/2).
        """
        y1 = add_to_leading_rows(x1, self.first(x2[:rows], plan))
        return y1, add_to_leading_rows(x2, self.second(y1[:rows], plan))


def run_reversible(blocks: Sequence[ReversibleBlock], x1: torch.Tensor, x2: torch.Tensor,
                   steps: Sequence[tuple[int, RotationPlan]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``blocks`` in turn for training, keeping only the last block's output.

    (Without gradients, calling the blocks in turn is all there is to it.)

    Args:
        blocks: The reversible blocks to pass.
        x1, x2: (T, d/2) halves of the packed activations.
        steps: For each block, how many leading rows it updates and their rotation plan.

    Returns:
        The two (T, d/2) halves after the last block.
    """
    parameters = [p for block in blocks for p in block.parameters()]
    return _ReversibleStack.apply(x1, x2, blocks, steps, *parameters)


class _RandomState:
    """The generator state dropout draws from (CPU, and the CUDA device when there is one)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        """Make the next random draws repeat those made after this state was taken."""
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


class _ReversibleStack(torch.autograd.Function):
    """The blocks' forward keeps only its output; backward rebuilds inputs block by block.

    The blocks' parameters are passed as inputs only so that the outputs require gradients
    whenever a parameter does (a frozen embedding, say); their gradients are accumulated
    directly by recomputing each half with autograd.
    """

    @staticmethod
    def forward(ctx, x1, x2, blocks, steps, *parameters):  # noqa: D102 - autograd
        device_type = x1.device.type
        ctx.autocast = {"device_type": device_type,
                        "enabled": torch.is_autocast_enabled(device_type),
                        "dtype": torch.get_autocast_dtype(device_type)}
        ctx.blocks, ctx.steps, ctx.states = blocks, steps, []
        for block, (rows, plan) in zip(blocks, steps):
            first_state = _RandomState(x1.device)
            x1 = add_to_leading_rows(x1, block.first(x2[:rows], plan))
            second_state = _RandomState(x1.device)
            x2 = add_to_leading_rows(x2, block.second(x1[:rows], plan))
            ctx.states.append((first_state, second_state))
        ctx.save_for_backward(x1, x2)
        return x1, x2

    @staticmethod
    def backward(ctx, grad1, grad2):  # noqa: D102 - autograd
        y1, y2 = ctx.saved_tensors
        devices = [y1.device] if y1.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.autocast(**ctx.autocast):
            for block, (rows, plan), (first_state, second_state) in reversed(
                    list(zip(ctx.blocks, ctx.steps, ctx.states))):
                second_state.restore()
                with torch.enable_grad():
                    y1 = y1.detach().requires_grad_()
                    update = block.second(y1[:rows], plan)
                torch.autograd.backward(update, grad2[:rows])
                x2 = add_to_leading_rows(y2, -update.detach()).requires_grad_()
                grad1 = grad1 + y1.grad
                first_state.restore()
                with torch.enable_grad():
                    update = block.first(x2[:rows], plan)
                torch.autograd.backward(update, grad1[:rows])
                y1, y2 = add_to_leading_rows(y1.detach(), -update.detach()), x2.detach()
                grad2 = grad2 + x2.grad
        ctx.blocks = ctx.steps = ctx.states = None
        return (grad1, grad2, None, None) + (None,) * (len(ctx.needs_input_grad) - 4)
