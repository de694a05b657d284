"""The one path for user errors (STYLE.md rule 6).

Every problem caused by the user's data or flags is raised as :class:`CmxError`. The CLI
prints it as one line on stderr, with no traceback unless ``--debug`` is given, and exits
with status 1.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import click

#: The longest record name a message prints whole; longer ones are cut (issue 23: a 2 MB
#: FASTA header line made a 2 MB message).
NAME_LIMIT = 60


def shortened(name: str, limit: int = NAME_LIMIT) -> str:
    """A record name as messages print it: its first ``limit`` characters and "…" when it
    is longer."""
    return name if len(name) <= limit else f"{name[:limit]}… ({len(name):,} characters)"


class CmxError(click.ClickException):
    """A user error: bad data, a missing file, a checkpoint that does not fit.

    Args:
        message: What is wrong. Name the file and the record.
        hint: What the user can do about it; appended as ``Hint: ...``.
    """

    exit_code = 1

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        text = message.rstrip()
        if hint:
            if not text.endswith((".", ":", "?", "!")):
                text += "."
            text += f" Hint: {hint.strip()}"
        # One line, whatever the inputs contained.
        super().__init__(" ".join(text.split()))

    @classmethod
    def in_record(
        cls,
        path: Union[str, Path],
        record: Optional[str],
        problem: str,
        hint: Optional[str] = None,
    ) -> "CmxError":
        """Build an error about one record of one file.

        Args:
            path: The input file.
            record: The record's name (None when the problem is with the whole file).
            problem: What is wrong with it.
            hint: What to do about it.

        Returns:
            The error, ready to raise.
        """
        where = f"{path}" if record is None else f"{path}, record '{shortened(record)}'"
        return cls(f"{where}: {problem}", hint)


class CmxUsageError(CmxError):
    """A flag that cannot work here (``--device cuda`` without a GPU, say): exit status 2,
    as for a wrong command line."""

    exit_code = 2
