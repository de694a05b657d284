"""`cmx explain calls.vcf --reference ref.fa --model FT`: which context bases drive each
variant's score.

Flow: load the `cmx finetune` model and its scorer as `cmx predict` does (in float32) → the
pre-flight pass over the VCF (:func:`~cmx_cli.variants.preflight.preflight`) → for each
scored allele, every substitution within ``--flank`` bp of it
(:mod:`cmx_cli.explain.variant_context`) → a TSV block per variant, a bedGraph of the
largest |change| at each reference position over all variants, and with ``--plot`` a
heatmap of the first variant.
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np

from cmx_cli.alphabet import BASES
from cmx_cli.console import Reporter
from cmx_cli.errors import CmxError
from cmx_cli.explain.plots import effect_heatmap
from cmx_cli.explain.variant_context import context_effects
from cmx_cli.io.checkpoint import VARIANT_CLASSIFIER, load_checkpoint
from cmx_cli.io.output import atomic_output, check_not_input
from cmx_cli.io.reference import ReferenceGenome
from cmx_cli.io.vcf_reader import VariantReader
from cmx_cli.pipelines.explain import ExplainResult, output_paths
from cmx_cli.pipelines.predict_vcf import (
    PredictVcfConfig, build_scorer, input_files, shown_preflight)
from cmx_cli.settings import Runtime, VariantInput
from cmx_cli.variants.scoring import record_windows, warn_scope

HEADER = ("chrom", "pos", "ref", "alt", "position", "context_ref", "context_alt",
          "delta_log_odds")


@dataclass(frozen=True)
class ExplainVariantsConfig:
    """Settings of `cmx explain` on a VCF."""

    vcf: str
    variants: VariantInput
    model: str
    output: str
    flank: int = 50
    group_field: Optional[str] = None
    group: Optional[str] = None
    plot: bool = False
    max_tokens: int = 16384
    runtime: Runtime = field(default_factory=Runtime)
    allele_kinds: str = "all"


def run(config: ExplainVariantsConfig, reporter: Optional[Reporter] = None) -> ExplainResult:
    """Explain every scored allele of ``config.vcf`` (module docstring).

    Raises:
        CmxError: For a model other than a `cmx finetune` one, bad VCF or FASTA input, or an
            output that would replace an input.
    """
    reporter = reporter or Reporter(quiet=True)
    started = time.monotonic()
    paths = output_paths(Path(config.output))
    inputs = input_files(config.vcf, config.variants, config.model)
    for path in paths.values():
        check_not_input(path, *inputs)
    checkpoint = load_checkpoint(config.model)
    if checkpoint.kind != VARIANT_CLASSIFIER:
        raise CmxError(f"{checkpoint.path}: explaining a VCF needs a `cmx finetune` model",
                       "give a cmx finetune run; explain a `cmx train` or `cmx pretrain` model "
                       "on FASTA.")
    # Changes of log-odds are differences: bf16 rounding would swamp small ones.
    scorer, window = build_scorer(checkpoint, PredictVcfConfig(
        vcf=config.vcf, variants=config.variants, model=config.model,
        group_field=config.group_field, group=config.group, max_tokens=config.max_tokens,
        runtime=replace(config.runtime, precision="fp32"), allele_kinds=config.allele_kinds))
    largest: dict[tuple[str, int], float] = {}
    contigs: dict[str, int] = {}  # contig order, for the bedGraph
    explained, unseen_kind, plotted = 0, 0, None
    with ReferenceGenome(Path(config.variants.reference), config.variants.contig_map) \
            as reference:
        report = shown_preflight(config.vcf, reference, config.variants, window, reporter)
        reader = VariantReader(report.vcf, report.regions, report.header_additions)
        with reader, atomic_output(paths["tsv"]) as tsv, reporter.progress(
                f"Mutating ±{config.flank} bp around each variant", report.records,
                unit="record") as progress:
            writer = csv.writer(tsv, delimiter="\t", lineterminator="\n")
            writer.writerow(HEADER)
            for item in record_windows(reader, reference, scorer, window,
                                       report.ref_mismatch_policy):
                record = item.record
                for status, allele_window in zip(item.statuses, item.windows):
                    if allele_window is None:
                        unseen_kind += status.reason == "unseen_kind"  # --allele-kinds seen
                        continue
                    effects = context_effects(scorer, allele_window, config.flank)
                    # Reference position (0-based) of the REF window's first base.
                    origin = record.pos - 1 - allele_window.ref_span[0]
                    contigs.setdefault(record.chrom, len(contigs))
                    for offset, ref in enumerate(effects.ref.tolist()):
                        position = origin + effects.start + offset
                        changes = effects.delta[offset, :, 0]
                        if np.isnan(changes).all():
                            continue
                        for column in range(3):
                            writer.writerow([record.chrom, record.pos, record.ref, status.alt,
                                             position + 1, BASES[ref],
                                             BASES[effects.alt[offset, column]],
                                             f"{changes[column]:.6g}"])
                        key = (record.chrom, position)
                        largest[key] = max(largest.get(key, 0.0), float(np.abs(changes).max()))
                    plotted = plotted or (f"{record.chrom}:{record.pos} {record.ref}>"
                                          f"{status.alt}", replace(
                                              effects, start=origin + effects.start))
                    explained += 1
                progress.advance()
            warn_scope(scorer, reporter)  # as `cmx predict` does (issue 23, case 7)
            if explained == 0:  # raised inside the block: no empty TSV is left behind
                raise CmxError(f"{config.vcf}: no allele could be scored, so nothing was "
                               "explained", "see the pre-flight table for why each was left out.")
    with atomic_output(paths["bedgraph"]) as bedgraph:
        for (chrom, position), value in sorted(largest.items(),
                                               key=lambda item: (contigs[item[0][0]], item[0][1])):
            bedgraph.write(f"{chrom}\t{position}\t{position + 1}\t{value:.6g}\n")
    written = [paths["tsv"], paths["bedgraph"]]
    if config.plot and plotted is not None:
        with atomic_output(paths["plot"], "wb") as stream:
            stream.write(effect_heatmap(*plotted, ["the variant's score"],
                                        "in-silico mutagenesis"))
        written.append(paths["plot"])
    seconds = time.monotonic() - started
    left = (f"; {unseen_kind:,} allele(s) of kinds the model never saw left out "
            "(--allele-kinds seen)" if unseen_kind else "")
    summary = (f"cmx explain: {explained:,} variant(s), ±{config.flank} bp each, by in-silico "
               f"mutagenesis in {seconds:.0f} s{left}; written to "
               f"{', '.join(str(path) for path in written)}")
    return ExplainResult(explained, len(largest), written, summary)
