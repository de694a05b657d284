"""Baselines reported beside every masked-base (MLM) model: base frequencies and a Markov chain.

A pretrained network only earns its cost if it predicts masked bases better than what
composition and short-range context already give. Both baselines are fitted on the training
sequences and give, for every position, a distribution over A C G T (columns 0-3):

- :class:`UnigramModel`: the base frequencies of the training data (Laplace-smoothed).
- :class:`MarkovModel`: P(base | the k bases to its left), read from count tables.

At evaluation time the context is read from the corrupted ``inputs`` of a
:class:`~cmx_cli.data.masking.MaskedSequence`, so the baselines see exactly what the network
sees: a MASK (or N) in the context forces a back-off to a shorter context. Only the left
context is used, so the Markov model is a lower bar than a bidirectional model could set.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import torch

from cmx_cli.alphabet import N_BASES
from cmx_cli.data.masking import MaskedSequence
from cmx_cli.errors import CmxError
from cmx_cli.io.checkpoint import load_plain_data
from cmx_cli.io.output import atomic_output
from cmx_cli.metrics.masked_bases import MlmMetrics

#: Where a pretraining run keeps its fitted baselines.
BASELINES_NAME = "baselines.pt"
#: Default context length. Order 5 (4**6 = 4,096 top-order counts) is well estimated from
#: a few hundred kilobases of training data, the smallest runs cmx is used for, and is cheap.
DEFAULT_ORDER = 5
#: Largest order accepted: the tables then hold about 4/3 * 4**11 = 5.6 M counts (45 MB).
MAX_ORDER = 10

TokenSource = Union[np.ndarray, object]  # a token array, or anything with a .tokens array


def _tokens(item: TokenSource) -> np.ndarray:
    """The int64 tokens of an array or of a sequence object with ``.tokens``."""
    return np.asarray(getattr(item, "tokens", item)).astype(np.int64, copy=False).reshape(-1)


def _inputs(masked: Union[MaskedSequence, np.ndarray]) -> np.ndarray:
    """The tokens a baseline may look at: the corrupted inputs of a masked sequence."""
    return np.asarray(getattr(masked, "inputs", masked)).astype(np.int64, copy=False).reshape(-1)


class UnigramModel:
    """Base frequencies of the training data: ``(count + pseudocount) / (total + 4 pseudocount)``.

    Args:
        pseudocount: Added to every base count (1 is Laplace smoothing); must be > 0.
    """

    def __init__(self, pseudocount: float = 1.0) -> None:
        if pseudocount <= 0:
            raise ValueError(f"pseudocount must be > 0, got {pseudocount}")
        self.pseudocount = pseudocount
        self.counts = np.zeros(N_BASES, dtype=np.int64)

    def fit(self, sequences: Iterable[TokenSource]) -> "UnigramModel":
        """Count the bases of the training sequences (streamed; N is not counted).

        Args:
            sequences: Token arrays (or objects with ``.tokens``), read one at a time.

        Returns:
            ``self``, with counts replaced.
        """
        self.counts[:] = 0
        for item in sequences:
            tokens = _tokens(item)
            self.counts += np.bincount(tokens[tokens < N_BASES], minlength=N_BASES)
        return self

    @property
    def probabilities(self) -> np.ndarray:
        """(4,) float64 smoothed base frequencies."""
        smoothed = self.counts + self.pseudocount
        return smoothed / smoothed.sum()

    def predict(self, masked: Union[MaskedSequence, np.ndarray]) -> np.ndarray:
        """Return the (L, 4) float64 base probabilities, the same at every position."""
        return np.tile(self.probabilities, (len(_inputs(masked)), 1))  # (L, 4)


class MarkovModel:
    """An order-k Markov chain on the left context: P(base | the previous k bases).

    Fitting counts, for every order j = 0..k, how often each base follows each j-base
    context; a window is counted only when all its j + 1 tokens are bases (N breaks it).
    The tables hold sum_j 4**(j+1) < 4/3 * 4**(k+1) counts, whatever the amount of data.

    Prediction at position i uses the longest context of j <= k bases ending at i - 1 that
    (a) lies inside the sequence, (b) holds only A C G T in the *corrupted* inputs (no N,
    no MASK), and (c) occurred in training. That order alone gives the distribution,
    ``(count + pseudocount) / (total + 4 pseudocount)``: a longest-match back-off without
    discounting, so each row is a proper distribution. Rule (c) matters: without it an
    unseen context would give a uniform guess, worse than a shorter seen context.

    Args:
        order: Context length k, 0 to :data:`MAX_ORDER` (0 is the unigram model).
        pseudocount: Added to every count (additive smoothing); must be > 0.
    """

    def __init__(self, order: int = DEFAULT_ORDER, pseudocount: float = 1.0) -> None:
        if not 0 <= order <= MAX_ORDER:
            raise ValueError(f"order must be between 0 and {MAX_ORDER}, got {order}")
        if pseudocount <= 0:
            raise ValueError(f"pseudocount must be > 0, got {pseudocount}")
        self.order = order
        self.pseudocount = pseudocount
        #: counts[j][context, base]: (4**j, 4) int64; context is the j bases in base 4,
        #: the oldest base most significant ("AC" is 0 * 4 + 1 = 1).
        self.counts = [np.zeros((N_BASES**j, N_BASES), dtype=np.int64) for j in range(order + 1)]
        self._totals: Optional[list[np.ndarray]] = None  # row sums, cached for predict

    def fit(self, sequences: Iterable[TokenSource]) -> "MarkovModel":
        """Replace the counts by those of the training sequences, read one at a time.

        Args:
            sequences: Token arrays (or objects with ``.tokens``).

        Returns:
            ``self``.
        """
        for table in self.counts:
            table[:] = 0
        self._totals = None
        for item in sequences:
            self.update(_tokens(item))
        return self

    def update(self, tokens: np.ndarray) -> None:
        """Add the counts of one sequence (O(k L) time, O(L) memory)."""
        self._totals = None
        tokens = _tokens(tokens)
        is_base = tokens < N_BASES
        digits = np.where(is_base, tokens, 0)
        codes = digits.copy()  # codes[i]: the window tokens[i-j..i] in base 4
        valid = is_base.copy()  # valid[i]: that window holds only bases
        for j, table in enumerate(self.counts):
            if j:
                codes[j:] += digits[:-j] * N_BASES**j  # prepend the base j steps back
                valid[j:] &= is_base[:-j]
                valid[:j] = False  # the window would start before the sequence
            table += np.bincount(codes[valid], minlength=table.size).reshape(table.shape)

    def predict(self, masked: Union[MaskedSequence, np.ndarray]) -> np.ndarray:
        """Return (L, 4) float64 base probabilities, each from the left context in ``inputs``.

        Args:
            masked: A masked sequence (its ``inputs`` are read) or a token array.

        Returns:
            (L, 4) rows that sum to 1 (see the class docstring for the back-off).
        """
        if self._totals is None:
            self._totals = [table.sum(axis=1) for table in self.counts]
        inputs = _inputs(masked)
        is_base = inputs < N_BASES
        digits = np.where(is_base, inputs, 0)
        length = inputs.size
        context = np.zeros(length, dtype=np.int64)  # context[i]: inputs[i-j..i-1] in base 4
        valid = np.ones(length, dtype=bool)
        chosen_order = np.zeros(length, dtype=np.int64)
        chosen_context = np.zeros(length, dtype=np.int64)
        for j in range(1, self.order + 1):
            context[j:] += digits[:-j] * N_BASES ** (j - 1)  # prepend the base j steps back
            valid[j:] &= is_base[:-j]
            valid[:j] = False
            # A context seen in training implies its shorter suffixes were seen, so the last
            # order that passes is the longest usable one.
            usable = valid & (self._totals[j][context] > 0)
            chosen_order[usable] = j
            chosen_context[usable] = context[usable]
        probabilities = np.empty((length, N_BASES), dtype=np.float64)  # (L, 4)
        for j in np.unique(chosen_order):
            rows = chosen_order == j
            smoothed = self.counts[j][chosen_context[rows]] + self.pseudocount  # (n, 4)
            probabilities[rows] = smoothed / smoothed.sum(axis=1, keepdims=True)
        return probabilities


def evaluate_baseline(
    model: Union[UnigramModel, MarkovModel],
    masked_sequences: Iterable[MaskedSequence],
    lowercase: Optional[Iterable[np.ndarray]] = None,
) -> MlmMetrics:
    """Score a fitted baseline on masked sequences (the same ones the network is scored on).

    Args:
        model: A fitted :class:`UnigramModel` or :class:`MarkovModel`.
        masked_sequences: The corrupted validation sequences.
        lowercase: Their (L,) bool soft-mask flags, in the same order (None: all uppercase).

    Returns:
        The filled accumulator; call ``.result()``.
    """
    metrics = MlmMetrics()
    flags = iter(lowercase) if lowercase is not None else None
    for masked in masked_sequences:
        case = next(flags) if flags is not None else None
        metrics.update(np.log(model.predict(masked)), masked, case)
    return metrics


def save_baselines(path: Path, unigram: UnigramModel, markov: MarkovModel) -> None:
    """Store the fitted baselines' counts (plain tensors, weights-only loadable)."""
    payload = {
        "unigram_counts": torch.from_numpy(unigram.counts),
        "unigram_pseudocount": unigram.pseudocount,
        "markov_order": markov.order,
        "markov_pseudocount": markov.pseudocount,
        "markov_counts": [torch.from_numpy(table) for table in markov.counts],
    }
    with atomic_output(path, "wb") as handle:
        torch.save(payload, handle)


def load_baselines(run_dir: Path) -> tuple[UnigramModel, MarkovModel]:
    """Read the baselines a pretraining run fitted on its training data."""
    path = Path(run_dir) / BASELINES_NAME
    if not path.is_file():
        raise CmxError(f"{path}: no fitted baselines in this run",
                       "pass the run directory of a finished `cmx pretrain`.")
    hint = "the run directory is damaged: run `cmx pretrain` again, or restore the file"
    payload = load_plain_data(path, "the fitted baselines of `cmx pretrain`", hint)
    try:
        unigram = UnigramModel(payload["unigram_pseudocount"])
        unigram.counts = payload["unigram_counts"].numpy()
        markov = MarkovModel(payload["markov_order"], payload["markov_pseudocount"])
        markov.counts = [table.numpy() for table in payload["markov_counts"]]
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise CmxError(f"{path}: damaged baselines ({type(error).__name__}: {error})",
                       hint) from error
    return unigram, markov
