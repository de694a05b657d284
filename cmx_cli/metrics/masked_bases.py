"""Masked-base (MLM) metrics: cross-entropy in bits per base, perplexity and accuracy.

The headline numbers are computed on the positions replaced by the MASK token
(corruption 1), where the model cannot see the base it must predict. The randomly replaced
and kept positions are reported apart (``by_corruption``), since the base shown there is the
answer or a decoy; ``all_selected`` pools every scored position. ``by_case`` splits the MASK
positions by soft-masking (lowercase letters are mostly repeats, which are easier).
``by_position`` splits them by where they lie in their sequence, in tenths of its length
(the start and end of a segment see context on one side only).

Bits per base is the mean of ``-log2 p(true base)``; a uniform guess over A C G T scores 2.
Perplexity is ``2 ** bits_per_base`` (between 1 and 4 for sensible predictors). Accuracy
takes the arg-max base (the first one on ties). A group with no positions reports ``None``.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
from cmx_cli.data.masking import KEPT, MASKED, RANDOM, MaskedSequence

#: Tenths of a sequence's length that MASK positions are grouped by (``by_position``).
POSITION_BINS = 10
#: Accumulated groups, in the order of the rows of :attr:`MlmMetrics.totals`.
GROUPS = ("mask", "random", "kept", "uppercase", "lowercase", "all_selected",
          *(f"position_{index}" for index in range(POSITION_BINS)))
_LN2 = math.log(2.0)


class MlmMetrics:
    """Accumulates masked-base predictions over many sequences (and batches).

    :attr:`totals` is a (groups, 3) float64 array: for each group in :data:`GROUPS`, the summed
    bits, the number of correct arg-max predictions and the number of positions. Sum it
    across processes (e.g. ``torch.distributed.all_reduce``) to combine shards.
    """

    def __init__(self) -> None:
        self.totals = np.zeros((len(GROUPS), 3), dtype=np.float64)

    def update(
        self,
        log_probs: np.ndarray,
        masked: MaskedSequence,
        lowercase: Optional[np.ndarray] = None,
    ) -> None:
        """Add one sequence's predictions.

        Args:
            log_probs: (L, 4) natural-log probabilities of A C G T at every position (a
                NumPy array, or a CPU tensor without gradient). Only selected positions
                are read.
            masked: The masked sequence the predictions were made from.
            lowercase: (L,) bool soft-mask flags (None: all uppercase).

        Raises:
            ValueError: If the shapes disagree (a programming error).
        """
        scores = np.asarray(log_probs, dtype=np.float64)
        length = len(masked)
        if scores.shape != (length, 4):
            raise ValueError(f"log_probs must have shape ({length}, 4), got {scores.shape}")
        flags = np.zeros(length, dtype=bool) if lowercase is None else np.asarray(lowercase, bool)
        if flags.shape != (length,):
            raise ValueError(f"lowercase must have shape ({length},), got {flags.shape}")
        positions = np.flatnonzero(masked.selected)
        targets = masked.targets[positions]
        bits = -scores[positions, targets] / _LN2  # (n,)
        correct = np.argmax(scores[positions], axis=1) == targets  # (n,)
        corruption = masked.corruption[positions]
        case = flags[positions]
        tenth = np.minimum(positions * POSITION_BINS // max(1, length), POSITION_BINS - 1)
        members = (
            corruption == MASKED,
            corruption == RANDOM,
            corruption == KEPT,
            (corruption == MASKED) & ~case,
            (corruption == MASKED) & case,
            np.ones(positions.size, dtype=bool),
            *((corruption == MASKED) & (tenth == index) for index in range(POSITION_BINS)),
        )
        for row, member in enumerate(members):
            self.totals[row] += (bits[member].sum(), correct[member].sum(), member.sum())

    def _group(self, name: str) -> dict:
        bits, correct, count = self.totals[GROUPS.index(name)]
        if count == 0:
            return {"n": 0, "bits_per_base": None, "perplexity": None, "accuracy": None}
        bits_per_base = float(bits / count) + 0.0  # + 0.0 turns -0.0 into 0.0
        return {
            "n": int(count),
            "bits_per_base": bits_per_base,
            "perplexity": float(2.0**bits_per_base),
            "accuracy": float(correct / count),
        }

    def result(self) -> dict:
        """Return the metrics as plain Python numbers (JSON-ready).

        Returns:
            ``{"n", "bits_per_base", "perplexity", "accuracy"}`` on MASK positions, plus
            ``"by_corruption": {"mask", "random", "kept"}``,
            ``"by_case": {"uppercase", "lowercase"}`` (MASK positions),
            ``"by_position"`` (MASK positions by tenth of their sequence, ``"0-10%"`` ...)
            and ``"all_selected"``, each a dict with the same four keys. Undefined values
            (no positions) are ``None``.
        """
        step = 100 // POSITION_BINS
        return {
            **self._group("mask"),
            "by_corruption": {name: self._group(name) for name in ("mask", "random", "kept")},
            "by_case": {name: self._group(name) for name in ("uppercase", "lowercase")},
            "by_position": {f"{index * step}-{(index + 1) * step}%":
                            self._group(f"position_{index}") for index in range(POSITION_BINS)},
            "all_selected": self._group("all_selected"),
        }


#: Bits per base under the Markov baseline that count as learning more than local base
#: statistics (a gain smaller than this is within what longer contexts of counts give).
MEANINGFUL_GAIN_BITS = 0.05


def beyond_local_statistics(model: dict, markov: dict, markov_order: int) -> str:
    """In words: did the model learn more than the order-k Markov model's local statistics?

    Args:
        model: The model's metrics (``bits_per_base``, None without MASK positions).
        markov: The Markov baseline's metrics on the same positions.
        markov_order: The baseline's context length.
    """
    if model["bits_per_base"] is None or markov["bits_per_base"] is None:
        return "no masked bases were scored, so there is nothing to compare"
    gain = markov["bits_per_base"] - model["bits_per_base"]
    baseline = f"the order-{markov_order} Markov model"
    if gain >= MEANINGFUL_GAIN_BITS:
        return (f"{gain:.3f} bits/base below {baseline}: it learnt more than local base "
                "statistics")
    if gain > 0:
        return (f"only {gain:.3f} bits/base below {baseline}: it learnt little beyond local "
                "base statistics; pretrain longer or on more sequence")
    return (f"{-gain:.3f} bits/base above {baseline}: it learnt no more than local base "
            "statistics; pretrain longer or on more sequence")
