"""A common scale for variant scores: each score's percentile among random SNVs.

`cmx predict --background N` draws N random SNVs from the reference before it scores the
VCF: a contig with probability proportional to its length, a position uniformly on it, the
reference base there as REF and one of the three other bases as ALT, from a fixed seed. A
draw is kept only when its whole window (the model's window around it) lies inside the
contig and holds no N, so every background variant is scored with full context. The
background is scored by the same scorer as the VCF, once per group for a model with groups.
A score's percentile is the share of background scores at or below it, times 100: for a
classifier's probability and a zero-shot log-likelihood ratio alike, 50 is a typical random
SNV and 99 is more extreme than 99% of them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cmx_cli.alphabet import BASES, N_BASES
from cmx_cli.errors import CmxError
from cmx_cli.io.reference import ReferenceGenome
from cmx_cli.variants.windows import AlleleWindow, make_windows

#: Seed of the background draws.
SEED = 0
#: Draws tried per background variant before giving up (a reference mostly of N, say).
_TRIES_PER_VARIANT = 50


@dataclass(frozen=True)
class Background:
    """The sorted background scores, one row per group.

    Attributes:
        scores: (groups, N) sorted scores.
        description: What the percentiles are, for the VCF header.
    """

    scores: np.ndarray
    description: str

    def percentiles(self, values: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """100 × the share of the group's background scores at or below each value (NaN for
        NaN)."""
        values = np.asarray(values, dtype=np.float64)
        result = np.full(values.shape, np.nan)
        count = self.scores.shape[1]
        for group in np.unique(groups):
            chosen = (groups == group) & np.isfinite(values)
            result[chosen] = 100.0 * np.searchsorted(self.scores[group], values[chosen],
                                                     side="right") / count
        return result


def draw_background(reference: ReferenceGenome, count: int, window: int,
                    seed: int = SEED) -> list[AlleleWindow]:
    """``count`` random SNV windows with full, N-free context (module docstring).

    Raises:
        CmxError: When the reference has too few such places (contigs shorter than the
            window, or mostly N).
    """
    rng = np.random.default_rng(seed)
    contigs = [name for name in reference.contigs if reference.length(name) >= window]
    lengths = np.array([reference.length(name) for name in contigs], dtype=np.float64)
    drawn: list[AlleleWindow] = []
    tries = 0
    while contigs and len(drawn) < count and tries < count * _TRIES_PER_VARIANT:
        tries += 1
        contig = contigs[int(rng.choice(len(contigs), p=lengths / lengths.sum()))]
        pos0 = int(rng.integers(0, reference.length(contig)))
        alt_choice = int(rng.integers(0, 3))
        ref = reference.fetch(contig, pos0, pos0 + 1).decode().upper()
        if ref not in BASES:
            continue
        alt = [base for base in BASES if base != ref][alt_choice]
        allele = make_windows(reference, contig, pos0 + 1, ref, alt, window)
        if len(allele.ref_tokens) == window and not (allele.ref_tokens >= N_BASES).any():
            drawn.append(allele)
    if len(drawn) < count:
        raise CmxError(f"{reference.path}: found {len(drawn):,} of {count:,} places for "
                       f"background SNVs with {window:,} bp of N-free context",
                       "ask for fewer with --background, or use a reference with longer "
                       "contigs.")
    return drawn


def score_background(scorer, reference: ReferenceGenome, count: int, window: int,
                     groups: int) -> Background:
    """Draw the background and score it with ``scorer`` once per group (0..groups-1)."""
    drawn = draw_background(reference, count, window)
    rows = [np.sort(np.asarray(scorer([replace(allele, context=group if groups > 1 else None)
                                       for allele in drawn]), dtype=np.float64))
            for group in range(groups)]
    description = (f"Percentile (0-100) of the score among {count:,} random SNVs of the "
                   f"reference (seed {SEED}; contigs by length, positions uniform, windows of "
                   f"{window:,} bp without N), scored by the same model"
                   + (", per group" if groups > 1 else ""))
    return Background(np.stack(rows), description)
