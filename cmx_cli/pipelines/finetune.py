"""`cmx finetune`: a variant classifier from a labelled VCF (or TSV) and a reference FASTA.

Flow: read the labelled variants and cut their REF/ALT windows → split (by contig, or by
window-sized blocks) → train a siamese ChordMixer classifier, usually starting from a
`cmx pretrain` encoder (best and last checkpoints, log) → evaluate the best model on the
held-out variants, per group too → fit the ±flank logistic-regression baseline on the same
split → write metrics.json.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from cmx_cli import __version__
from cmx_cli.console import Reporter
from cmx_cli.data.split import SPLITS, contig_split, read_split, stratified_group_split, write_split
from cmx_cli.errors import CmxError
from cmx_cli.io.reference import ReferenceGenome
from cmx_cli.metrics import metrics_table
from cmx_cli.runtime import resolve_precision, seeded
from cmx_cli.training.checkpoint import Checkpoint, load_checkpoint
from cmx_cli.training.distributed import SINGLE, Processes
from cmx_cli.training.loop import FitResult, TrainingSettings, fit
from cmx_cli.training.pretrained import freeze_, load_encoder
from cmx_cli.training.run_dir import (
    CONFIG_NAME, METRICS_NAME, check_run_dir, closing_line, resume_state_, write_json)
from cmx_cli.training.run_dir import read_config as read_run_config
from cmx_cli.training.variant_classification import (
    KIND, VariantTask, binary_metrics, predict_variant_probabilities)
from cmx_cli.variants.flank_baseline import FlankBaseline
from cmx_cli.variants.labelled import LabelledVariants, load_labelled_variants
from models import ChordMixerConfig, VariantClassifier, VariantClassifierConfig

SPLIT_NAME = "split.tsv"


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything needed to rerun `cmx finetune` (saved as the run's config.json)."""

    reference: str
    out: str
    vcf: Optional[str] = None
    label_field: Optional[str] = None
    labels_table: Optional[str] = None
    group_field: Optional[str] = None
    regions: tuple = ()
    contig_map: Optional[str] = None
    ref_mismatch: str = "skip"
    window: int = 1000
    val_contigs: tuple = ()
    test_contigs: tuple = ()
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    init: Optional[str] = None
    freeze_encoder: bool = False
    site_features: bool = True
    marker: bool = True
    reverse_complement: bool = True
    max_len: Optional[int] = None
    track_size: int = 16
    hidden_size: int = 128
    head_hidden: int = 128
    head_dropout: float = 0.1
    dropout: float = 0.1
    reversible: bool = False
    max_tokens: int = 32768
    flank: int = 5
    device: str = "auto"
    precision: str = "auto"
    training: TrainingSettings = field(default_factory=TrainingSettings)

    def to_dict(self) -> dict:
        """Plain dict for config.json."""
        values = asdict(self)
        for key in ("regions", "val_contigs", "test_contigs"):
            values[key] = list(values[key])
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "FinetuneConfig":
        """Rebuild from config.json."""
        values = dict(values)
        values["training"] = TrainingSettings(**values["training"])
        for key in ("regions", "val_contigs", "test_contigs"):
            values[key] = tuple(values[key])
        return cls(**values)


@dataclass
class FinetuneResult:
    """Outcome of a fine-tuning run."""

    run_dir: Path
    metrics: dict
    summary: str


@dataclass
class _Split:
    """The labelled variants, each assigned to a split, with group indices."""

    data: LabelledVariants
    splits: list
    group_names: list
    groups: np.ndarray  # (N,) group index of each variant
    labels: np.ndarray  # (N,) 0/1

    def members(self, split: str) -> list[int]:
        """Indices of one split's variants."""
        return [i for i, s in enumerate(self.splits) if s == split]

    def names(self) -> list[str]:
        """A stable name per variant, for split.tsv."""
        return [f"{v.chrom}:{v.pos}:{v.ref}>{v.alt}" for v in self.data.variants]


def _split(config: FinetuneConfig, data: LabelledVariants) -> _Split:
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
    val_fraction = 0.0 if config.val_contigs else config.val_fraction
    test_fraction = 0.0 if config.test_contigs else config.test_fraction
    if val_fraction or test_fraction:
        pool = [i for i, split in enumerate(splits) if split == "train"]
        blocks = [f"{data.contigs[i]}:{data.variants[i].pos // config.window}" for i in pool]
        pool_splits = stratified_group_split([str(labels[i]) for i in pool], blocks,
                                             val_fraction, test_fraction, config.training.seed)
        for index, split in zip(pool, pool_splits):
            splits[index] = split
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
    return _Split(data, splits, group_names, groups, labels)


def _trunk_config(config: FinetuneConfig, longest: int, reporter: Reporter
                  ) -> tuple[ChordMixerConfig, Optional[dict]]:
    if not config.init:
        return ChordMixerConfig(max_len=config.max_len or longest, track_size=config.track_size,
                                hidden_size=config.hidden_size, dropout=config.dropout,
                                reversible=config.reversible), None
    trunk, state = load_encoder(config.init)
    if longest > trunk.max_len:
        reporter.warn(f"the longest window ({longest:,} bp) exceeds the pretrained encoder's "
                      f"max_len ({trunk.max_len:,} bp); its ends get a partial receptive field")
    return trunk, state


def run(config: FinetuneConfig, reporter: Optional[Reporter] = None, resume: bool = False,
        processes: Processes = SINGLE) -> Optional[FinetuneResult]:
    """Fine-tune a variant classifier and evaluate it beside the flank baseline.

    Args:
        config: The run's settings.
        reporter: Where people-facing output goes (silent by default).
        resume: Continue the run in ``config.out`` from its ``last.pt``.
        processes: The training processes under ``torchrun``; only rank 0 writes the run
            directory, evaluates and returns a result (the others return None).

    Returns:
        A :class:`FinetuneResult` with the metrics written to ``metrics.json``.
    """
    reporter = reporter or Reporter(quiet=True)
    started = time.monotonic()
    run_dir = check_run_dir(Path(config.out), resume)
    processes.barrier()  # every process has checked --out before rank 0 creates it
    device = processes.device(config.device)
    precision = resolve_precision(config.precision, device)
    with ReferenceGenome(Path(config.reference), config.contig_map) as reference, \
            reporter.progress("Reading variants", None, unit="record") as progress:
        data = load_labelled_variants(
            reference, config.window, vcf=config.vcf, label_field=config.label_field,
            labels_table=config.labels_table, group_field=config.group_field,
            regions=config.regions, ref_mismatch=config.ref_mismatch, on_record=progress.advance)
    reporter.table(data.table())
    for warning in data.warnings:
        reporter.warn(warning)
    split = _split(config, data)
    names, sources = split.names(), [data.source] * len(data.variants)
    if resume:
        saved = read_split(run_dir / SPLIT_NAME)
        if saved != {(s, n): part for s, n, part in zip(sources, names, split.splits)}:
            raise CmxError(f"{run_dir / SPLIT_NAME}: the input data no longer gives this run's split",
                           "resume with the same variants and reference, or start a new run.")
    elif processes.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_split(run_dir / SPLIT_NAME, names, sources, split.labels.tolist(), split.splits)
        write_json(run_dir / CONFIG_NAME, config.to_dict())
    parts = {name: split.members(name) for name in SPLITS}
    for name in ("val", "test"):
        present = set(split.labels[parts[name]].tolist())
        if parts[name] and present != {0, 1}:
            reporter.warn(
                f"the {name} split has only label {present.pop()}: its ROC-AUC and PR-AUC are "
                f"undefined; hold out other contigs, or more variants with --{name}-fraction")
    reporter.note(
        f"{len(parts['train']):,} training, {len(parts['val']):,} validation and "
        f"{len(parts['test']):,} test variants"
        + (f" in {len(split.group_names)} groups" if len(split.group_names) > 1 else "")
        + f"; device {device}, {precision}")

    longest = max(max(len(w.ref_tokens), len(w.alt_tokens)) for w in data.windows)
    trunk, encoder_state = _trunk_config(config, longest, reporter)
    model_config = VariantClassifierConfig(
        trunk, n_groups=len(split.group_names), site_features=config.site_features,
        marker=config.marker, head_hidden=config.head_hidden, head_dropout=config.head_dropout)
    with seeded(config.training.seed):
        model = VariantClassifier(model_config)
    if encoder_state is not None and not resume:
        model.trunk.load_state_dict(encoder_state)
    if config.freeze_encoder:
        freeze_(model.trunk)
    resume_state = resume_state_(model, run_dir, KIND) if resume else None
    model.to(device)
    extra = {"groups": split.group_names, "group_field": config.group_field,
             "window": config.window, "label_field": config.label_field}

    def make_checkpoint(state_dict: dict, training_state: Optional[dict]) -> Checkpoint:
        return Checkpoint(kind=KIND, model_config=model_config.to_dict(), state_dict=state_dict,
                          labels=["0", "1"], extra=extra, training_state=training_state)

    def pick(indices: list[int]):
        return ([data.windows[i] for i in indices], split.labels[indices], split.groups[indices])

    task = VariantTask(*pick(parts["train"]), *pick(parts["val"]), config.max_tokens, device,
                       precision, config.reverse_complement)
    result = fit(model, task, config.training, run_dir, device, precision, reporter,
                 make_checkpoint, resume_state, processes)
    if not processes.is_main:
        return None
    model.load_state_dict(load_checkpoint(run_dir, KIND).state_dict)

    baseline_started = time.monotonic()
    baseline = FlankBaseline(flank=config.flank, seed=config.training.seed).fit(*pick(parts["train"]))
    baseline_seconds = time.monotonic() - baseline_started
    scores: dict[str, dict] = {"model": {}, "baseline": {}}
    for name in ("val", "test"):
        if parts[name]:
            windows, _, groups = pick(parts[name])
            scores["model"][name] = predict_variant_probabilities(
                model, windows, groups, config.max_tokens, device, precision)
            scores["baseline"][name] = baseline.predict_proba(windows, groups)
    metrics = _metrics(split, parts, scores, result, model, device, precision, reporter)
    metrics["flank_baseline"].update(description=baseline.describe(),
                                     seconds=round(baseline_seconds, 2))
    write_json(run_dir / METRICS_NAME, metrics)
    reporter.warnings_saved_to = str(run_dir / METRICS_NAME)
    report_split = "test" if parts["test"] else "val"
    if parts[report_split]:
        reporter.table(metrics_table(f"{report_split} variants", {
            "cmx": metrics["model"][report_split],
            f"±{config.flank} bp baseline": metrics["flank_baseline"][report_split]}))
        for group in metrics["model"].get(f"{report_split}_by_group", {}):
            reporter.table(metrics_table(f"{report_split} variants, group {group}", {
                "cmx": metrics["model"][f"{report_split}_by_group"][group],
                f"±{config.flank} bp baseline":
                    metrics["flank_baseline"][f"{report_split}_by_group"][group]}))
    summary = closing_line("cmx finetune", metrics, report_split, "flank_baseline",
                           "flank baseline", "variants", result, run_dir,
                           time.monotonic() - started)
    reporter.summary(summary)
    return FinetuneResult(run_dir, metrics, summary)


def _metrics(split: _Split, parts: dict, scores: dict, result: FitResult, model, device,
             precision: str, reporter: Reporter) -> dict:
    """metrics.json: data counts, the model and the baseline per held-out split and group."""
    metrics: dict = {
        "cmx_version": __version__,
        "groups": split.group_names,
        "data": {name: {"variants": len(members),
                        "label_1": int(split.labels[members].sum()) if members else 0}
                 for name, members in parts.items()},
        "left_out": split.data.left_out(),
        "model": {}, "flank_baseline": {},
        "training": {
            "epochs_completed": result.epochs_completed, "steps": result.steps,
            "best_epoch": result.best_epoch, "stopped_because": result.stopped_because,
            "seconds": round(result.seconds, 2), "device": str(device), "precision": precision,
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "model_config": model.config.to_dict(),
        },
        "warnings": list(reporter.warnings),
    }
    for source, key in (("model", "model"), ("baseline", "flank_baseline")):
        for name, probabilities in scores[source].items():
            members = parts[name]
            labels, groups = split.labels[members], split.groups[members]
            metrics[key][name] = binary_metrics(labels, probabilities)
            if len(split.group_names) > 1:
                metrics[key][f"{name}_by_group"] = {
                    group: binary_metrics(labels[groups == g], probabilities[groups == g])
                    for g, group in enumerate(split.group_names)}
    return metrics


def read_config(run_dir: Path) -> FinetuneConfig:
    """Read a fine-tuning run's config.json (for ``--resume``)."""
    return read_run_config(run_dir, FinetuneConfig.from_dict, "cmx finetune")
