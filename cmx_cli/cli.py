"""The `cmx` command: parse and validate flags, then call a pipeline (STYLE.md rule 4)."""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import click
from click.core import ParameterSource

from cmx_cli import __version__
from cmx_cli.console import Reporter
from cmx_cli.runtime import DEVICES, PRECISIONS, compile_failures_as_user_errors
from cmx_cli.training.loop import TrainingInterrupted, TrainingSettings

VCF_SUFFIXES = (".vcf", ".vcf.gz", ".vcf.bgz", ".bcf")

device_option = click.option(
    "--device", type=click.Choice(DEVICES), default="auto", show_default=True,
    help="Where to run: auto picks CUDA when available.")
precision_option = click.option(
    "--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
    help="Numeric precision: auto is bf16 autocast on CUDA and fp32 on the CPU.")
quiet_option = click.option(
    "--quiet", "-q", is_flag=True,
    help="Print only errors and the final summary line.")
max_tokens_option = click.option(
    "--max-tokens", type=click.IntRange(min=1), default=16384, show_default=True,
    help="Token budget per batch; a longer sequence gets a batch of its own.")
compile_option = click.option(
    "--compile", "compile_blocks", is_flag=True,
    help="Compile each block's norm and MLP with torch.compile (for CUDA; slower on the "
         "CPU). The first batch takes tens of seconds more.")
reversible_option = click.option(
    "--reversible", is_flag=True,
    help="Reversible blocks: backward rebuilds each block's input from its output, so "
         "training keeps no activations per block. The least memory for very long sequences; "
         "a different network from the default one. Needs an even track size.")


def check_reversible(options: dict, *track_options: str) -> None:
    """--reversible splits every track in two halves, so the track sizes must be even; it
    also makes --checkpointing pointless."""
    if options["reversible"] and options["checkpointing"]:
        raise click.UsageError("--reversible already keeps no activations per block; "
                               "drop --checkpointing")
    odd = [name for name in track_options if options["reversible"] and options[name] % 2]
    if odd:
        raise click.UsageError(
            "--reversible splits every track in two halves; give an even "
            + " and an even ".join("--" + name.replace("_", "-") for name in odd))


def training_options(command):
    """The optimisation and stopping flags shared by train, pretrain and finetune."""
    options = [
        click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True,
                     help="Maximum number of passes over the training data."),
        click.option("--max-steps", type=click.IntRange(min=1),
                     help="Stop after this many optimizer steps."),
        click.option("--max-time", type=click.FloatRange(min=0, min_open=True),
                     help="Stop after this many minutes of training; the run stays resumable."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3,
                     show_default=True, help="Peak learning rate of AdamW."),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=0.01,
                     show_default=True, help="AdamW weight decay on weight matrices."),
        click.option("--warmup", type=click.FloatRange(0, 1), default=0.05, show_default=True,
                     help="Share of the steps spent warming the learning rate up before cosine decay."),
        click.option("--grad-clip", type=click.FloatRange(min=0), default=1.0, show_default=True,
                     help="Clip the gradient norm to this value; 0 disables clipping."),
        click.option("--patience", type=click.IntRange(min=1), default=5, show_default=True,
                     help="Stop after this many epochs without a better validation score."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed for the split, sampling, masking and weights."),
        click.option("--checkpointing", is_flag=True,
                     help="Activation checkpointing: keep only the inputs of every ~√n-th "
                          "block and recompute the rest in backward. Far less memory for very "
                          "long sequences, for about two more forward passes of time."),
        compile_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def training_settings(options: dict) -> TrainingSettings:
    """The :class:`TrainingSettings` of parsed training options."""
    return TrainingSettings(
        epochs=options["epochs"], max_steps=options["max_steps"],
        max_time_minutes=options["max_time"], learning_rate=options["lr"],
        weight_decay=options["weight_decay"], warmup_fraction=options["warmup"],
        grad_clip=options["grad_clip"], patience=options["patience"], seed=options["seed"],
        checkpointing=options["checkpointing"], compile_blocks=options["compile_blocks"])


def resumed_config(ctx: click.Context, options: dict, pipeline):
    """The saved config of the run in --out, with the few flags a resume may change."""
    allowed = {"resume", "out", "device", "precision", "max_time", "quiet", "checkpointing",
               "compile_blocks"}
    given = [name for name in ctx.params
             if name not in allowed and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
    if given:
        raise click.UsageError(
            f"--resume uses the run's saved config; drop "
            f"{', '.join('--' + g.replace('_', '-') for g in given)} "
            "(only --device, --precision, --max-time, --checkpointing, --compile and --quiet "
            "may change)")
    config = pipeline.read_config(options["out"])
    training = config.training
    if options["max_time"] is not None:
        training = replace(training, max_time_minutes=options["max_time"])
    # Either flag turns its option on for the rest of the run; the run's own choice stays.
    if options["checkpointing"]:
        training = replace(training, checkpointing=True)
    if options["compile_blocks"]:
        training = replace(training, compile_blocks=True)
    return replace(config, device=options["device"], precision=options["precision"],
                   training=training)


def check_init_options(ctx: click.Context, options: dict) -> None:
    """--freeze-encoder needs --init, and --init fixes the encoder's shape flags."""
    if options["freeze_encoder"] and not options["init"]:
        raise click.UsageError("--freeze-encoder needs --init PRETRAIN_RUN")
    if options["init"]:
        shape = [name for name in ("max_len", "track_size", "hidden_size", "dropout",
                                   "reversible")
                 if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
        if shape:
            raise click.UsageError(
                f"--init takes the encoder's shape from the pretrained run; drop "
                f"{', '.join('--' + name.replace('_', '-') for name in shape)}")


def check_held_out_fractions(options: dict) -> None:
    """Validation and test shares must leave something to train on."""
    if options["val_fraction"] + options["test_fraction"] >= 1:
        raise click.UsageError("--val-fraction and --test-fraction together must be below 1, "
                               "to leave sequences for training")


def run_training(pipeline, config, quiet: bool, resume: bool = False) -> None:
    """Run a training pipeline in this process; under torchrun, as one of its processes
    (only rank 0 prints)."""
    from cmx_cli.training import distributed

    processes = distributed.start(config.device)
    try:
        with compile_failures_as_user_errors():
            pipeline.run(config, Reporter(quiet or not processes.is_main), resume=resume,
                         processes=processes)
    finally:
        distributed.stop()


def run_options(what: str):
    """--out and --resume of a training command; ``what`` lists the run directory's files."""
    def decorate(command):
        command = click.option(
            "--resume", is_flag=True,
            help="Continue the run in --out from its last checkpoint, with its saved config.",
        )(command)
        return click.option(
            "--out", "-o", type=click.Path(file_okay=False, path_type=Path), required=True,
            help=f"Run directory for {what}.")(command)
    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="cmx")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
def cli(debug: bool) -> None:
    """Train and apply ChordMixer networks to DNA sequences of any length.

    No padding, no truncation, no chunking: every sequence is read whole.

    Example: cmx train --fasta Klebsiella.fa --fasta Acinetobacter.fa --out run/
    """


@cli.command()
@click.option("--fasta", "fasta", multiple=True, metavar="PATH[:LABEL]",
              help="Training FASTA (plain or bgzip); repeat it. Without other labels, each "
                   "file is one class named by LABEL or by the file name.")
@click.option("--label-regex", metavar="REGEX",
              help="Take the label from the header line: the first group of this regex, "
                   "e.g. 'genus=(\\S+)'.")
@click.option("--labels", "labels_table", type=click.Path(exists=True, dir_okay=False),
              help="TSV of record name and label.")
@click.option("--group-regex", metavar="REGEX",
              help="Keep each group whole in one split, the group read from the header line "
                   "by this regex, e.g. '^([^|]+)' for a locus; use it for related sequences.")
@click.option("--val-fasta", multiple=True, metavar="PATH[:LABEL]",
              help="Validation FASTA instead of a fraction of --fasta; repeatable.")
@click.option("--test-fasta", multiple=True, metavar="PATH[:LABEL]",
              help="Test FASTA instead of a fraction of --fasta; repeatable.")
@click.option("--val-fraction", type=click.FloatRange(0, 0.9), default=0.1, show_default=True,
              help="Share of each class held out for validation (early stopping).")
@click.option("--test-fraction", type=click.FloatRange(0, 0.9), default=0.1, show_default=True,
              help="Share of each class held out for the final test.")
@click.option("--keep-duplicates", is_flag=True,
              help="Keep exact duplicate sequences (by default the first copy is kept, so no "
                   "held-out sequence is also in training).")
@run_options("checkpoints, config, split, metrics and log")
@click.option("--arch", type=click.Choice(["chordmixer", "transformer"]), default="chordmixer",
              show_default=True,
              help="Network: ChordMixer, or a dot-product attention baseline of the same width "
                   "and depth, to compare on your data (its memory grows with length squared).")
@click.option("--max-len", type=click.IntRange(min=1),
              help="Longest sequence the network is sized for, in bp. [default: longest in the data]")
@click.option("--track-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Channels per track; the width is track size × (⌈log2 max-len⌉ + 1).")
@click.option("--hidden-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="Hidden width of each block's MLP.")
@click.option("--dropout", type=click.FloatRange(0, 0.9), default=0.1, show_default=True,
              help="Dropout inside each block's MLP.")
@reversible_option
@click.option("--max-tokens", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Token budget per batch (per process under torchrun); a longer sequence "
                   "gets a batch of its own. Small budgets mean more optimizer steps, which "
                   "small data sets need.")
@training_options
@click.option("--class-weights", type=click.Choice(["none", "balanced"]), default="none",
              show_default=True, help="Weight the loss by inverse class frequency (balanced).")
@click.option("--kmer-k", type=click.IntRange(1, 8), default=5, show_default=True,
              help="k of the k-mer baseline reported beside the model.")
@click.option("--init", type=click.Path(exists=True),
              help="Start the trunk from a `cmx pretrain` run; it fixes the network's shape.")
@click.option("--freeze-encoder", is_flag=True,
              help="With --init: train only the classifier head, keep the encoder as it is.")
@device_option
@precision_option
@quiet_option
@click.pass_context
def train(ctx: click.Context, **options) -> None:
    """Train a classifier on labelled FASTA sequences of any length.

    The held-out data is scored by the best checkpoint, beside a k-mer + logistic
    regression baseline fitted on the same split.

    Example: cmx train --fasta Klebsiella.fa --fasta Acinetobacter.fa --out run/
    """
    from cmx_cli.pipelines import train as pipeline

    out = options["out"]
    if options["resume"]:
        run_training(pipeline, resumed_config(ctx, options, pipeline), options["quiet"], resume=True)
        return
    if not options["fasta"]:
        raise click.UsageError("give at least one --fasta (or --resume an earlier run)")
    check_init_options(ctx, options)
    check_held_out_fractions(options)
    if options["init"] and options["arch"] != "chordmixer":
        raise click.UsageError("--init starts a ChordMixer from a pretrained one; drop --arch")
    if options["reversible"] and options["arch"] != "chordmixer":
        raise click.UsageError("--reversible is a ChordMixer option; drop --arch or --reversible")
    check_reversible(options, "track_size")
    config = pipeline.TrainConfig(
        fasta=tuple(options["fasta"]), out=str(out), label_regex=options["label_regex"],
        labels_table=options["labels_table"], group_regex=options["group_regex"],
        val_fasta=tuple(options["val_fasta"]), arch=options["arch"],
        test_fasta=tuple(options["test_fasta"]), val_fraction=options["val_fraction"],
        test_fraction=options["test_fraction"], deduplicate=not options["keep_duplicates"],
        max_len=options["max_len"], track_size=options["track_size"],
        hidden_size=options["hidden_size"], dropout=options["dropout"],
        reversible=options["reversible"],
        max_tokens=options["max_tokens"], class_weights=options["class_weights"],
        kmer_k=options["kmer_k"], init=options["init"], freeze_encoder=options["freeze_encoder"],
        device=options["device"], precision=options["precision"],
        training=training_settings(options))
    run_training(pipeline, config, options["quiet"])



@cli.command()
@click.option("--fasta", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Genome or gene-set FASTA (plain or bgzip); repeatable.")
@click.option("--val-fasta", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Validation FASTA instead of a held-out part of --fasta; repeatable.")
@click.option("--val-fraction", type=click.FloatRange(0, 0.9), default=0.1, show_default=True,
              help="Share held out for validation: of the records, of the contigs (5 or "
                   "more), or else the end of every contig.")
@click.option("--sample", type=click.Choice(["auto", "records", "segments"]), default="auto",
              show_default=True,
              help="Whole records (gene sets) or random segments (genomes); auto picks "
                   "records when every record fits in --max-length.")
@click.option("--min-length", type=click.IntRange(min=1), default=256, show_default=True,
              help="Shortest random segment, in bp.")
@click.option("--max-length", type=click.IntRange(min=2), default=4096, show_default=True,
              help="Longest segment or record, in bp; sizes the network.")
@click.option("--max-n", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="Skip segments with a larger share of N.")
@click.option("--rc/--no-rc", default=True, show_default=True,
              help="Reverse-complement half of the training sequences (augmentation).")
@click.option("--mask", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.3,
              show_default=True, help="Probability that a base is selected for prediction.")
@click.option("--mask-scheme", type=click.Choice(["80-10-10", "mask-only"]), default="80-10-10",
              show_default=True,
              help="Selected bases become MASK / a random base / stay (80-10-10), or all MASK.")
@click.option("--lowercase-weight", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Loss weight of soft-masked (lowercase) bases.")
@click.option("--tokens-per-epoch", type=click.IntRange(min=1), default=1_000_000,
              show_default=True, help="Bases drawn for each epoch.")
@click.option("--validation-tokens", type=click.IntRange(min=1), default=200_000,
              show_default=True, help="Bases in the fixed validation set.")
@click.option("--track-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Encoder channels per track.")
@click.option("--hidden-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="Hidden width of each encoder block's MLP.")
@click.option("--decoder-track-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Decoder channels per track.")
@click.option("--decoder-hidden-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Hidden width of each decoder block's MLP.")
@click.option("--dropout", type=click.FloatRange(0, 0.9), default=0.1, show_default=True,
              help="Dropout inside each block's MLP.")
@reversible_option
@click.option("--markov-order", type=click.IntRange(0, 10), default=5, show_default=True,
              help="Context length of the Markov-model baseline.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=16384, show_default=True,
              help="Token budget per batch (per process under torchrun); a longer sequence "
                   "gets a batch of its own.")
@training_options
@run_options("checkpoints, config, baselines, metrics and log")
@device_option
@precision_option
@quiet_option
@click.pass_context
def pretrain(ctx: click.Context, **options) -> None:
    """Pretrain a ChordMixer encoder by masked-base modelling, without labels.

    Validation reports bits per base, perplexity and accuracy on the masked bases, beside
    base frequencies and a Markov model fitted on the same training data. Start
    `cmx train --init RUN` from the result.

    Example: cmx pretrain --fasta genome.fa --mask 0.3 --out pre/
    """
    from cmx_cli.pipelines import pretrain as pipeline
    from cmx_cli.training.masked_bases import MaskingSettings

    if options["resume"]:
        run_training(pipeline, resumed_config(ctx, options, pipeline), options["quiet"], resume=True)
        return
    if not options["fasta"]:
        raise click.UsageError("give at least one --fasta (or --resume an earlier run)")
    if options["min_length"] > options["max_length"]:
        raise click.UsageError("--min-length must not exceed --max-length")
    check_reversible(options, "track_size", "decoder_track_size")
    config = pipeline.PretrainConfig(
        fasta=tuple(options["fasta"]), out=str(options["out"]),
        val_fasta=tuple(options["val_fasta"]), val_fraction=options["val_fraction"],
        sample=options["sample"], min_length=options["min_length"],
        max_length=options["max_length"], max_n=options["max_n"],
        reverse_complement=options["rc"],
        masking=MaskingSettings(options["mask"], options["mask_scheme"],
                                options["lowercase_weight"]),
        tokens_per_epoch=options["tokens_per_epoch"],
        validation_tokens=options["validation_tokens"], track_size=options["track_size"],
        hidden_size=options["hidden_size"], decoder_track_size=options["decoder_track_size"],
        decoder_hidden_size=options["decoder_hidden_size"], dropout=options["dropout"],
        reversible=options["reversible"], max_tokens=options["max_tokens"],
        markov_order=options["markov_order"],
        device=options["device"], precision=options["precision"],
        training=training_settings(options))
    run_training(pipeline, config, options["quiet"])


def _contig_list(ctx, param, values) -> tuple:
    """Comma-separated and repeated contig names, as one tuple."""
    return tuple(name.strip() for value in values for name in value.split(",") if name.strip())


@cli.command()
@click.option("--vcf", type=click.Path(exists=True, dir_okay=False),
              help="Labelled variants: VCF, bgzipped VCF or BCF.")
@click.option("--reference", "-r", type=click.Path(exists=True, dir_okay=False),
              help="The reference FASTA (plain or bgzip) the variants were called against.")
@click.option("--label-field", metavar="KEY",
              help="INFO field with each variant's label: 1/0, true/false, yes/no, or a Flag.")
@click.option("--labels", "labels_table", type=click.Path(exists=True, dir_okay=False),
              help="TSV of chrom, pos, ref, alt, label and an optional group; with --vcf it "
                   "labels the VCF's alleles, without it the rows are the variants.")
@click.option("--group-field", metavar="KEY",
              help="INFO field with each variant's group (e.g. tissue): one output per group.")
@click.option("--region", "regions", multiple=True, metavar="CHROM[:START-END]",
              help="Read only this region of the VCF (needs an index); repeatable.")
@click.option("--contig-map", type=click.Path(exists=True, dir_okay=False),
              help="TSV of VCF contig name and FASTA contig name (chr1/1 and chrM/MT are "
                   "automatic).")
@click.option("--ref-mismatch", type=click.Choice(["error", "warn", "skip"]), default="skip",
              show_default=True, help="What to do when REF disagrees with the FASTA.")
@click.option("--window", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Window around each variant, in bp; predict uses the same by default.")
@click.option("--val-contigs", multiple=True, callback=_contig_list, metavar="NAMES",
              help="Contigs held out for validation (comma-separated or repeated). Holding "
                   "out whole chromosomes is the right protocol for a genome.")
@click.option("--test-contigs", multiple=True, callback=_contig_list, metavar="NAMES",
              help="Contigs held out for the final test (comma-separated or repeated).")
@click.option("--val-fraction", type=click.FloatRange(0, 0.9), default=0.1, show_default=True,
              help="Without --val-contigs: share held out for validation, by window-sized blocks.")
@click.option("--test-fraction", type=click.FloatRange(0, 0.9), default=0.1, show_default=True,
              help="Without --test-contigs: share held out for the test, by window-sized blocks.")
@click.option("--init", type=click.Path(exists=True),
              help="Start the encoder from a `cmx pretrain` run; it fixes the encoder's shape.")
@click.option("--freeze-encoder", is_flag=True,
              help="With --init: train only the classifier (and the variant marker).")
@click.option("--site-features/--no-site-features", default=True, show_default=True,
              help="Give the classifier the encoder's features at the variant's own position.")
@click.option("--marker/--no-marker", default=True, show_default=True,
              help="Mark the variant's position in the encoder's input.")
@click.option("--rc/--no-rc", default=True, show_default=True,
              help="Read a random half of each training batch on the reverse strand.")
@click.option("--max-len", type=click.IntRange(min=1),
              help="Without --init: longest window the encoder is sized for. "
                   "[default: the longest window]")
@click.option("--track-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Without --init: encoder channels per track.")
@click.option("--hidden-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="Without --init: hidden width of each encoder block's MLP.")
@click.option("--head-hidden", type=click.IntRange(min=1), default=128, show_default=True,
              help="Hidden width of the classifier on the pooled features.")
@click.option("--head-dropout", type=click.FloatRange(0, 0.9), default=0.1, show_default=True,
              help="Dropout before the classifier's last layer.")
@click.option("--dropout", type=click.FloatRange(0, 0.9), default=0.1, show_default=True,
              help="Without --init: dropout inside each encoder block's MLP.")
@reversible_option
@click.option("--max-tokens", type=click.IntRange(min=1), default=32768, show_default=True,
              help="Token budget per batch (per process under torchrun); a variant takes "
                   "both its windows.")
@click.option("--flank", type=click.IntRange(0, 50), default=5, show_default=True,
              help="Flank of the logistic-regression baseline reported beside the model, in bp.")
@training_options
@run_options("checkpoints, config, split, metrics and log")
@device_option
@precision_option
@quiet_option
@click.pass_context
def finetune(ctx: click.Context, **options) -> None:
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
        run_training(pipeline, resumed_config(ctx, options, pipeline), options["quiet"], resume=True)
        return
    if not options["reference"]:
        raise click.UsageError("give the --reference FASTA (or --resume an earlier run)")
    if (options["label_field"] is None) == (options["labels_table"] is None):
        raise click.UsageError("give the labels with one of --label-field KEY (with --vcf) "
                               "and --labels TABLE")
    if options["label_field"] and not options["vcf"]:
        raise click.UsageError("--label-field reads the labels from --vcf; give --vcf too")
    if (options["group_field"] or options["regions"]) and not options["vcf"]:
        raise click.UsageError("--group-field and --region read --vcf; give --vcf too")
    check_init_options(ctx, options)
    check_held_out_fractions(options)
    check_reversible(options, "track_size")
    config = pipeline.FinetuneConfig(
        reference=options["reference"], out=str(options["out"]), vcf=options["vcf"],
        label_field=options["label_field"], labels_table=options["labels_table"],
        group_field=options["group_field"], regions=tuple(options["regions"]),
        contig_map=options["contig_map"], ref_mismatch=options["ref_mismatch"],
        window=options["window"], val_contigs=options["val_contigs"],
        test_contigs=options["test_contigs"], val_fraction=options["val_fraction"],
        test_fraction=options["test_fraction"], init=options["init"],
        freeze_encoder=options["freeze_encoder"], site_features=options["site_features"],
        marker=options["marker"], reverse_complement=options["rc"], max_len=options["max_len"],
        track_size=options["track_size"], hidden_size=options["hidden_size"],
        head_hidden=options["head_hidden"], head_dropout=options["head_dropout"],
        dropout=options["dropout"], reversible=options["reversible"],
        max_tokens=options["max_tokens"], flank=options["flank"], device=options["device"],
        precision=options["precision"], training=training_settings(options))
    run_training(pipeline, config, options["quiet"])


@cli.command()
@click.option("--model", "-m", required=True, type=click.Path(exists=True),
              help="Run directory of `cmx pretrain`.")
@click.option("--fasta", required=True, type=click.Path(exists=True, dir_okay=False),
              help="FASTA to score (plain or bgzip).")
@click.option("--mask", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Probability that a base is selected. [default: the model's]")
@click.option("--max-bases", type=click.IntRange(min=1), default=1_000_000, show_default=True,
              help="Score at most this many bases (fixed random segments of long records).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of segments and masks.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@max_tokens_option
@device_option
@precision_option
def evaluate(**options) -> None:
    """Print masked-base metrics of a pretrained model on any FASTA, beside its baselines.

    The top-level numbers are on the positions replaced by the MASK token; the baselines
    were fitted on the model's own training data.

    Example: cmx evaluate --model pre/ --fasta other.fa --mask 0.3 --json
    """
    from cmx_cli.pipelines import evaluate as pipeline

    pipeline.run(pipeline.EvaluateConfig(
        model=options["model"], fasta=options["fasta"], mask=options["mask"],
        max_bases=options["max_bases"], seed=options["seed"], as_json=options["as_json"],
        max_tokens=options["max_tokens"], device=options["device"],
        precision=options["precision"]))

@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "-m", required=True, type=click.Path(exists=True),
              help="Run directory (or its model.pt): `cmx train` for FASTA; `cmx finetune` or "
                   "`cmx pretrain` for VCF.")
@click.option("--output", "-o", default="-", show_default=True,
              help="Output file; - writes to standard output. For VCF: .vcf.gz is bgzipped and "
                   "indexed, .bcf is BCF, anything else plain VCF.")
@click.option("--rc", is_flag=True,
              help="Average the forward and reverse-complement predictions (zero-shot VCF "
                   "scores always do).")
@click.option("--label-regex", metavar="REGEX",
              help="FASTA: read true labels from the header line and print metrics.")
@click.option("--labels", "labels_table", type=click.Path(exists=True, dir_okay=False),
              help="FASTA: TSV of record name and true label; print metrics.")
@click.option("--reference", "-r", type=click.Path(exists=True, dir_okay=False),
              help="VCF: the reference FASTA (plain or bgzip) the variants were called against.")
@click.option("--region", "regions", multiple=True, metavar="CHROM[:START-END]",
              help="VCF: score only this region (needs an index); repeat it to shard a large VCF.")
@click.option("--window", type=click.IntRange(min=1),
              help="VCF: window around each variant, in bp. [default: the window a `cmx "
                   "finetune` model was trained with, else 1000]")
@click.option("--ref-mismatch", type=click.Choice(["error", "warn", "skip"]), default="skip",
              show_default=True,
              help="VCF: what to do when REF disagrees with the FASTA (warn still scores).")
@click.option("--contig-map", type=click.Path(exists=True, dir_okay=False),
              help="VCF: TSV of VCF contig name and FASTA contig name (chr1/1 and chrM/MT are automatic).")
@click.option("--split-multiallelic", is_flag=True,
              help="VCF: write one record per ALT allele, as `bcftools norm -m-` does.")
@click.option("--info-id", default="CMX", show_default=True, help="VCF: INFO field for the scores.")
@click.option("--tsv", is_flag=True, help="VCF: write chrom pos id ref alt score rows instead of a VCF.")
@click.option("--group-field", metavar="KEY",
              help="VCF, grouped models: INFO field with each record's group. [default: the "
                   "one the model was trained with]")
@click.option("--group", metavar="NAME",
              help="VCF, grouped models: score every record for this group.")
@max_tokens_option
@device_option
@precision_option
@compile_option
@quiet_option
def predict(input_path: str, model: str, output: str, rc: bool, label_regex, labels_table,
            reference, regions, window, ref_mismatch, contig_map, split_multiallelic, info_id,
            tsv, group_field, group, max_tokens: int, device: str, precision: str,
            compile_blocks: bool, quiet: bool) -> None:
    """Predict class probabilities for a FASTA, or score every ALT allele of a VCF/BCF.

    FASTA (a `cmx train` model): a TSV with name, length, predicted and one p_<label>
    column per class, in input order, streamed so memory stays flat.

    VCF/BCF (with --reference): every record kept, with a score per ALT allele in
    INFO/CMX, or a TSV with --tsv. A `cmx finetune` model gives the probability of label
    1; a `cmx pretrain` model gives zero-shot SNV scores.

    Example: cmx predict genes.fa --model run/ -o predictions.tsv

    Example: cmx predict calls.vcf.gz --reference ref.fa --model ft/ -o scored.vcf.gz
    """
    is_vcf = input_path.lower().endswith(VCF_SUFFIXES)
    if is_vcf:
        if reference is None:
            raise click.UsageError("scoring a VCF needs --reference genome.fa")
        if label_regex or labels_table:
            raise click.UsageError("--label-regex and --labels are for FASTA input")
        from cmx_cli.pipelines import predict_vcf

        with compile_failures_as_user_errors():
            predict_vcf.run(
                predict_vcf.PredictVcfConfig(
                    vcf=input_path, reference=reference, model=model, output=output, tsv=tsv,
                    regions=tuple(regions), window=window, ref_mismatch=ref_mismatch,
                    contig_map=contig_map, split_multiallelic=split_multiallelic,
                    info_id=info_id, average_strands=rc, group_field=group_field, group=group,
                    max_tokens=max_tokens, device=device, precision=precision,
                    compile_blocks=compile_blocks,
                    command=" ".join(["cmx"] + [shlex.quote(a) for a in sys.argv[1:]])),
                Reporter(quiet))
        return
    if (reference or regions or tsv or contig_map or split_multiallelic or window or group_field
            or group):
        raise click.UsageError("--reference, --region, --window, --tsv, --contig-map, "
                               "--split-multiallelic, --group-field and --group are for VCF/BCF "
                               "input")
    from cmx_cli.pipelines import predict_fasta

    with compile_failures_as_user_errors():
        predict_fasta.run(
            predict_fasta.PredictFastaConfig(
                fasta=input_path, model=model, output=output, average_strands=rc,
                label_regex=label_regex, labels_table=labels_table, max_tokens=max_tokens,
                device=device, precision=precision, compile_blocks=compile_blocks),
            Reporter(quiet))


def _length_list(ctx, param, value: str) -> tuple:
    try:
        lengths = tuple(int(float(part)) for part in value.split(",") if part.strip())
    except ValueError:
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
@click.option("--track-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Channels per track of the benchmarked network.")
@click.option("--hidden-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="Hidden width of each block's MLP.")
@click.option("--checkpointing", is_flag=True, help="Train with activation checkpointing.")
@click.option("--reversible", is_flag=True,
              help="Benchmark a network of reversible blocks (see cmx train --reversible).")
@compile_option
@click.option("--reference/--no-reference", default=True, show_default=True,
              help="Also time the per-sequence torch.roll network on the packed batch.")
@click.option("--attention/--no-attention", default=True, show_default=True,
              help="Also time the dot-product attention baseline of the same width and depth.")
@click.option("--attention-seconds", type=click.FloatRange(min=1), default=300, show_default=True,
              help="Stop an attention case after this many seconds; longer ones are skipped.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@device_option
@precision_option
@quiet_option
def bench(**options) -> None:
    """Measure training and inference speed and peak memory on this machine.

    Each case runs in its own process, so its peak memory is its own and running out of
    memory is reported, not fatal (on the CPU a case may use only the memory free when it
    starts). Also measures the rotation against a plain copy, the
    block MLP against plain matrix products, the speed-up over a per-sequence torch.roll
    rotation, and a dot-product attention baseline of the same width and depth. The runs
    compared with each other take turns in one process, so that both sides of a ratio see
    the same machine.

    Example: cmx bench --lengths 131072,1000000 --checkpointing --no-attention --json
    """
    from cmx_cli.pipelines import bench as pipeline

    config = pipeline.BenchConfig(
        lengths=options["lengths"], packed_tokens=options["packed_tokens"],
        mean_length=options["mean_length"], repeats=options["repeats"],
        track_size=options["track_size"], hidden_size=options["hidden_size"],
        checkpointing=options["checkpointing"], reversible=options["reversible"],
        compile_blocks=options["compile_blocks"], reference=options["reference"],
        attention=options["attention"],
        attention_seconds=options["attention_seconds"], device=options["device"],
        precision=options["precision"])
    pipeline.run(config, Reporter(options["quiet"] or options["as_json"]), options["as_json"])


@cli.command()
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              default=Path("cmx-demo"), show_default=True,
              help="Directory for the demo's data, runs and predictions.")
@device_option
@quiet_option
def demo(out: Path, device: str, quiet: bool) -> None:
    """Run the whole cmx cycle on bundled data: pretrain, train, finetune, predict.

    Copies the bundled files into --out, then: pretrains an encoder on 600 kb of the
    Ustilago maydis genome; trains a Klebsiella vs Acinetobacter classifier on capsule
    genes and predicts genes from held-out loci; fine-tunes the encoder to tell amino-acid
    changing SNVs from synonymous ones (train chr01, test chr04); and scores the VCF back.
    Each step prints the command that does it. Takes a few minutes on a laptop CPU.

    Example: cmx demo --out cmx-demo
    """
    from cmx_cli.pipelines import demo as pipeline

    pipeline.run(out, device, Reporter(quiet))


def main() -> None:
    """Entry point: run the CLI, turning errors into one line and an exit code."""
    debug = "--debug" in sys.argv[1:]
    # Under torchrun every process reports its own errors; rank 0's stay unmarked.
    rank = os.environ.get("RANK", "0") if os.environ.get("WORLD_SIZE", "1") != "1" else "0"
    rank_prefix = "" if rank == "0" else f"[rank {rank}] "
    try:
        cli.main(standalone_mode=False)
    except click.ClickException as error:
        if debug:
            raise
        if rank_prefix:
            click.echo(f"{rank_prefix}Error: {error.format_message()}", err=True)
        else:
            error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Exit as error:
        sys.exit(error.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except TrainingInterrupted as error:
        command = next((word for word in sys.argv[1:] if not word.startswith("-")), "train")
        hint = (f"continue with `cmx {command} --resume --out {error.run_dir}`" if error.epoch
                else "start the run again")
        click.echo(f"{rank_prefix}Interrupted: {error}. Hint: {hint}.", err=True)
        sys.exit(130)
    except Exception as error:  # noqa: BLE001 - last line of defence against tracebacks
        if debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        click.echo(f"{rank_prefix}Error: internal error: {type(error).__name__}: {message}. "
                   "Hint: rerun with --debug for the traceback and report it.", err=True)
        sys.exit(1)
