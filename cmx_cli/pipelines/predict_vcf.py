"""`cmx predict variants.vcf --reference genome.fa --model RUN`: a score per ALT allele.

With a `cmx pretrain` model the score is zero-shot: log P(alt) − log P(ref) at the masked
variant position, averaged over both strands (issue [pretrain]). Indels have no single
masked position and get ``.``, counted under their own reason. The VCF side (pre-flight,
skip reasons, streaming, atomic annotated output) is :mod:`cmx_cli.variants.vcf_io`.
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
from cmx_cli.training.checkpoint import load_checkpoint
from cmx_cli.training.masked_bases import KIND as MLM_KIND
from cmx_cli.training.masked_bases import build_autoencoder
from cmx_cli.training.zero_shot import ZeroShotScorer
from cmx_cli.variants.alleles import is_snv
from cmx_cli.variants.vcf_io import ScoreSummary, preflight, score_variants

ZERO_SHOT_DESCRIPTION = (
    "cmx zero-shot score: log P(alt) - log P(ref) in nats at the masked variant position, "
    "averaged over both strands; SNVs only")


@dataclass(frozen=True)
class PredictVcfConfig:
    """Settings of a VCF prediction."""

    vcf: str
    reference: str
    model: str
    output: str = "-"
    tsv: bool = False
    regions: tuple = ()
    window: int = 1000
    ref_mismatch: str = "skip"
    contig_map: Optional[str] = None
    split_multiallelic: bool = False
    info_id: str = "CMX"
    max_tokens: int = 16384
    device: str = "auto"
    precision: str = "auto"
    command: str = "cmx predict"


def _zero_shot_veto(window, ref: str, alt: str) -> Optional[str]:
    """Zero-shot scores exist for SNVs on a known reference base only."""
    if not is_snv(ref, alt):
        return "indel"
    if window.ref_tokens[window.ref_span[0]] == N or alt.upper() == "N":
        return "n_base"  # P(N) is not modelled: there is no ratio to take
    return None


def run(config: PredictVcfConfig, reporter: Optional[Reporter] = None) -> ScoreSummary:
    """Score every ALT allele of a VCF/BCF and write it back annotated (or as a TSV).

    Raises:
        CmxError: For a model that cannot score variants, and for bad VCF or FASTA input.
    """
    reporter = reporter or Reporter(quiet=True)
    checkpoint = load_checkpoint(config.model)
    if checkpoint.kind != MLM_KIND:
        raise CmxError(
            f"{checkpoint.path}: a {checkpoint.kind} model cannot score variants",
            "use a `cmx pretrain` run for zero-shot SNV scores.")
    model = build_autoencoder(checkpoint)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    model.to(device)
    scorer = ZeroShotScorer(model, config.max_tokens, device, precision)
    with ReferenceGenome(Path(config.reference), config.contig_map) as reference:
        # Pre-flight: contigs, REF mismatches and unscorable alleles, before any model work.
        report = preflight(config.vcf, reference, config.regions, config.window, config.ref_mismatch)
        reporter.table(report.table())
        summary = score_variants(
            config.vcf, reference, config.output, scorer, regions=config.regions,
            window=config.window, ref_mismatch=config.ref_mismatch,
            split_multiallelic=config.split_multiallelic, info_id=config.info_id,
            info_description=ZERO_SHOT_DESCRIPTION,
            header_lines=(f"##cmx_model={checkpoint.path}", f"##cmx_version={__version__}",
                          f"##cmx_command={config.command}"),
            tsv=config.tsv, scorable=_zero_shot_veto, reporter=reporter, report=report)
    reporter.summary(f"cmx predict: {summary.line()}")
    return summary
