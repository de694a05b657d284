"""`cmx finetune`: a variant classifier from a labelled VCF (or TSV) and a reference FASTA.

Flow: read the labelled variants and cut their REF/ALT windows → split (by contig, or by
window-sized blocks) → train a siamese ChordMixer classifier, usually starting from a
`cmx pretrain` encoder (the run skeleton of :mod:`cmx_cli.training.job`) → evaluate the
best model on the held-out variants, per group too → fit the ±flank logistic-regression
baseline on the same split → metrics.json.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from cmx_cli.baselines.flank import FlankBaseline
from cmx_cli.console import Reporter
from cmx_cli.data.split import SPLITS, SplitTable, contig_split, stratified_group_split
from cmx_cli.errors import CmxError
from cmx_cli.io.checkpoint import Checkpoint
from cmx_cli.io.predictions import HeldOutPredictions
from cmx_cli.io.reference import ReferenceGenome
from cmx_cli.io.run_dir import read_config as read_run_config
from cmx_cli.metrics.classification import binary_metrics
from cmx_cli.settings import (
    EncoderStart, HeldOut, Runtime, TrainingSettings, EncoderShape, VariantInput)
from cmx_cli.tasks.variant import KIND, VariantTask, predict_variant_probabilities
from cmx_cli.training.distributed import SINGLE, Processes
from cmx_cli.training.job import (
    NewModel, RunResult, closing_line, encoder_config, held_out_split, run_job)
from cmx_cli.training.loop import FitResult
from cmx_cli.variants.alleles import allele_change
from cmx_cli.variants.labelled import LabelledVariants, load_labelled_variants
from models import VariantClassifier, VariantClassifierConfig

DEFAULT_WINDOW = 1000


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything needed to rerun `cmx finetune` (saved as the run's config.json)."""

    variants: VariantInput
    out: str
    vcf: Optional[str] = None
    label_field: Optional[str] = None
    labels_table: Optional[str] = None
    group_field: Optional[str] = None
    val_contigs: tuple[str, ...] = ()
    test_contigs: tuple[str, ...] = ()
    held_out: HeldOut = field(default_factory=HeldOut)
    start: EncoderStart = field(default_factory=EncoderStart)
    shape: EncoderShape = field(default_factory=EncoderShape)
    site_features: bool = True
    marker: bool = True
    flip_strands: bool = True
    head_hidden: int = 128
    head_dropout: float = 0.1
    max_tokens: int = 32768
    flank: int = 5
    training: TrainingSettings = field(default_factory=TrainingSettings)
    runtime: Runtime = field(default_factory=Runtime)

    @property
    def window(self) -> int:
        """The window around each variant, in bp."""
        return self.variants.window or DEFAULT_WINDOW


@dataclass
class LabelledVariantSplit:
    """The labelled variants, each assigned to a split, with group indices."""

    data: LabelledVariants
    table: SplitTable
    group_names: list
    groups: np.ndarray  # (N,) group index of each variant
    labels: np.ndarray  # (N,) 0/1

    def part(self, split: str) -> tuple[list, np.ndarray, np.ndarray]:
        """Windows, labels and group indices of one split."""
        members = self.table.members(split)
        return ([self.data.windows[i] for i in members], self.labels[members],
                self.groups[members])


def split_variants(config: FinetuneConfig, data: LabelledVariants) -> LabelledVariantSplit:
    """Assign every variant to train, val or test.

    Held-out contigs first (``--val-contigs``, ``--test-contigs``); a held-out set without
    contigs then takes its fraction of the remaining variants, by window-sized blocks of the
    genome stratified by label: variants within one block share most of their context, so a
    block is never split.
    """
    labels = np.array([variant.label for variant in data.variants], dtype=np.int64)
    held_out = set(config.val_contigs) | set(config.test_contigs)
    # A variant's contig may be named as in the VCF or as in the FASTA.
    named = [variant.chrom if variant.chrom in held_out else contig
             for variant, contig in zip(data.variants, data.contigs)]
    unknown = sorted(held_out - set(named) - {variant.chrom for variant in data.variants})
    if unknown:
        raise CmxError(f"{data.source}: no usable variant on the held-out contig(s) "
                       f"{', '.join(unknown)}",
                       f"the variants' contigs are: {', '.join(sorted(set(named)))}")
    splits = contig_split(named, config.val_contigs, config.test_contigs)
    if "train" not in splits:
        raise CmxError(f"{data.source}: the held-out contig(s) "
                       f"{', '.join(sorted(held_out))} leave no variants for training",
                       "hold out fewer contigs, or hold out shares with --val-fraction and "
                       "--test-fraction")
    val_fraction = 0.0 if config.val_contigs else config.held_out.val_fraction
    test_fraction = 0.0 if config.test_contigs else config.held_out.test_fraction
    if val_fraction or test_fraction:
        pool = [i for i, split in enumerate(splits) if split == "train"]
        blocks = [f"{data.contigs[i]}:{data.variants[i].pos // config.window}" for i in pool]
        pool_splits = stratified_group_split([str(labels[i]) for i in pool], blocks,
                                             val_fraction, test_fraction, config.training.seed)
        for index, split in zip(pool, pool_splits):
            splits[index] = split
        empty = [f"--{name}-fraction {fraction:g}" for name, fraction in
                 (("val", val_fraction), ("test", test_fraction)) if fraction
                 and name not in splits]
        if empty:
            raise CmxError(
                f"{data.source}: {' and '.join(empty)} held out no variants: the "
                f"{len(pool):,} variants lie in {len(set(blocks)):,} block(s) of the window "
                f"size ({config.window:,} bp), and a block is never split",
                "use a smaller --window, or hold out whole contigs with --val-contigs and "
                "--test-contigs")
    group_names = sorted({variant.group for variant in data.variants})
    index = {name: i for i, name in enumerate(group_names)}
    groups = np.array([index[variant.group] for variant in data.variants], dtype=np.int64)
    train_labels = {int(labels[i]) for i, s in enumerate(splits) if s == "train"}
    if train_labels != {0, 1}:
        raise CmxError(
            f"{data.source}: the training variants all have label "
            f"{', '.join(map(str, sorted(train_labels))) or '(none)'}; a classifier needs both 0 and 1",
            "label both classes, or hold out fewer contigs")
    train_groups = {data.variants[i].group for i, s in enumerate(splits) if s == "train"}
    unseen = sorted({variant.group for variant in data.variants} - train_groups)
    if unseen:
        raise CmxError(f"{data.source}: held-out variants in groups that training never sees: "
                       f"{', '.join(unseen)}",
                       "add training variants of those groups, or hold out other contigs")
    names = [f"{v.chrom}:{v.pos}:{v.ref}>{v.alt}" for v in data.variants]
    table = SplitTable(names, [data.source] * len(names), labels.tolist(), splits)
    return LabelledVariantSplit(data, table, group_names, groups, labels)


class FinetuneJob:
    """`cmx finetune` for the run skeleton (:class:`~cmx_cli.training.job.TrainingJob`)."""

    kind = KIND

    def __init__(self, config: FinetuneConfig) -> None:
        self.config = config
        self.split: Optional[LabelledVariantSplit] = None
        self.trained_alleles: dict = {}

    def inputs(self) -> list:
        config = self.config
        return [config.vcf, config.variants.reference, config.variants.contig_map,
                config.labels_table, config.start.init]

    def data_inputs(self) -> list:
        # --init is read once, when the run starts; a resume takes the weights from last.pt.
        return [path for path in self.inputs()[:-1] if path is not None]

    def read_data(self, reporter: Reporter) -> SplitTable:
        config = self.config
        with ReferenceGenome(Path(config.variants.reference), config.variants.contig_map) \
                as reference, reporter.progress("Reading variants", None,
                                                unit="record") as progress:
            data = load_labelled_variants(
                reference, config.window, vcf=config.vcf, label_field=config.label_field,
                labels_table=config.labels_table, group_field=config.group_field,
                regions=config.variants.regions, ref_mismatch=config.variants.ref_mismatch,
                on_record=progress.advance)
            longest = max(reference.length(contig) for contig in set(data.contigs))
        reporter.table(data.table())
        if not reporter.interactive:  # the same counts in a log (issue 23)
            reporter.note(data.line())
        for warning in data.warnings:
            reporter.warn(warning)
        if config.window > longest:
            reporter.warn(f"--window {config.window:,} bp is longer than every contig the "
                          f"variants lie on (the longest is {longest:,} bp): every window is "
                          "clipped to its contig, so all variants of a contig share one context")
        self.split = split_variants(config, data)
        #: Training alleles by change, which the checkpoint records (what it learnt from).
        self.trained_alleles = dict(Counter(
            allele_change(data.variants[i].ref, data.variants[i].alt)
            for i in self.split.table.members("train")))
        for name in ("val", "test"):
            present = set(self.split.part(name)[1].tolist())
            if present and present != {0, 1}:
                reporter.warn(
                    f"the {name} split has only label {present.pop()}: its ROC-AUC and PR-AUC "
                    f"are undefined; hold out other contigs, or more variants with "
                    f"--{name}-fraction")
        return self.split.table

    def describe_data(self) -> str:
        counts = [len(self.split.table.members(split)) for split in SPLITS]
        groups = len(self.split.group_names)
        return (f"{counts[0]:,} training, {counts[1]:,} validation and {counts[2]:,} test "
                f"variants" + (f" in {groups} groups" if groups > 1 else ""))

    def build_model(self, reporter: Reporter) -> NewModel:
        config = self.config
        longest = max(max(len(w.ref_tokens), len(w.alt_tokens)) for w in self.split.data.windows)
        encoder, state = encoder_config(config.shape, config.start, longest, "window", reporter)
        model = VariantClassifier(VariantClassifierConfig(
            encoder, n_groups=len(self.split.group_names), site_features=config.site_features,
            marker=config.marker, head_hidden=config.head_hidden,
            head_dropout=config.head_dropout))
        return NewModel.started(model, state, config.start)

    def checkpoint(self, model: nn.Module, state_dict: dict,
                   training_state: Optional[dict]) -> Checkpoint:
        config = self.config
        extra = {"groups": self.split.group_names, "group_field": config.group_field,
                 "window": config.window, "label_field": config.label_field,
                 "labels_table": Path(config.labels_table).name if config.labels_table else None,
                 "trained_on": {"window": config.window, "max_len": model.config.encoder.max_len,
                                "alleles": self.trained_alleles}}
        return Checkpoint(kind=KIND, model_config=model.config.to_dict(), state_dict=state_dict,
                          labels=["0", "1"], extra=extra, training_state=training_state)

    def task(self, device: torch.device, precision: str) -> VariantTask:
        return VariantTask(*self.split.part("train"), *self.split.part("val"),
                           self.config.max_tokens, device, precision, self.config.flip_strands)

    def evaluate(self, model: nn.Module, device: torch.device, precision: str,
                 reporter: Reporter) -> dict:
        config, split = self.config, self.split
        baseline_started = time.monotonic()
        baseline = FlankBaseline(flank=config.flank, seed=config.training.seed)
        baseline.fit(*split.part("train"))
        baseline_seconds = time.monotonic() - baseline_started
        metrics: dict = {
            "groups": split.group_names,
            "data": {name: {"variants": len(members),
                            "label_1": int(split.labels[members].sum()) if members else 0}
                     for name, members in ((name, split.table.members(name)) for name in SPLITS)},
            "left_out": split.data.left_out(),
            "model": {},
            "flank_baseline": {"description": baseline.describe(),
                               "seconds": round(baseline_seconds, 2)},
        }
        scored = {}
        for name in ("val", "test"):
            windows, labels, groups = split.part(name)
            if not windows:
                continue
            scores = scored[name] = {
                "model": predict_variant_probabilities(model, windows, groups, config.max_tokens,
                                                       device, precision),
                "flank_baseline": baseline.predict_proba(windows, groups)}
            for key, probabilities in scores.items():
                metrics[key][name] = binary_metrics(labels, probabilities, intervals=True)
                if len(split.group_names) > 1:
                    metrics[key][f"{name}_by_group"] = {
                        group: binary_metrics(labels[groups == g], probabilities[groups == g],
                                              intervals=True)
                        for g, group in enumerate(split.group_names)}
        held_out = held_out_split(metrics)
        if held_out in scored:
            metrics["predictions"] = self.held_out_predictions(
                held_out, scored[held_out]["model"], scored[held_out]["flank_baseline"])
        return metrics

    def held_out_predictions(self, name: str, cmx: np.ndarray,
                             baseline: np.ndarray) -> HeldOutPredictions:
        """The rows of test_predictions.tsv for the held-out split ``name``."""
        split = self.split
        windows, labels, groups = split.part(name)

        def two_columns(p: np.ndarray) -> np.ndarray:
            return np.stack([1.0 - p, p], axis=1)

        group_names = ([split.group_names[g] for g in groups] if len(split.group_names) > 1
                       else ["."] * len(windows))
        return HeldOutPredictions(
            name, ["0", "1"], [split.table.names[i] for i in split.table.members(name)],
            np.array([len(w.ref_tokens) for w in windows], dtype=np.int64), labels,
            group_names, two_columns(cmx), two_columns(baseline))

    def summary(self, metrics: dict, fit_result: FitResult, run_dir: Path, seconds: float) -> str:
        return closing_line("cmx finetune", metrics, "flank_baseline", "flank baseline",
                            "variants", fit_result, run_dir, seconds)


def run(config: FinetuneConfig, reporter: Optional[Reporter] = None, resume: bool = False,
        processes: Processes = SINGLE) -> Optional[RunResult]:
    """Fine-tune a variant classifier and evaluate it beside the flank baseline, in the run
    directory ``config.out`` (:func:`~cmx_cli.training.job.run_job`)."""
    return run_job(FinetuneJob(config), reporter, resume, processes)


def read_config(run_dir: Path) -> FinetuneConfig:
    """Read a fine-tuning run's config.json (for ``--resume``)."""
    return read_run_config(run_dir, FinetuneConfig, "cmx finetune")
