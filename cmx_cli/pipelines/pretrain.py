"""`cmx pretrain`: masked-base pretraining of a ChordMixer encoder-decoder (Appendix J).

Flow: plan the sources (whole records or random genome segments, and a held-out part) →
train the autoencoder on freshly masked sequences every epoch → score the best model on the
fixed validation masks beside two baselines fitted on the training data (base frequencies,
and an order-k Markov model on the left context) → write metrics.json and baselines.pt.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from cmx_cli import __version__
from cmx_cli.console import Reporter
from cmx_cli.data.segments import make_sampler, plan_sources
from cmx_cli.errors import CmxError
from cmx_cli.io.output import atomic_output
from cmx_cli.mlm_baselines import MarkovModel, UnigramModel, evaluate_baseline
from cmx_cli.mlm_metrics import mlm_table
from cmx_cli.runtime import resolve_precision, seeded
from cmx_cli.training.checkpoint import Checkpoint, load_checkpoint
from cmx_cli.training.distributed import SINGLE, Processes
from cmx_cli.training.loop import TrainingSettings, fit
from cmx_cli.training.masked_bases import KIND, MaskedBaseTask, MaskingSettings, evaluate_masked
from cmx_cli.training.run_dir import (
    CONFIG_NAME,
    METRICS_NAME,
    check_run_dir,
    resume_state_,
    write_json,
)
from cmx_cli.training.run_dir import read_config as read_run_config
from models import ChordMixerConfig, MaskedAutoencoder, MaskedAutoencoderConfig

BASELINES_NAME = "baselines.pt"


@dataclass(frozen=True)
class PretrainConfig:
    """Everything needed to rerun `cmx pretrain` (saved as the run's config.json)."""

    fasta: tuple
    out: str
    val_fasta: tuple = ()
    val_fraction: float = 0.1
    sample: str = "auto"
    min_length: int = 256
    max_length: int = 4096
    max_n: float = 0.1
    reverse_complement: bool = True
    masking: MaskingSettings = field(default_factory=MaskingSettings)
    tokens_per_epoch: int = 1_000_000
    validation_tokens: int = 200_000
    track_size: int = 16
    hidden_size: int = 128
    decoder_track_size: int = 8
    decoder_hidden_size: int = 64
    dropout: float = 0.1
    reversible: bool = False
    max_tokens: int = 16384
    markov_order: int = 5
    device: str = "auto"
    precision: str = "auto"
    training: TrainingSettings = field(default_factory=TrainingSettings)

    def to_dict(self) -> dict:
        """Plain dict for config.json."""
        values = asdict(self)
        values["fasta"], values["val_fasta"] = list(self.fasta), list(self.val_fasta)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "PretrainConfig":
        """Rebuild from config.json."""
        values = dict(values)
        values["training"] = TrainingSettings(**values["training"])
        values["masking"] = MaskingSettings(**values["masking"])
        values["fasta"], values["val_fasta"] = tuple(values["fasta"]), tuple(values["val_fasta"])
        return cls(**values)


@dataclass
class PretrainResult:
    """Outcome of a pretraining run."""

    run_dir: Path
    metrics: dict
    summary: str


def read_config(run_dir: Path) -> PretrainConfig:
    """Read a pretraining run's config.json (for ``--resume``)."""
    return read_run_config(run_dir, PretrainConfig.from_dict, "cmx pretrain")


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
    payload = torch.load(path, weights_only=True)
    unigram = UnigramModel(payload["unigram_pseudocount"])
    unigram.counts = payload["unigram_counts"].numpy()
    markov = MarkovModel(payload["markov_order"], payload["markov_pseudocount"])
    markov.counts = [table.numpy() for table in payload["markov_counts"]]
    return unigram, markov


def run(config: PretrainConfig, reporter: Optional[Reporter] = None, resume: bool = False,
        processes: Processes = SINGLE) -> Optional[PretrainResult]:
    """Pretrain an encoder-decoder by masked-base modelling.

    Args:
        config: The run's settings.
        reporter: Where people-facing output goes.
        resume: Continue the run in ``config.out`` from its ``last.pt``.
        processes: The training processes under ``torchrun``; only rank 0 writes the run
            directory, evaluates and returns a result (the others return None).

    Returns:
        A :class:`PretrainResult` with the metrics written to ``metrics.json``.
    """
    reporter = reporter or Reporter(quiet=True)
    started = time.monotonic()
    run_dir = check_run_dir(Path(config.out), resume)
    processes.barrier()  # every process has checked --out before rank 0 creates it
    device = processes.device(config.device)
    precision = resolve_precision(config.precision, device)
    plan = plan_sources([Path(p) for p in config.fasta], [Path(p) for p in config.val_fasta],
                        config.val_fraction, config.sample, config.max_length, config.training.seed)
    reporter.note(plan.describe())
    train_sampler = make_sampler(plan, "train", config.min_length, config.max_n,
                                 config.reverse_complement)
    validation = make_sampler(plan, "validation", config.min_length, config.max_n).validation_set(
        config.validation_tokens, seed=config.training.seed)
    if processes.is_main and not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / CONFIG_NAME, config.to_dict())

    encoder = ChordMixerConfig(max_len=config.max_length, track_size=config.track_size,
                               hidden_size=config.hidden_size, dropout=config.dropout,
                               reversible=config.reversible)
    model_config = MaskedAutoencoderConfig.build(encoder, config.decoder_track_size,
                                                 config.decoder_hidden_size)
    with seeded(config.training.seed):
        model = MaskedAutoencoder(model_config)
    resume_state = resume_state_(model, run_dir, KIND) if resume else None
    model.to(device)
    masking = asdict(config.masking)

    def make_checkpoint(state_dict: dict, training_state: Optional[dict]) -> Checkpoint:
        return Checkpoint(kind=KIND, model_config=model_config.to_dict(), state_dict=state_dict,
                          extra={"masking": masking, "sources": plan.to_dict()},
                          training_state=training_state)

    def draw_training(rng: np.random.Generator) -> list:
        return list(train_sampler.epoch(config.tokens_per_epoch, rng))

    task = MaskedBaseTask(draw_training, validation, config.masking, config.max_tokens,
                          device, precision, config.training.seed)
    result = fit(model, task, config.training, run_dir, device, precision, reporter,
                 make_checkpoint, resume_state, processes)
    if not processes.is_main:
        return None

    # Baselines see the same training sources the model saw.
    baseline_started = time.monotonic()
    baseline_rng = np.random.default_rng([config.training.seed, 99])
    training_sample = list(train_sampler.epoch(max(config.tokens_per_epoch, 2_000_000), baseline_rng))
    unigram = UnigramModel().fit(training_sample)
    markov = MarkovModel(config.markov_order).fit(training_sample)
    save_baselines(run_dir / BASELINES_NAME, unigram, markov)
    baseline_seconds = time.monotonic() - baseline_started

    best = load_checkpoint(run_dir, KIND)
    model.load_state_dict(best.state_dict)
    lowercase = [s.lowercase for s in validation]
    metrics = {
        "cmx_version": __version__,
        "sources": plan.describe(),
        "validation_bases": int(sum(len(s.tokens) for s in validation)),
        "model": evaluate_masked(model, validation, task.validation_masks, config.max_tokens,
                                 device, precision),
        "unigram": evaluate_baseline(unigram, task.validation_masks, lowercase).result(),
        "kmer": evaluate_baseline(markov, task.validation_masks, lowercase).result(),
        "kmer_description": f"order-{config.markov_order} Markov model on the left context",
        "training": {
            "epochs_completed": result.epochs_completed, "steps": result.steps,
            "best_epoch": result.best_epoch, "stopped_because": result.stopped_because,
            "seconds": round(result.seconds, 2), "baseline_seconds": round(baseline_seconds, 2),
            "device": str(device), "precision": precision,
            "parameters": sum(p.numel() for p in model.parameters()),
            "encoder_parameters": sum(p.numel() for p in model.encoder.parameters()),
        },
        "warnings": list(reporter.warnings),
    }
    write_json(run_dir / METRICS_NAME, metrics)
    reporter.warnings_saved_to = str(run_dir / METRICS_NAME)
    reporter.table(mlm_table("validation, MASK-token positions",
                             {"cmx": metrics["model"], "unigram": metrics["unigram"],
                              f"order-{config.markov_order} Markov": metrics["kmer"]}))

    def number(values: dict, key: str) -> str:
        return "n/a" if values[key] is None else f"{values[key]:.3f}"

    def bits(values: dict) -> str:
        return number(values, "bits_per_base")

    summary = (f"cmx pretrain: validation {bits(metrics['model'])} bits/base, accuracy "
               f"{number(metrics['model'], 'accuracy')} (unigram {bits(metrics['unigram'])}, "
               f"order-{config.markov_order} Markov {bits(metrics['kmer'])}) on "
               f"{metrics['model']['n']} masked bases; {time.monotonic() - started:.0f} s; "
               f"run in {run_dir}")
    reporter.summary(summary)
    return PretrainResult(run_dir, metrics, summary)
