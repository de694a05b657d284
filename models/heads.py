"""Sequence-level heads on top of a ChordMixer encoder (paper §3.2, last paragraph).

The paper averages linear predictions over positions; because averaging and a linear map
commute, the head takes the mean over each sequence's own positions, then one linear layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from models.encoders import ARCHITECTURES, EncoderConfig, architecture_of, build_encoder
from models.packed import token_sequence


def mean_pool(features: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Mean of each sequence's own positions.

    Args:
        features: (T, d) packed features.
        offsets: (B+1,) int64 sequence boundaries.

    Returns:
        (B, d) float32 means (summed in float32 even under bf16 autocast).
    """
    offsets = offsets.to(device=features.device, dtype=torch.int64)
    lengths = offsets[1:] - offsets[:-1]  # (B,)
    sequence_of_token = token_sequence(offsets, features.shape[0])  # (T,)
    sums = torch.zeros(lengths.numel(), features.shape[1], device=features.device,
                       dtype=torch.float32)  # (B, d)
    sums.index_add_(0, sequence_of_token, features.float())
    return sums / lengths[:, None].to(torch.float32)


#: A head's matrix products run on a multiple of this many rows (see :func:`rows_alike`).
ROW_TILE = 16


def rows_alike(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``head(x)`` for a row-wise head (linear layers, norms), each row computed alike
    whatever shares its batch; float32 whatever the autocast.

    A CPU matrix product takes other code paths, which round differently, by the number of
    rows: below 16 rows, and for a single output column at any number not a multiple of
    16; bf16 kernels change with it too. So in evaluation a head runs in float32 on a
    multiple of :data:`ROW_TILE` rows (zero rows added, then dropped). A sequence's or a
    variant's output then does not depend on its batch companions, and a VCF scored in
    shards gives the scores of one whole run. Training runs the head on the rows given
    (padding would draw more dropout).

    Args:
        head: Applied row by row.
        x: (R, n) inputs.

    Returns:
        (R, m) float32 outputs.
    """
    with torch.autocast(x.device.type, enabled=False):
        x = x.float()
        rows = x.shape[0]
        missing = -rows % ROW_TILE
        if head.training or not missing:
            return head(x)
        padded = torch.cat([x, x.new_zeros(missing, x.shape[1])])  # (rows + missing, n)
        return head(padded)[:rows]


@dataclass(frozen=True)
class ClassifierConfig:
    """An encoder (ChordMixer, or the Transformer baseline) plus a linear layer over the
    mean-pooled features."""

    encoder: EncoderConfig
    n_classes: int

    def __post_init__(self) -> None:
        if self.n_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {self.n_classes}")

    def to_dict(self) -> dict:
        """Plain nested dict for checkpoints."""
        return {"arch": architecture_of(self.encoder), "encoder": self.encoder.to_dict(),
                "n_classes": self.n_classes}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ClassifierConfig":
        """Rebuild from :meth:`to_dict` output (no ``arch`` key: a ChordMixer; ``trunk``
        is the encoder's key in checkpoints written before cmx named it so)."""
        arch = values.get("arch", "chordmixer")
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {arch!r}")
        encoder = ARCHITECTURES[arch][0].from_dict(values.get("encoder", values.get("trunk")))
        return cls(encoder, int(values["n_classes"]))


class SequenceClassifier(nn.Module):
    """Class logits for each sequence of a packed batch."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config.encoder)
        self.classifier = nn.Linear(config.encoder.d_model, config.n_classes)

    def forward(self, tokens: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Classify a packed batch.

        Args:
            tokens: (T,) int64 tokens.
            offsets: (B+1,) int64 boundaries.

        Returns:
            (B, n_classes) float32 logits.
        """
        pooled = mean_pool(self.encoder(tokens, offsets), offsets)  # (B, d)
        return rows_alike(self.classifier, pooled)  # (B, n_classes)
