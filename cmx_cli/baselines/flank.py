"""The flank baseline reported beside every cmx variant classifier.

A logistic regression that sees only the REF and ALT alleles and ``flank`` bp (default 5)
on each side of them, never the distant context. A variant classifier that does not beat
it has learned local sequence (substitution type, codon context, splice-site motifs), not
anything that needs a 1,000 bp window.

Features (one sparse binary row per :class:`AlleleWindow`; ``F = flank``, ``P = 2F + 1``):

1. **REF context**, ``P * 5`` columns: a one-hot over A C G T N (tokens 0-4) at each of
   ``P`` slots of the REF window: the ``F`` positions before ``ref_span`` starts, the first
   base of the REF allele, and the ``F`` positions after ``ref_span`` ends. A slot outside
   the window (variant near a contig end) or holding MASK is all zero. Column
   ``slot * 5 + base``; slots run left to right.
2. **ALT context**, ``P * 5`` columns: the same around ``alt_span`` in the ALT window.
3. **Variant class**, 28 columns: for an SNV (REF and ALT both 1 bp) the substitution
   ``ref_base * 5 + alt_base`` over A C G T N (25 classes: the 12 ACGT substitutions, the
   8 involving N, and 5 identities such as A->A, which a clean VCF never holds); then
   ``25`` insertion (ALT longer), ``26`` deletion (ALT shorter), ``27`` MNV (same length,
   more than 1 bp). Tokens above N (MASK) count as N here.
4. **Length change**, ``P`` columns: one-hot of ``len(ALT) - len(REF)`` clipped to
   ``[-F, F]`` (column ``delta + F``).
5. **Frame**, 3 columns: one-hot of ``(len(ALT) - len(REF)) mod 3``, so indels longer than
   ``F`` bp still say whether they shift a reading frame.
6. **Class x flank**, ``28 * 2F * 5`` columns: the outer product of the variant class with
   the REF context's ``2F`` flank slots (the allele's own base is left out: for an SNV the
   class already fixes it). Column ``class * 10F + flank_slot * 5 + base``. These let a
   linear model express "this substitution in this local context" (e.g. synonymy depends
   on the substitution and the codon around it jointly).

For ``flank = 5``: 55 + 55 + 28 + 11 + 3 + 1,400 = 1,552 columns, at most 35 non-zero per
row. Only the ``2 * P`` context tokens of each window are read, so featurising 50,000
windows of 1,000 bp takes about a second.

One logistic regression (lbfgs, L2, inverse strength ``c``) is fitted per group; a group
whose training labels hold one class predicts that class's training frequency (0 or 1).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from cmx_cli.variants.windows import AlleleWindow

#: One-hot width of a context slot: A C G T N (tokens 0-4); MASK and missing are all zero.
N_SYMBOLS = 5
#: SNV substitution classes ``ref * 5 + alt`` over A C G T N.
N_SNV_CLASSES = N_SYMBOLS * N_SYMBOLS
INSERTION, DELETION, MNV = N_SNV_CLASSES, N_SNV_CLASSES + 1, N_SNV_CLASSES + 2
N_CLASSES = N_SNV_CLASSES + 3
#: Sentinel for a context slot with no base (outside the window, or MASK).
MISSING = -1


@dataclass(frozen=True)
class _Layout:
    """Column offsets of the feature blocks for one flank (module docstring)."""

    flank: int

    @property
    def slots(self) -> int:
        """Context slots per window: F before, the allele's first base, F after."""
        return 2 * self.flank + 1

    @property
    def ref(self) -> int:
        return 0

    @property
    def alt(self) -> int:
        return self.slots * N_SYMBOLS

    @property
    def kind(self) -> int:
        return 2 * self.slots * N_SYMBOLS

    @property
    def delta(self) -> int:
        return self.kind + N_CLASSES

    @property
    def frame(self) -> int:
        return self.delta + self.slots

    @property
    def interaction(self) -> int:
        return self.frame + 3

    @property
    def width(self) -> int:
        return self.interaction + N_CLASSES * 2 * self.flank * N_SYMBOLS


def n_features(flank: int) -> int:
    """Return the number of feature columns for a flank (1,552 for ``flank = 5``)."""
    return _Layout(flank).width


def _context(tokens: np.ndarray, span: tuple[int, int], flank: int) -> np.ndarray:
    """Read the context slots of one window.

    Args:
        tokens: (L,) uint8 tokens of the window.
        span: Half-open allele position inside ``tokens``.
        flank: Bases read on each side of the allele.

    Returns:
        (2F + 1,) int64: F tokens before ``span[0]``, the allele's first token, F tokens
        from ``span[1]`` on; :data:`MISSING` outside the window, for MASK, and for the
        allele slot when the allele is empty.
    """
    start, end = int(span[0]), int(span[1])
    first = start if end > start else -1  # an empty allele has no first base
    index = np.concatenate(
        (np.arange(start - flank, start), [first], np.arange(end, end + flank))
    )  # (2F + 1,)
    length = len(tokens)
    inside = (index >= 0) & (index < length)
    if length == 0:
        return np.full(index.size, MISSING, dtype=np.int64)
    values = np.asarray(tokens)[np.clip(index, 0, length - 1)].astype(np.int64)
    return np.where(inside & (values < N_SYMBOLS), values, MISSING)


def _variant_class(window: AlleleWindow, ref_first: int, alt_first: int) -> tuple[int, int]:
    """Return ``(class, len(ALT) - len(REF))`` of one allele (module docstring, block 3)."""
    ref_length = window.ref_span[1] - window.ref_span[0]
    alt_length = window.alt_span[1] - window.alt_span[0]
    delta = alt_length - ref_length
    if delta > 0:
        return INSERTION, delta
    if delta < 0:
        return DELETION, delta
    if ref_length != 1:
        return MNV, delta
    # An SNV's allele slots are MISSING only for MASK (or a malformed span): count as N.
    ref_base = ref_first if ref_first != MISSING else N_SYMBOLS - 1
    alt_base = alt_first if alt_first != MISSING else N_SYMBOLS - 1
    return ref_base * N_SYMBOLS + alt_base, delta


def _read_windows(
    windows: Sequence[AlleleWindow], flank: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read what the features need from each window.

    Returns:
        ``(ref_context, alt_context, classes, deltas)``: (N, 2F + 1) int64 tokens or
        :data:`MISSING`, twice; (N,) int64 variant classes; (N,) int64 length changes.
    """
    count = len(windows)
    slots = 2 * flank + 1
    ref_context = np.empty((count, slots), dtype=np.int64)
    alt_context = np.empty((count, slots), dtype=np.int64)
    classes = np.empty(count, dtype=np.int64)
    deltas = np.empty(count, dtype=np.int64)
    for row, window in enumerate(windows):
        ref_context[row] = _context(window.ref_tokens, window.ref_span, flank)
        alt_context[row] = _context(window.alt_tokens, window.alt_span, flank)
        classes[row], deltas[row] = _variant_class(
            window, ref_context[row, flank], alt_context[row, flank]
        )
    return ref_context, alt_context, classes, deltas


def _one_hot_columns(context: np.ndarray, offset: int) -> np.ndarray:
    """Map (N, S) context tokens to (N, S) columns ``offset + slot * 5 + token`` (-1 if none)."""
    slot = np.arange(context.shape[1])[None, :]  # (1, S)
    return np.where(context == MISSING, -1, offset + slot * N_SYMBOLS + context)


def flank_features(windows: Sequence[AlleleWindow], flank: int = 5) -> sparse.csr_matrix:
    """Turn allele windows into the baseline's binary features (module docstring).

    Args:
        windows: N allele windows, any lengths, alleles anywhere in them.
        flank: Bases read on each side of the REF and ALT alleles.

    Returns:
        (N, :func:`n_features` (flank)) float64 CSR matrix of 0/1 values.

    Raises:
        ValueError: If ``flank`` is negative.
    """
    if flank < 0:
        raise ValueError(f"flank must be non-negative, got {flank}")
    layout = _Layout(flank)
    ref_context, alt_context, classes, deltas = _read_windows(windows, flank)
    flank_slots = np.delete(ref_context, flank, axis=1)  # (N, 2F): REF context minus allele
    interaction = _one_hot_columns(flank_slots, layout.interaction)  # (N, 2F)
    interaction = np.where(
        interaction < 0, -1, interaction + classes[:, None] * (2 * flank * N_SYMBOLS)
    )
    columns = np.concatenate(
        (
            _one_hot_columns(ref_context, layout.ref),  # (N, P)
            _one_hot_columns(alt_context, layout.alt),  # (N, P)
            (layout.kind + classes)[:, None],  # (N, 1)
            (layout.delta + flank + np.clip(deltas, -flank, flank))[:, None],  # (N, 1)
            (layout.frame + np.mod(deltas, 3))[:, None],  # (N, 1)
            interaction,  # (N, 2F)
        ),
        axis=1,
    )  # (N, 2P + 3 + 2F)
    rows = np.broadcast_to(np.arange(len(windows))[:, None], columns.shape)
    keep = columns >= 0
    matrix = sparse.csr_matrix(
        (np.ones(int(keep.sum())), (rows[keep], columns[keep])),
        shape=(len(windows), layout.width),
        dtype=np.float64,
    )
    return matrix


GroupModel = Union[LogisticRegression, float]


class FlankBaseline:
    """Logistic regression on the alleles and ±``flank`` bp around them, one per group.

    Args:
        flank: Bases read on each side of the REF and ALT alleles.
        seed: Random state for the solver, so refits are reproducible.
        c: Inverse L2 regularisation strength (``LogisticRegression(C=c)``).

    Attributes:
        models: Per training group, the fitted ``LogisticRegression``, or a float: the
            constant P(label == 1) of a group with a single class in training.
        converged: False when a solver stopped at ``max_iter`` without converging.
    """

    #: lbfgs on a few thousand binary one-hot columns converges in well under 1,000
    #: iterations; the cap only bounds a pathological fit.
    max_iter = 5000

    def __init__(self, flank: int = 5, seed: int = 0, c: float = 1.0) -> None:
        if flank < 0:
            raise ValueError(f"flank must be non-negative, got {flank}")
        if not c > 0:
            raise ValueError(f"c must be positive, got {c}")
        self.flank = flank
        self.seed = seed
        self.c = c
        self.models: dict[int, GroupModel] = {}
        self.converged: Optional[bool] = None

    def describe(self) -> str:
        """One line naming the baseline and its features, for reports."""
        text = (
            f"logistic regression on REF, ALT and ±{self.flank} bp of flank "
            f"({n_features(self.flank):,} features"
        )
        if len(self.models) > 1:
            text += f", one model for each of {len(self.models)} groups"
        return text + ")"

    def fit(
        self,
        windows: Sequence[AlleleWindow],
        labels: np.ndarray,
        groups: Optional[np.ndarray] = None,
    ) -> "FlankBaseline":
        """Fit one logistic regression per group.

        Args:
            windows: N allele windows.
            labels: (N,) binary 0/1 labels.
            groups: (N,) int group index per window, or None for a single group (index 0).

        Returns:
            self.

        Raises:
            ValueError: If there are no windows, the sizes disagree, or a label is not 0/1.
        """
        if len(windows) == 0:
            raise ValueError("the flank baseline needs at least one training window")
        y = _check_labels(labels, len(windows))
        group_of = _check_groups(groups, len(windows))  # (N,)
        features = flank_features(windows, self.flank)  # (N, D) CSR
        self.models = {}
        self.converged = True
        for group in np.unique(group_of):
            rows = np.flatnonzero(group_of == group)
            self.models[int(group)] = self._fit_group(features[rows], y[rows])
        return self

    def _fit_group(self, features: sparse.csr_matrix, y: np.ndarray) -> GroupModel:
        """Fit one group: (n, D) features, (n,) labels; a constant if one class occurs."""
        if np.unique(y).size < 2:
            return float(y.mean())
        model = LogisticRegression(
            C=self.c, solver="lbfgs", max_iter=self.max_iter, random_state=self.seed
        )
        with warnings.catch_warnings():
            # Non-convergence is recorded in self.converged, not warned about: the baseline
            # is a reference number, and a warning would derail a CLI run.
            warnings.filterwarnings("ignore", category=ConvergenceWarning)
            model.fit(features, y)
        self.converged = bool(self.converged and np.all(model.n_iter_ < self.max_iter))
        return model

    def predict_proba(
        self, windows: Sequence[AlleleWindow], groups: Optional[np.ndarray] = None
    ) -> np.ndarray:
        """Predict P(label == 1) with each window's group model.

        Args:
            windows: N allele windows.
            groups: (N,) int group index per window, or None for group 0 (what ``fit``
                used when it was given no groups).

        Returns:
            (N,) float64 probabilities.

        Raises:
            RuntimeError: If called before :meth:`fit`.
            ValueError: If a group was not seen in training, or the sizes disagree.
        """
        if not self.models:
            raise RuntimeError("FlankBaseline.predict_proba called before fit")
        group_of = _check_groups(groups, len(windows))  # (N,)
        unseen = sorted(set(np.unique(group_of).tolist()) - set(self.models))
        if unseen:
            raise ValueError(
                f"groups {unseen} were not seen in training (seen: {sorted(self.models)})"
            )
        result = np.empty(len(windows), dtype=np.float64)
        if len(windows) == 0:
            return result
        features = flank_features(windows, self.flank)  # (N, D) CSR
        for group in np.unique(group_of):
            rows = np.flatnonzero(group_of == group)
            model = self.models[int(group)]
            if isinstance(model, LogisticRegression):
                positive = int(np.flatnonzero(model.classes_ == 1)[0])
                result[rows] = model.predict_proba(features[rows])[:, positive]
            else:
                result[rows] = model
        return result


def _check_labels(labels: np.ndarray, count: int) -> np.ndarray:
    """Return labels as (count,) int64, checking they are 0/1."""
    y = np.asarray(labels).reshape(-1)
    if y.size != count:
        raise ValueError(f"{count} windows but {y.size} labels")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("flank baseline labels must be 0 or 1")
    return y.astype(np.int64)


def _check_groups(groups: Optional[np.ndarray], count: int) -> np.ndarray:
    """Return group indices as (count,) int64; None means group 0 for every window."""
    if groups is None:
        return np.zeros(count, dtype=np.int64)
    group_of = np.asarray(groups).reshape(-1)
    if group_of.size != count:
        raise ValueError(f"{count} windows but {group_of.size} group indices")
    if group_of.size and not np.array_equal(group_of, np.round(group_of)):
        raise ValueError("group indices must be integers")
    return group_of.astype(np.int64)
