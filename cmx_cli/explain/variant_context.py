"""Which context bases drive a variant's score: in-silico mutagenesis around the allele.

For every base within ``flank`` bp of a variant's REF allele (the allele's own bases are
left as they are), each of the three other bases is put in its place in both windows (the
REF and the ALT window share the context, shifted past the allele for an indel), and the
mutated variant is scored as `cmx predict` scores it. The change of the variant's score is
reported on the log-odds scale, log(p / (1 - p)) of P(label 1): 6 × flank extra variants per
variant, scored in the scorer's batches.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from cmx_cli.alphabet import N_BASES
from cmx_cli.explain.attribution import BaseEffects, substitutions
from cmx_cli.variants.windows import AlleleWindow


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-15, 1 - 1e-15)
    return np.log(p / (1 - p))


def _alt_index(window: AlleleWindow, index: int) -> int:
    """The ALT window's index of the REF window's context position ``index``."""
    if index < window.ref_span[0]:
        return index
    return index - window.ref_span[1] + window.alt_span[1]


def context_range(window: AlleleWindow, flank: int) -> tuple[int, int]:
    """The REF window's positions within ``flank`` bp of the REF allele (clipped)."""
    return (max(0, window.ref_span[0] - flank),
            min(len(window.ref_tokens), window.ref_span[1] + flank))


def context_effects(scorer, window: AlleleWindow, flank: int) -> BaseEffects:
    """The change in the variant's log-odds for each substitution around it.

    Args:
        scorer: A :class:`~cmx_cli.tasks.variant.VariantScorer` (P(label 1) per window).
        window: The variant's windows.
        flank: How far from the allele to mutate, in bp.

    Returns:
        Effects over the REF window's positions ``context_range`` (``start`` is the first
        of them, as an index into the REF window), one class; NaN at the allele's own
        positions and where the reference has N.
    """
    first, last = context_range(window, flank)
    ref = window.ref_tokens[first:last].copy()
    alt = substitutions(ref)
    jobs = [(offset, column) for offset in range(last - first)
            if not (window.ref_span[0] <= first + offset < window.ref_span[1])
            and ref[offset] < N_BASES for column in range(3)]
    mutants = []
    for offset, column in jobs:
        index = first + offset
        ref_tokens, alt_tokens = window.ref_tokens.copy(), window.alt_tokens.copy()
        ref_tokens[index] = alt[offset, column]
        alt_tokens[_alt_index(window, index)] = alt[offset, column]
        mutants.append(replace(window, ref_tokens=ref_tokens, alt_tokens=alt_tokens))
    scores = _logit(scorer([window, *mutants]))
    delta = np.full((last - first, 3, 1), np.nan)
    for (offset, column), score in zip(jobs, scores[1:]):
        delta[offset, column, 0] = score - scores[0]
    return BaseEffects(first, ref, alt, delta)
