"""`cmx predict variants.vcf --reference genome.fa --model RUN`: a score per ALT allele.

The score depends on the model:

* a `cmx finetune` model: the probability of label 1, from the REF and ALT windows of the
  model's own window length (unless ``--window`` says otherwise); ``--rc`` averages both
  strands. A model with groups reads each record's group from an INFO field (the one it was
  trained with, or ``--group-field``), or takes one ``--group`` for every record; records
  without a known group get ``.`` (``no_group``, ``unknown_group``).
* a `cmx pretrain` model: zero-shot, log P(alt) − log P(ref) at the masked variant
  position, always averaged over both strands (issue [pretrain]). Indels have no single
  masked position and get ``.``, counted under their own reason.

The VCF side (pre-flight, skip reasons, streaming, atomic annotated output) is
:mod:`cmx_cli.variants.vcf_io`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from cmx_cli import __version__
from cmx_cli.alphabet import N
from cmx_cli.console import Reporter
from cmx_cli.errors import CmxError
from cmx_cli.io.reference import ReferenceGenome
from cmx_cli.runtime import resolve_device, resolve_precision
from cmx_cli.training.checkpoint import Checkpoint, load_checkpoint
from cmx_cli.training.masked_bases import KIND as MLM_KIND
from cmx_cli.training.masked_bases import build_autoencoder
from cmx_cli.training.variant_classification import KIND as VARIANT_KIND
from cmx_cli.training.variant_classification import VariantScorer, build_variant_classifier
from cmx_cli.training.zero_shot import ZeroShotScorer
from cmx_cli.variants.alleles import is_snv
from cmx_cli.variants.vcf_io import ScoreSummary, preflight, score_variants
from cmx_cli.variants.reader import open_variants
from models import set_compiled

ZERO_SHOT_DESCRIPTION = (
    "cmx zero-shot score: log P(alt) - log P(ref) in nats at the masked variant position, "
    "averaged over both strands; SNVs only")
CLASSIFIER_DESCRIPTION = "cmx variant classifier: probability of label 1"
DEFAULT_WINDOW = 1000


@dataclass(frozen=True)
class PredictVcfConfig:
    """Settings of a VCF prediction."""

    vcf: str
    reference: str
    model: str
    output: str = "-"
    tsv: bool = False
    regions: tuple = ()
    window: Optional[int] = None
    ref_mismatch: str = "skip"
    contig_map: Optional[str] = None
    split_multiallelic: bool = False
    info_id: str = "CMX"
    average_strands: bool = False
    group_field: Optional[str] = None
    group: Optional[str] = None
    max_tokens: int = 16384
    device: str = "auto"
    precision: str = "auto"
    compile_blocks: bool = False
    command: str = "cmx predict"


def _zero_shot_veto(window, ref: str, alt: str) -> Optional[str]:
    """Zero-shot scores exist for SNVs on a known reference base only."""
    if not is_snv(ref, alt):
        return "indel"
    if window.ref_tokens[window.ref_span[0]] == N or alt.upper() == "N":
        return "n_base"  # P(N) is not modelled: there is no ratio to take
    return None


def _group_reader(checkpoint: Checkpoint, config: PredictVcfConfig):
    """The ``record_context`` that gives each record its group index (None: one group)."""
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
    field = config.group_field or checkpoint.extra.get("group_field")
    if not field:
        raise CmxError(
            f"{checkpoint.path}: the model has one output per group ({', '.join(groups)})",
            "name the INFO field that holds each record's group with --group-field, or "
            "score every record for one group with --group.")
    with open_variants(config.vcf) as variants:
        declared = field in variants.header.info
    if not declared:
        raise CmxError(
            f"{config.vcf}: the header declares no INFO field {field!r}, which holds each "
            f"record's group for this model ({', '.join(groups)})",
            "name the field that does with --group-field, or score every record for one "
            "group with --group.")

    def group_of(record) -> tuple:
        value = record.info.get(field) if field in record.header.info else None
        if isinstance(value, tuple):
            value = value[0] if value else None
        if value is None:
            return None, "no_group"
        return (index[str(value)], None) if str(value) in index else (None, "unknown_group")

    return group_of


def run(config: PredictVcfConfig, reporter: Optional[Reporter] = None) -> ScoreSummary:
    """Score every ALT allele of a VCF/BCF and write it back annotated (or as a TSV).

    Raises:
        CmxError: For a model that cannot score variants, and for bad VCF or FASTA input.
    """
    reporter = reporter or Reporter(quiet=True)
    checkpoint = load_checkpoint(config.model)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    if checkpoint.kind == VARIANT_KIND:
        model = build_variant_classifier(checkpoint)
        scorer = VariantScorer(model.to(device), config.max_tokens, device, precision,
                               config.average_strands)
        window = config.window or int(checkpoint.extra.get("window", DEFAULT_WINDOW))
        veto, description = None, CLASSIFIER_DESCRIPTION + (
            ", averaged over both strands" if config.average_strands else "")
        record_context = _group_reader(checkpoint, config)
    elif checkpoint.kind == MLM_KIND:
        if config.group or config.group_field:
            raise CmxError(f"{checkpoint.path}: a pretrained model has no groups",
                           "drop --group and --group-field.")
        model = build_autoencoder(checkpoint)
        scorer = ZeroShotScorer(model.to(device), config.max_tokens, device, precision)
        window, veto, description = config.window or DEFAULT_WINDOW, _zero_shot_veto, \
            ZERO_SHOT_DESCRIPTION
        record_context = None
    else:
        raise CmxError(
            f"{checkpoint.path}: a {checkpoint.kind} model cannot score variants",
            "use a `cmx finetune` run, or a `cmx pretrain` run for zero-shot SNV scores.")
    set_compiled(model, config.compile_blocks)
    with ReferenceGenome(Path(config.reference), config.contig_map) as reference:
        # Pre-flight: contigs, REF mismatches and unscorable alleles, before any model work.
        report = preflight(config.vcf, reference, config.regions, window, config.ref_mismatch)
        reporter.table(report.table())
        for warning in report.warnings:
            reporter.warn(warning)
        summary = score_variants(
            config.vcf, reference, config.output, scorer, regions=config.regions,
            window=window, ref_mismatch=config.ref_mismatch,
            split_multiallelic=config.split_multiallelic, info_id=config.info_id,
            info_description=description,
            header_lines=(f"##cmx_model={checkpoint.path}", f"##cmx_version={__version__}",
                          f"##cmx_command={config.command}"),
            tsv=config.tsv, scorable=veto, record_context=record_context, reporter=reporter,
            report=report)
    reporter.summary(f"cmx predict: {summary.line()}")
    return summary
