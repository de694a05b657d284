"""`cmx evaluate`: masked-base metrics of a pretrained model on any FASTA, beside the
baselines fitted on the model's own training data."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from rich.console import Console

from cmx_cli.data.segments import make_sampler, plan_sources
from cmx_cli.mlm_baselines import evaluate_baseline
from cmx_cli.mlm_metrics import mlm_table
from cmx_cli.pipelines.pretrain import load_baselines
from cmx_cli.runtime import resolve_device, resolve_precision
from cmx_cli.training.checkpoint import load_checkpoint, resolve_checkpoint_path
from cmx_cli.training.masked_bases import (
    KIND,
    MaskingSettings,
    build_autoencoder,
    evaluate_masked,
    mask_all,
)


@dataclass(frozen=True)
class EvaluateConfig:
    """Settings of `cmx evaluate`."""

    model: str
    fasta: str
    mask: Optional[float] = None
    max_bases: int = 1_000_000
    min_length: int = 256
    seed: int = 0
    as_json: bool = False
    max_tokens: int = 16384
    device: str = "auto"
    precision: str = "auto"


def run(config: EvaluateConfig) -> dict:
    """Score a pretrained model and its baselines on the masked bases of a FASTA file.

    Records no longer than the model's ``max_len`` are used whole; longer ones (genomes) are
    read as fixed random segments. At most ``max_bases`` bases are scored.

    Returns:
        ``{"model": {...}, "unigram": {...}, "kmer": {...}}``; the top-level numbers of each
        are on MASK-token positions.
    """
    checkpoint = load_checkpoint(config.model, KIND)
    model = build_autoencoder(checkpoint)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    model.to(device)
    unigram, markov = load_baselines(resolve_checkpoint_path(config.model).parent)
    trained = MaskingSettings(**checkpoint.extra["masking"])
    settings = MaskingSettings(config.mask if config.mask is not None else trained.rate,
                               trained.scheme, trained.lowercase_weight)

    plan = plan_sources([Path(config.fasta)], (), 0.0, "auto",
                        model.config.encoder.max_len, config.seed)
    sampler = make_sampler(plan, "train", config.min_length, reverse_complement=False)
    sequences = sampler.validation_set(config.max_bases, seed=config.seed)
    masked = mask_all(sequences, settings, np.random.default_rng([config.seed, 7]))
    lowercase = [s.lowercase for s in sequences]
    results = {
        "model": evaluate_masked(model, sequences, masked, config.max_tokens, device, precision),
        "unigram": evaluate_baseline(unigram, masked, lowercase).result(),
        "kmer": evaluate_baseline(markov, masked, lowercase).result(),
    }
    if config.as_json:
        json.dump(results, sys.stdout, allow_nan=False)
        sys.stdout.write("\n")
    else:
        # The table is this command's result: it goes to stdout.
        Console().print(mlm_table(
            f"{Path(config.fasta).name}: {sum(len(s) for s in sequences):,} bases, "
            f"{settings.rate:.0%} selected, MASK-token positions",
            {"cmx": results["model"], "unigram": results["unigram"],
             f"order-{markov.order} Markov": results["kmer"]}))
    return results
