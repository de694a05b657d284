"""`cmx train`: supervised classification of variable-length sequences from FASTA.

Flow: read and label the FASTA files → drop duplicate sequences → split → train a
ChordMixer classifier (best and last checkpoints, log) → evaluate the best model on the
held-out data → fit the k-mer baseline on the same split → write metrics.json.
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
from cmx_cli.data.dedup import drop_duplicates
from cmx_cli.data.split import (
    SPLITS,
    read_split,
    stratified_group_split,
    stratified_split,
    write_split,
)
from cmx_cli.errors import CmxError
from cmx_cli.io.labels import (
    LabelledSequences,
    LabelRule,
    check_regex,
    header_field,
    load_labelled,
    parse_fasta_argument,
)
from cmx_cli.kmer_baseline import KmerBaseline
from cmx_cli.metrics import classification_metrics, length_table, metrics_by_length, metrics_table
from cmx_cli.runtime import resolve_precision, seeded
from cmx_cli.training.checkpoint import Checkpoint, load_checkpoint
from cmx_cli.training.classification import KIND, ClassificationTask, predict_probabilities
from cmx_cli.training.distributed import SINGLE, Processes
from cmx_cli.training.loop import TrainingSettings, fit
from cmx_cli.training.pretrained import freeze_, load_encoder
from cmx_cli.training.run_dir import (
    CONFIG_NAME,
    METRICS_NAME,
    check_run_dir,
    closing_line,
    resume_state_,
    write_json,
)
from cmx_cli.training.run_dir import read_config as read_run_config
from models import ChordMixerConfig, ClassifierConfig, SequenceClassifier, TransformerConfig

SPLIT_NAME = "split.tsv"
MIN_PER_LENGTH_BIN = 20


@dataclass(frozen=True)
class TrainConfig:
    """Everything needed to rerun `cmx train` (saved as the run's config.json)."""

    fasta: tuple
    out: str
    label_regex: Optional[str] = None
    labels_table: Optional[str] = None
    group_regex: Optional[str] = None
    val_fasta: tuple = ()
    test_fasta: tuple = ()
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    deduplicate: bool = True
    arch: str = "chordmixer"
    max_len: Optional[int] = None
    track_size: int = 16
    hidden_size: int = 128
    dropout: float = 0.1
    reversible: bool = False
    max_tokens: int = 4096
    class_weights: str = "none"
    kmer_k: int = 5
    init: Optional[str] = None
    freeze_encoder: bool = False
    device: str = "auto"
    precision: str = "auto"
    training: TrainingSettings = field(default_factory=TrainingSettings)

    def to_dict(self) -> dict:
        """Plain dict for config.json."""
        values = asdict(self)
        values["fasta"], values["val_fasta"], values["test_fasta"] = (
            list(self.fasta), list(self.val_fasta), list(self.test_fasta))
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Rebuild from config.json."""
        values = dict(values)
        values["training"] = TrainingSettings(**values["training"])
        for key in ("fasta", "val_fasta", "test_fasta"):
            values[key] = tuple(values[key])
        return cls(**values)


@dataclass
class TrainResult:
    """Outcome of a training run."""

    run_dir: Path
    metrics: dict
    summary: str


@dataclass
class _Dataset:
    """All labelled sequences of a run, each assigned to a split."""

    sequences: LabelledSequences
    splits: list
    class_names: list

    def part(self, split: str) -> tuple[list, np.ndarray, np.ndarray]:
        """Token arrays, class indices and lengths of one split."""
        index = {name: i for i, name in enumerate(self.class_names)}
        members = [i for i, s in enumerate(self.splits) if s == split]
        tokens = [self.sequences.tokens[i] for i in members]
        labels = np.array([index[self.sequences.labels[i]] for i in members], dtype=np.int64)
        lengths = np.array([len(t) for t in tokens], dtype=np.int64)
        return tokens, labels, lengths


def _load(arguments: tuple, rule: LabelRule, reporter: Reporter) -> LabelledSequences:
    sequences, warnings = load_labelled([parse_fasta_argument(a) for a in arguments], rule)
    for warning in warnings:
        reporter.warn(warning)
    return sequences


def load_dataset(config: TrainConfig, reporter: Reporter) -> _Dataset:
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
    val_fraction = 0.0 if config.val_fasta else config.val_fraction
    test_fraction = 0.0 if config.test_fasta else config.test_fraction
    if config.group_regex:
        # A record whose header has no group is a group of its own.
        groups = [header_field(config.group_regex, combined.descriptions[i]) or
                  f"{combined.sources[i]}:{combined.names[i]}" for i in pool_members]
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
    return _Dataset(combined, splits, train_classes)


def _class_weights(labels: np.ndarray, n_classes: int, mode: str) -> Optional[torch.Tensor]:
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return torch.tensor(len(labels) / (n_classes * np.maximum(counts, 1.0)), dtype=torch.float32)


def run(config: TrainConfig, reporter: Optional[Reporter] = None, resume: bool = False,
        processes: Processes = SINGLE) -> Optional[TrainResult]:
    """Train a classifier and evaluate it beside the k-mer baseline.

    Args:
        config: The run's settings.
        reporter: Where people-facing output goes (silent by default).
        resume: Continue the run in ``config.out`` from its ``last.pt``.
        processes: The training processes under ``torchrun``; only rank 0 writes the run
            directory, evaluates and returns a result (the others return None).

    Returns:
        A :class:`TrainResult` with the metrics written to ``metrics.json``.
    """
    reporter = reporter or Reporter(quiet=True)
    started = time.monotonic()
    run_dir = check_run_dir(Path(config.out), resume)
    processes.barrier()  # every process has checked --out before rank 0 creates it
    device = processes.device(config.device)
    precision = resolve_precision(config.precision, device)
    dataset = load_dataset(config, reporter)
    names, sources = dataset.sequences.names, dataset.sequences.sources
    if resume:
        saved = read_split(run_dir / SPLIT_NAME)
        if saved != {(s, n): split for s, n, split in zip(sources, names, dataset.splits)}:
            raise CmxError(f"{run_dir / SPLIT_NAME}: the input data no longer gives this run's split",
                           "resume with the same FASTA files, or start a new run.")
    elif processes.is_main:
        # Created only once the data have been read, so bad input leaves no empty run behind.
        run_dir.mkdir(parents=True, exist_ok=True)
        write_split(run_dir / SPLIT_NAME, names, sources, dataset.sequences.labels, dataset.splits)
        write_json(run_dir / CONFIG_NAME, config.to_dict())
    parts = {split: dataset.part(split) for split in SPLITS}  # tokens, labels, lengths
    (train_x, train_y, _), (val_x, val_y, _), (test_x, test_y, _) = (
        parts["train"], parts["val"], parts["test"])
    n_classes = len(dataset.class_names)
    reporter.note(
        f"{len(train_x)} training, {len(val_x)} validation and {len(test_x)} test sequences; "
        f"classes: {', '.join(dataset.class_names)}; device {device}, {precision}"
    )

    longest = max(len(t) for t in dataset.sequences.tokens)
    if config.init:
        # The pretrained encoder fixes the trunk's shape; only the linear head is new.
        trunk_config, encoder_state = load_encoder(config.init)
        if longest > trunk_config.max_len:
            reporter.warn(
                f"the longest sequence ({longest} bp) exceeds the pretrained encoder's max_len "
                f"({trunk_config.max_len} bp); longer sequences get a partial receptive field")
    else:
        trunk_config = ChordMixerConfig(max_len=config.max_len or longest,
                                        track_size=config.track_size,
                                        hidden_size=config.hidden_size, dropout=config.dropout,
                                        reversible=config.reversible)
    if config.arch == "transformer":
        # The attention baseline, as wide and deep as the ChordMixer these flags describe.
        trunk_config = TransformerConfig.matching(trunk_config)
    model_config = ClassifierConfig(trunk_config, n_classes=n_classes)
    with seeded(config.training.seed):
        model = SequenceClassifier(model_config)
    if config.init and not resume:
        model.trunk.load_state_dict(encoder_state)
    if config.freeze_encoder:
        freeze_(model.trunk)
    resume_state = resume_state_(model, run_dir, KIND) if resume else None
    model.to(device)

    def make_checkpoint(state_dict: dict, training_state: Optional[dict]) -> Checkpoint:
        return Checkpoint(kind=KIND, model_config=model_config.to_dict(), state_dict=state_dict,
                          labels=dataset.class_names, training_state=training_state)

    task = ClassificationTask(
        train_x, train_y, val_x, val_y, n_classes, config.max_tokens, device, precision,
        _class_weights(train_y, n_classes, config.class_weights),
    )
    result = fit(model, task, config.training, run_dir, device, precision, reporter,
                 make_checkpoint, resume_state, processes)
    if not processes.is_main:
        return None

    best = load_checkpoint(run_dir, KIND)
    model.load_state_dict(best.state_dict)
    evaluation = {}
    for split, (x, y) in (("val", (val_x, val_y)), ("test", (test_x, test_y))):
        if len(x):
            probabilities = predict_probabilities(model, x, config.max_tokens, device, precision)
            evaluation[split] = (y, probabilities)
    baseline_started = time.monotonic()
    baseline = KmerBaseline(k=config.kmer_k,
                            class_weight="balanced" if config.class_weights == "balanced" else None,
                            seed=config.training.seed).fit(train_x, train_y)
    baseline_evaluation = {split: (y, baseline.predict_proba(x))
                           for split, (x, y) in (("val", (val_x, val_y)), ("test", (test_x, test_y)))
                           if len(x)}
    baseline_seconds = time.monotonic() - baseline_started

    report_split = "test" if "test" in evaluation else "val"
    metrics = {
        "cmx_version": __version__,
        "classes": dataset.class_names,
        "data": {split: {name: int((labels == i).sum()) for i, name in enumerate(dataset.class_names)}
                 for split, (_, labels, _) in parts.items()},
        "model": {split: classification_metrics(y, p, n_classes) for split, (y, p) in evaluation.items()},
        "kmer_baseline": {"description": baseline.describe(), "seconds": round(baseline_seconds, 2)} | {
            split: classification_metrics(y, p, n_classes) for split, (y, p) in baseline_evaluation.items()},
        "training": {
            "epochs_completed": result.epochs_completed, "steps": result.steps,
            "best_epoch": result.best_epoch, "stopped_because": result.stopped_because,
            "seconds": round(result.seconds, 2), "device": str(device), "precision": precision,
            "parameters": sum(p.numel() for p in model.parameters()),
            "model_config": model_config.to_dict(),
        },
        "warnings": list(reporter.warnings),
    }
    if report_split in evaluation:
        lengths = parts[report_split][2]
        # Ten percentile bins as in the paper's Figure 5, but never fewer than ~20 sequences
        # a bin: a ROC-AUC over a handful of sequences is noise.
        n_bins = max(1, min(10, len(lengths) // MIN_PER_LENGTH_BIN))
        for source, results in (("model", evaluation), ("kmer_baseline", baseline_evaluation)):
            y, p = results[report_split]
            metrics[source][f"{report_split}_by_length"] = metrics_by_length(
                y, p, lengths, n_classes, n_bins=n_bins)
    write_json(run_dir / METRICS_NAME, metrics)
    reporter.warnings_saved_to = str(run_dir / METRICS_NAME)

    summary = closing_line("cmx train", metrics, report_split, "kmer_baseline",
                           "k-mer baseline", "sequences", result, run_dir,
                           time.monotonic() - started)
    if report_split in evaluation:
        reporter.table(metrics_table(
            f"{report_split} set",
            {"cmx": metrics["model"][report_split],
             "k-mer baseline": metrics["kmer_baseline"][report_split]}))
        reporter.table(length_table(f"cmx {report_split} ROC-AUC by length percentile",
                                    metrics["model"][f"{report_split}_by_length"]))
    reporter.summary(summary)
    return TrainResult(run_dir, metrics, summary)


def read_config(run_dir: Path) -> TrainConfig:
    """Read a training run's config.json (for ``--resume``)."""
    return read_run_config(run_dir, TrainConfig.from_dict, "cmx train")
