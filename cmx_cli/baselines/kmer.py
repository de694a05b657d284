"""The k-mer baseline reported beside every deep model: k-mer frequencies + logistic regression.

A ChordMixer network costs GPU hours; a k-mer profile with a linear classifier costs
seconds on a CPU. Many DNA classification tasks (taxonomy, GC-rich versus AT-rich
regions, repeat families) are largely solved by composition alone, so a user can only
tell whether the deep model earns its cost by seeing both numbers side by side. A deep
model that does not beat this baseline has learned composition, not long-range structure.
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence

import numpy as np
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from cmx_cli.alphabet import N_BASES

#: Largest k accepted: 4**12 = 16.8 M features is already far beyond what a linear
#: model on a few thousand sequences can use.
MAX_K = 12



def _sequence_counts(tokens: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Count the overlapping k-mers of one sequence that contain only A/C/G/T.

    Args:
        tokens: (L,) uint8 tokens (A C G T = 0-3; N and anything larger break a k-mer).
        k: k-mer length.

    Returns:
        ``(codes, counts)``: sorted distinct base-4 k-mer codes (first base most
        significant, so "AC" is 0*4 + 1 = 1) and how often each occurs.
    """
    tokens = np.asarray(tokens).reshape(-1)
    n_windows = tokens.size - k + 1
    if n_windows <= 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    is_base = tokens < N_BASES
    # A window is valid when it holds k bases: prefix sums count them in O(L).
    bases_so_far = np.concatenate(([0], np.cumsum(is_base, dtype=np.int64)))
    valid = (bases_so_far[k:] - bases_so_far[:-k]) == k  # (L-k+1,)
    # Loop over the k offsets, not the L positions: O(k L) time, O(L) memory, so a
    # 1 Mbp sequence never materialises an (L, k) window matrix.
    digits = np.where(is_base, tokens, 0).astype(np.int64)
    codes = np.zeros(n_windows, dtype=np.int64)
    for offset in range(k):
        codes *= N_BASES
        codes += digits[offset : offset + n_windows]
    return np.unique(codes[valid], return_counts=True)


def kmer_frequencies(sequences: Sequence[np.ndarray], k: int) -> sparse.csr_matrix:
    """Turn token sequences into k-mer frequency profiles.

    Overlapping k-mers are counted on the given strand only (no canonical merging with
    the reverse complement, so strand-specific signals are kept). Windows containing N
    (or any token other than A/C/G/T) are skipped. Each row is divided by its total, so
    sequences of different lengths are comparable.

    Args:
        sequences: N token arrays from :mod:`cmx_cli.alphabet`, any lengths.
        k: k-mer length, 1 to :data:`MAX_K`.

    Returns:
        (N, 4**k) float32 CSR matrix; column ``sum(base_i * 4**(k-1-i))`` is the k-mer
        with bases ``base_0 .. base_{k-1}``. A sequence shorter than k, or with no window
        free of N, gives an all-zero row.

    Raises:
        ValueError: If k is outside 1..MAX_K.
    """
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
    indptr = [0]
    indices = []
    data = []
    for tokens in sequences:
        codes, counts = _sequence_counts(tokens, k)
        total = counts.sum()
        indices.append(codes)
        data.append(counts / total if total else counts.astype(np.float64))
        indptr.append(indptr[-1] + codes.size)
    n_rows = len(indptr) - 1
    matrix = sparse.csr_matrix(
        (
            np.concatenate(data).astype(np.float32) if data else np.empty(0, np.float32),
            np.concatenate(indices) if indices else np.empty(0, np.int64),
            np.asarray(indptr, dtype=np.int64),
        ),
        shape=(n_rows, N_BASES**k),
        dtype=np.float32,
    )
    return matrix


class KmerBaseline:
    """k-mer frequencies, scaled, into a logistic regression.

    The baseline is always reported beside the deep model so the user sees whether the
    network earns its cost (see the module docstring).

    Args:
        k: k-mer length.
        class_weight: ``None`` or ``"balanced"``, passed to ``LogisticRegression``.
        seed: Random state for the solver, so refits are reproducible.

    Attributes:
        n_classes: Number of class columns ``predict_proba`` returns (set by ``fit``).
        converged: False when the solver stopped at ``max_iter`` without converging.
    """

    #: lbfgs on standardised frequencies usually converges in a few hundred iterations;
    #: 2000 leaves headroom for hard, high-k problems without letting a fit run for long.
    max_iter = 2000

    def __init__(self, k: int = 5, class_weight: Optional[str] = None, seed: int = 0) -> None:
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
        self.k = k
        self.class_weight = class_weight
        self.seed = seed
        self.n_classes: Optional[int] = None
        self.converged: Optional[bool] = None
        self.pipeline: Optional[Pipeline] = None

    def describe(self) -> str:
        """One line naming the baseline, e.g. "5-mer frequencies + logistic regression"."""
        text = f"{self.k}-mer frequencies + logistic regression"
        if self.class_weight:
            text += f" ({self.class_weight} class weights)"
        return text

    def _build_pipeline(self) -> Pipeline:
        return Pipeline(
            [
                (
                    "frequencies",
                    FunctionTransformer(
                        kmer_frequencies, kw_args={"k": self.k}, accept_sparse=True
                    ),
                ),
                # with_mean=False keeps the matrix sparse; centring would densify 4**k columns.
                ("scale", StandardScaler(with_mean=False)),
                (
                    "classify",
                    LogisticRegression(
                        max_iter=self.max_iter,
                        C=1.0,
                        class_weight=self.class_weight,
                        random_state=self.seed,
                    ),
                ),
            ]
        )

    def fit(
        self,
        sequences: Sequence[np.ndarray],
        y: np.ndarray,
        n_classes: Optional[int] = None,
    ) -> "KmerBaseline":
        """Fit the baseline.

        Args:
            sequences: N token arrays.
            y: (N,) int class indices.
            n_classes: Number of classes C; defaults to ``max(y) + 1``. Give it when a
                class may be missing from the training labels.

        Returns:
            self.

        Raises:
            ValueError: If fewer than two classes occur in ``y``, or the sizes disagree.
        """
        labels = np.asarray(y).astype(np.int64, copy=False).reshape(-1)
        if labels.size != len(sequences):
            raise ValueError(f"{len(sequences)} sequences but {labels.size} labels")
        if np.unique(labels).size < 2:
            raise ValueError("the k-mer baseline needs at least two classes in the labels")
        if labels.min() < 0:
            raise ValueError("class indices must be non-negative")
        self.n_classes = int(labels.max()) + 1 if n_classes is None else int(n_classes)
        if labels.max() >= self.n_classes:
            raise ValueError(f"labels exceed n_classes={self.n_classes}")
        self.pipeline = self._build_pipeline()
        with warnings.catch_warnings():
            # Non-convergence is recorded in self.converged instead of warned about: the
            # baseline is a reference number, and a warning would derail a CLI run.
            warnings.filterwarnings("ignore", category=ConvergenceWarning)
            self.pipeline.fit(list(sequences), labels)
        iterations = np.asarray(self.pipeline.named_steps["classify"].n_iter_)
        self.converged = bool(np.all(iterations < self.max_iter))
        return self

    def predict_proba(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Predict class probabilities.

        Args:
            sequences: N token arrays.

        Returns:
            (N, n_classes) float64; column c is class index c, and a class absent from
            training has probability 0.

        Raises:
            RuntimeError: If called before :meth:`fit`.
        """
        if self.pipeline is None or self.n_classes is None:
            raise RuntimeError("KmerBaseline.predict_proba called before fit")
        result = np.zeros((len(sequences), self.n_classes), dtype=np.float64)
        if len(sequences) == 0:
            return result
        classes = self.pipeline.named_steps["classify"].classes_
        result[:, classes] = self.pipeline.predict_proba(list(sequences))
        return result
