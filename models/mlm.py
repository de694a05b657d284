"""The masked-base autoencoder of the paper's Appendix J.

A ChordMixer encoder (the one that `cmx train --init` and `cmx finetune` reuse) reads the
corrupted sequence; a smaller ChordMixer decoder turns its features into a prediction of
the four bases at every position. Only the encoder is kept for downstream jobs.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

import torch
from torch import nn

from models.chordmixer import ChordMixer
from models.config import ChordMixerConfig
from models.heads import rows_alike
from models.vocabulary import N_BASES


@dataclass(frozen=True)
class MaskedAutoencoderConfig:
    """Encoder and decoder shapes; the decoder takes the encoder's features (no embedding)."""

    encoder: ChordMixerConfig
    decoder: ChordMixerConfig

    def __post_init__(self) -> None:
        if self.decoder.vocab_size != 0:
            raise ValueError("the decoder takes features: its vocab_size must be 0")
        if self.decoder.max_len != self.encoder.max_len:
            raise ValueError("encoder and decoder must be built for the same max_len")

    @classmethod
    def build(cls, encoder: ChordMixerConfig, decoder_track_size: int,
              decoder_hidden_size: int) -> "MaskedAutoencoderConfig":
        """A decoder with the encoder's tracks and depth but its own (smaller) widths."""
        decoder = replace(encoder, vocab_size=0, track_size=decoder_track_size,
                          hidden_size=decoder_hidden_size, local_radius=0)
        return cls(encoder, decoder)

    def to_dict(self) -> dict:
        """Plain nested dict for checkpoints."""
        return {"encoder": self.encoder.to_dict(), "decoder": self.decoder.to_dict()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "MaskedAutoencoderConfig":
        """Rebuild from :meth:`to_dict` output."""
        return cls(ChordMixerConfig.from_dict(values["encoder"]),
                   ChordMixerConfig.from_dict(values["decoder"]))


class MaskedAutoencoder(nn.Module):
    """Per-position base logits from a corrupted packed batch."""

    def __init__(self, config: MaskedAutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ChordMixer(config.encoder)
        self.bridge = nn.Linear(config.encoder.d_model, config.decoder.d_model)
        self.decoder = ChordMixer(config.decoder)
        self.output = nn.Linear(config.decoder.d_model, N_BASES)

    def forward(self, tokens: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Predict the base at every position.

        Args:
            tokens: (T,) int64 corrupted tokens (MASK where a base is hidden).
            offsets: (B+1,) int64 boundaries.

        Returns:
            (T, 4) float32 logits over A, C, G, T.
        """
        # float32, as the encoder's residual stream is: under bf16 autocast the Linear
        # returns bf16, and the decoder's residual stream would round to it. (The decoder
        # takes it in its own dtype, which differs when its weights are cast for inference.)
        encoded = self.encoder(tokens, offsets)  # (T, d)
        features = self.bridge(encoded.to(self.bridge.weight.dtype)).float()  # (T, d_decoder)
        return rows_alike(self.output, self.decoder(features, offsets))  # (T, 4)
