"""The ChordMixer trunk: embedding, then ⌈log2 max_len⌉ Rotate → Mix blocks (paper §3.2).

Every per-position step (embedding, norms, MLPs) runs on the packed (T, d) tensor; only the
rotation needs the sequence boundaries. A sequence of length L passes exactly its first
``blocks_for_length(L)`` blocks, whatever shares its batch (paper §3.3), so its output does
not depend on its batch companions.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from models.config import ChordMixerConfig, blocks_for_length
from models.dropout import Dropout
from models.rotate import RotationPlan


class ChordMixerBlock(nn.Module):
    """x + Mix(Norm(Rotate(x))), with Mix = Linear(d→h), GELU, Dropout, Linear(h→d).

    The residual is around the whole block, as in the paper (x + f(R(x))); the authors'
    code instead rotates the MLP output.
    """

    def __init__(self, config: ChordMixerConfig) -> None:
        super().__init__()
        d_model = config.d_model
        self.norm = nn.LayerNorm(d_model) if config.norm else nn.Identity()
        self.mix = nn.Sequential(
            nn.Linear(d_model, config.hidden_size),
            nn.GELU(),
            Dropout(config.dropout),
            nn.Linear(config.hidden_size, d_model),
        )

    def forward(self, x: torch.Tensor, plan: RotationPlan) -> torch.Tensor:
        """The block's update Mix(Norm(Rotate(x))); the trunk adds it to x.

        Args:
            x: (T, d) packed activations.
            plan: The batch's rotation plan.

        Returns:
            (T, d) update.
        """
        return self.mix(self.norm(plan.rotate(x)))


class ChordMixer(nn.Module):
    """Embedding + ChordMixer blocks over packed variable-length batches.

    With ``config.vocab_size == 0`` there is no embedding and the input is already (T, d)
    features, as for the decoder of the masked-base autoencoder.

    Attributes:
        plan_type: How the batch is rotated: :class:`RotationPlan` (one packed permutation), or
            :class:`~models.rotate.ReferenceRotationPlan` for the per-sequence reference.
        checkpointing: Activation checkpointing: keep only each block's input during training
            and recompute the block in backward (less memory for long sequences, about one
            more forward pass of time). Not part of the config: it changes no result.
    """

    def __init__(self, config: ChordMixerConfig) -> None:
        super().__init__()
        self.config = config
        self.checkpointing = False
        self.plan_type = RotationPlan
        self.embedding = (
            nn.Embedding(config.vocab_size, config.d_model) if config.vocab_size else None
        )
        self.blocks = nn.ModuleList(ChordMixerBlock(config) for _ in range(config.n_blocks))
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
        depths = self.blocks_per_sequence(lengths)
        plan = self.plan_type.build(offsets, self.config.n_tracks, self.config.track_size)
        x = tokens if self.embedding is None else self.embedding(tokens)  # (T, d)
        if added is not None:
            x = x + added
        shallowest, deepest = min(depths), max(depths)
        token_depth = None
        if shallowest < deepest:
            token_depth = torch.repeat_interleave(
                torch.tensor(depths, device=tokens.device),
                torch.tensor(lengths, device=tokens.device),
                output_size=x.shape[0],
            )  # (T,)
        recompute = self.checkpointing and torch.is_grad_enabled()
        for index in range(deepest):
            block = self.blocks[index]
            update = checkpoint(block, x, plan, use_reentrant=False) if recompute else block(x, plan)
            if index >= shallowest:
                # Sequences that have passed all their blocks keep their features unchanged.
                update = update * (token_depth > index).to(update.dtype)[:, None]  # (T, d)
            x = x + update
        return self.final_norm(x)


def set_checkpointing(model: nn.Module, enabled: bool) -> None:
    """Turn activation checkpointing on or off in every ChordMixer inside ``model``."""
    for module in model.modules():
        if isinstance(module, ChordMixer):
            module.checkpointing = enabled
