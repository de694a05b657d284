"""The DNA alphabet shared by every cmx model: the tokens every input becomes.

A C G T map to 0-3. N and every other IUPAC ambiguity code map to 4. U (RNA) is read as T.
Lowercase (soft-masked) letters are the same bases; their positions are available as a flag
for loss weighting. MASK (5) is a special token for masked-base pretraining, distinct from N.
Any other byte (protein letters, digits, gaps, binary) is an input error.
"""
from __future__ import annotations

import numpy as np

from models.vocabulary import A, C, G, MASK, N, N_BASES, T, TOKEN_NAMES, VOCAB_SIZE  # noqa: F401

BASES = "ACGT"
ALPHABET_NAME = "ACGTN+MASK"

#: IUPAC ambiguity codes other than N; all of them become N.
AMBIGUITY_CODES = "RYKMSWBDHV"
INVALID = 255

_LOOKUP = np.full(256, INVALID, dtype=np.uint8)
for _code, _letters in ((A, "Aa"), (C, "Cc"), (G, "Gg"), (T, "TtUu")):
    for _letter in _letters:
        _LOOKUP[ord(_letter)] = _code
for _letter in AMBIGUITY_CODES + "N":
    _LOOKUP[ord(_letter)] = N
    _LOOKUP[ord(_letter.lower())] = N
_LOOKUP.setflags(write=False)

#: Complement of each token: A<->T, C<->G, N and MASK stay.
COMPLEMENT = np.array([T, G, C, A, N, MASK], dtype=np.uint8)


def encode(sequence: bytes | str) -> np.ndarray:
    """Map letters to tokens.

    Args:
        sequence: DNA letters, any case.

    Returns:
        uint8 array of tokens, with :data:`INVALID` (255) where a letter is not DNA.
    """
    raw = sequence.encode("ascii", "replace") if isinstance(sequence, str) else sequence
    return _LOOKUP[np.frombuffer(raw, dtype=np.uint8)]


def first_invalid(tokens: np.ndarray) -> int:
    """Return the index of the first invalid token, or -1 when all are valid."""
    bad = np.flatnonzero(tokens == INVALID)
    return int(bad[0]) if bad.size else -1


def lowercase_mask(sequence: bytes | str) -> np.ndarray:
    """Return a bool array that is True where the letter is lowercase (soft-masked)."""
    raw = sequence.encode("ascii", "replace") if isinstance(sequence, str) else sequence
    return np.frombuffer(raw, dtype=np.uint8) >= ord("a")


def reverse_complement(tokens: np.ndarray) -> np.ndarray:
    """Return the reverse complement of a token array (tokens, not letters)."""
    return COMPLEMENT[tokens[::-1]]


def decode(tokens: np.ndarray) -> str:
    """Map tokens back to letters (MASK as '?'); for messages and tests."""
    return "".join("ACGTN?"[int(token)] for token in tokens)
