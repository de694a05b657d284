"""The `cmx` command group and its entry point: every error becomes one line and an exit code.

Exit codes: 0 done, 1 bad data (:class:`~cmx_cli.errors.CmxError`) or an internal error,
2 a wrong command line, 130 interrupted (143 stopped by SIGTERM). Tracebacks only with
``--debug``.
"""
from __future__ import annotations

import os
import shlex
import sys
from typing import Any, Optional

import click

from cmx_cli import __version__, interrupts
from cmx_cli.training.loop import TrainingInterrupted

#: Where the command line as typed is kept, in the context's meta (shared by subcommands).
ARGV_KEY = "cmx.argv"
#: What an interrupted command says it left behind (set by the command, see on_interrupt).
_interrupted = {"message": "cmx stopped before it finished"}


def on_interrupt(message: str) -> None:
    """What to say when Ctrl-C stops the running command: what it had done, what it left."""
    _interrupted["message"] = message


class CommandGroup(click.Group):
    """The `cmx` group; it remembers the command line it parsed, so that a command can
    record how it was run (``##cmx_command`` in a scored VCF) even when it did not come from
    ``sys.argv`` (the demo runs its steps through this parser)."""

    def make_context(self, info_name: Optional[str], args: list[str],
                     parent: Optional[click.Context] = None, **extra: Any) -> click.Context:
        typed = list(args)
        context = super().make_context(info_name, args, parent, **extra)
        context.meta[ARGV_KEY] = typed
        return context


@click.group(cls=CommandGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="cmx")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
def cli(debug: bool) -> None:
    """Train and apply ChordMixer networks to DNA sequences of any length.

    No padding, no truncation, no chunking: every sequence is read whole.

    Example: cmx train --fasta Klebsiella.fa --fasta Acinetobacter.fa --out run/
    """


def typed_command_line() -> str:
    """The command line of the running command, as it was typed (``cmx predict ...``)."""
    argv = click.get_current_context().meta.get(ARGV_KEY, sys.argv[1:])
    return "cmx " + shlex.join(argv)


def is_internal_error(error: Optional[BaseException]) -> bool:
    """Whether :func:`main` would report ``error`` as an internal error: a bug in cmx, as
    opposed to bad input, a wrong command line or an interruption, which each have their own
    message. ``None`` (no error) and ``SystemExit`` are not."""
    expected = (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt,
                TrainingInterrupted, SystemExit)
    return error is not None and not isinstance(error, expected)


def main() -> None:
    """Entry point: run the CLI, turning errors into one line and an exit code."""
    debug = "--debug" in sys.argv[1:]
    # Under torchrun every process reports its own errors; rank 0's stay unmarked.
    rank = os.environ.get("RANK", "0") if os.environ.get("WORLD_SIZE", "1") != "1" else "0"
    rank_prefix = "" if rank == "0" else f"[rank {rank}] "
    interrupts.install()
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
    except (TrainingInterrupted, click.Abort, KeyboardInterrupt) as error:
        # click turns a KeyboardInterrupt into Abort; a run's own (a RunInterrupted of
        # training/job.py is both) says where the run stands.
        stopped = error if isinstance(error, TrainingInterrupted) else error.__context__
        if not isinstance(stopped, TrainingInterrupted):
            click.echo(f"{rank_prefix}Interrupted: {_interrupted['message']}.", err=True)
            sys.exit(interrupts.exit_status())
        # The training command that was stopped (train, pretrain, finetune) is carried by the
        # error (training/job.py sets it): the command line alone may not say it (the demo
        # runs its steps in-process).
        hint = (f"continue with `{stopped.command} --resume --out "
                f"{shlex.quote(str(stopped.run_dir))}`" if stopped.resumable else
                "start the run again with the same command (without --resume); it starts "
                "over in its run directory")
        click.echo(f"{rank_prefix}Interrupted: {stopped}. Hint: {hint}.", err=True)
        sys.exit(interrupts.exit_status())
    except Exception as error:  # noqa: BLE001 - last line of defence against tracebacks
        if debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        click.echo(f"{rank_prefix}Error: internal error: {type(error).__name__}: {message}. "
                   "Hint: rerun with --debug for the traceback and report it.", err=True)
        sys.exit(1)
