"""`cmx pretrain`: masked-base pretraining of a ChordMixer encoder-decoder (Appendix J).

Flow: plan the sources (whole records or random genome segments, and a held-out part) →
train the autoencoder on freshly masked sequences every epoch (the run skeleton of
:mod:`cmx_cli.training.job`) → score the best model on the fixed validation masks beside two
baselines fitted on the training data (base frequencies, and an order-k Markov model on the
left context) → metrics.json and baselines.pt.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from cmx_cli.baselines.markov import (
    BASELINES_NAME, MarkovModel, UnigramModel, evaluate_baseline, save_baselines)
from cmx_cli.console import Reporter
from cmx_cli.data.pretrain_sources import PretrainSequence, SourcePlan, plan_sources
from cmx_cli.data.samplers import Sampler, make_sampler
from cmx_cli.io.checkpoint import Checkpoint
from cmx_cli.io.run_dir import read_config as read_run_config
from cmx_cli.metrics.masked_bases import beyond_local_statistics
from cmx_cli.settings import PRETRAINING_LEARNING_RATE, Runtime, TrainingSettings, EncoderShape
from cmx_cli.tasks.masked_bases import KIND, MaskedBaseTask, MaskingSettings, evaluate_masked
from cmx_cli.training.distributed import SINGLE, Processes
from cmx_cli.training.job import NewModel, RunResult, run_job
from cmx_cli.training.loop import FitResult
from models import MaskedAutoencoder, MaskedAutoencoderConfig


@dataclass(frozen=True)
class PretrainConfig:
    """Everything needed to rerun `cmx pretrain` (saved as the run's config.json)."""

    fasta: tuple[str, ...]
    out: str
    val_fasta: tuple[str, ...] = ()
    val_fraction: float = 0.1
    sample: str = "auto"
    min_length: int = 256
    max_length: int = 4096
    max_n: float = 0.1
    flip_strands: bool = True
    masking: MaskingSettings = field(default_factory=MaskingSettings)
    tokens_per_epoch: int = 1_000_000
    validation_tokens: int = 200_000
    shape: EncoderShape = field(default_factory=EncoderShape)
    decoder_track_size: int = 8
    decoder_hidden_size: int = 64
    max_tokens: int = 16384
    markov_order: int = 5
    training: TrainingSettings = field(
        default_factory=lambda: TrainingSettings(learning_rate=PRETRAINING_LEARNING_RATE))
    runtime: Runtime = field(default_factory=Runtime)


class PretrainJob:
    """`cmx pretrain` for the run skeleton (:class:`~cmx_cli.training.job.TrainingJob`)."""

    kind = KIND

    def __init__(self, config: PretrainConfig) -> None:
        self.config = config
        self.plan: Optional[SourcePlan] = None
        self.train_sampler: Optional[Sampler] = None
        self.validation: list[PretrainSequence] = []
        self.validation_masks: list = []

    def inputs(self) -> list:
        return [*self.config.fasta, *self.config.val_fasta]

    def data_inputs(self) -> list:
        return self.inputs()

    def read_data(self, reporter: Reporter) -> None:
        config = self.config
        self.plan = plan_sources([Path(p) for p in config.fasta],
                                 [Path(p) for p in config.val_fasta], config.val_fraction,
                                 config.sample, config.max_length, config.training.seed)
        reporter.note(self.plan.describe())
        self.train_sampler = make_sampler(self.plan, "train", config.min_length, config.max_n,
                                          config.flip_strands)
        self.validation = make_sampler(self.plan, "validation", config.min_length,
                                       config.max_n).validation_set(config.validation_tokens,
                                                                    seed=config.training.seed)
        return None

    def describe_data(self) -> str:
        return (f"{sum(len(s) for s in self.validation):,} validation bases, "
                f"{self.config.tokens_per_epoch:,} training bases an epoch")

    def build_model(self, reporter: Reporter) -> NewModel:
        config = self.config
        encoder = config.shape.encoder(config.max_length)
        return NewModel(MaskedAutoencoder(MaskedAutoencoderConfig.build(
            encoder, config.decoder_track_size, config.decoder_hidden_size)))

    def checkpoint(self, model: nn.Module, state_dict: dict,
                   training_state: Optional[dict]) -> Checkpoint:
        extra = {"masking": asdict(self.config.masking), "sources": self.plan.to_dict()}
        return Checkpoint(kind=KIND, model_config=model.config.to_dict(), state_dict=state_dict,
                          extra=extra, training_state=training_state)

    def task(self, device: torch.device, precision: str) -> MaskedBaseTask:
        config, sampler = self.config, self.train_sampler

        def draw_training(rng: np.random.Generator) -> list:
            return list(sampler.epoch(config.tokens_per_epoch, rng))

        task = MaskedBaseTask(draw_training, self.validation, config.masking, config.max_tokens,
                              device, precision, config.training.seed)
        self.validation_masks = task.validation_masks
        return task

    def evaluate(self, model: nn.Module, device: torch.device, precision: str,
                 reporter: Reporter) -> dict:
        config = self.config
        # Baselines see the same training sources the model saw.
        baseline_started = time.monotonic()
        baseline_rng = np.random.default_rng([config.training.seed, 99])
        training_sample = list(self.train_sampler.epoch(max(config.tokens_per_epoch, 2_000_000),
                                                        baseline_rng))
        unigram = UnigramModel().fit(training_sample)
        markov = MarkovModel(config.markov_order).fit(training_sample)
        save_baselines(Path(config.out) / BASELINES_NAME, unigram, markov)
        baseline_seconds = time.monotonic() - baseline_started
        lowercase = [s.lowercase for s in self.validation]
        masks = self.validation_masks
        return {
            "sources": self.plan.describe(),
            "validation_bases": int(sum(len(s.tokens) for s in self.validation)),
            "model": evaluate_masked(model, self.validation, masks, config.max_tokens, device,
                                     precision),
            "unigram": evaluate_baseline(unigram, masks, lowercase).result(),
            "markov": evaluate_baseline(markov, masks, lowercase).result(),
            "markov_description": f"order-{config.markov_order} Markov model on the left context",
            "training": {"baseline_seconds": round(baseline_seconds, 2),
                         "encoder_parameters": sum(p.numel() for p in model.encoder.parameters())},
        }

    def summary(self, metrics: dict, fit_result: FitResult, run_dir: Path, seconds: float) -> str:
        def number(values: dict, key: str) -> str:
            return "n/a" if values[key] is None else f"{values[key]:.3f}"

        def bits(values: dict) -> str:
            return number(values, "bits_per_base")

        verdict = beyond_local_statistics(metrics["model"], metrics["markov"],
                                          self.config.markov_order)
        return (f"cmx pretrain: validation {bits(metrics['model'])} bits/base, accuracy "
                f"{number(metrics['model'], 'accuracy')} (unigram {bits(metrics['unigram'])}, "
                f"order-{self.config.markov_order} Markov {bits(metrics['markov'])}) on "
                f"{metrics['model']['n']} masked bases: {verdict}; {seconds:.0f} s; run in "
                f"{run_dir}")


def run(config: PretrainConfig, reporter: Optional[Reporter] = None, resume: bool = False,
        processes: Processes = SINGLE) -> Optional[RunResult]:
    """Pretrain an encoder-decoder by masked-base modelling, beside its baselines, in the
    run directory ``config.out`` (:func:`~cmx_cli.training.job.run_job`)."""
    return run_job(PretrainJob(config), reporter, resume, processes)


def read_config(run_dir: Path) -> PretrainConfig:
    """Read a pretraining run's config.json (for ``--resume``)."""
    return read_run_config(run_dir, PretrainConfig, "cmx pretrain")
