"""The siamese variant classifier of `cmx finetune` (paper Appendix J, DESIGN.md "Variants").

One ChordMixer encoder reads both windows of a variant, the reference (REF) window and the
same region with the allele applied (ALT), with shared weights. A small MLP classifies the
pair from:

* pooled features: the mean over each window, combined as
  [h_ref, h_alt, h_ref · h_alt, h_alt − h_ref];
* site features (``site_features``): the same four combinations of the mean over the
  allele's own positions (one position for an SNV, the allele's span for an indel). A mean
  over a 1,000-base window dilutes a one-base difference; the site features do not;
* an optional input marker (``marker``): a learned vector added to the embedding at the
  allele's positions, so that every block knows where the variant is.

With groups (e.g. tissues), the MLP has one output per group and the caller reads the one of
each variant's group.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from models.chordmixer import ChordMixer
from models.config import ChordMixerConfig
from models.dropout import Dropout
from models.heads import mean_pool, rows_alike
from models.packed import token_position, token_sequence


@dataclass(frozen=True)
class VariantClassifierConfig:
    """Shape of a siamese variant classifier.

    Attributes:
        encoder: The shared encoder.
        n_groups: Outputs of the classifier, one per group (1 without groups).
        site_features: Feed the features at the allele's positions to the classifier.
        marker: Add a learned marker to the input embedding at the allele's positions.
        head_hidden: Hidden width of the classifier MLP.
        head_dropout: Dropout before the classifier's last layer.
    """

    encoder: ChordMixerConfig
    n_groups: int = 1
    site_features: bool = True
    marker: bool = True
    head_hidden: int = 128
    head_dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.n_groups < 1 or self.head_hidden < 1:
            raise ValueError(f"n_groups and head_hidden must be positive: {self}")
        if self.encoder.vocab_size == 0:
            raise ValueError("the variant classifier's encoder reads tokens (vocab_size > 0)")

    @property
    def n_features(self) -> int:
        """Width of the classifier's input."""
        return 4 * self.encoder.d_model * (2 if self.site_features else 1)

    def to_dict(self) -> dict:
        """Plain nested dict for checkpoints."""
        return {"encoder": self.encoder.to_dict(), "n_groups": self.n_groups,
                "site_features": self.site_features, "marker": self.marker,
                "head_hidden": self.head_hidden, "head_dropout": self.head_dropout}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "VariantClassifierConfig":
        """Rebuild from :meth:`to_dict` output (``trunk`` is the encoder's key in
        checkpoints written before cmx named it so)."""
        values = dict(values)
        encoder = values.pop("encoder") if "encoder" in values else values.pop("trunk")
        return cls(encoder=ChordMixerConfig.from_dict(encoder), **values)


def span_mask(offsets: torch.Tensor, spans: torch.Tensor, total: int) -> torch.Tensor:
    """Mark the positions of each sequence's span in a packed batch.

    Args:
        offsets: (B+1,) int64 sequence boundaries.
        spans: (B, 2) int64 half-open spans, relative to each sequence's start.
        total: T, the number of packed positions.

    Returns:
        (T,) bool, True inside a span.
    """
    sequence_of_token = token_sequence(offsets, total)  # (T,)
    relative = token_position(offsets, sequence_of_token)  # (T,)
    return (relative >= spans[sequence_of_token, 0]) & (relative < spans[sequence_of_token, 1])


def span_mean(features: torch.Tensor, inside: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
    """Mean of each sequence's features over its span (float32).

    The marked positions of a packed batch are each sequence's span, in order, so they form
    a packed batch of their own: its mean pool is the span mean.

    Args:
        features: (T, d) packed features.
        inside: (T,) bool, :func:`span_mask` of ``spans``.
        spans: (B, 2) int64 half-open spans, each non-empty and inside its sequence.

    Returns:
        (B, d) float32 means.
    """
    span_offsets = torch.zeros(spans.shape[0] + 1, dtype=torch.int64, device=spans.device)
    torch.cumsum(spans[:, 1] - spans[:, 0], dim=0, out=span_offsets[1:])
    return mean_pool(features[inside], span_offsets)


def _pair_features(ref: torch.Tensor, alt: torch.Tensor) -> torch.Tensor:
    return torch.cat([ref, alt, ref * alt, alt - ref], dim=1)  # (B, 4d)


class VariantClassifier(nn.Module):
    """Logits per group for REF/ALT window pairs."""

    def __init__(self, config: VariantClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ChordMixer(config.encoder)
        d_model = config.encoder.d_model
        # Drawn like an embedding row (N(0, 1)), so the marker is as visible as a token from
        # the first step; a zero start left it almost unused in short fine-tuning runs.
        self.marker = nn.Parameter(torch.randn(d_model)) if config.marker else None
        self.head = nn.Sequential(
            nn.LayerNorm(config.n_features),
            nn.Linear(config.n_features, config.head_hidden),
            nn.GELU(),
            Dropout(config.head_dropout),
            nn.Linear(config.head_hidden, config.n_groups),
        )

    def forward(self, tokens: torch.Tensor, offsets: torch.Tensor,
                spans: torch.Tensor) -> torch.Tensor:
        """Classify B variants packed as 2B sequences: the B REF windows, then the B ALT windows.

        Args:
            tokens: (T,) int64 tokens of the 2B windows.
            offsets: (2B+1,) int64 boundaries.
            spans: (2B, 2) int64 half-open allele spans inside each window.

        Returns:
            (B, n_groups) float32 logits.
        """
        offsets = offsets.to(device=tokens.device, dtype=torch.int64)
        spans = spans.to(device=tokens.device, dtype=torch.int64)
        inside = span_mask(offsets, spans, tokens.shape[0])  # (T,)
        added = None
        if self.marker is not None:
            added = inside[:, None].to(self.marker.dtype) * self.marker  # (T, d)
        features = self.encoder(tokens, offsets, added)  # (T, d)
        pooled = mean_pool(features, offsets)  # (2B, d)
        n_variants = pooled.shape[0] // 2
        combined = _pair_features(pooled[:n_variants], pooled[n_variants:])
        if self.config.site_features:
            site = span_mean(features, inside, spans)  # (2B, d)
            combined = torch.cat(
                [combined, _pair_features(site[:n_variants], site[n_variants:])], dim=1)
        return rows_alike(self.head, combined)  # (B, n_groups)
