"""Every option that more than one command takes, declared once: kebab-case names,
click types that validate, shown defaults, and one sentence of help with its units.

An option group is a decorator: it adds its options to a command and hands the command one
frozen dataclass of :mod:`cmx_cli.settings` instead of the loose values, e.g.
``runtime: Runtime``. Where a default really differs between commands (``--max-tokens``),
the decorator takes it as a parameter and the help says why.

A renamed option keeps its old spelling as a hidden alias (:class:`AliasedOption`).
"""
from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import click

from cmx_cli.io.labels import parse_fasta_argument
from cmx_cli.runtime import DEVICES, PRECISIONS
from cmx_cli.settings import (
    EncoderStart, HeldOut, Runtime, TrainingSettings, EncoderShape, VariantInput)

Decorator = Callable[[Callable], Callable]
#: The largest ``--seed``: NumPy and PyTorch both take seeds of 32 bits.
MAX_SEED = 2**32 - 1


class FiniteFloat(click.FloatRange):
    """A float option's type: a finite number within the bounds of :class:`click.FloatRange`.

    Python reads ``nan``, ``inf`` and ``-inf`` as floats, and NaN passes every range check
    (it compares false with everything), so without this a ``--lr nan`` would fail only
    later, after the data is read (issue 23). Every float option of every command uses it.
    """

    def convert(self, value: Any, param: Optional[click.Parameter],
                ctx: Optional[click.Context]) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


class AliasedOption(click.Option):
    """An option that still answers to old spellings, which ``--help`` does not show.

    Args:
        hidden_aliases: The old spellings, e.g. ``("--rc", "--no-rc")``; they must also be
            among the option's declarations.
    """

    def __init__(self, *args: Any, hidden_aliases: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hidden_aliases = frozenset(hidden_aliases)

    def get_help_record(self, ctx: click.Context):
        shown = self.opts, self.secondary_opts
        self.opts = [name for name in self.opts if name not in self.hidden_aliases]
        self.secondary_opts = [name for name in self.secondary_opts
                               if name not in self.hidden_aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts, self.secondary_opts = shown


def option_group(target: str, build: Callable[..., Any], *options: Decorator) -> Decorator:
    """A decorator that adds ``options`` to a command and passes it ``build(**values)`` as
    the keyword argument ``target``, in place of the options' own values."""
    names = _parameter_names(options)

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[target] = build(**{name: kwargs.pop(name) for name in names})
            return command(*args, **kwargs)

        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


def _parameter_names(options: Sequence[Decorator]) -> list[str]:
    """The parameter names that ``options`` give a command."""
    def probe() -> None:
        """Collects the options' parameters."""

    for option in options:
        option(probe)
    return [parameter.name for parameter in probe.__click_params__]  # type: ignore[attr-defined]


# ---- input paths ----------------------------------------------------------------------------

def absolute(ctx: Optional[click.Context], param: Any, value: Any) -> Any:
    """A callback that makes input paths absolute (one, several, or none), so that a run's
    config.json means the same files from any directory."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return tuple(absolute(ctx, param, item) for item in value)
    return os.path.abspath(value)


def absolute_labelled(ctx: Optional[click.Context], param: Any, value: Any) -> Any:
    """:func:`absolute` for ``PATH[:LABEL]`` arguments: the path part, label kept."""
    if isinstance(value, (tuple, list)):
        return tuple(absolute_labelled(ctx, param, item) for item in value)
    source = parse_fasta_argument(value)
    path = os.path.abspath(source.path)
    return f"{path}:{source.label}" if source.label else path


# ---- single options shared by several commands --------------------------------------------

QUIET = click.option("--quiet", "-q", is_flag=True,
                     help="Print only errors and the final summary line.")
CHECKPOINTING = click.option(
    "--checkpointing", is_flag=True,
    help="Activation checkpointing: keep only the inputs of every ~√n-th block and recompute "
         "the rest in backward. Far less memory for very long sequences, for about two more "
         "forward passes of time.")
FLIP_STRANDS = click.option(
    "--flip-strands/--no-flip-strands", "--rc/--no-rc", "flip_strands", cls=AliasedOption,
    hidden_aliases=("--rc", "--no-rc"), default=True, show_default=True,
    help="Read a random half of the training sequences on the reverse strand (augmentation).")


def seed_option(help: str) -> Decorator:
    """``--seed``: what it seeds depends on the command."""
    return click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0,
                        show_default=True, help=help)


def out_option(help: str, default: Optional[Path] = None) -> Decorator:
    """``--out``: the directory a command writes (required when it has no default)."""
    return click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
                        default=default, required=default is None,
                        show_default=default is not None, help=help,
                        callback=lambda ctx, param, value: Path(os.path.abspath(value)))


JSON_OUTPUT = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON object instead of tables.")


def fasta_option(name: str, help: str, labelled: bool = False, multiple: bool = True,
                 required: bool = False) -> Decorator:
    """A FASTA input (plain or bgzip); ``labelled`` ones may carry a class: PATH[:LABEL]."""
    kind = None if labelled else click.Path(exists=True, dir_okay=False)
    return click.option(name, type=kind, multiple=multiple, required=required,
                        metavar="PATH[:LABEL]" if labelled else None, help=help,
                        callback=absolute_labelled if labelled else absolute)


def label_regex_option(help: str) -> Decorator:
    """``--label-regex``: labels from the header line."""
    return click.option("--label-regex", metavar="REGEX", help=help)


def labels_option(help: str) -> Decorator:
    """``--labels``: a table of labels."""
    return click.option("--labels", "labels_table", type=click.Path(exists=True, dir_okay=False),
                        callback=absolute, help=help)


def group_field_option(help: str) -> Decorator:
    """``--group-field``: the INFO field of each variant's group."""
    return click.option("--group-field", metavar="KEY", help=help)


def model_option(help: str) -> Decorator:
    """``--model``: a run directory or its model.pt."""
    return click.option("--model", "-m", required=True, type=click.Path(exists=True),
                        callback=absolute, help=help)


def mask_option(default: Optional[float], help: str) -> Decorator:
    """``--mask``: the share of bases selected for masked-base prediction."""
    return click.option("--mask", type=FiniteFloat(0, 1, min_open=True, max_open=True),
                        default=default, show_default=default is not None, help=help)


def max_tokens_option(default: int, why: str) -> Decorator:
    """``--max-tokens``, whose default depends on what a batch holds; ``why`` says why."""
    return click.option(
        "--max-tokens", type=click.IntRange(min=1), default=default, show_default=True,
        help=f"Token budget per batch; a longer input gets a batch of its own. {why}")


def run_options(what: str) -> Decorator:
    """``--out`` and ``--resume`` of a training command; ``what`` lists the run's files."""
    def decorate(command: Callable) -> Callable:
        command = click.option(
            "--resume", is_flag=True,
            help="Continue the run in --out from its last checkpoint, with its saved config.",
        )(command)
        return out_option(f"Run directory for {what}.")(command)
    return decorate


# ---- option groups ------------------------------------------------------------------------

def runtime_options(precision: bool = True, compile_blocks: bool = True) -> Decorator:
    """``--device``, ``--threads``, ``--precision`` and ``--compile`` → ``runtime: Runtime``."""
    options = [click.option("--device", type=click.Choice(DEVICES), default="auto",
                            show_default=True, help="Where to run: auto picks CUDA when available."),
               click.option("--threads", type=click.IntRange(min=1),
                            help="Use at most this many CPU threads (give a cluster job's core "
                                 "count). [default: one per core]")]
    if precision:
        options.append(click.option(
            "--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
            help="Numeric precision: auto is bf16 on CUDA, and for prediction on CPUs with "
                 "native bf16 (AVX512-BF16 or AMX); fp32 otherwise."))
    if compile_blocks:
        options.append(click.option(
            "--compile", "compile_blocks", is_flag=True,
            help="Compile each block's norm and MLP with torch.compile (for CUDA; slower on "
                 "the CPU). The first batch takes tens of seconds more."))
    return option_group("runtime", Runtime, *options)


def encoder_shape_options(max_len_help: Optional[str] = None) -> Decorator:
    """The shape of a new encoder → ``shape: EncoderShape``; ``--max-len`` when
    ``max_len_help`` says what the default is."""
    options = [
        click.option("--track-size", type=click.IntRange(min=1), default=16, show_default=True,
                     help="Encoder channels per track; the width is track size × "
                          "(⌈log2 max-len⌉ + 1)."),
        click.option("--hidden-size", type=click.IntRange(min=1), default=128,
                     show_default=True, help="Hidden width of each encoder block's MLP."),
        click.option("--dropout", type=FiniteFloat(0, 0.9), default=0.1, show_default=True,
                     help="Dropout inside each encoder block's MLP."),
        click.option("--reversible", is_flag=True,
                     help="Reversible blocks: backward rebuilds each block's input from its "
                          "output, so training keeps no activations per block. The least "
                          "memory for very long sequences; a different network from the "
                          "default one. Needs an even track size."),
        click.option("--local-context", "local_radius", type=click.IntRange(min=0), default=4,
                     show_default=True,
                     help="A local stem: each base's input also embeds the N bases on each "
                          "side of it, before the first block. 0: the paper's network, where "
                          "a base meets its neighbours only through the blocks."),
    ]
    if max_len_help:
        options.insert(0, click.option(
            "--max-len", type=click.IntRange(min=1),
            help=f"Longest input the encoder is sized for, in bp. [default: {max_len_help}]"))
    return option_group("shape", EncoderShape, *options)


def encoder_start_options() -> Decorator:
    """``--init`` and ``--freeze-encoder`` → ``start: EncoderStart``."""
    return option_group(
        "start", EncoderStart,
        click.option("--init", type=click.Path(exists=True), callback=absolute,
                     help="Start the encoder from a `cmx pretrain` run (it fixes the encoder's "
                          "shape) and train all of it with the new classifier: on the README's "
                          "learning curve this beat a gentler encoder learning rate and a "
                          "frozen encoder."),
        click.option("--freeze-encoder", is_flag=True,
                     help="With --init: train only what is new (the classifier), keep the "
                          "encoder as it is."),
        click.option("--encoder-lr-scale", type=FiniteFloat(0, 1, min_open=True),
                     default=1.0, show_default=True,
                     help="With --init: the pretrained encoder learns at this share of --lr, "
                          "the new classifier at --lr itself. A lower share did worse on the "
                          "README's learning curve, so all weights train at --lr by default."))


def held_out_options(val_help: str, test_help: Optional[str] = None) -> Decorator:
    """``--val-fraction`` (and ``--test-fraction`` when ``test_help`` is given) →
    ``held_out: HeldOut``."""
    options = [click.option("--val-fraction", type=FiniteFloat(0, 0.9), default=0.1,
                            show_default=True, help=val_help)]
    if test_help:
        options.append(click.option("--test-fraction", type=FiniteFloat(0, 0.9),
                                    default=0.1, show_default=True, help=test_help))
    return option_group("held_out", lambda val_fraction, test_fraction=0.0:
                        HeldOut(val_fraction, test_fraction), *options)


def training_options(learning_rate: float = 1e-3, learning_rate_help: str = "") -> Decorator:
    """The optimisation and stopping flags → ``training: TrainingSettings``; a command may
    give ``--lr`` its own default, saying why in ``learning_rate_help``."""
    return option_group(
        "training",
        lambda max_time, lr, warmup, **values: TrainingSettings(
            max_time_minutes=max_time, learning_rate=lr, warmup_fraction=warmup, **values),
        click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True,
                     help="Maximum number of passes over the training data."),
        click.option("--max-steps", type=click.IntRange(min=1),
                     help="Stop after this many optimizer steps."),
        click.option("--max-time", type=FiniteFloat(min=0, min_open=True),
                     help="Stop after this many minutes of training, with the learning rate's "
                          "decay planned to end then; the run stays resumable."),
        click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=learning_rate,
                     show_default=True,
                     help=" ".join(("Peak learning rate of AdamW.", learning_rate_help)).strip()),
        click.option("--weight-decay", type=FiniteFloat(min=0), default=0.01,
                     show_default=True, help="AdamW weight decay on weight matrices."),
        click.option("--warmup", type=FiniteFloat(0, 1), default=0.05, show_default=True,
                     help="Share of the steps spent warming the learning rate up before "
                          "cosine decay."),
        click.option("--grad-clip", type=FiniteFloat(min=0), default=1.0,
                     show_default=True,
                     help="Clip the gradient norm to this value; 0 disables clipping."),
        click.option("--patience", type=click.IntRange(min=1), default=5, show_default=True,
                     help="Stop after this many epochs without a better validation score."),
        seed_option("Seed for the split, sampling, masking and weights."),
        CHECKPOINTING,
    )


def variant_input_options(window_default: Optional[int], window_help: str,
                          prefix: str = "", region_help: Optional[str] = None) -> Decorator:
    """How variants are read against their reference → ``variants: VariantInput``.

    Args:
        window_default: The default ``--window`` (None: decided later, from the model).
        window_help: What the window default is, or what it sets.
        prefix: Put before each help text (``"VCF: "`` where a command also reads FASTA).
        region_help: The help of ``--region``, where a command reads it for FASTA too.
    """
    def described(text: str) -> str:
        return prefix + text[0].lower() + text[1:] if prefix else text

    return option_group(
        "variants", VariantInput,
        click.option("--reference", "-r", type=click.Path(exists=True, dir_okay=False),
                     callback=absolute, help=described("The reference FASTA (plain or bgzip) the variants were "
                                    "called against.")),
        click.option("--region", "regions", multiple=True, metavar="CHROM[:START-END]",
                     callback=lambda ctx, param, value: tuple(value),
                     help=region_help or described("Read only this region of the VCF (needs "
                                                   "an index); repeat it, e.g. to shard a "
                                                   "large VCF.")),
        click.option("--contig-map", type=click.Path(exists=True, dir_okay=False),
                     callback=absolute, help=described("TSV of VCF contig name and FASTA contig name (chr1/1 and "
                                    "chrM/MT are automatic).")),
        click.option("--ref-mismatch", type=click.Choice(["error", "warn", "skip"]),
                     default="skip", show_default=True,
                     help=described("What to do when REF disagrees with the FASTA (warn still "
                                    "scores).")),
        click.option("--window", type=click.IntRange(min=1), default=window_default,
                     show_default=window_default is not None,
                     help=described(f"Window around each variant, in bp. {window_help}")),
    )
