"""`cmx predict`, `cmx evaluate`, `cmx bench` and `cmx demo`: parse, check, build the
config, run, render (the training commands are in :mod:`cmx_cli.cli.training_commands`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cmx_cli.cli import render
from cmx_cli.cli.main import cli, on_interrupt, typed_command_line
from cmx_cli.cli.options import (
    CHECKPOINTING, JSON_OUTPUT, QUIET, AliasedOption, FiniteFloat, fasta_option,
    group_field_option, encoder_shape_options, label_regex_option, labels_option, mask_option,
    max_tokens_option, model_option, out_option, runtime_options, seed_option,
    variant_input_options)
from cmx_cli.console import Reporter
from cmx_cli.io.sniff import input_kind
from cmx_cli.explain import METHODS
from cmx_cli.runtime import compile_failures_as_user_errors
from cmx_cli.settings import Runtime, EncoderShape, VariantInput

VCF_SUFFIXES = (".vcf", ".vcf.gz", ".vcf.bgz", ".bcf")
#: One option and one rule for `cmx predict` and `cmx explain` on a VCF (issue 23, case 7).
ALLELE_KINDS = click.option(
    "--allele-kinds", type=click.Choice(["all", "seen"]), default="all", show_default=True,
    help="VCF, `cmx finetune` models: all scores every allele and warns about the kinds (SNV, "
         "insertion, deletion, MNV) the model never saw in training; seen leaves those "
         "unscored (.). Zero-shot models score what their method can.")


def is_variant_input(input_path: str, variants: VariantInput) -> bool:
    """Whether an input is a VCF or BCF: by its content (a VCF named calls.txt is a VCF);
    when the content says nothing (an empty file), by its name or by --reference, which only
    VCF input takes."""
    kind = input_kind(Path(input_path)) or (
        "vcf" if input_path.lower().endswith(VCF_SUFFIXES) or variants.reference else "fasta")
    return kind in ("vcf", "bcf")


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False))
@model_option("Run directory (or its model.pt): `cmx train` for FASTA; `cmx finetune` or "
              "`cmx pretrain` for VCF.")
@click.option("--output", "-o", default="-", show_default=True,
              help="Output file; - writes to standard output. For VCF: .vcf.gz is bgzipped and "
                   "indexed, .bcf is BCF, anything else plain VCF.")
@click.option("--average-strands", "--rc", "average_strands", is_flag=True, cls=AliasedOption,
              hidden_aliases=("--rc",),
              help="Average the forward and reverse-complement predictions (zero-shot VCF "
                   "scores always do).")
@label_regex_option("FASTA: read true labels from the header line and print metrics.")
@labels_option("FASTA: TSV of record name and true label; print metrics.")
@variant_input_options(None, "[default: the window a `cmx finetune` model was trained with, "
                       "else 1000]", prefix="VCF: ")
@click.option("--split-multiallelic", is_flag=True,
              help="VCF: write one record per ALT allele, as `bcftools norm -m-` does.")
@click.option("--info-id", default="CMX", show_default=True, help="VCF: INFO field for the scores.")
@click.option("--background", type=click.IntRange(min=0), default=0, metavar="N",
              help="VCF: also score N random SNVs of the reference (seeded; N-free windows) "
                   "and write each score's percentile among them in INFO/<info-id>_PCT "
                   "(a percentile column with --tsv), a common scale for any model's scores; "
                   "10000 is a good start.  [default: 0, none]")
@click.option("--tsv", is_flag=True,
              help="VCF: write chrom pos id ref alt score rows instead of a VCF.")
@group_field_option("VCF, grouped models: INFO field with each record's group. [default: the "
                    "one the model was trained with]")
@click.option("--group", metavar="NAME",
              help="VCF, grouped models: score every record for this group.")
@ALLELE_KINDS
@max_tokens_option(16384, "Larger batches need more memory.")
@runtime_options()
@QUIET
def predict(input_path: str, model: str, output: str, average_strands: bool,
            variants: VariantInput, runtime: Runtime, quiet: bool, **options: Any) -> Any:
    """Predict class probabilities for a FASTA, or score every ALT allele of a VCF/BCF.

    FASTA (a `cmx train` model): a TSV with name, length, predicted and one p_<label>
    column per class, in input order, streamed so memory stays flat.

    The input's kind is read from its content, whatever its name.

    VCF/BCF (with --reference): every record kept, with a score per ALT allele in
    INFO/CMX, or a TSV with --tsv. A `cmx finetune` model gives the probability of label
    1; a `cmx pretrain` model gives zero-shot SNV scores.

    Example: cmx predict genes.fa --model run/ -o predictions.tsv

    Example: cmx predict calls.vcf.gz --reference ref.fa --model ft/ -o scored.vcf.gz
    """
    reporter = Reporter(quiet)
    on_interrupt("cmx predict stopped before it finished; "
                 + ("what it wrote to standard output is incomplete" if output == "-" else
                    f"nothing was written to {output} (an output appears only when complete)"))
    if is_variant_input(input_path, variants):
        if variants.reference is None:
            raise click.UsageError("scoring a VCF needs --reference genome.fa")
        if options["label_regex"] or options["labels_table"]:
            raise click.UsageError("--label-regex and --labels are for FASTA input")
        from cmx_cli.pipelines import predict_vcf

        config = predict_vcf.PredictVcfConfig(
            vcf=input_path, variants=variants, model=model, output=output, tsv=options["tsv"],
            split_multiallelic=options["split_multiallelic"], info_id=options["info_id"],
            average_strands=average_strands, group_field=options["group_field"],
            group=options["group"], max_tokens=options["max_tokens"], runtime=runtime,
            command=typed_command_line(), background=options["background"],
            allele_kinds=options["allele_kinds"])
        with compile_failures_as_user_errors():
            summary = predict_vcf.run(config, reporter)
        render.variant_scores(summary, reporter)
        return summary
    if (variants.reference or variants.regions or variants.window or variants.contig_map
            or options["tsv"] or options["split_multiallelic"] or options["group_field"]
            or options["group"] or options["background"] or options["allele_kinds"] != "all"):
        raise click.UsageError("--reference, --region, --window, --tsv, --contig-map, "
                               "--split-multiallelic, --group-field, --group, --background "
                               "and --allele-kinds are for VCF/BCF input")
    from cmx_cli.pipelines import predict_fasta

    config = predict_fasta.PredictFastaConfig(
        fasta=input_path, model=model, output=output, average_strands=average_strands,
        label_regex=options["label_regex"], labels_table=options["labels_table"],
        max_tokens=options["max_tokens"], runtime=runtime)
    with compile_failures_as_user_errors():
        result = predict_fasta.run(config, reporter)
    render.fasta_predictions(result, reporter)
    return result


@cli.command()
@model_option("Run directory of `cmx pretrain`.")
@fasta_option("--fasta", "FASTA to score (plain or bgzip).", multiple=False, required=True)
@mask_option(None, "Probability that a base is selected. [default: the model's]")
@click.option("--max-bases", type=click.IntRange(min=1), default=1_000_000, show_default=True,
              help="Score at most this many bases (fixed random segments of long records).")
@seed_option("Seed of segments and masks.")
@JSON_OUTPUT
@max_tokens_option(16384, "Larger batches need more memory.")
@runtime_options(compile_blocks=False)
def evaluate(runtime: Runtime, as_json: bool, **options: Any) -> Any:
    """Print masked-base metrics of a pretrained model on any FASTA, beside its baselines.

    The top-level numbers are on the positions replaced by the MASK token; the baselines
    were fitted on the model's own training data.

    Example: cmx evaluate --model pre/ --fasta other.fa --mask 0.3 --json
    """
    from cmx_cli.pipelines import evaluate as pipeline

    result = pipeline.run(pipeline.EvaluateConfig(runtime=runtime, **options))
    render.evaluation(result, as_json)
    return result


def _length_list(ctx, param, value: str) -> tuple:
    try:
        lengths = tuple(int(float(part)) for part in value.split(",") if part.strip())
    except (ValueError, OverflowError):  # int(float("inf")) overflows; NaN is a ValueError
        raise click.BadParameter(f"{value!r} is not a comma-separated list of lengths") from None
    if not lengths or min(lengths) < 1:
        raise click.BadParameter("give one or more lengths of at least 1")
    return lengths


@cli.command()
@click.option("--lengths", default="1000,16384,131072,1000000", show_default=True,
              callback=_length_list,
              help="Single-sequence lengths to measure, comma-separated (1e6 works).")
@click.option("--packed-tokens", type=click.IntRange(min=16), default=16384, show_default=True,
              help="Tokens of the packed batch of variable lengths.")
@click.option("--mean-length", type=click.IntRange(min=16), default=1000, show_default=True,
              help="Mean of the packed batch's log-normal lengths (the adding problem's λ).")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed runs per case (the median is reported), after one warm-up run; "
                   "more when they would take under 2 s, fewer when over a minute.")
@encoder_shape_options()
@CHECKPOINTING
@click.option("--roll-reference/--no-roll-reference", "--reference/--no-reference",
              "roll_reference", cls=AliasedOption,
              hidden_aliases=("--reference", "--no-reference"), default=True, show_default=True,
              help="Also time the network with the authors' rotation (one torch.roll per "
                   "sequence and track) on the packed batch.")
@click.option("--attention/--no-attention", default=True, show_default=True,
              help="Also time the dot-product attention baseline of the same width and depth.")
@click.option("--attention-seconds", type=FiniteFloat(min=1), default=300, show_default=True,
              help="Stop an attention case after this many seconds; longer ones are skipped.")
@click.option("--variant-records", type=click.IntRange(min=0), default=1000, show_default=True,
              help="SNV records of the synthetic VCF that `cmx predict` scores with a "
                   "fine-tuned and a zero-shot model, for variants/s (0 skips it).")
@click.option("--window", type=click.IntRange(min=2), default=1000, show_default=True,
              help="Window of the variant cases, in bp.")
@JSON_OUTPUT
@runtime_options()
@QUIET
def bench(shape: EncoderShape, runtime: Runtime, as_json: bool, quiet: bool,
          **options: Any) -> dict:
    """Measure training and inference speed and peak memory on this machine.

    Each case runs in its own process, so its peak memory is its own and running out of
    memory is reported, not fatal (on the CPU a case may use only the memory free when it
    starts). Also measures the rotation against a plain copy, the
    block MLP against plain matrix products, the speed-up over a per-sequence torch.roll
    rotation, and a dot-product attention baseline of the same width and depth. The runs
    compared with each other take turns in one process, so that both sides of a ratio see
    the same machine. Then scores a synthetic VCF as `cmx predict` does, with a fine-tuned
    and a zero-shot model, in variants/s.

    With --precision auto, every case runs in fp32 and, where the device computes bf16
    natively (CUDA, or a CPU with AVX512-BF16), in bf16 too: training under autocast,
    prediction with the encoders cast to bf16, as cmx train and cmx predict run them.

    Example: cmx bench --lengths 131072,1000000 --checkpointing --no-attention --json
    """
    from cmx_cli.pipelines import bench as pipeline

    reporter = Reporter(quiet or as_json)
    results = pipeline.run(pipeline.BenchConfig(shape=shape, runtime=runtime, **options),
                           reporter)
    render.bench_results(results, as_json, reporter)
    return results


@cli.command()
@click.argument("runs", metavar="RUN...", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False))
@click.option("--output", "-o", required=True, metavar="FILE",
              help="report.html: one self-contained page (figures embedded, no JavaScript, "
                   "nothing fetched); report.png: one PNG per figure (report.roc.png, ...). "
                   "Each figure's numbers go to a TSV beside it (report.roc.tsv, ...).")
@QUIET
def report(runs: tuple, output: str, quiet: bool) -> Any:
    """Plot how runs trained and how good they are, with 95% bootstrap intervals.

    RUN is the directory of a finished cmx train, finetune or pretrain run; several runs
    share each figure's axes (from scratch against --init, ChordMixer against --arch
    transformer), named by their directory. Figures: training curves (loss, validation
    metric, learning rate by step); ROC and precision-recall curves of cmx and its baseline
    on the held-out set, with bootstrap bands; ROC-AUC by length percentile (train) and per
    group (finetune); validation bits per base against the unigram and Markov baselines
    (pretrain).

    Example: cmx report run/ run-init/ -o report.html
    """
    from cmx_cli.pipelines import report as pipeline

    reporter = Reporter(quiet)
    result = pipeline.run(pipeline.ReportConfig(runs, output), reporter)
    reporter.summary(result.summary)
    return result


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False))
@model_option("Run directory (or its model.pt): `cmx train` or `cmx pretrain` for FASTA, "
              "`cmx finetune` for VCF.")
@click.option("--output", "-o", required=True, metavar="FILE.tsv",
              help="TSV of every position; a bedGraph (FILE.bedgraph) and with --plot a PNG "
                   "(FILE.png) go beside it.")
@variant_input_options(None, "[default: the window the model was trained with]", prefix="VCF: ",
                       region_help="FASTA: explain only NAME:START-END of one record (1-based, "
                                   "inclusive) [default: every record]; VCF: read only this "
                                   "region (needs an index; repeatable).")
@click.option("--flank", type=click.IntRange(min=1), default=50, show_default=True,
              help="VCF: mutate the bases up to this far from each variant (6 x flank scored "
                   "copies per variant).")
@group_field_option("VCF, grouped models: INFO field with each record's group. [default: the "
                    "one the model was trained with]")
@click.option("--group", metavar="NAME",
              help="VCF, grouped models: explain every record's score for this group.")
@ALLELE_KINDS
@click.option("--method", type=click.Choice(METHODS), default="ism", show_default=True,
              help="`cmx train` models: ism mutates each base to the three others and scores "
                   "every copy (3 passes per position: a 10 kb region is 30,000 passes of the "
                   "whole sequence); gradient estimates the same table from one backward pass "
                   "per class, for long regions.")
@click.option("--plot", is_flag=True,
              help="Also draw the first record or variant: a heatmap of position x base "
                   "(train, finetune), or a sequence logo (pretrain).")
@max_tokens_option(16384, "Mutated copies share a batch up to this many tokens.")
@runtime_options(compile_blocks=False)
@QUIET
def explain(input_path: str, variants: VariantInput, runtime: Runtime, quiet: bool,
            **options: Any) -> Any:
    """Show which bases drive a model's output, position by position.

    FASTA with a `cmx train` model: for every position and each of the three other bases,
    the change in each class's log-odds, log(p/(1-p)), when that base is substituted (TSV
    columns name, position, ref, alt, delta_<class>). The bedGraph holds the largest
    |change| at each position, for IGV or a genome browser.

    FASTA with a `cmx pretrain` model: P(A), P(C), P(G), P(T) at every position with that
    position masked alone, and its information content in bits (the bedGraph's value).

    VCF/BCF with a `cmx finetune` model (and --reference): for each scored allele, every
    base within --flank bp of it is set to each of the three others in both windows, and
    the change in the variant's log-odds is written (chrom pos ref alt position
    context_ref context_alt delta_log_odds); the bedGraph holds the largest |change| at
    each reference position.

    Attributions run in float32 (--precision applies to profiles).

    Example: cmx explain genes.fa --model run/ --region gene1:1-200 -o ism.tsv --plot

    Example: cmx explain calls.vcf.gz --reference ref.fa --model ft/ --flank 50 -o ctx.tsv
    """
    reporter = Reporter(quiet)
    if is_variant_input(input_path, variants):
        if variants.reference is None:
            raise click.UsageError("explaining a VCF needs --reference genome.fa")
        if options["method"] != "ism":
            raise click.UsageError("--method gradient is for FASTA input")
        from cmx_cli.pipelines import explain_variants

        result = explain_variants.run(explain_variants.ExplainVariantsConfig(
            vcf=input_path, variants=variants, model=options["model"],
            output=options["output"], flank=options["flank"],
            group_field=options["group_field"], group=options["group"], plot=options["plot"],
            max_tokens=options["max_tokens"], runtime=runtime,
            allele_kinds=options["allele_kinds"]), reporter)
    else:
        if (variants.reference or variants.window or variants.contig_map
                or options["group_field"] or options["group"] or options["allele_kinds"] != "all"):
            raise click.UsageError("--reference, --window, --contig-map, --group-field, "
                                   "--group and --allele-kinds are for VCF/BCF input")
        if len(variants.regions) > 1:
            raise click.UsageError("FASTA input takes one --region NAME:START-END")
        from cmx_cli.pipelines import explain as pipeline

        result = pipeline.run(pipeline.ExplainConfig(
            fasta=input_path, model=options["model"], output=options["output"],
            region=variants.regions[0] if variants.regions else None,
            method=options["method"], plot=options["plot"], max_tokens=options["max_tokens"],
            runtime=runtime), reporter)
    reporter.summary(result.summary)
    return result


@cli.command()
@out_option("Directory for the demo's data, runs and predictions.", default=Path("cmx-demo"))
@runtime_options(precision=False, compile_blocks=False)
@QUIET
def demo(out: Path, runtime: Runtime, quiet: bool) -> Any:
    """Run the whole cmx cycle on bundled data: pretrain, train, finetune, predict, report.

    Copies the bundled files into --out, then: pretrains an encoder on 600 kb of the
    Ustilago maydis genome; trains a Klebsiella vs Acinetobacter classifier on capsule
    genes and predicts genes from held-out loci; fine-tunes the encoder to tell amino-acid
    changing SNVs from synonymous ones (train chr01, test chr04); scores the VCF back; and
    writes report.html with figures of the three runs. Each step prints the command that
    does it. Takes a few minutes on a laptop CPU.

    Example: cmx demo --out cmx-demo
    """
    from cmx_cli.pipelines import demo as pipeline

    def execute(argv: list[str]) -> Any:
        return cli.main(args=argv, prog_name="cmx", standalone_mode=False)

    return pipeline.run(pipeline.DemoConfig(str(out), runtime.device, runtime.threads, quiet),
                        execute, Reporter(quiet))
