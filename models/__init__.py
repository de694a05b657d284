"""The shared ChordMixer core: pure PyTorch, no file I/O, no printing (STYLE.md rule 1).

Note: ``models`` is a top-level import name; it can shadow another installed package of the
same name.
"""
from models.chordmixer import ChordMixer, ChordMixerBlock, set_checkpointing
from models.compiling import set_compiled
from models.config import ChordMixerConfig, blocks_for_length, ceil_log2
from models.encoders import cast_encoders_
from models.heads import ClassifierConfig, SequenceClassifier, mean_pool
from models.transformer import Transformer, TransformerConfig
from models.mlm import MaskedAutoencoder, MaskedAutoencoderConfig
from models.rotate import (
    ReferenceRotationPlan, RotationPlan, rotate_reference, rotation_source_rows)
from models.variant import VariantClassifier, VariantClassifierConfig

__all__ = [
    "ChordMixer",
    "ChordMixerBlock",
    "ChordMixerConfig",
    "ClassifierConfig",
    "MaskedAutoencoder",
    "MaskedAutoencoderConfig",
    "ReferenceRotationPlan",
    "RotationPlan",
    "SequenceClassifier",
    "Transformer",
    "TransformerConfig",
    "VariantClassifier",
    "VariantClassifierConfig",
    "blocks_for_length",
    "cast_encoders_",
    "ceil_log2",
    "mean_pool",
    "rotate_reference",
    "rotation_source_rows",
    "set_checkpointing",
    "set_compiled",
]
