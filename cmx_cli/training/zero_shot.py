"""Zero-shot variant scores from a pretrained masked-base model (issue [pretrain]).

For an SNV the score is the log-likelihood ratio log P(alt) − log P(ref) at the variant
position, with that position masked in its reference window, averaged over both strands.
The reverse strand reads the reverse-complemented window, with the mirrored position masked
and the complemented alleles. Indels have no single masked position to read: they get no
zero-shot score.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from cmx_cli.alphabet import COMPLEMENT, MASK, N, reverse_complement
from cmx_cli.training.masked_bases import predict_log_probabilities


class ZeroShotScorer:
    """Callable that scores SNV windows with a pretrained masked-base model.

    Args:
        model: A :class:`models.MaskedAutoencoder`, on ``device``.
        max_tokens: Token budget per batch.
        device: Where to compute.
        precision: ``fp32`` or ``bf16``.
    """

    def __init__(self, model: nn.Module, max_tokens: int, device: torch.device, precision: str):
        self.model, self.max_tokens, self.device, self.precision = model, max_tokens, device, precision

    def __call__(self, windows: Sequence) -> np.ndarray:
        """Score SNV windows (objects with ref_tokens, alt_tokens, ref_span, alt_span).

        Returns:
            (len(windows),) float64 log-likelihood ratios in nats; NaN where the reference
            base is N (no reference base to compare with).
        """
        inputs, positions, ref_bases, alt_bases = [], [], [], []
        for window in windows:
            centre = window.ref_span[0]
            ref_base = int(window.ref_tokens[centre])
            alt_base = int(window.alt_tokens[window.alt_span[0]])
            forward = window.ref_tokens.copy()
            forward[centre] = MASK
            backward = reverse_complement(window.ref_tokens)
            mirrored = len(backward) - 1 - centre
            backward[mirrored] = MASK
            inputs += [forward, backward]
            positions += [centre, mirrored]
            ref_bases += [ref_base, int(COMPLEMENT[ref_base])]
            alt_bases += [alt_base, int(COMPLEMENT[alt_base])]
        log_probabilities = predict_log_probabilities(
            self.model, inputs, self.max_tokens, self.device, self.precision)
        ratios = np.full(len(inputs), np.nan)
        for i, (predicted, position, ref_base, alt_base) in enumerate(
                zip(log_probabilities, positions, ref_bases, alt_bases)):
            if ref_base < N and alt_base < N:
                ratios[i] = predicted[position, alt_base] - predicted[position, ref_base]
        return ratios.reshape(-1, 2).mean(axis=1)  # average of the two strands
