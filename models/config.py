"""Frozen configuration of a ChordMixer network (STYLE.md rule 3).

The network's shape is fully determined by this dataclass. It is saved inside every
checkpoint as a plain dict and rebuilt from it, never from command-line flags.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from models.vocabulary import VOCAB_SIZE


def ceil_log2(n: int) -> int:
    """Return ⌈log2 n⌉ for n ≥ 1 (0 for n = 1), exactly, without floating point."""
    if n < 1:
        raise ValueError(f"ceil_log2 needs n >= 1, got {n}")
    return (n - 1).bit_length()


def blocks_for_length(length: int) -> int:
    """Number of blocks a sequence of this length passes: ⌈log2 L⌉, at least one (paper §3.3)."""
    return max(1, ceil_log2(length))


@dataclass(frozen=True)
class ChordMixerConfig:
    """Shape of a ChordMixer encoder (paper §3.2; DESIGN.md "The ChordMixer core").

    Attributes:
        vocab_size: Number of input tokens (A C G T N MASK for DNA); 0 for a stack that
            takes (T, d) features instead of tokens (a decoder).
        max_len: Longest sequence the network is built for. Sets the number of tracks and
            blocks; longer sequences still run, through all blocks, with a partial receptive
            field.
        track_size: Channels per track.
        hidden_size: Hidden width h of each block's MLP.
        dropout: Dropout inside each block's MLP.
        norm: Apply LayerNorm before each block's MLP and after the last block.
        reversible: Reversible blocks (``models.reversible``): two half-width blocks each,
            whose inputs backward rebuilds from their outputs, so that training keeps no
            activations per block. Needs an even ``track_size``.
        local_radius: A local stem (``models.local_context``): each position's input also
            embeds the bases up to this many positions away on each side. 0: none, the
            paper's network.
    """

    vocab_size: int = VOCAB_SIZE
    max_len: int = 4096
    track_size: int = 16
    hidden_size: int = 128
    dropout: float = 0.1
    norm: bool = True
    reversible: bool = False
    local_radius: int = 0

    def __post_init__(self) -> None:
        if self.vocab_size < 0 or self.max_len < 1 or self.track_size < 1 or self.hidden_size < 1:
            raise ValueError(f"ChordMixerConfig sizes must be positive: {self}")
        if self.reversible and self.track_size % 2:
            raise ValueError("reversible blocks split every track in two halves, so the track "
                             f"size must be even, got {self.track_size}")
        if self.local_radius < 0 or (self.local_radius and not self.vocab_size):
            raise ValueError("local_radius must be >= 0, and 0 for a network without tokens, "
                             f"got {self.local_radius}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def n_tracks(self) -> int:
        """⌈log2 max_len⌉ + 1 tracks: track 0 is never rotated, track k by 2^(k-1)."""
        return ceil_log2(self.max_len) + 1

    @property
    def d_model(self) -> int:
        """Channels d = track_size × n_tracks."""
        return self.track_size * self.n_tracks

    @property
    def n_blocks(self) -> int:
        """⌈log2 max_len⌉ blocks, at least one."""
        return blocks_for_length(self.max_len)

    @property
    def reach(self) -> int:
        """The longest sequence of which every output position depends on every input
        position (Prop. 3.1): 2^n_blocks, at least max_len."""
        return 2 ** self.n_blocks

    def to_dict(self) -> dict:
        """Return a plain dict, safe for ``torch.save`` and ``torch.load(weights_only=True)``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ChordMixerConfig":
        """Rebuild a config from :meth:`to_dict` output; unknown keys are an error."""
        known = {field.name for field in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown ChordMixerConfig keys: {sorted(unknown)}")
        return cls(**dict(values))
