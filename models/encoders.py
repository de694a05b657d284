"""The encoders a head can sit on: a ChordMixer, or the dot-product attention baseline of
the same width and depth (``--arch transformer``), each built from its frozen config."""
from __future__ import annotations

from typing import Union

from torch import nn

from models.chordmixer import ChordMixer
from models.config import ChordMixerConfig
from models.transformer import Transformer, TransformerConfig

EncoderConfig = Union[ChordMixerConfig, TransformerConfig]
#: Architecture name -> (config type, network type).
ARCHITECTURES = {"chordmixer": (ChordMixerConfig, ChordMixer),
                 "transformer": (TransformerConfig, Transformer)}


def architecture_of(config: EncoderConfig) -> str:
    """The architecture name of an encoder config."""
    return next(name for name, (kind, _) in ARCHITECTURES.items() if isinstance(config, kind))


def build_encoder(config: EncoderConfig) -> nn.Module:
    """The encoder network of a config."""
    return ARCHITECTURES[architecture_of(config)][1](config)
