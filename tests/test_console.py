"""What people see on stderr: bars on a terminal, timestamped lines elsewhere, or (quiet) only
the summary."""
import io
import logging
import re

from rich.console import Console

from cmx_cli import console as console_module
from cmx_cli.console import Reporter

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


def _reporter(quiet=False, terminal=False):
    console = Console(file=io.StringIO(), force_terminal=terminal, width=200)
    return Reporter(quiet=quiet, console=console), console


def test_without_a_terminal_lines_are_timestamped(monkeypatch):
    monkeypatch.setattr(console_module, "PLAIN_PROGRESS_SECONDS", 0.0)
    reporter, console = _reporter()
    reporter.note("epoch 1: train loss 0.5")
    reporter.warn("the index is stale")
    with reporter.progress("Scoring", 4, unit="record") as progress:
        progress.advance(2, status="loss 0.1")
    reporter.summary("cmx predict: done")
    lines = console.file.getvalue().splitlines()
    assert all(STAMP.match(line) for line in lines[:-1]), lines
    assert lines[0].endswith("epoch 1: train loss 0.5")
    assert lines[1].endswith("Warning: the index is stale")
    assert re.search(r"Scoring: 2 of 4 records, [\d.,]+ records/s, about \d+ s left; loss 0.1$",
                     lines[2]), lines[2]
    assert lines[-1] == "cmx predict: done (warning: the index is stale)"


def test_progress_lines_come_about_once_a_minute():
    reporter, console = _reporter()
    with reporter.progress("epoch 1", 1000) as progress:
        for _ in range(1000):
            progress.advance()
    assert console.file.getvalue() == ""  # far less than a minute


def test_quiet_prints_only_the_summary():
    reporter, console = _reporter(quiet=True)
    reporter.note("read 3 files")
    reporter.warn("careful")
    with reporter.progress("Scoring", 2) as progress:
        progress.advance(2)
    reporter.summary("cmx train: done")
    assert console.file.getvalue() == "cmx train: done (warning: careful)\n"


def test_warnings_logged_by_readers_reach_the_newest_reporter():
    reporter, _ = _reporter(quiet=True)
    logging.getLogger("cmx_cli").warning("a.fa.fai does not describe a.fa")
    assert reporter.warnings == ["a.fa.fai does not describe a.fa"]
