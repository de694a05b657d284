"""`cmx evaluate`: masked-base metrics of a pretrained model on any FASTA, beside the
baselines fitted on the model's own training data."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np

from cmx_cli.baselines.markov import evaluate_baseline, load_baselines
from cmx_cli.data.pretrain_sources import PretrainSequence, plan_sources
from cmx_cli.data.samplers import make_sampler
from cmx_cli.io.checkpoint import load_checkpoint, resolve_checkpoint_path
from cmx_cli.runtime import ready_for_inference
from cmx_cli.settings import Runtime
from cmx_cli.tasks.masked_bases import (
    KIND, MaskingSettings, build_autoencoder, evaluate_masked, mask_all)


@dataclass(frozen=True)
class EvaluateConfig:
    """Settings of `cmx evaluate`."""

    model: str
    fasta: str
    mask: Optional[float] = None
    max_bases: int = 1_000_000
    min_length: int = 256
    seed: int = 0
    max_tokens: int = 16384
    runtime: Runtime = field(default_factory=Runtime)


@dataclass
class EvaluateResult:
    """Masked-base metrics of a model and its baselines on one FASTA.

    Attributes:
        metrics: ``{"model": {...}, "unigram": {...}, "markov": {...}}``; the top-level
            numbers of each are on MASK-token positions.
        fasta: The FASTA scored.
        bases: Bases scored.
        rate: The share of bases selected.
        markov_order: The Markov baseline's context length.
    """

    metrics: dict
    fasta: str
    bases: int
    rate: float
    markov_order: int


def run(config: EvaluateConfig) -> EvaluateResult:
    """Score a pretrained model and its baselines on the masked bases of a FASTA file.

    Records no longer than the model's ``max_len`` are used whole; longer ones (genomes) are
    read as fixed random segments. At most ``max_bases`` bases are scored: the last record
    or segment drawn is cut to fit.
    """
    checkpoint = load_checkpoint(config.model, KIND)
    model = build_autoencoder(checkpoint)
    device, precision = ready_for_inference(model, config.runtime)
    unigram, markov = load_baselines(resolve_checkpoint_path(config.model).parent)
    trained = MaskingSettings(**checkpoint.extra["masking"])
    settings = MaskingSettings(config.mask if config.mask is not None else trained.rate,
                               trained.scheme, trained.lowercase_weight)

    plan = plan_sources([Path(config.fasta)], (), 0.0, "auto",
                        model.config.encoder.max_len, config.seed)
    sampler = make_sampler(plan, "train", config.min_length, reverse_complement=False)
    sequences = at_most(sampler.validation_set(config.max_bases, seed=config.seed),
                        config.max_bases)
    masked = mask_all(sequences, settings, np.random.default_rng([config.seed, 7]))
    lowercase = [s.lowercase for s in sequences]
    metrics = {
        "model": evaluate_masked(model, sequences, masked, config.max_tokens, device, precision),
        "unigram": evaluate_baseline(unigram, masked, lowercase).result(),
        "markov": evaluate_baseline(markov, masked, lowercase).result(),
    }
    return EvaluateResult(metrics, config.fasta, sum(len(s) for s in sequences), settings.rate,
                          markov.order)


def at_most(sequences: list[PretrainSequence], bases: int) -> list[PretrainSequence]:
    """The first of ``sequences`` up to ``bases`` bases in all, the last one cut to fit.

    A sampler draws whole records or segments until it has at least ``bases``; without the
    cut, ``--max-bases 1`` scored a whole segment (issue 23).
    """
    kept: list[PretrainSequence] = []
    room = bases
    for sequence in sequences:
        if room <= 0:
            break
        if len(sequence.tokens) > room:
            sequence = replace(sequence, tokens=sequence.tokens[:room],
                               lowercase=sequence.lowercase[:room],
                               source=f"{sequence.source} (its first {room} bp)")
        kept.append(sequence)
        room -= len(sequence.tokens)
    return kept
