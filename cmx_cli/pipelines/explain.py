"""`cmx explain SEQS.fa --model RUN`: which bases drive a model's output, per position
(VCF input: :mod:`cmx_cli.pipelines.explain_variants`).

Flow: load the model → choose what to explain from its kind (a `cmx train` classifier: the
effect of every substitution, by in-silico mutagenesis or gradient × input,
:mod:`cmx_cli.explain.attribution`; a `cmx pretrain` model: P(base) at each position masked
alone, :mod:`cmx_cli.explain.masked_profile`) → for each record, or the one ``--region``
→ write a TSV, a bedGraph of one value per position beside it, and with ``--plot`` a PNG.

Positions are 1-based in the TSV and the region, 0-based half-open in the bedGraph, as
each format defines them.
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from cmx_cli.alphabet import BASES, decode
from cmx_cli.console import Reporter
from cmx_cli.errors import CmxError
from cmx_cli.explain.attribution import gradient_times_input, mutagenesis
from cmx_cli.explain.masked_profile import information_bits, masked_profile
from cmx_cli.explain.plots import effect_heatmap, sequence_logo
from cmx_cli.io.checkpoint import CLASSIFIER, MASKED_BASES, load_checkpoint, model_files
from cmx_cli.io.fasta import FastaRecord, iter_records
from cmx_cli.io.output import atomic_output, check_not_input, with_indexes
from cmx_cli.io.vcf_reader import Region
from cmx_cli.io.vcf_reader import parse_region as parse_any_region
from cmx_cli.runtime import ready_for_inference
from cmx_cli.settings import Runtime
from cmx_cli.tasks.classification import build_classifier
from cmx_cli.tasks.masked_bases import build_autoencoder

@dataclass(frozen=True)
class ExplainConfig:
    """Settings of `cmx explain`."""

    fasta: str
    model: str
    output: str
    region: Optional[str] = None
    method: str = "ism"
    plot: bool = False
    max_tokens: int = 16384
    runtime: Runtime = field(default_factory=Runtime)


@dataclass
class ExplainResult:
    """What was explained and written."""

    records: int
    positions: int
    files: list[Path]
    summary: str


def parse_region(text: str) -> Region:
    """``NAME:START-END`` (1-based, inclusive, commas allowed) as ``(name, start0, end0)``,
    0-based half-open, read as every ``--region`` is (:func:`cmx_cli.io.vcf_reader.parse_region`);
    FASTA input needs both ends.

    Raises:
        CmxError: For text of another shape or an empty span.
    """
    name, start, end = parse_any_region(text)
    if end is None:
        raise CmxError(f"--region {text!r}: not NAME:START-END",
                       "give a record name and 1-based positions, e.g. chr1:1,001-1,200.")
    return name, start, end


def _targets(config: ExplainConfig) -> Iterator[tuple[FastaRecord, int, int]]:
    if not config.region:
        for record in iter_records(Path(config.fasta)):
            yield record, 0, len(record.tokens)
        return
    name, start, end = parse_region(config.region)
    for record in iter_records(Path(config.fasta)):
        if record.name == name:
            if end > len(record.tokens):
                raise CmxError(f"{config.fasta}: record {record.name} has "
                               f"{len(record.tokens):,} bases; --region {config.region} "
                               "passes its end",
                               f"give an END of at most {len(record.tokens):,}.")
            yield record, start, end
            return
    raise CmxError(f"{config.fasta}: no record named {name} (--region)",
                   "the name is the first word of the header line.")


def output_paths(output: Path) -> dict[str, Path]:
    """The TSV as given, the bedGraph and the plot beside it."""
    stem = output.name[:-len(".tsv")] if output.name.endswith(".tsv") else output.name
    return {"tsv": output, "bedgraph": output.with_name(f"{stem}.bedgraph"),
            "plot": output.with_name(f"{stem}.png")}


def run(config: ExplainConfig, reporter: Optional[Reporter] = None) -> ExplainResult:
    """Explain every record (or the region) of ``config.fasta`` (module docstring).

    Raises:
        CmxError: For bad input, a model of a kind that cannot be explained here, or an
            output that would replace an input.
    """
    reporter = reporter or Reporter(quiet=True)
    started = time.monotonic()
    if config.output == "-":
        raise CmxError("--output -: cmx explain writes a TSV and a bedGraph beside it",
                       "give a file name, e.g. -o ism.tsv.")
    paths = output_paths(Path(config.output))
    for path in paths.values():
        check_not_input(path, *with_indexes(config.fasta, ".fai", ".gzi"),
                        *model_files(config.model))
    checkpoint = load_checkpoint(config.model)
    if checkpoint.kind == CLASSIFIER:
        explainer = _ClassifierEffects(config, build_classifier(checkpoint), checkpoint.labels)
    elif checkpoint.kind == MASKED_BASES:
        if config.method != "ism":
            raise CmxError(f"--method {config.method}: a pretrained model is explained by its "
                           "masked-base probabilities, one pass per position",
                           "leave out --method for a `cmx pretrain` model.")
        explainer = _MaskedProfile(config, build_autoencoder(checkpoint))
    else:
        raise CmxError(f"{checkpoint.path}: a `cmx finetune` model explains variants, not "
                       "FASTA records",
                       "give it a VCF and --reference: cmx explain calls.vcf.gz --reference "
                       "ref.fa --model RUN.")
    records = positions = 0
    plotted = None
    with atomic_output(paths["tsv"]) as tsv, atomic_output(paths["bedgraph"]) as bedgraph:
        writer = csv.writer(tsv, delimiter="\t", lineterminator="\n")
        writer.writerow(explainer.header())
        for record, start, end in _targets(config):
            passes = explainer.passes(end - start)
            with reporter.progress(f"{record.name}: {passes:,} passes", passes,
                                   unit="pass") as bar:
                values = explainer.explain(record.tokens, start, end, bar.advance)
            writer.writerows(explainer.rows(record.name, values))
            for offset, value in enumerate(explainer.track(values)):
                bedgraph.write(f"{record.name}\t{start + offset}\t{start + offset + 1}\t"
                               f"{value:.6g}\n")
            plotted = plotted or (record.name, values)
            records += 1
            positions += end - start
    written = [paths["tsv"], paths["bedgraph"]]
    if config.plot and plotted is not None:
        with atomic_output(paths["plot"], "wb") as stream:
            stream.write(explainer.plot(*plotted))
        written.append(paths["plot"])
    seconds = time.monotonic() - started
    summary = (f"cmx explain: {positions:,} positions of {records:,} record(s) by "
               f"{explainer.method} in {seconds:.0f} s; written to "
               f"{', '.join(str(path) for path in written)}")
    return ExplainResult(records, positions, written, summary)


class _ClassifierEffects:
    """Substitution effects on a classifier's log-odds (ISM or gradient × input)."""

    def __init__(self, config: ExplainConfig, model, class_names: list[str]) -> None:
        self.config = config
        self.class_names = class_names
        self.method = ("in-silico mutagenesis" if config.method == "ism"
                       else "gradient x input")
        # Deltas are differences of log-odds: bf16 rounding would swamp small ones.
        ready_for_inference(model, replace(config.runtime, precision="fp32"))
        self.model = model

    def passes(self, positions: int) -> int:
        return 3 * positions if self.config.method == "ism" else len(self.class_names)

    def explain(self, tokens: np.ndarray, start: int, end: int, advance):
        if self.config.method == "ism":
            return mutagenesis(self.model, tokens, start, end, self.config.max_tokens, advance)
        effects = gradient_times_input(self.model, tokens, start, end)
        advance(len(self.class_names))
        return effects

    def header(self) -> list[str]:
        return ["name", "position", "ref", "alt", *(f"delta_{name}" for name in self.class_names)]

    def rows(self, name: str, effects) -> Iterator[list]:
        for offset, ref in enumerate(effects.ref.tolist()):
            for column in range(3):
                yield [name, effects.start + offset + 1, decode(np.array([ref], np.uint8)),
                       BASES[effects.alt[offset, column]],
                       *(_number(value) for value in effects.delta[offset, column])]

    def track(self, effects) -> np.ndarray:
        """The largest |change| at each position, over substitutions and classes."""
        magnitude = np.abs(effects.delta).reshape(len(effects.ref), -1)
        return np.where(np.isnan(magnitude).all(1), 0.0,
                        np.nanmax(np.nan_to_num(magnitude, nan=0.0), axis=1))

    def plot(self, name: str, effects) -> bytes:
        return effect_heatmap(name, effects, self.class_names, self.method)


class _MaskedProfile:
    """P(base) at each position masked alone, by a pretrained model."""

    method = "masked-base probabilities"

    def __init__(self, config: ExplainConfig, model) -> None:
        self.config = config
        self.model = model
        self.device, self.precision = ready_for_inference(model, config.runtime)

    def passes(self, positions: int) -> int:
        return positions

    def explain(self, tokens: np.ndarray, start: int, end: int, advance):
        profile = masked_profile(self.model, tokens, start, end, self.config.max_tokens,
                                 self.device, self.precision, advance)
        return start, tokens[start:end], profile

    def header(self) -> list[str]:
        return ["name", "position", "ref", *(f"p_{base}" for base in BASES), "bits"]

    def rows(self, name: str, values) -> Iterator[list]:
        start, ref, profile = values
        bits = information_bits(profile)
        for offset in range(len(ref)):
            yield [name, start + offset + 1, decode(ref[offset:offset + 1]),
                   *(f"{p:.6g}" for p in profile[offset]), f"{bits[offset]:.6g}"]

    def track(self, values) -> np.ndarray:
        """Information content at each position, in bits."""
        return information_bits(values[2])

    def plot(self, name: str, values) -> bytes:
        start, ref, profile = values
        return sequence_logo(name, start, ref, profile)


def _number(value: float) -> str:
    return "nan" if np.isnan(value) else f"{value:.6g}"
