"""A dot-product attention baseline with the encoder interface of :class:`models.ChordMixer`.

Pre-norm Transformer encoder layers (multi-head ``scaled_dot_product_attention``, then a
GELU MLP), sinusoidal positions counted from each sequence's start, so any length runs. The
packed (T, d) batch is padded to its longest sequence for attention only, with padding
masked out; every per-position step runs on the packed tensor. Memory and time grow with
the square of the length: this is the baseline that shows where ChordMixer wins
(`cmx bench`), and one users can train on their own data (`cmx train --arch transformer`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ChordMixerConfig
from models.dropout import Dropout, dropout
from models.packed import token_position, token_sequence


@dataclass(frozen=True)
class TransformerConfig:
    """Shape of a Transformer encoder.

    Attributes:
        vocab_size: Number of input tokens.
        d_model: Channels per position.
        n_layers: Encoder layers.
        n_heads: Attention heads (they divide ``d_model``).
        hidden_size: Hidden width of each layer's MLP.
        dropout: Dropout on each layer's output projection and inside its MLP.
        max_len: Longest sequence the data had (kept for reporting; positions are
            sinusoidal, so longer sequences run too).
        attention_dropout: Dropout on the attention weights. 0, as in current
            Transformers: with it, the CPU's attention kernels ran 4-5 times slower, and the
            baseline would be a handicapped peer.
    """

    vocab_size: int = 6
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    hidden_size: int = 128
    dropout: float = 0.1
    max_len: int = 4096
    attention_dropout: float = 0.0

    def __post_init__(self) -> None:
        if min(self.vocab_size, self.d_model, self.n_layers, self.n_heads, self.hidden_size) < 1:
            raise ValueError(f"TransformerConfig sizes must be positive: {self}")
        if self.d_model % self.n_heads or self.d_model % 2:
            raise ValueError(f"d_model must be even and divisible by n_heads: {self}")

    @classmethod
    def matching(cls, chordmixer: ChordMixerConfig) -> "TransformerConfig":
        """The same width, depth, MLP width and dropout as a ChordMixer encoder."""
        d_model = chordmixer.d_model + chordmixer.d_model % 2
        heads = next(h for h in (8, 4, 2, 1) if d_model % h == 0 and d_model // h >= 16
                     or h == 1)
        return cls(vocab_size=chordmixer.vocab_size, d_model=d_model,
                   n_layers=chordmixer.n_blocks, n_heads=heads,
                   hidden_size=chordmixer.hidden_size, dropout=chordmixer.dropout,
                   max_len=chordmixer.max_len)

    def to_dict(self) -> dict:
        """Plain dict for checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TransformerConfig":
        """Rebuild from :meth:`to_dict` output; unknown keys are an error."""
        unknown = set(values) - {field.name for field in fields(cls)}
        if unknown:
            raise ValueError(f"unknown TransformerConfig keys: {sorted(unknown)}")
        return cls(**dict(values))


def sinusoidal(positions: torch.Tensor, d_model: int) -> torch.Tensor:
    """(T,) positions -> (T, d_model) sinusoidal features."""
    half = d_model // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device)
                            / half)  # (d/2,)
    angles = positions.float()[:, None] * frequencies[None, :]  # (T, d/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class TransformerLayer(nn.Module):
    """Pre-norm encoder layer: x + Attention(Norm(x)), then x + MLP(Norm(x))."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.n_heads, self.dropout = config.n_heads, config.dropout
        self.attention_dropout = config.attention_dropout
        self.attention_norm = nn.LayerNorm(config.d_model)
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)
        self.mlp_norm = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(nn.Linear(config.d_model, config.hidden_size), nn.GELU(),
                                 Dropout(config.dropout),
                                 nn.Linear(config.hidden_size, config.d_model))
        self.compiled_feed_forward = None  # set by models.compiling.set_compiled

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """MLP(Norm(x)) of every position: (T, d) -> (T, d)."""
        return self.mlp(self.mlp_norm(x))

    def forward(self, x: torch.Tensor, where: tuple, shape: tuple,
                keep: Optional[torch.Tensor]) -> torch.Tensor:
        """x: (T, d) packed; where: (sequence, position) of each token; keep: (B, 1, 1, L),
        or None when every sequence is as long as the longest (no mask: the fused kernels)."""
        n_sequences, longest = shape
        d_model = x.shape[1]
        qkv = self.qkv(self.attention_norm(x))  # (T, 3d)
        padded = qkv.new_zeros(n_sequences, longest, 3 * d_model)
        padded[where] = qkv
        q, k, v = padded.view(n_sequences, longest, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=keep,
            dropout_p=self.attention_dropout if self.training else 0.0)
        attended = attended.transpose(1, 2).reshape(n_sequences, longest, d_model)[where]
        x = x + dropout(self.out(attended), self.dropout, self.training)
        feed_forward = self.compiled_feed_forward or self.feed_forward
        return x + feed_forward(x)


class Transformer(nn.Module):
    """Embedding + positions + encoder layers over packed variable-length batches."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(TransformerLayer(config) for _ in range(config.n_layers))
        self.final_norm = nn.LayerNorm(config.d_model)

    def forward(self, tokens: torch.Tensor, offsets: torch.Tensor,
                added: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Encode a packed batch: (T,) tokens, (B+1,) offsets -> (T, d) features."""
        offsets = offsets.to(device=tokens.device, dtype=torch.int64)
        lengths = offsets[1:] - offsets[:-1]  # (B,)
        sequence = token_sequence(offsets, tokens.shape[0])  # (T,)
        position = token_position(offsets, sequence)  # (T,)
        longest = int(lengths.max())
        keep = None  # sequences of one length (one sequence, say) need no mask
        if int(lengths.min()) < longest:
            keep = (torch.arange(longest, device=tokens.device)[None, :] < lengths[:, None])
            keep = keep[:, None, None, :]  # (B, 1, 1, L): attend to real positions only
        x = self.embedding(tokens)  # (T, d), in this network's own dtype
        x = x + sinusoidal(position, self.config.d_model).to(x.dtype)
        if added is not None:
            x = x + added.to(x.dtype)
        for layer in self.layers:
            x = layer(x, (sequence, position), (lengths.numel(), longest), keep)
        return self.final_norm(x)
