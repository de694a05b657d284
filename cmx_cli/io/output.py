"""Atomic outputs: nothing half-written is ever left under the requested name (DESIGN.md).

Files are written to a temporary name in the target directory and renamed when complete.
``-`` means standard output.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union

from cmx_cli.errors import CmxError


@contextlib.contextmanager
def atomic_output(path: Union[str, Path], mode: str = "w") -> Iterator[IO]:
    """Open ``path`` for writing through a temporary file renamed on success.

    Args:
        path: Destination, or ``-`` for standard output (text mode only).
        mode: ``"w"`` for text or ``"wb"`` for bytes.

    Yields:
        A writable file object. On any exception the temporary file is removed and the
        destination is left untouched.
    """
    if str(path) == "-":
        yield sys.stdout if "b" not in mode else sys.stdout.buffer
        sys.stdout.flush()
        return
    destination = Path(path)
    check_destination(destination)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent
    )
    try:
        # mkstemp creates 0600 files; give the output the permissions a plain open() would.
        os.chmod(temporary, 0o666 & ~_current_umask())
        with os.fdopen(descriptor, mode) as handle:
            yield handle
        os.replace(temporary, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def check_destination(destination: Path) -> None:
    """Refuse, before any work, an output path that a finished file cannot be renamed to."""
    if destination.is_dir():
        raise CmxError(f"{destination}: is a directory",
                       "give a file name for the output (inside that directory, say).")
    if not destination.parent.is_dir():
        raise CmxError(f"{destination}: the directory {destination.parent} does not exist",
                       "create it first, or choose another output path.")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
