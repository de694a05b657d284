"""The settings shared by several commands, one frozen dataclass per group (STYLE.md rule 3).

The command line fills each group from its options (:mod:`cmx_cli.cli.options`); a job's
config nests the groups it uses, and is saved as config.json with :func:`to_dict` and rebuilt
with :func:`from_dict`, recursively.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Mapping, Optional, TypeVar

from cmx_cli import alphabet
from models import ChordMixerConfig

Settings = TypeVar("Settings")


@dataclass(frozen=True)
class Runtime:
    """Where and how the network runs.

    Attributes:
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``auto``, ``fp32`` or ``bf16``.
        compile_blocks: Compile each block's norm and MLP with ``torch.compile``.
        threads: The most CPU threads torch uses within an operation (None: torch's
            default, one per core).
    """

    device: str = "auto"
    precision: str = "auto"
    compile_blocks: bool = False
    threads: Optional[int] = None


@dataclass(frozen=True)
class EncoderShape:
    """The shape of a new ChordMixer encoder (ignored when it starts from a pretrained one).

    Attributes:
        max_len: Longest sequence it is sized for, in bp; None: the longest in the data.
        track_size: Channels per track.
        hidden_size: Hidden width of each block's MLP.
        dropout: Dropout inside each block's MLP.
        reversible: Reversible blocks (:mod:`models.reversible`).
        local_radius: Bases on each side that the local stem embeds with each base
            (:mod:`models.local_context`); 0: none, the paper's network.
    """

    max_len: Optional[int] = None
    track_size: int = 16
    hidden_size: int = 128
    dropout: float = 0.1
    reversible: bool = False
    local_radius: int = 4

    def encoder(self, longest: int) -> ChordMixerConfig:
        """The encoder's config, sized for ``max_len`` or else for ``longest`` bp."""
        return ChordMixerConfig(vocab_size=alphabet.VOCAB_SIZE, max_len=self.max_len or longest,
                                track_size=self.track_size, hidden_size=self.hidden_size,
                                dropout=self.dropout, reversible=self.reversible,
                                local_radius=self.local_radius)


@dataclass(frozen=True)
class EncoderStart:
    """Where a downstream model's encoder starts.

    Attributes:
        init: A `cmx pretrain` run (or its model.pt) whose encoder is copied; None: random.
        freeze_encoder: Train only what is new (the head), keep the encoder as it is.
        encoder_lr_scale: The pretrained encoder's learning rate, as a share of the peak
            learning rate that the new parts train at.
    """

    init: Optional[str] = None
    freeze_encoder: bool = False
    encoder_lr_scale: float = 1.0


@dataclass(frozen=True)
class HeldOut:
    """Shares held out of the training data when no held-out files or contigs are given."""

    val_fraction: float = 0.1
    test_fraction: float = 0.1


#: `cmx pretrain`'s peak learning rate, above the 1e-3 of :class:`TrainingSettings`: on the
#: README's learning curve it learnt more per minute (1.904 against 1.917 bits/base on
#: held-out chr04 of U. maydis after 15 minutes on two cores).
PRETRAINING_LEARNING_RATE = 3e-3


@dataclass(frozen=True)
class TrainingSettings:
    """How long and how to optimise (the flags shared by train, pretrain and finetune)."""

    epochs: Optional[int] = 20
    max_steps: Optional[int] = None
    max_time_minutes: Optional[float] = None
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    grad_clip: float = 1.0
    patience: Optional[int] = 5
    seed: int = 0
    checkpointing: bool = False


@dataclass(frozen=True)
class VariantInput:
    """How variants are read against their reference genome.

    Attributes:
        reference: The reference FASTA the variants were called against.
        regions: Read only these regions of the VCF (``chrom[:start-end]``).
        contig_map: TSV of VCF contig name and FASTA contig name.
        ref_mismatch: ``error``, ``warn`` or ``skip`` when REF disagrees with the FASTA.
        window: Window around each variant, in bp (None: the model's own, for prediction).
    """

    reference: str
    regions: tuple[str, ...] = ()
    contig_map: Optional[str] = None
    ref_mismatch: str = "skip"
    window: Optional[int] = None


def to_dict(settings: Any) -> dict:
    """A settings dataclass as a plain dict (nested groups as dicts), for config.json."""
    return dataclasses.asdict(settings)


def from_dict(kind: type[Settings], values: Mapping[str, Any]) -> Settings:
    """Rebuild a settings dataclass from :func:`to_dict` output (or its JSON).

    Nested groups are rebuilt recursively and JSON lists become tuples where the field is a
    tuple. A missing field takes its default.

    Raises:
        TypeError: For a key the dataclass does not have, or a missing required field.
    """
    hints = typing.get_type_hints(kind)
    names = {field.name for field in dataclasses.fields(kind)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise TypeError(f"unknown {kind.__name__} settings: {', '.join(unknown)}")
    return kind(**{name: _value(hints[name], value) for name, value in values.items()})


def _value(hint: Any, value: Any) -> Any:
    """Convert one JSON value to the type a field declares."""
    if value is None:
        return None
    arguments = [argument for argument in typing.get_args(hint) if argument is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(arguments) == 1:
        return _value(arguments[0], value)  # Optional[X]
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value)
    if hint is tuple or typing.get_origin(hint) is tuple:
        return tuple(value)
    return value
