"""The encoders a head can sit on: a ChordMixer, or the dot-product attention baseline of
the same width and depth (``--arch transformer``), each built from its frozen config."""
from __future__ import annotations

from typing import Union

import torch
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


def cast_encoders_(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast every encoder stack inside ``model`` to ``dtype``, weights and activations (in
    place; for inference). Heads, pooling and the bridges between stacks keep their own
    dtype: each stack takes its inputs in its dtype and hands on its output as it is.
    """
    networks = tuple(network for _, network in ARCHITECTURES.values())
    for module in model.modules():
        if isinstance(module, networks):
            module.to(dtype)
    return model
