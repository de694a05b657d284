"""`cmx predict SEQS.fa`: class probabilities for every record of a FASTA file.

The FASTA is streamed: records are read a chunk at a time (bounded by tokens), predicted in
length buckets and written back in input order, so memory stays flat whatever the file's
size. With labels (``--label-regex`` or ``--labels``) the metrics are computed too.
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from cmx_cli.console import Reporter
from cmx_cli.io.fasta import FastaRecord, count_records, iter_records
from cmx_cli.io.checkpoint import load_checkpoint, model_files
from cmx_cli.io.labels import FastaSource, LabelRule
from cmx_cli.io.output import atomic_output, check_not_input, with_indexes
from cmx_cli.metrics.classification import classification_metrics
from cmx_cli.runtime import ready_for_inference
from cmx_cli.settings import Runtime
from cmx_cli.tasks.classification import KIND, build_classifier, predict_probabilities


@dataclass(frozen=True)
class PredictFastaConfig:
    """Settings of a FASTA prediction."""

    fasta: str
    model: str
    output: str = "-"
    average_strands: bool = False
    label_regex: Optional[str] = None
    labels_table: Optional[str] = None
    max_tokens: int = 16384
    chunk_tokens: int = 2_000_000
    runtime: Runtime = field(default_factory=Runtime)


@dataclass
class PredictFastaResult:
    """Outcome of a FASTA prediction.

    Attributes:
        n_sequences: Records predicted.
        metrics: :func:`~cmx_cli.metrics.classification.classification_metrics` of the
            labelled records, when labels were given and found.
        summary: The closing line.
        fasta: The input, for people.
    """

    n_sequences: int
    metrics: Optional[dict]
    summary: str
    fasta: str = ""


def _chunks(records: Iterator[FastaRecord], chunk_tokens: int) -> Iterator[list[FastaRecord]]:
    """Group streamed records into chunks of about ``chunk_tokens`` tokens."""
    chunk: list[FastaRecord] = []
    tokens = 0
    for record in records:
        chunk.append(record)
        tokens += len(record.tokens)
        if tokens >= chunk_tokens:
            yield chunk
            chunk, tokens = [], 0
    if chunk:
        yield chunk


def run(config: PredictFastaConfig, reporter: Optional[Reporter] = None) -> PredictFastaResult:
    """Write a TSV of ``name, length, predicted, p_<label>...`` rows in input order.

    Args:
        config: The prediction's settings.
        reporter: Where people-facing output goes.

    Returns:
        A :class:`PredictFastaResult`; ``metrics`` is set when labels were given.
    """
    reporter = reporter or Reporter(quiet=True)
    started = time.monotonic()
    check_not_input(config.output, *with_indexes(config.fasta, ".fai", ".gzi"),
                    config.labels_table, *model_files(config.model))
    checkpoint = load_checkpoint(config.model, KIND)
    model = build_classifier(checkpoint)
    device, precision = ready_for_inference(model, config.runtime)
    class_names = checkpoint.labels
    class_index = {name: i for i, name in enumerate(class_names)}
    labelled = config.label_regex is not None or config.labels_table is not None
    rule = LabelRule.build(config.label_regex, config.labels_table) if labelled else None
    source = FastaSource(Path(config.fasta), None)
    total = count_records(Path(config.fasta))
    # A sequence past the encoder's reach passes every block, but not every position can
    # reach every other (an attention encoder has no such limit).
    encoder = model.config.encoder
    reach = getattr(encoder, "reach", None)

    true_labels: list[int] = []
    labelled_probabilities: list[np.ndarray] = []
    unknown_labels: dict[str, int] = {}
    n_unlabelled = n_sequences = n_longer = 0
    with atomic_output(config.output) as handle, reporter.progress(
        "predicting", total, unit="sequence"
    ) as bar:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["name", "length", "predicted"] + [f"p_{name}" for name in class_names])
        for chunk in _chunks(iter_records(Path(config.fasta)), config.chunk_tokens):
            sequences = [record.tokens for record in chunk]
            probabilities = predict_probabilities(
                model, sequences, config.max_tokens, device, precision, config.average_strands
            )
            for record, row in zip(chunk, probabilities):
                writer.writerow([record.name, len(record.tokens), class_names[int(row.argmax())]]
                                + [f"{p:.6g}" for p in row])
                n_longer += reach is not None and len(record.tokens) > reach
                if rule is None:
                    continue
                label = rule.label_for(source, record.name, record.description)
                if label is None:
                    n_unlabelled += 1
                elif label not in class_index:
                    unknown_labels[label] = unknown_labels.get(label, 0) + 1
                else:
                    true_labels.append(class_index[label])
                    labelled_probabilities.append(row)
            n_sequences += len(chunk)
            bar.advance(len(chunk))
    if n_longer:
        reporter.warn(
            f"{n_longer} sequence(s) are longer than the model's max_len ({encoder.max_len:,} "
            f"bp) and its reach ({reach:,} bp): they passed every block, but not every "
            "position could reach every other"
        )
    if n_unlabelled:
        reporter.warn(f"{n_unlabelled} record(s) have no label and are not in the metrics")
    if unknown_labels:
        listed = ", ".join(f"{name} ({count})" for name, count in sorted(unknown_labels.items()))
        reporter.warn(f"labels the model does not know, left out of the metrics: {listed}")

    metrics = None
    seconds = time.monotonic() - started
    summary = f"cmx predict: {n_sequences} sequences in {seconds:.1f} s"
    if rule is not None:
        if not true_labels:
            reporter.warn(f"{config.fasta}: no record has a label the model knows "
                          f"({', '.join(class_names)}), so no metrics; check --label-regex / --labels")
    if true_labels:
        metrics = classification_metrics(
            np.array(true_labels), np.vstack(labelled_probabilities), len(class_names),
            intervals=True)
        auc = "n/a" if metrics["roc_auc"] is None else f"{metrics['roc_auc']:.3f}"
        summary += f"; ROC-AUC {auc}, accuracy {metrics['accuracy']:.3f} on {metrics['n']} labelled"
    if config.output != "-":
        summary += f"; written to {config.output}"
    return PredictFastaResult(n_sequences, metrics, summary, config.fasta)
