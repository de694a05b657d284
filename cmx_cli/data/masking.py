"""Masked-base corruption for pretraining (paper, appendix J: infer hidden bases from the rest).

Each base is selected independently with probability ``rate``. Of the selected positions,
the ``80-10-10`` scheme (BERT's) replaces 80 % with the MASK token, 10 % with a random base
and keeps 10 % unchanged; ``mask-only`` replaces all of them with MASK. Rules that differ
from the authors' pretraining code (DESIGN.md, "Known facts"):

- N (token 4) is never selected: it is never a target, and it is never turned into MASK.
  MASK (token 5) is its own token, distinct from N.
- The random replacement is drawn per position, uniformly over A C G T. It may equal the
  original base (a quarter of the time), so 7.5 % of selected positions are actually
  changed and the "random" group scores partly like "kept" ones; this is BERT's rule too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from cmx_cli import alphabet

Scheme = Literal["80-10-10", "mask-only"]
SCHEMES = ("80-10-10", "mask-only")
#: Target value at positions that are not scored (PyTorch's cross-entropy default).
IGNORE_INDEX = -100
#: Corruption codes, per position.
NONE, MASKED, RANDOM, KEPT = 0, 1, 2, 3
CORRUPTION_NAMES = ("none", "mask", "random", "kept")
#: Shares of the selected positions in the 80-10-10 scheme: MASK, random base, kept.
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1


@dataclass(frozen=True)
class MaskedSequence:
    """One corrupted sequence and what the model must recover.

    Attributes:
        inputs: (L,) uint8 tokens the model sees: MASK (5) or a random base at some
            selected positions, the original tokens elsewhere.
        targets: (L,) int64 original base (0-3) at selected positions, ``IGNORE_INDEX``
            (-100) elsewhere.
        corruption: (L,) uint8 code per position: 0 none, 1 MASK, 2 random base, 3 kept.
    """

    inputs: np.ndarray
    targets: np.ndarray
    corruption: np.ndarray

    @property
    def selected(self) -> np.ndarray:
        """(L,) bool, True at the positions scored."""
        return self.targets >= 0

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


def mask_tokens(
    tokens: np.ndarray,
    rate: float,
    scheme: Scheme,
    rng: np.random.Generator,
) -> MaskedSequence:
    """Corrupt one sequence for masked-base training.

    Draws, in this order: one uniform number per position (selection), then one per selected
    position (MASK / random / kept), then one random base per random position; so the result
    is a pure function of the tokens and the generator state.

    Args:
        tokens: (L,) uint8 tokens A C G T N = 0-4.
        rate: Probability that a base (not N) is selected, in [0, 1].
        scheme: ``"80-10-10"`` or ``"mask-only"``.
        rng: Random generator.

    Returns:
        The corrupted sequence; ``tokens`` is not modified.

    Raises:
        ValueError: On a bad rate, scheme or token (a programming error).
    """
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    tokens = np.asarray(tokens, dtype=np.uint8).reshape(-1)
    if tokens.size and tokens.max() > alphabet.N:
        raise ValueError("tokens must be A C G T N (0-4); MASK cannot be masked again")
    selected = (rng.random(tokens.size) < rate) & (tokens < alphabet.N)  # (L,)
    positions = np.flatnonzero(selected)
    corruption = np.zeros(tokens.size, dtype=np.uint8)
    if scheme == "mask-only":
        corruption[positions] = MASKED
    else:
        draw = rng.random(positions.size)
        corruption[positions] = np.where(
            draw < MASK_SHARE, MASKED, np.where(draw < MASK_SHARE + RANDOM_SHARE, RANDOM, KEPT)
        )
    inputs = tokens.copy()
    inputs[corruption == MASKED] = alphabet.MASK
    random_positions = np.flatnonzero(corruption == RANDOM)
    # One draw per position, not one per sequence (the authors' code drew one per sequence).
    inputs[random_positions] = rng.integers(0, 4, size=random_positions.size, dtype=np.uint8)
    targets = np.full(tokens.size, IGNORE_INDEX, dtype=np.int64)
    targets[positions] = tokens[positions]
    return MaskedSequence(inputs, targets, corruption)


def weights(lowercase: np.ndarray, lowercase_weight: float) -> np.ndarray:
    """Per-position loss weights: ``lowercase_weight`` at soft-masked letters, 1 elsewhere.

    Soft-masked (lowercase) letters are usually repeats; weighting them down keeps the
    loss from being dominated by easy, repetitive sequence.

    Args:
        lowercase: (L,) bool soft-mask flags.
        lowercase_weight: Weight of a lowercase position (>= 0).

    Returns:
        (L,) float32 weights.
    """
    if lowercase_weight < 0:
        raise ValueError(f"lowercase_weight must be >= 0, got {lowercase_weight}")
    flags = np.asarray(lowercase, dtype=bool)
    return np.where(flags, np.float32(lowercase_weight), np.float32(1.0)).astype(np.float32)
