"""`cmx train`, `cmx pretrain` and `cmx finetune`: parse, check, build the config, run, render.

Each runs in this process or, under ``torchrun``, as one of its processes (only rank 0
prints). ``--resume`` takes the run's saved config; only a few flags may change.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Optional

import click
from click.core import ParameterSource

from cmx_cli.cli import render
from cmx_cli.cli.main import cli
from cmx_cli.cli.options import (
    FLIP_STRANDS, QUIET, FiniteFloat, absolute, encoder_start_options, fasta_option,
    group_field_option, held_out_options, label_regex_option, labels_option, mask_option,
    max_tokens_option, run_options, runtime_options, training_options, encoder_shape_options,
    variant_input_options)
from cmx_cli.console import Reporter
from cmx_cli.runtime import compile_failures_as_user_errors
from cmx_cli.settings import (
    PRETRAINING_LEARNING_RATE, EncoderStart, HeldOut, Runtime, TrainingSettings, EncoderShape,
    VariantInput)
from cmx_cli.tasks.masked_bases import MaskingSettings

#: The flags a ``--resume`` may change; the rest come from the run's config.json.
RESUMABLE = ("resume", "out", "device", "threads", "precision", "max_time", "quiet",
             "checkpointing", "compile_blocks")
SHAPE_FLAGS = ("max_len", "track_size", "hidden_size", "dropout", "reversible", "local_radius")


def _given(ctx: click.Context, names) -> list[str]:
    """The parameters among ``names`` that were typed on the command line, as flags."""
    flags = {param.name: param.opts[0] for param in ctx.command.params}
    return [flags[name] for name in names
            if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]


def resumed_config(ctx: click.Context, saved: Any, runtime: Runtime,
                   training: TrainingSettings) -> Any:
    """The run's saved config, with the few flags a resume may change."""
    given = _given(ctx, [name for name in ctx.params if name not in RESUMABLE])
    if given:
        raise click.UsageError(
            f"--resume uses the run's saved config; drop {', '.join(given)} (only --device, "
            "--threads, --precision, --max-time, --checkpointing, --compile and --quiet may "
            "change)")
    settings = saved.training
    if training.max_time_minutes is not None:
        settings = replace(settings, max_time_minutes=training.max_time_minutes)
    # Either flag turns its option on for the rest of the run; the run's own choice stays.
    if training.checkpointing:
        settings = replace(settings, checkpointing=True)
    # --device, --threads and --precision not given again keep the run's own: another thread
    # count sums in another order, and the weights would no longer be those of the run never
    # stopped (issue 23, case 9).
    kept = {name: getattr(saved.runtime, name) for name in ("device", "threads", "precision")
            if name not in ctx.params
            or ctx.get_parameter_source(name) in (None, ParameterSource.DEFAULT)}
    return replace(saved, training=settings, runtime=replace(
        runtime, compile_blocks=runtime.compile_blocks or saved.runtime.compile_blocks, **kept))


def check_start(ctx: click.Context, start: EncoderStart) -> None:
    """--freeze-encoder and --encoder-lr-scale need --init (and not each other), and --init
    fixes the encoder's shape flags."""
    for name in _given(ctx, ("freeze_encoder", "encoder_lr_scale")):
        if not start.init:
            raise click.UsageError(f"{name} needs --init PRETRAIN_RUN")
    if start.freeze_encoder and _given(ctx, ("encoder_lr_scale",)):
        raise click.UsageError("--freeze-encoder trains no encoder weights; drop "
                               "--encoder-lr-scale")
    shape = _given(ctx, SHAPE_FLAGS)
    if start.init and shape:
        raise click.UsageError(f"--init takes the encoder's shape from the pretrained run; "
                               f"drop {', '.join(shape)}")


def check_held_out(held_out: HeldOut) -> None:
    """Validation and test shares must leave something to train on."""
    if held_out.val_fraction + held_out.test_fraction >= 1:
        raise click.UsageError("--val-fraction and --test-fraction together must be below 1, "
                               "to leave sequences for training")


def check_reversible(shape: EncoderShape, training: TrainingSettings, **track_sizes: int) -> None:
    """--reversible splits every track in two halves, so the track sizes must be even; it
    also makes --checkpointing pointless."""
    if not shape.reversible:
        return
    if training.checkpointing:
        raise click.UsageError("--reversible already keeps no activations per block; "
                               "drop --checkpointing")
    odd = ["--" + name.replace("_", "-")
           for name, size in {"track_size": shape.track_size, **track_sizes}.items() if size % 2]
    if odd:
        raise click.UsageError("--reversible splits every track in two halves; give an even "
                               + " and an even ".join(odd))


def run_training(pipeline, config: Any, quiet: bool, show: Callable, resume: bool = False
                 ) -> Optional[Any]:
    """Run a training pipeline in this process; under torchrun, as one of its processes
    (only rank 0 prints, with ``show(result, reporter)``)."""
    from cmx_cli.training import distributed

    processes = distributed.start(config.runtime.device)
    try:
        reporter = Reporter(quiet or not processes.is_main)
        with compile_failures_as_user_errors():
            result = pipeline.run(config, reporter, resume=resume, processes=processes)
        if result is not None:
            show(result, reporter)
        return result
    finally:
        distributed.stop()


@cli.command()
@fasta_option("--fasta", "Training FASTA (plain or bgzip); repeat it. Without other labels, "
              "each file is one class named by LABEL or by the file name.", labelled=True)
@label_regex_option("Take the label from the header line: the first group of this regex, "
                    "e.g. 'genus=(\\S+)'.")
@labels_option("TSV of record name and label.")
@click.option("--group-regex", metavar="REGEX",
              help="Keep each group whole in one split, the group read from the header line "
                   "by this regex, e.g. '^([^|]+)' for a locus; use it for related sequences.")
@fasta_option("--val-fasta", "Validation FASTA instead of a fraction of --fasta; repeatable.",
              labelled=True)
@fasta_option("--test-fasta", "Test FASTA instead of a fraction of --fasta; repeatable.",
              labelled=True)
@held_out_options("Share of each class held out for validation (early stopping).",
                  "Share of each class held out for the final test.")
@click.option("--keep-duplicates", is_flag=True,
              help="Keep exact duplicate sequences (by default the first copy is kept, so no "
                   "held-out sequence is also in training).")
@run_options("checkpoints, config, split, metrics and log")
@click.option("--arch", type=click.Choice(["chordmixer", "transformer"]), default="chordmixer",
              show_default=True,
              help="Network: ChordMixer, or a dot-product attention baseline of the same width "
                   "and depth, to compare on your data (its memory grows with length squared).")
@encoder_shape_options(max_len_help="the longest sequence in the data")
@max_tokens_option(4096, "Per process under torchrun. Small budgets mean more optimizer "
                   "steps, which small data sets need.")
@training_options()
@click.option("--class-weights", type=click.Choice(["none", "balanced"]), default="none",
              show_default=True, help="Weight the loss by inverse class frequency (balanced).")
@click.option("--kmer-k", type=click.IntRange(1, 8), default=5, show_default=True,
              help="k of the k-mer baseline reported beside the model.")
@encoder_start_options()
@runtime_options()
@QUIET
@click.pass_context
def train(ctx: click.Context, held_out: HeldOut, shape: EncoderShape, training: TrainingSettings,
          start: EncoderStart, runtime: Runtime, quiet: bool, **options: Any) -> None:
    """Train a classifier on labelled FASTA sequences of any length.

    The held-out data is scored by the best checkpoint, beside a k-mer + logistic
    regression baseline fitted on the same split.

    Example: cmx train --fasta Klebsiella.fa --fasta Acinetobacter.fa --out run/
    """
    from cmx_cli.pipelines import train as pipeline

    if options["resume"]:
        config = resumed_config(ctx, pipeline.read_config(options["out"]), runtime, training)
    else:
        if not options["fasta"]:
            raise click.UsageError("give at least one --fasta (or --resume an earlier run)")
        check_start(ctx, start)
        check_held_out(held_out)
        if start.init and options["arch"] != "chordmixer":
            raise click.UsageError("--init starts a ChordMixer from a pretrained one; drop --arch")
        if shape.reversible and options["arch"] != "chordmixer":
            raise click.UsageError(
                "--reversible is a ChordMixer option; drop --arch or --reversible")
        check_reversible(shape, training)
        config = pipeline.TrainConfig(
            fasta=options["fasta"], out=str(options["out"]), label_regex=options["label_regex"],
            labels_table=options["labels_table"], group_regex=options["group_regex"],
            val_fasta=options["val_fasta"], test_fasta=options["test_fasta"],
            held_out=held_out, deduplicate=not options["keep_duplicates"], arch=options["arch"],
            shape=shape, start=start, max_tokens=options["max_tokens"],
            class_weights=options["class_weights"], kmer_k=options["kmer_k"],
            training=training, runtime=runtime)
    return run_training(pipeline, config, quiet, render.train_result, resume=options["resume"])


@cli.command()
@fasta_option("--fasta", "Genome or gene-set FASTA (plain or bgzip); repeatable.")
@fasta_option("--val-fasta", "Validation FASTA instead of a held-out part of --fasta; "
              "repeatable.")
@held_out_options("Share held out for validation: of the records, of the contigs (5 or more), "
                  "or else the end of every contig.")
@click.option("--sample", type=click.Choice(["auto", "records", "segments"]), default="auto",
              show_default=True,
              help="Whole records (gene sets) or random segments (genomes); auto picks "
                   "records when every record fits in --max-length.")
@click.option("--min-length", type=click.IntRange(min=1), default=256, show_default=True,
              help="Shortest random segment, in bp.")
@click.option("--max-length", type=click.IntRange(min=2), default=4096, show_default=True,
              help="Longest segment or record, in bp; sizes the network.")
@click.option("--max-n", type=FiniteFloat(0, 1), default=0.1, show_default=True,
              help="Skip segments with a larger share of N.")
@FLIP_STRANDS
@mask_option(0.3, "Probability that a base is selected for prediction.")
@click.option("--mask-scheme", type=click.Choice(["80-10-10", "mask-only"]), default="80-10-10",
              show_default=True,
              help="Selected bases become MASK / a random base / stay (80-10-10), or all MASK.")
@click.option("--lowercase-weight", type=FiniteFloat(min=0), default=1.0, show_default=True,
              help="Loss weight of soft-masked (lowercase) bases.")
@click.option("--tokens-per-epoch", type=click.IntRange(min=1), default=1_000_000,
              show_default=True, help="Bases drawn for each epoch.")
@click.option("--validation-tokens", type=click.IntRange(min=1), default=200_000,
              show_default=True, help="Bases in the fixed validation set.")
@encoder_shape_options()
@click.option("--decoder-track-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Decoder channels per track.")
@click.option("--decoder-hidden-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Hidden width of each decoder block's MLP.")
@click.option("--markov-order", type=click.IntRange(0, 10), default=5, show_default=True,
              help="Context length of the Markov-model baseline.")
@max_tokens_option(16384, "Per process under torchrun.")
@training_options(PRETRAINING_LEARNING_RATE, "Higher than for training a classifier: in the "
                  "README's measurements it learnt more per minute than 1e-3.")
@run_options("checkpoints, config, baselines, metrics and log")
@runtime_options()
@QUIET
@click.pass_context
def pretrain(ctx: click.Context, held_out: HeldOut, shape: EncoderShape, training: TrainingSettings,
             runtime: Runtime, quiet: bool, **options: Any) -> None:
    """Pretrain a ChordMixer encoder by masked-base modelling, without labels.

    Validation reports bits per base, perplexity and accuracy on the masked bases, beside
    base frequencies and a Markov model fitted on the same training data. Start
    `cmx train --init RUN` from the result.

    Example: cmx pretrain --fasta genome.fa --mask 0.3 --out pre/
    """
    from cmx_cli.pipelines import pretrain as pipeline

    if options["resume"]:
        config = resumed_config(ctx, pipeline.read_config(options["out"]), runtime, training)
    else:
        if not options["fasta"]:
            raise click.UsageError("give at least one --fasta (or --resume an earlier run)")
        if options["min_length"] > options["max_length"]:
            raise click.UsageError("--min-length must not exceed --max-length")
        check_reversible(shape, training, decoder_track_size=options["decoder_track_size"])
        config = pipeline.PretrainConfig(
            fasta=options["fasta"], out=str(options["out"]), val_fasta=options["val_fasta"],
            val_fraction=held_out.val_fraction, sample=options["sample"],
            min_length=options["min_length"], max_length=options["max_length"],
            max_n=options["max_n"], flip_strands=options["flip_strands"],
            masking=MaskingSettings(options["mask"], options["mask_scheme"],
                                    options["lowercase_weight"]),
            tokens_per_epoch=options["tokens_per_epoch"],
            validation_tokens=options["validation_tokens"], shape=shape,
            decoder_track_size=options["decoder_track_size"],
            decoder_hidden_size=options["decoder_hidden_size"], max_tokens=options["max_tokens"],
            markov_order=options["markov_order"], training=training, runtime=runtime)
    return run_training(
        pipeline, config, quiet,
        lambda result, reporter: render.pretrain_result(result, config.markov_order, reporter),
        resume=options["resume"])


def _contig_list(ctx, param, values) -> tuple:
    """Comma-separated and repeated contig names, as one tuple."""
    return tuple(name.strip() for value in values for name in value.split(",") if name.strip())


@cli.command()
@click.option("--vcf", type=click.Path(exists=True, dir_okay=False), callback=absolute,
              help="Labelled variants: VCF, bgzipped VCF or BCF.")
@variant_input_options(1000, "`cmx predict` uses the same by default.")
@click.option("--label-field", metavar="KEY",
              help="INFO field with each variant's label: 1/0, true/false, yes/no, or a Flag.")
@labels_option("TSV of chrom, pos, ref, alt, label and an optional group; with --vcf it "
               "labels the VCF's alleles, without it the rows are the variants.")
@group_field_option("INFO field with each variant's group (e.g. tissue): one output per group.")
@click.option("--val-contigs", multiple=True, callback=_contig_list, metavar="NAMES",
              help="Contigs held out for validation (comma-separated or repeated). Holding "
                   "out whole chromosomes is the right protocol for a genome.")
@click.option("--test-contigs", multiple=True, callback=_contig_list, metavar="NAMES",
              help="Contigs held out for the final test (comma-separated or repeated).")
@held_out_options("Without --val-contigs: share held out for validation, by window-sized blocks.",
                  "Without --test-contigs: share held out for the test, by window-sized blocks.")
@encoder_start_options()
@click.option("--site-features/--no-site-features", default=True, show_default=True,
              help="Give the classifier the encoder's features at the variant's own position.")
@click.option("--marker/--no-marker", default=True, show_default=True,
              help="Mark the variant's position in the encoder's input.")
@FLIP_STRANDS
@encoder_shape_options(max_len_help="the longest window")
@click.option("--head-hidden", type=click.IntRange(min=1), default=128, show_default=True,
              help="Hidden width of the classifier on the pooled features.")
@click.option("--head-dropout", type=FiniteFloat(0, 0.9), default=0.1, show_default=True,
              help="Dropout before the classifier's last layer.")
@max_tokens_option(32768, "Per process under torchrun; a variant takes both its windows.")
@click.option("--flank", type=click.IntRange(0, 50), default=5, show_default=True,
              help="Flank of the logistic-regression baseline reported beside the model, in bp.")
@training_options()
@run_options("checkpoints, config, split, metrics and log")
@runtime_options()
@QUIET
@click.pass_context
def finetune(ctx: click.Context, variants: VariantInput, held_out: HeldOut, start: EncoderStart,
             shape: EncoderShape, training: TrainingSettings, runtime: Runtime, quiet: bool,
             **options: Any) -> None:
    """Train a variant classifier on labelled variants and a reference genome.

    A siamese ChordMixer reads the REF and ALT windows around each variant; a small
    classifier scores the pair. The held-out variants are scored beside a logistic
    regression on REF, ALT and ±5 bp of flank. Score new variants with
    `cmx predict calls.vcf.gz --reference ref.fa --model RUN`.

    Example: cmx finetune --vcf train.vcf.gz --reference ref.fa --label-field LABEL
    --init pre/ --test-contigs chr04 --out ft/
    """
    from cmx_cli.pipelines import finetune as pipeline

    if options["resume"]:
        config = resumed_config(ctx, pipeline.read_config(options["out"]), runtime, training)
    else:
        if not variants.reference:
            raise click.UsageError("give the --reference FASTA (or --resume an earlier run)")
        if (options["label_field"] is None) == (options["labels_table"] is None):
            raise click.UsageError("give the labels with one of --label-field KEY (with --vcf) "
                                   "and --labels TABLE")
        if options["label_field"] and not options["vcf"]:
            raise click.UsageError("--label-field reads the labels from --vcf; give --vcf too")
        if (options["group_field"] or variants.regions) and not options["vcf"]:
            raise click.UsageError("--group-field and --region read --vcf; give --vcf too")
        check_start(ctx, start)
        check_held_out(held_out)
        check_reversible(shape, training)
        config = pipeline.FinetuneConfig(
            variants=variants, out=str(options["out"]), vcf=options["vcf"],
            label_field=options["label_field"], labels_table=options["labels_table"],
            group_field=options["group_field"], val_contigs=options["val_contigs"],
            test_contigs=options["test_contigs"], held_out=held_out, start=start, shape=shape,
            site_features=options["site_features"], marker=options["marker"],
            flip_strands=options["flip_strands"], head_hidden=options["head_hidden"],
            head_dropout=options["head_dropout"], max_tokens=options["max_tokens"],
            flank=options["flank"], training=training, runtime=runtime)
    return run_training(
        pipeline, config, quiet,
        lambda result, reporter: render.finetune_result(result, config.flank, reporter),
        resume=options["resume"])
