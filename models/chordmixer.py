"""The ChordMixer encoder: embedding, then ⌈log2 max_len⌉ Rotate → Mix blocks (paper §3.2).

Every per-position step (embedding, norms, MLPs) runs on the packed (T, d) tensor; only the
rotation needs the sequence boundaries. A sequence of length L passes exactly its first
``blocks_for_length(L)`` blocks, whatever shares its batch (paper §3.3), so its output does
not depend on its batch companions. The encoder orders a batch's sequences deepest first
(``models.depth_order``), so that each block runs only on the leading rows of the sequences
still passing it, and returns the rows in the caller's order.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from models import packed
from models.config import ChordMixerConfig, blocks_for_length
from models.dropout import Dropout
from models.depth_order import DepthOrder
from models.local_context import LocalContext
from models.reversible import ReversibleBlock, run_reversible
from models.rotate import RotationPlan


class ChordMixerBlock(nn.Module):
    """x + Mix(Norm(Rotate(x))), with Mix = Linear(d→h), GELU, Dropout, Linear(h→d).

    The residual is around the whole block, as in the paper (x + f(R(x))); the authors'
    code instead rotates the MLP output.
    """

    def __init__(self, d_model: int, hidden_size: int, dropout: float, norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model) if norm else nn.Identity()
        self.mix = nn.Sequential(
            nn.Linear(d_model, hidden_size),
            nn.GELU(),
            Dropout(dropout),
            nn.Linear(hidden_size, d_model),
        )
        self.compiled_feed_forward = None  # set by models.compiling.set_compiled

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mix(Norm(x)) of every position: (T, d) -> (T, d)."""
        return self.mix(self.norm(x))

    def per_position(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`feed_forward`, compiled when ``--compile`` set it: (T, d) -> (T, d)."""
        return (self.compiled_feed_forward or self.feed_forward)(x)

    def add_update_(self, target: torch.Tensor, source: torch.Tensor, plan: RotationPlan
                    ) -> None:
        """Add the update of ``source`` to the first rows of ``target``, in place (inference).

        The norm and MLP run ``packed.SLICE_ROWS`` rows at a time, so that only the rotated
        rows and one slice's activations exist besides ``target``.

        Args:
            target: (T, d) activations this network owns, T ≥ R.
            source: (R, d) rows to update from (``target``'s own rows, or the other half of
                a reversible block); rotated into a new tensor first, so they may alias.
            plan: The rotation plan of those rows.
        """
        rotated = plan.rotate(source)  # (R, d)
        for rows in packed.row_slices(rotated.shape[0]):
            target[rows] += self.per_position(rotated[rows])

    def forward(self, x: torch.Tensor, plan: RotationPlan) -> torch.Tensor:
        """The block's update Mix(Norm(Rotate(x))); the encoder adds it to x.

        Args:
            x: (T, d) packed activations.
            plan: The batch's rotation plan.

        Returns:
            (T, d) update.
        """
        return self.per_position(plan.rotate(x))


class ChordMixer(nn.Module):
    """Embedding + ChordMixer blocks over packed variable-length batches.

    With ``config.vocab_size == 0`` there is no embedding and the input is already (T, d)
    features, as for the decoder of the masked-base autoencoder. With ``config.reversible``
    the blocks are :class:`~models.reversible.ReversibleBlock` pairs of half-width blocks.
    With ``config.local_radius`` the embedding adds each position's neighbours
    (:class:`~models.local_context.LocalContext`).

    Attributes:
        plan_type: How the batch is rotated: :class:`RotationPlan` (one packed permutation), or
            :class:`~models.rotate.ReferenceRotationPlan` for the per-sequence reference.
        checkpointing: Activation checkpointing: during training keep only the input of
            every segment of about √n blocks; backward recomputes a segment keeping its block
            inputs, then each block (far less memory for long sequences, for about two more
            forward passes of time). Not part of the config: it changes no result.
    """

    def __init__(self, config: ChordMixerConfig) -> None:
        super().__init__()
        self.config = config
        self.checkpointing = False
        self.plan_type = RotationPlan
        self.embedding = (
            nn.Embedding(config.vocab_size, config.d_model) if config.vocab_size else None
        )
        self.local_context = (LocalContext(config.vocab_size, config.d_model, config.local_radius)
                              if config.local_radius else None)
        self.blocks = nn.ModuleList(_block(config) for _ in range(config.n_blocks))
        self.final_norm = nn.LayerNorm(config.d_model) if config.norm else nn.Identity()

    def blocks_per_sequence(self, lengths: list[int]) -> list[int]:
        """Blocks each sequence passes: ⌈log2 L⌉ (≥ 1), capped at the network's depth."""
        return [min(blocks_for_length(length), self.config.n_blocks) for length in lengths]

    def forward(self, tokens: torch.Tensor, offsets: torch.Tensor,
                added: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Encode a packed batch.

        Args:
            tokens: (T,) int64 token ids of all sequences, concatenated; or (T, d) features
                when the network has no embedding.
            offsets: (B+1,) int64 boundaries; sequence b is tokens[offsets[b]:offsets[b+1]].
                Every sequence has length ≥ 1.
            added: Optional (T, d) features added to the embedded input (e.g. a marker of
                where a variant is).

        Returns:
            (T, d) per-position features.
        """
        offsets = offsets.to(device=tokens.device, dtype=torch.int64)
        lengths = (offsets[1:] - offsets[:-1]).tolist()  # one host sync per batch
        order = DepthOrder.build(offsets, lengths, self.blocks_per_sequence(lengths))
        # Block i runs on the first order.rows[i] rows: the sequences not yet through.
        steps = order.steps(self.plan_type.build(order.offsets, self.config.n_tracks))
        x = order.ordered(tokens)
        if self.embedding is not None:
            ordered_tokens = x
            x = self.embedding(ordered_tokens)  # (T, d)
            if self.local_context is not None:  # the ordered batch keeps sequences whole
                x = x + self.local_context(ordered_tokens, order.offsets)
        else:
            x = x.to(next(self.parameters()).dtype)  # features, in this network's own dtype
        if added is not None:
            x = x + order.ordered(added).to(x.dtype)
        if self.config.reversible:
            first, second = (half.contiguous() for half in x.chunk(2, dim=1))  # (T, d/2) each
            del x  # nothing needs the whole input any more
            if torch.is_grad_enabled():
                first, second = run_reversible(self.blocks[:len(steps)], first, second, steps)
            else:  # the halves are this network's own copies: update them in place
                for block, (rows, plan) in zip(self.blocks, steps):
                    block.first.add_update_(first, second[:rows], plan)
                    block.second.add_update_(second, first[:rows], plan)
            x = torch.cat((first, second), dim=1)  # (T, d)
            del first, second  # before the final norm makes another (T, d)
            return order.restored(self.final_norm(x))
        recompute = self.checkpointing and torch.is_grad_enabled()
        finished: list[torch.Tensor] = []  # rows of sequences through all their blocks
        if recompute and x.requires_grad:
            # Two levels (√n checkpointing): keep the input of every segment of ~√n blocks;
            # backward recomputes a segment keeping its block inputs, then each block.
            size = math.ceil(math.sqrt(len(steps)))
            for first in range(0, len(steps), size):
                x, *done = checkpoint(self._run_segment, x, first, steps[first:first + size],
                                      use_reentrant=True)  # runs without a graph: only x kept
                finished += done
        elif torch.is_grad_enabled():
            # A loop here, not a call, so that each block's input can go as soon as the
            # next one exists (a caller's reference would keep the first one alive).
            for index, (rows, plan) in enumerate(steps):
                x = self._run_block(index, x, rows, plan, recompute, finished)
        else:
            # Inference updates the activations in place: features passed in are copied
            # first, so that the caller's tensor is left as it was.
            if x is tokens:
                x = x.clone()
            for index, (rows, plan) in enumerate(steps):
                if rows < x.shape[0]:
                    finished.append(x[rows:])  # views: x's storage stays alive anyway
                    x = x[:rows]
                self.blocks[index].add_update_(x, x, plan)
        # The sequences that finished last come first in the ordered batch.
        if finished:
            x = torch.cat([x, *reversed(finished)])
        return order.restored(self.final_norm(x))

    def _run_block(self, index: int, x: torch.Tensor, rows: int, plan: RotationPlan,
                   recompute: bool, finished: list) -> torch.Tensor:
        """The first ``rows`` rows of x plus block ``index``'s update; recompute: checkpointed.

        The rows past ``rows`` (sequences through all their blocks) go to ``finished``.
        """
        if rows < x.shape[0]:
            # One split (its backward is one concatenation, where two slices would each
            # fill a whole zero gradient), and a copy, so that the finished rows do not
            # keep all of x alive.
            x, done = x.split([rows, x.shape[0] - rows])
            finished.append(done.clone())
        block = self.blocks[index]
        if recompute and torch.is_grad_enabled():
            return x + checkpoint(block, x, plan, use_reentrant=False)
        return x + block(x, plan)

    def _run_segment(self, x: torch.Tensor, first: int, steps: list) -> tuple[torch.Tensor, ...]:
        """Blocks first, first + 1, ... of ``steps``, each checkpointed when recomputed.

        Returns:
            The rows still running after the last of these blocks, then the rows of the
            sequences that finished within them, in the order they finished.
        """
        finished: list[torch.Tensor] = []
        for index, (rows, plan) in enumerate(steps, start=first):
            x = self._run_block(index, x, rows, plan, True, finished)
        return (x, *finished)


def _block(config: ChordMixerConfig) -> nn.Module:
    """One block of the encoder: a ChordMixer block, or a reversible pair of half-width ones."""
    if not config.reversible:
        return ChordMixerBlock(config.d_model, config.hidden_size, config.dropout, config.norm)
    return ReversibleBlock(*(
        ChordMixerBlock(config.d_model // 2, config.hidden_size, config.dropout, config.norm)
        for _ in range(2)))


def set_checkpointing(model: nn.Module, enabled: bool) -> None:
    """Turn activation checkpointing on or off in every ChordMixer inside ``model``."""
    for module in model.modules():
        if isinstance(module, ChordMixer):
            module.checkpointing = enabled
