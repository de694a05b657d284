"""The tokens a cmx network reads and predicts (DESIGN.md, "Tokens").

A C G T are 0-3, N (and every IUPAC ambiguity code) is 4, MASK is 5. The embedding of a
encoder has one row per token; a masked-base decoder predicts one of the four bases. How
letters become tokens is the reader's business (``cmx_cli.alphabet``).
"""
from __future__ import annotations

A, C, G, T, N, MASK = 0, 1, 2, 3, 4, 5
TOKEN_NAMES = ("A", "C", "G", "T", "N", "MASK")
#: Number of input tokens.
VOCAB_SIZE = len(TOKEN_NAMES)
#: Number of real bases (A C G T); every larger token is not a base.
N_BASES = 4
