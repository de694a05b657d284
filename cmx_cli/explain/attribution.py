"""Per-base effects on a sequence classifier: in-silico mutagenesis and gradient × input.

In-silico mutagenesis (ISM) replaces each base of a region by each of the three other bases
and scores every mutated copy: the change in each class's log-odds, log(p / (1 - p)), from
the original sequence's. The mutated copies share the sequence's length, so they are packed
many to a batch; a region of P positions costs 3P forward passes of the whole sequence.

Gradient × input is the first-order estimate of the same table from one forward and one
backward pass per class: the change of a class's log-odds when the base at position i goes
from b to b' is about (E[b'] - E[b]) · ∂log-odds/∂x_i, where E is the input embedding and
x_i the embedded input at i (with a local stem, plus the same term at each neighbour whose
input holds the base). It is exact for a network linear in its input and a guide
otherwise; use it where ISM costs too much.

Both run in float32 with dropout off, whatever the model's precision for prediction.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from cmx_cli.alphabet import N_BASES
from cmx_cli.data.batching import pack
from cmx_cli.inference import batched_outputs, evaluating

#: Called with the number of forward passes done, after each batch.
Progress = Callable[[int], None]


@dataclass
class BaseEffects:
    """The effect of every substitution in a region of one sequence.

    Attributes:
        start: First position of the region (0-based).
        ref: (P,) token of each position of the region.
        alt: (P, 3) the three other bases at each position (tokens).
        delta: (P, 3, C) change in each class's log-odds for each substitution; NaN where
            the original base is N (nothing to substitute from).
    """

    start: int
    ref: np.ndarray
    alt: np.ndarray
    delta: np.ndarray


def log_odds(logits: torch.Tensor) -> torch.Tensor:
    """(B, C) log(p / (1 - p)) of each class from logits: logit_c - logsumexp of the others."""
    classes = logits.shape[1]
    others = torch.stack([torch.logsumexp(torch.cat([logits[:, :c], logits[:, c + 1:]], 1), 1)
                          for c in range(classes)], dim=1)
    return logits - others


def substitutions(ref: np.ndarray) -> np.ndarray:
    """(P, 3) the three bases other than each reference base (A C G T order; all four
    differ from N, of which the first three are listed)."""
    bases = np.arange(N_BASES)
    return np.stack([bases[bases != base][:3] for base in ref.tolist()]).astype(np.uint8)


def mutagenesis(model: nn.Module, tokens: np.ndarray, start: int, end: int, max_tokens: int,
                progress: Optional[Progress] = None) -> BaseEffects:
    """ISM of positions ``start..end-1`` of one sequence (module docstring).

    Args:
        model: A sequence classifier, in float32.
        tokens: The sequence.
        start: First position (0-based).
        end: One past the last position.
        max_tokens: Token budget per batch (at least one copy per batch).
        progress: Told how many mutated copies each batch scored.
    """
    ref = tokens[start:end].copy()
    alt = substitutions(ref)
    # Input 0 is the sequence itself, then one copy per (position, substitute).
    jobs = [None] + [(position, column) for position in range(end - start)
                     for column in range(3)]

    def copy_of(job) -> np.ndarray:
        copy = tokens.copy()
        if job is not None:
            copy[start + job[0]] = alt[job]
        return copy

    scores = None
    device = next(model.parameters()).device
    for batch, _, logits in batched_outputs(
            model, [len(tokens)] * len(jobs), lambda batch: pack([copy_of(jobs[i]) for i in batch]),
            max_tokens, device, "fp32"):
        if scores is None:
            scores = np.zeros((len(jobs), logits.shape[1]))
        scores[batch] = log_odds(logits).double().numpy()
        if progress is not None:
            progress(sum(index > 0 for index in batch))
    delta = (scores[1:] - scores[0]).reshape(end - start, 3, -1)
    delta[ref >= N_BASES] = np.nan
    return BaseEffects(start, ref, alt, delta)


def gradient_times_input(model: nn.Module, tokens: np.ndarray, start: int,
                         end: int) -> BaseEffects:
    """The first-order estimate of :func:`mutagenesis` (module docstring)."""
    embedding = model.encoder.embedding
    if embedding is None:
        raise ValueError("gradient x input needs a model with an input embedding")
    captured = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured["x"] = output

    ref = tokens[start:end].copy()
    alt = substitutions(ref)
    weights = embedding.weight.detach().float()  # (vocab, d)
    local_context = model.encoder.local_context
    handle = embedding.register_forward_hook(keep)
    try:
        with evaluating(model), torch.enable_grad():
            packed, offsets = pack([tokens])
            device = weights.device
            scores = log_odds(model(packed.to(device), offsets.to(device)).float())[0]
            classes = scores.numel()
            delta = np.full((end - start, 3, classes), np.nan)
            for cls in range(classes):
                x = captured["x"]
                x.grad = None
                scores[cls].backward(retain_graph=cls + 1 < classes)
                # The encoder may reorder rows; one sequence keeps its order.
                gradient = x.grad.float()  # (L, d)
                ref_tokens = torch.as_tensor(ref.astype(np.int64), device=device)
                for column in range(3):
                    alt_tokens = torch.as_tensor(alt[:, column].astype(np.int64), device=device)
                    change = ((weights[alt_tokens] - weights[ref_tokens])
                              * gradient[start:end]).sum(1)
                    if local_context is not None:
                        change += neighbour_change(local_context, gradient, ref_tokens,
                                                   alt_tokens, start)
                    delta[:, column, cls] = change.double().cpu().numpy()
    finally:
        handle.remove()
    delta[ref >= N_BASES] = np.nan
    return BaseEffects(start, ref, alt, delta)


def neighbour_change(local_context: nn.Module, gradient: torch.Tensor, ref: torch.Tensor,
                     alt: torch.Tensor, start: int) -> torch.Tensor:
    """The gradient × input estimate through the local stem (:mod:`models.local_context`).

    Position i - o embeds the base at i with the stem's vector for offset o, so a change at i
    moves the input of each such position: the sum over offsets o of
    (V_o[b'] - V_o[b]) · ∂log-odds/∂x_(i-o), for the positions inside the sequence.

    Args:
        local_context: The encoder's stem.
        gradient: (L, d) gradient at the embedded input of the whole sequence.
        ref, alt: (P,) the bases at positions start..start + P - 1 and their substitutes.
        start: The first position.

    Returns:
        (P,) the stem's share of each substitution's estimated change.
    """
    table = local_context.table().detach().float()  # (offsets, vocab, d)
    positions = torch.arange(start, start + ref.shape[0], device=gradient.device)
    change = torch.zeros(ref.shape[0], device=gradient.device)
    for index, offset in enumerate(local_context.offsets):
        seeing = positions - offset  # the positions whose input holds the base at i
        inside = ((seeing >= 0) & (seeing < gradient.shape[0])).float()
        rows = gradient[seeing.clamp(0, gradient.shape[0] - 1)] * inside[:, None]
        change += ((table[index][alt] - table[index][ref]) * rows).sum(1)
    return change
