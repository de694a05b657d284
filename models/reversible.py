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

from models import packed
from models.packed import add_to_leading_rows
from models.rotate import RotationPlan


def half_update(half: nn.Module, x: torch.Tensor, plan: RotationPlan) -> torch.Tensor:
    """F(x) = Mix(Norm(Rotate(x))) of a half-width block, the norm and MLP slice by slice.

    Forward and the recomputation in backward take the same slices (``packed.SLICE_ROWS``
    rows) in the same order, so that dropout draws the same masks in both, and backward
    keeps the norm's and the MLP's activations for one slice at a time.

    Args:
        half: A :class:`~models.chordmixer.ChordMixerBlock` of half width.
        x: (R, d/2) rows of one half of the activations.
        plan: The rotation plan of those rows.

    Returns:
        (R, d/2) update.
    """
    rotated = plan.rotate(x)  # (R, d/2)
    slices = packed.row_slices(rotated.shape[0])
    if len(slices) <= 1:  # no copy for one slice (or none)
        return half.per_position(rotated)
    return torch.cat([half.per_position(rotated[rows]) for rows in slices])


def _half_backward(half: nn.Module, x: torch.Tensor, plan: RotationPlan, grad: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Recompute :func:`half_update` and backpropagate ``grad`` through it, slice by slice.

    The gradients of the half's parameters are accumulated in place.

    Args:
        half: The half-width block.
        x: (R, d/2) the rows it updated, as they were.
        plan: Their rotation plan.
        grad: (R, d/2) gradient of the loss with respect to the update.

    Returns:
        The update, and the gradient with respect to ``x``; both (R, d/2), without graphs.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_()
        rotated = plan.rotate(x)  # (R, d/2); its graph is the permutation only, saving no values
    values = rotated.detach()  # each slice's input, then, once used, its gradient
    update = torch.empty_like(values)
    for rows in packed.row_slices(values.shape[0]):
        piece = values[rows].detach().requires_grad_()
        with torch.enable_grad():
            piece_update = half.per_position(piece)
        torch.autograd.backward(piece_update, grad[rows])
        update[rows] = piece_update.detach()
        values[rows] = piece.grad  # the slice's graph is gone: its input is free to go
    rotated.backward(values)
    return update, x.grad


class ReversibleBlock(nn.Module):
    """(x1, x2) → (x1 + F(x2), x2 + G(x1 + F(x2))), F and G half-width ChordMixer blocks."""

    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__()
        self.first = first
        self.second = second

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, rows: int, plan: RotationPlan
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both halves updated on their first ``rows`` rows, by ordinary autograd.

        This keeps every activation, so the encoder does not call it: training goes through
        :func:`run_reversible`, inference through each half's in-place ``add_update_``. It is
        the definition the two reproduce (the tests compare them with it).

        Args:
            x1, x2: (T, d/2) the two halves of the packed activations.
            rows: How many leading rows pass this block (the others are left as they are).
            plan: The rotation plan of those rows.

        Returns:
            (y1, y2), each (T, d/2).
        """
        y1 = add_to_leading_rows(x1, half_update(self.first, x2[:rows], plan))
        return y1, add_to_leading_rows(x2, half_update(self.second, y1[:rows], plan))


def run_reversible(blocks: Sequence[ReversibleBlock], x1: torch.Tensor, x2: torch.Tensor,
                   steps: Sequence[tuple[int, RotationPlan]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``blocks`` in turn for training, keeping only the last block's output.

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
            x1 = add_to_leading_rows(x1, half_update(block.first, x2[:rows], plan))
            second_state = _RandomState(x1.device)
            x2 = add_to_leading_rows(x2, half_update(block.second, x1[:rows], plan))
            ctx.states.append((first_state, second_state))
        # Not save_for_backward: autograd would hold saved outputs until backward ends, and
        # backward rebuilds every block's input over them, so they can go after the first.
        # Detached, they point to no graph (no reference cycle through this node).
        ctx.outputs = (x1.detach(), x2.detach())
        return x1, x2

    @staticmethod
    def backward(ctx, grad1, grad2):  # noqa: D102 - autograd
        if ctx.outputs is None:
            # The first backward rebuilt the inputs over the outputs and let them go.
            raise RuntimeError(
                "reversible blocks support one backward pass per forward: run the forward "
                "again (retain_graph=True cannot keep what backward rebuilds)")
        y1, y2 = ctx.outputs
        ctx.outputs = None
        devices = [y1.device] if y1.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.autocast(**ctx.autocast):
            for block, (rows, plan), (first_state, second_state) in reversed(
                    list(zip(ctx.blocks, ctx.steps, ctx.states))):
                second_state.restore()
                update, y1_grad = _half_backward(block.second, y1[:rows], plan, grad2[:rows])
                x2 = add_to_leading_rows(y2, update, alpha=-1)
                grad1 = add_to_leading_rows(grad1, y1_grad)
                first_state.restore()
                update, x2_grad = _half_backward(block.first, x2[:rows], plan, grad1[:rows])
                y1, y2 = add_to_leading_rows(y1, update, alpha=-1), x2
                grad2 = add_to_leading_rows(grad2, x2_grad)
        ctx.blocks = ctx.steps = ctx.states = None
        return (grad1, grad2, None, None) + (None,) * (len(ctx.needs_input_grad) - 4)
