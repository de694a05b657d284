"""`cmx predict variants.vcf --reference genome.fa --model RUN`: a score per ALT allele.

The score depends on the model:

* a `cmx finetune` model: the probability of label 1, from the REF and ALT windows of the
  model's own window length (unless ``--window`` says otherwise); ``--average-strands``
  averages both strands. A model with groups reads each record's group from an INFO field
  (the one it was trained with, or ``--group-field``), or takes one ``--group`` for every
  record; records without a known group get ``.`` (``no_group``, ``unknown_group``).
* a `cmx pretrain` model: zero-shot, log P(alt) − log P(ref) at the masked variant
  position, always averaged over both strands. Indels have no single masked position and
  get ``.``, counted under their own reason.

This module owns the pre-flight pass and builds the scorer; the streaming, the skip reasons
and the annotated output are :mod:`cmx_cli.variants.scoring`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from cmx_cli import __version__
from cmx_cli.console import Reporter
from cmx_cli.errors import CmxError
from cmx_cli.io.checkpoint import Checkpoint, load_checkpoint, model_files
from cmx_cli.io.output import check_not_input, with_indexes
from cmx_cli.io.reference import ReferenceGenome
from cmx_cli.io.vcf_reader import open_variants
from cmx_cli.io.vcf_writer import header_value
from cmx_cli.runtime import ready_for_inference
from cmx_cli.settings import Runtime, VariantInput
from cmx_cli.tasks import masked_bases, variant
from cmx_cli.variants.background import score_background
from cmx_cli.variants.preflight import PreflightReport, preflight
from cmx_cli.variants.scoring import AlleleScorer, ScoreOutput, ScoreSummary, score_variants

DEFAULT_WINDOW = 1000
#: ``--allele-kinds``: score every allele a fine-tuned model can take (and warn about kinds
#: it never saw in training), or only the kinds it saw
#: (:class:`~cmx_cli.variants.scoring.TrainingScope`).
ALLELE_KINDS = ("all", "seen")


@dataclass(frozen=True)
class PredictVcfConfig:
    """Settings of a VCF prediction."""

    vcf: str
    variants: VariantInput
    model: str
    output: str = "-"
    tsv: bool = False
    split_multiallelic: bool = False
    info_id: str = "CMX"
    average_strands: bool = False
    group_field: Optional[str] = None
    group: Optional[str] = None
    max_tokens: int = 16384
    runtime: Runtime = field(default_factory=Runtime)
    command: str = "cmx predict"
    background: int = 0
    allele_kinds: str = "all"


def _group_reader(checkpoint: Checkpoint, config: PredictVcfConfig):
    """The function that gives each record its group index (None: a model of one group)."""
    groups = checkpoint.extra.get("groups", [""])
    if len(groups) <= 1:
        if config.group or config.group_field:
            raise CmxError(f"{checkpoint.path}: the model has no groups",
                           "drop --group and --group-field.")
        return None
    index = {name: i for i, name in enumerate(groups)}
    if config.group is not None:
        if config.group not in index:
            raise CmxError(f"{checkpoint.path}: the model has no group {config.group!r}",
                           f"its groups are: {', '.join(groups)}.")
        return lambda record: (index[config.group], None)
    field_name = config.group_field or checkpoint.extra.get("group_field")
    if not field_name:
        raise CmxError(
            f"{checkpoint.path}: the model has one output per group ({', '.join(groups)})",
            "name the INFO field that holds each record's group with --group-field, or "
            "score every record for one group with --group.")
    with open_variants(config.vcf) as variants:
        declared = field_name in variants.header.info
    if not declared:
        raise CmxError(
            f"{config.vcf}: the header declares no INFO field {field_name!r}, which holds each "
            f"record's group for this model ({', '.join(groups)})",
            "name the field that does with --group-field, or score every record for one "
            "group with --group.")

    def group_of(record) -> tuple:
        value = record.info.get(field_name) if field_name in record.header.info else None
        if isinstance(value, tuple):
            value = value[0] if value else None
        if value is None:
            return None, "no_group"
        return (index[str(value)], None) if str(value) in index else (None, "unknown_group")

    return group_of


def build_scorer(checkpoint: Checkpoint, config: PredictVcfConfig) -> tuple[AlleleScorer, int]:
    """The scorer of a checkpoint, on its device, and the window it scores with."""
    if checkpoint.kind == variant.KIND:
        group_of = _group_reader(checkpoint, config)
        model = variant.build_variant_classifier(checkpoint)
        device, precision = ready_for_inference(model, config.runtime)
        scorer = variant.VariantScorer(checkpoint, model, config.max_tokens, device, precision,
                                       config.average_strands, group_of)
        window = config.variants.window or int(checkpoint.extra.get("window", DEFAULT_WINDOW))
    elif checkpoint.kind == masked_bases.KIND:
        if config.group or config.group_field:
            raise CmxError(f"{checkpoint.path}: a pretrained model has no groups",
                           "drop --group and --group-field.")
        model = masked_bases.build_autoencoder(checkpoint)
        device, precision = ready_for_inference(model, config.runtime)
        scorer = masked_bases.ZeroShotScorer(model, config.max_tokens, device, precision)
        window = config.variants.window or DEFAULT_WINDOW
    else:
        raise CmxError(
            f"{checkpoint.path}: a {checkpoint.kind} model cannot score variants",
            "use a `cmx finetune` run, or a `cmx pretrain` run for zero-shot SNV scores.")
    if config.allele_kinds not in ALLELE_KINDS:
        raise ValueError(f"allele_kinds must be one of {ALLELE_KINDS}: {config.allele_kinds!r}")
    if scorer.scope is not None:
        scorer.scope.seen_only = config.allele_kinds == "seen"
    return scorer, window


def input_files(vcf: str, variants: VariantInput, model: str) -> list:
    """Every file a command that reads a VCF against a reference reads: the VCF, the FASTA,
    their indexes, the contig map and the model's files (none may be an output)."""
    return [*with_indexes(vcf, ".tbi", ".csi"), *with_indexes(variants.reference, ".fai", ".gzi"),
            variants.contig_map, *model_files(model)]


def shown_preflight(vcf: str, reference: ReferenceGenome, variants: VariantInput, window: int,
                    reporter: Reporter) -> PreflightReport:
    """The pre-flight pass (contigs, REF mismatches, unscorable alleles) before any model
    work, its table and warnings shown."""
    report = preflight(vcf, reference, variants.regions, window, variants.ref_mismatch)
    reporter.table(report.table())
    for warning in report.warnings:
        reporter.warn(warning)
    return report


def model_line(info_id: str, model: Path) -> str:
    """The header line that says which model wrote the field ``info_id``: one per field,
    replaced when the field is scored again (issue 23, case 6)."""
    return (f'##cmx_model=<ID={info_id},Path="{header_value(str(model))}",'
            f'Version="{__version__}">')


def run(config: PredictVcfConfig, reporter: Optional[Reporter] = None) -> ScoreSummary:
    """Score every ALT allele of a VCF/BCF and write it back annotated (or as a TSV).

    Raises:
        CmxError: For a model that cannot score variants, and for bad VCF or FASTA input.
    """
    reporter = reporter or Reporter(quiet=True)
    inputs = input_files(config.vcf, config.variants, config.model)
    for output in with_indexes(config.output, ".tbi", ".csi"):
        check_not_input(output, *inputs)
    checkpoint = load_checkpoint(config.model)
    scorer, window = build_scorer(checkpoint, config)
    output = ScoreOutput(config.output, config.tsv, config.split_multiallelic, config.info_id,
                         (model_line(config.info_id, checkpoint.path),
                          f"##cmx_command={config.command}"))
    with ReferenceGenome(Path(config.variants.reference), config.variants.contig_map) as reference:
        report = shown_preflight(config.vcf, reference, config.variants, window, reporter)
        background = None
        if config.background:
            groups = len(checkpoint.extra.get("groups", [""])) or 1
            started = time.monotonic()
            background = score_background(scorer, reference, config.background, window, groups)
            reporter.note(f"scored {config.background:,} random SNVs of the reference as the "
                          f"background of the percentiles in {time.monotonic() - started:.1f} s")
        return score_variants(report, reference, scorer, output, reporter,
                              background=background)
