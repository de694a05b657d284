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
    destination, replaceable = output_target(path)
    if not replaceable:
        with open(destination, mode) as handle:
            yield handle
        return
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


def check_not_input(output: Union[str, Path], input_path: Union[str, Path]) -> None:
    """Refuse an output that would overwrite the input it is computed from."""
    if str(output) != "-" and Path(output).resolve() == Path(input_path).resolve():
        raise CmxError(f"{output}: the output would replace the input", "choose another name.")


def output_target(path: Union[str, Path]) -> tuple[Path, bool]:
    """Where an output named ``path`` goes, and whether a finished file may replace it.

    Checked before any work. A symbolic link is followed, so that the finished file replaces
    its target and the link stays. An existing path that is not a regular file (/dev/null, a
    named pipe, the /dev/fd/N of a shell's process substitution) is written in place: it
    must not be replaced.

    Raises:
        CmxError: The path is a directory, or its directory does not exist.
    """
    destination = Path(path)
    if destination.is_dir():
        raise CmxError(f"{destination}: is a directory",
                       "give a file name for the output (inside that directory, say).")
    if destination.exists() and not destination.is_file():
        return destination, False
    target = Path(os.path.realpath(destination))
    if not target.parent.is_dir():
        raise CmxError(f"{destination}: the directory {target.parent} does not exist",
                       "create it first, or choose another output path.")
    return target, True


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
