"""What people see: progress, tables and one summary line, all on stderr (STYLE.md rule 7).

Progress bars, tables and notes are shown only when stderr is a terminal and ``--quiet`` is
off. Errors and the final summary line are always printed. Warnings are always collected;
they are shown live when interactive, and their count is added to the summary line.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Optional

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


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
        self.warnings: list[str] = []
        #: Where the warnings are saved (a run's metrics.json), if anywhere.
        self.warnings_saved_to: Optional[str] = None
        Reporter.current = self

    def note(self, message: str) -> None:
        """A line of context (what was read, where the run goes)."""
        if self.interactive:
            self.console.print(message, highlight=False)

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
            self.console.print(f"[yellow]Warning:[/yellow] {message}", highlight=False)

    def table(self, renderable) -> None:
        """A rich table (closing metrics)."""
        if self.interactive:
            self.console.print(renderable)

    def summary(self, message: str) -> None:
        """The one line printed whatever the settings."""
        if self.warnings and not self.interactive:
            if self.warnings_saved_to:
                message += f" ({len(self.warnings)} warning(s) in {self.warnings_saved_to})"
            else:
                message += f" (warning: {'; '.join(self.warnings)})"
        self.console.print(message, highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def progress(self, description: str, total: Optional[int], unit: str = "step") -> Iterator["Progress"]:
        """A progress bar with loss, throughput and ETA fields.

        Yields:
            An object with ``advance(steps=1, **fields)``; a no-op when not interactive.
        """
        if not self.interactive:
            yield _SilentProgress()
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


class _SilentProgress:
    def advance(self, steps: int = 1, status: str = "") -> None:  # noqa: D102
        return None


class _LiveProgress:
    def __init__(self, bar: Progress, task) -> None:
        self.bar, self.task = bar, task

    def advance(self, steps: int = 1, status: str = "") -> None:
        """Move the bar and update the status text (loss, tokens/s)."""
        self.bar.update(self.task, advance=steps, status=status)


class _ToReporter(logging.Handler):
    """Hands the ``cmx_cli`` logger's warnings to the current :class:`Reporter`."""

    def emit(self, record: logging.LogRecord) -> None:
        if Reporter.current is not None:
            Reporter.current.warn(record.getMessage())


_LOG = logging.getLogger("cmx_cli")
_LOG.addHandler(_ToReporter())
_LOG.setLevel(logging.WARNING)
_LOG.propagate = False
