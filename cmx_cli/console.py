"""What people see: progress, tables and one summary line, all on stderr (STYLE.md rule 7).

Three ways to show it:

* on a terminal: progress bars, tables, notes and warnings as they come;
* when stderr is not a terminal (a batch job, a workflow engine, a pipe): plain lines, each
  starting with the date and time: notes (one per epoch, say), warnings, and for long work
  a progress line about once a minute, with counts, rates and the time left;
* with ``--quiet``: only errors and the summary line.

The summary line is printed whatever the settings; when warnings were not shown as they
came, it names them (or where they are saved).
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Iterator, Optional

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn)

#: Seconds between two progress lines when stderr is not a terminal.
PLAIN_PROGRESS_SECONDS = 60.0


class Reporter:
    """Routes messages for people to stderr according to ``--quiet`` and the terminal.

    The newest reporter also takes the warnings that code without a reporter (file readers)
    logs on the ``cmx_cli`` logger.

    Args:
        quiet: Suppress everything but errors and the summary line.
        console: A rich console on stderr (tests pass their own).
    """

    #: The reporter that receives the ``cmx_cli`` logger's warnings.
    current: Optional["Reporter"] = None

    def __init__(self, quiet: bool = False, console: Optional[Console] = None) -> None:
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self.interactive = not quiet and self.console.is_terminal
        #: Timestamped plain lines instead of bars (stderr is not a terminal).
        self.plain = not quiet and not self.interactive
        self.warnings: list[str] = []
        #: Where the warnings are saved (a run's metrics.json), if anywhere.
        self.warnings_saved_to: Optional[str] = None
        Reporter.current = self

    def note(self, message: str) -> None:
        """A line of context (what was read, how an epoch went)."""
        if self.interactive:
            self.console.print(message, highlight=False)
        elif self.plain:
            self.line(message)

    def line(self, message: str) -> None:
        """A plain line that starts with the date and time."""
        self.console.print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", highlight=False,
                           markup=False, soft_wrap=True)

    def step(self, title: str, command: Optional[str] = None) -> None:
        """A step of a walk-through and the command that does it; shown unless quiet, also
        when stderr is not a terminal."""
        if not self.quiet:
            text = f"[bold]{escape(title)}[/bold]"
            if command is not None:
                text += f"\n  $ {escape(command)}"
            self.console.print(text, highlight=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        """Something the user should know; counted in the summary."""
        self.warnings.append(message)
        if self.interactive:
            self.console.print(f"[yellow]Warning:[/yellow] {escape(message)}", highlight=False)
        elif self.plain:
            self.line(f"Warning: {message}")

    def table(self, renderable) -> None:
        """A rich table (closing metrics), on a terminal only."""
        if self.interactive:
            self.console.print(renderable)

    def summary(self, message: str) -> None:
        """The one line printed whatever the settings."""
        if self.warnings and not self.interactive:
            if self.warnings_saved_to:
                message += f" ({len(self.warnings)} warning(s) in {self.warnings_saved_to})"
            else:
                message += f" (warning: {'; '.join(self.warnings)})"
        self.console.print(message, highlight=False, markup=False, soft_wrap=True)

    @contextlib.contextmanager
    def progress(self, description: str, total: Optional[int],
                 unit: str = "step") -> Iterator["_Progress"]:
        """Progress of long work: a bar on a terminal, a timestamped line about once a
        minute otherwise.

        Yields:
            An object with ``advance(steps=1, status="")``.
        """
        if self.plain:
            yield _PlainProgress(self, description, total, unit)
            return
        if not self.interactive:
            yield _Progress()
            return
        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit + "s"),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=self.console, transient=False) as bar:
            task = bar.add_task(description, total=total, status="")
            yield _LiveProgress(bar, task)


class _Progress:
    """Progress nobody sees (``--quiet``)."""

    def advance(self, steps: int = 1, status: str = "") -> None:
        """Count ``steps`` more done, with a status text (loss, tokens/s)."""


class _LiveProgress(_Progress):
    def __init__(self, bar: Progress, task) -> None:
        self.bar, self.task = bar, task

    def advance(self, steps: int = 1, status: str = "") -> None:
        """Move the bar and update the status text (loss, tokens/s)."""
        self.bar.update(self.task, advance=steps, status=status)


class _PlainProgress(_Progress):
    """A timestamped line every :data:`PLAIN_PROGRESS_SECONDS`: done, total, rate, ETA."""

    def __init__(self, reporter: Reporter, description: str, total: Optional[int],
                 unit: str) -> None:
        self.reporter, self.description, self.total, self.unit = reporter, description, total, unit
        self.done = 0
        self.started = self.shown = time.monotonic()

    def advance(self, steps: int = 1, status: str = "") -> None:
        self.done += steps
        now = time.monotonic()
        if now - self.shown < PLAIN_PROGRESS_SECONDS:
            return
        self.shown = now
        rate = self.done / max(now - self.started, 1e-9)
        counted = f"{self.done:,}" + (f" of {self.total:,}" if self.total else "")
        text = f"{self.description}: {counted} {self.unit}s, {rate:,.1f} {self.unit}s/s"
        if self.total and rate > 0:
            text += f", about {_duration((self.total - self.done) / rate)} left"
        self.reporter.line(text + (f"; {status}" if status else ""))


def _duration(seconds: float) -> str:
    """``42 s``, ``7 min`` or ``3.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class _ToReporter(logging.Handler):
    """Hands the ``cmx_cli`` logger's warnings to the current :class:`Reporter`."""

    def emit(self, record: logging.LogRecord) -> None:
        if Reporter.current is not None:
            Reporter.current.warn(record.getMessage())


_LOG = logging.getLogger("cmx_cli")
_LOG.addHandler(_ToReporter())
_LOG.setLevel(logging.WARNING)
_LOG.propagate = False
