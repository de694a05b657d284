"""`cmx train`: supervised classification of variable-length sequences from FASTA.

Flow: read and label the FASTA files → drop duplicate sequences → split → train a
ChordMixer classifier (the run skeleton of :mod:`cmx_cli.training.job`) → evaluate the best
model on the held-out data → fit the k-mer baseline on the same split → metrics.json.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from cmx_cli.baselines.kmer import KmerBaseline
from cmx_cli.console import Reporter
from cmx_cli.data.dedup import drop_duplicates
from cmx_cli.data.split import SPLITS, SplitTable, stratified_group_split, stratified_split
from cmx_cli.errors import CmxError
from cmx_cli.io.checkpoint import Checkpoint
from cmx_cli.io.labels import (
    LabelledSequences, LabelRule, check_regex, header_field, load_labelled, parse_fasta_argument)
from cmx_cli.io.predictions import HeldOutPredictions
from cmx_cli.io.run_dir import read_config as read_run_config
from cmx_cli.metrics.classification import classification_metrics, metrics_by_length
from cmx_cli.settings import EncoderStart, HeldOut, Runtime, TrainingSettings, EncoderShape
from cmx_cli.tasks.classification import KIND, ClassificationTask, predict_probabilities
from cmx_cli.training.distributed import SINGLE, Processes
from cmx_cli.training.job import (
    NewModel, RunResult, closing_line, encoder_config, held_out_split, run_job)
from cmx_cli.training.loop import FitResult
from models import ClassifierConfig, SequenceClassifier, TransformerConfig

MIN_PER_LENGTH_BIN = 20


@dataclass(frozen=True)
class TrainConfig:
    """Everything needed to rerun `cmx train` (saved as the run's config.json)."""

    fasta: tuple[str, ...]
    out: str
    label_regex: Optional[str] = None
    labels_table: Optional[str] = None
    group_regex: Optional[str] = None
    val_fasta: tuple[str, ...] = ()
    test_fasta: tuple[str, ...] = ()
    held_out: HeldOut = field(default_factory=HeldOut)
    deduplicate: bool = True
    arch: str = "chordmixer"
    shape: EncoderShape = field(default_factory=EncoderShape)
    start: EncoderStart = field(default_factory=EncoderStart)
    max_tokens: int = 4096
    class_weights: str = "none"
    kmer_k: int = 5
    training: TrainingSettings = field(default_factory=TrainingSettings)
    runtime: Runtime = field(default_factory=Runtime)


@dataclass
class LabelledSplit:
    """The run's labelled sequences, each assigned to a split."""

    sequences: LabelledSequences
    table: SplitTable
    class_names: list

    def part(self, split: str) -> tuple[list, np.ndarray, np.ndarray]:
        """Token arrays, class indices and lengths of one split."""
        index = {name: i for i, name in enumerate(self.class_names)}
        members = self.table.members(split)
        tokens = [self.sequences.tokens[i] for i in members]
        labels = np.array([index[self.sequences.labels[i]] for i in members], dtype=np.int64)
        lengths = np.array([len(t) for t in tokens], dtype=np.int64)
        return tokens, labels, lengths



def _group(sequences: LabelledSequences, member: int, group_regex: Optional[str]) -> str:
    """The ``--group-regex`` group of a sequence (a record whose header has none is a group
    of its own), or ``.`` without groups."""
    if not group_regex:
        return "."
    return (header_field(group_regex, sequences.descriptions[member]) or
            f"{sequences.sources[member]}:{sequences.names[member]}")


def _load(arguments: tuple, rule: LabelRule, reporter: Reporter) -> LabelledSequences:
    sequences, warnings = load_labelled([parse_fasta_argument(a) for a in arguments], rule)
    for warning in warnings:
        reporter.warn(warning)
    return sequences


def load_dataset(config: TrainConfig, reporter: Reporter) -> LabelledSplit:
    """Read, label, deduplicate and split the run's sequences.

    Raises:
        CmxError: For unreadable inputs, fewer than two classes, or held-out classes that
            training never sees.
    """
    rule = LabelRule.build(config.label_regex, config.labels_table)
    if config.group_regex:
        check_regex(config.group_regex, "--group-regex")
    pool = _load(config.fasta, rule, reporter)
    held_out = {
        "val": _load(config.val_fasta, rule, reporter) if config.val_fasta else None,
        "test": _load(config.test_fasta, rule, reporter) if config.test_fasta else None,
    }
    combined = LabelledSequences()
    splits: list = []
    for split, part in (("val", held_out["val"]), ("test", held_out["test"]), ("pool", pool)):
        if part is not None:
            combined.extend(part)
            splits += [split] * len(part)
    if config.deduplicate:
        # Held-out files come first, so a training copy of a held-out sequence is dropped.
        keep, messages = drop_duplicates(combined)
        for message in messages:
            reporter.warn(message)
        combined = combined.subset(keep)
        splits = [splits[i] for i in keep]
    pool_members = [i for i, s in enumerate(splits) if s == "pool"]
    pool_labels = [combined.labels[i] for i in pool_members]
    val_fraction = 0.0 if config.val_fasta else config.held_out.val_fraction
    test_fraction = 0.0 if config.test_fasta else config.held_out.test_fraction
    if config.group_regex:
        groups = [_group(combined, i, config.group_regex) for i in pool_members]
        pool_splits = stratified_group_split(pool_labels, groups, val_fraction, test_fraction,
                                             config.training.seed)
    else:
        pool_splits = stratified_split(pool_labels, val_fraction, test_fraction,
                                       config.training.seed)
    for member, split in zip(pool_members, pool_splits):
        splits[member] = split
    train_classes = sorted({label for label, s in zip(combined.labels, splits) if s == "train"})
    if len(train_classes) < 2:
        raise CmxError(
            f"{', '.join(config.fasta)}: the training data has {len(train_classes)} class(es) "
            f"({', '.join(train_classes) or 'none'}); a classifier needs at least two",
            "give one --fasta per class, or a --label-regex / --labels that finds two or more labels.",
        )
    unseen = sorted({label for label in combined.labels} - set(train_classes))
    if unseen:
        raise CmxError(
            f"the held-out data has classes that training never sees: {', '.join(unseen)}",
            "add training sequences of those classes or remove them from --val-fasta/--test-fasta.",
        )
    table = SplitTable(combined.names, combined.sources, combined.labels, splits)
    return LabelledSplit(combined, table, train_classes)


def _class_weights(labels: np.ndarray, n_classes: int, mode: str) -> Optional[torch.Tensor]:
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return torch.tensor(len(labels) / (n_classes * np.maximum(counts, 1.0)), dtype=torch.float32)


class TrainJob:
    """`cmx train` for the run skeleton (:class:`~cmx_cli.training.job.TrainingJob`)."""

    kind = KIND

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.data: Optional[LabelledSplit] = None
        self.parts: dict = {}  # split -> (tokens, class indices, lengths)

    def inputs(self) -> list:
        config = self.config
        fasta = [parse_fasta_argument(argument).path
                 for argument in (*config.fasta, *config.val_fasta, *config.test_fasta)]
        return [*fasta, config.labels_table, config.start.init]

    def data_inputs(self) -> list:
        # --init is read once, when the run starts; a resume takes the weights from last.pt.
        return [path for path in self.inputs()[:-1] if path is not None]

    def read_data(self, reporter: Reporter) -> SplitTable:
        self.data = load_dataset(self.config, reporter)
        self.parts = {split: self.data.part(split) for split in SPLITS}
        return self.data.table

    def describe_data(self) -> str:
        counts = [len(self.parts[split][0]) for split in SPLITS]
        return (f"{counts[0]} training, {counts[1]} validation and {counts[2]} test sequences; "
                f"classes: {', '.join(self.data.class_names)}")

    def build_model(self, reporter: Reporter) -> NewModel:
        longest = max(len(t) for t in self.data.sequences.tokens)
        encoder, state = encoder_config(self.config.shape, self.config.start, longest,
                                        "sequence", reporter)
        if self.config.arch == "transformer":
            # The attention baseline, as wide and deep as the ChordMixer these flags describe.
            encoder = TransformerConfig.matching(encoder)
        model = SequenceClassifier(ClassifierConfig(encoder, n_classes=len(self.data.class_names)))
        return NewModel.started(model, state, self.config.start)

    def checkpoint(self, model: nn.Module, state_dict: dict,
                   training_state: Optional[dict]) -> Checkpoint:
        return Checkpoint(kind=KIND, model_config=model.config.to_dict(), state_dict=state_dict,
                          labels=self.data.class_names, training_state=training_state)

    def task(self, device: torch.device, precision: str) -> ClassificationTask:
        (train_x, train_y, _), (val_x, val_y, _) = self.parts["train"], self.parts["val"]
        n_classes = len(self.data.class_names)
        return ClassificationTask(train_x, train_y, val_x, val_y, n_classes,
                                  self.config.max_tokens, device, precision,
                                  _class_weights(train_y, n_classes, self.config.class_weights))

    def evaluate(self, model: nn.Module, device: torch.device, precision: str,
                 reporter: Reporter) -> dict:
        config, parts, n_classes = self.config, self.parts, len(self.data.class_names)
        held_out = {split: parts[split][:2] for split in ("val", "test") if len(parts[split][0])}
        evaluation = {split: (y, predict_probabilities(model, x, config.max_tokens, device,
                                                       precision))
                      for split, (x, y) in held_out.items()}
        baseline_started = time.monotonic()
        baseline = KmerBaseline(k=config.kmer_k,
                                class_weight="balanced" if config.class_weights == "balanced"
                                else None, seed=config.training.seed)
        baseline.fit(*parts["train"][:2])
        baseline_evaluation = {split: (y, baseline.predict_proba(x))
                               for split, (x, y) in held_out.items()}
        baseline_seconds = time.monotonic() - baseline_started
        metrics = {
            "classes": self.data.class_names,
            "data": {split: {name: int((labels == i).sum())
                             for i, name in enumerate(self.data.class_names)}
                     for split, (_, labels, _) in parts.items()},
            "model": {split: classification_metrics(y, p, n_classes, intervals=True)
                      for split, (y, p) in evaluation.items()},
            "kmer_baseline": {"description": baseline.describe(),
                              "seconds": round(baseline_seconds, 2)} | {
                split: classification_metrics(y, p, n_classes, intervals=True)
                for split, (y, p) in baseline_evaluation.items()},
        }
        split = held_out_split(metrics)
        if split in evaluation:
            lengths = parts[split][2]
            # Ten percentile bins as in the paper's Figure 5, but never fewer than ~20
            # sequences a bin: a ROC-AUC over a handful of sequences is noise.
            n_bins = max(1, min(10, len(lengths) // MIN_PER_LENGTH_BIN))
            for source, results in (("model", evaluation), ("kmer_baseline", baseline_evaluation)):
                y, p = results[split]
                metrics[source][f"{split}_by_length"] = metrics_by_length(
                    y, p, lengths, n_classes, n_bins=n_bins, intervals=True)
            metrics["predictions"] = self.held_out_predictions(
                split, evaluation[split][1], baseline_evaluation[split][1])
        return metrics

    def held_out_predictions(self, split: str, cmx: np.ndarray,
                             baseline: np.ndarray) -> HeldOutPredictions:
        """The rows of test_predictions.tsv for the held-out ``split``."""
        data, members = self.data, self.data.table.members(split)
        _, labels, lengths = self.parts[split]
        groups = [_group(data.sequences, i, self.config.group_regex) for i in members]
        return HeldOutPredictions(split, data.class_names,
                                  [data.sequences.names[i] for i in members], lengths, labels,
                                  groups, cmx, baseline)

    def summary(self, metrics: dict, fit_result: FitResult, run_dir: Path, seconds: float) -> str:
        return closing_line("cmx train", metrics, "kmer_baseline", "k-mer baseline",
                            "sequences", fit_result, run_dir, seconds)


def run(config: TrainConfig, reporter: Optional[Reporter] = None, resume: bool = False,
        processes: Processes = SINGLE) -> Optional[RunResult]:
    """Train a classifier and evaluate it beside the k-mer baseline, in the run directory
    ``config.out`` (:func:`~cmx_cli.training.job.run_job`)."""
    return run_job(TrainJob(config), reporter, resume, processes)


def read_config(run_dir: Path) -> TrainConfig:
    """Read a training run's config.json (for ``--resume``)."""
    return read_run_config(run_dir, TrainConfig, "cmx train")
