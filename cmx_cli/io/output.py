"""Atomic outputs: nothing half-written is ever left under the requested name.

Files are written to a temporary name in the target directory, flushed to disk, and renamed
when complete, so that a failed write (a full disk, say) leaves the previous file as it was
and no temporary file behind. ``-`` means standard output. A text output whose name ends in
``.gz`` or ``.bgz`` is BGZF-compressed (gzip that tabix and bgzip read). Files that belong
together are written as one set (:func:`write_as_set`): all of them, or none.

Every failed write, of any output, is said by one function, :func:`write_error`: a full
device, a file-size limit (``ulimit -f``), a read-only file system and a denied permission
each have their own one-line message and hint (issue 23).
"""
from __future__ import annotations

import contextlib
import errno
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union

from cmx_cli.errors import CmxError

#: Names that make a text output BGZF-compressed.
COMPRESSED_SUFFIXES = (".gz", ".bgz")
#: errno values that mean there is no room left on the device.
_FULL = {errno.ENOSPC, errno.EDQUOT}


def write_error(path: Union[str, Path], error: OSError, outcome: str = "") -> CmxError:
    """The one message for a failed write of ``path``, for every output cmx writes.

    Args:
        path: The output, as the user named it.
        error: What the operating system said.
        outcome: What was done about it, e.g. "nothing was written"; added to the message.

    Returns:
        A one-line :class:`CmxError` that says what happened and what to do.
    """
    reason = os.strerror(error.errno) if error.errno else str(error)
    done = f"; {outcome}" if outcome else ""
    if error.errno in _FULL:
        return CmxError(f"{path}: cannot write, the device is full ({reason}){done}",
                        "free space on it, or write to another device.")
    if error.errno == errno.EFBIG:  # RLIMIT_FSIZE, or the file system's own largest file
        return CmxError(f"{path}: cannot write, the file exceeds the file-size limit "
                        f"({reason}){done}",
                        "raise the limit (ulimit -f in the shell that runs cmx), or write to a "
                        "file system that takes larger files.")
    if error.errno == errno.EROFS:
        return CmxError(f"{path}: cannot write, the file system is read-only ({reason}){done}",
                        "write the output to another directory.")
    if error.errno in (errno.EACCES, errno.EPERM):
        return CmxError(f"{path}: cannot write, permission denied ({reason}){done}",
                        "write the output to a directory you may write to.")
    return CmxError(f"{path}: cannot write ({reason}){done}",
                    "check that the directory is writable and the device works.")


@contextlib.contextmanager
def write_errors(path: Union[str, Path], *temporary: Union[str, Path],
                 outcome: str = "") -> Iterator[None]:
    """Turn a failed write of ``path`` (through any of its ``temporary`` files) into the
    one-line :class:`CmxError` of :func:`write_error`, which names it.

    An error about another file (one being read, say) passes through.
    """
    try:
        yield
    except OSError as error:
        ours = {str(path), *map(str, temporary)}
        if error.errno is None or (error.filename is not None and str(error.filename) not in ours):
            raise
        raise write_error(path, error, outcome) from error


@contextlib.contextmanager
def atomic_output(path: Union[str, Path], mode: str = "w") -> Iterator[IO]:
    """Open ``path`` for writing through a temporary file renamed on success.

    Args:
        path: Destination, or ``-`` for standard output (text mode only).
        mode: ``"w"`` for text or ``"wb"`` for bytes.

    Yields:
        A writable file object. On any exception the temporary file is removed and the
        destination is left untouched.

    Raises:
        CmxError: When writing fails (a full device, say), naming the destination.
    """
    if str(path) == "-":
        with _standard_output_errors():
            yield sys.stdout if "b" not in mode else sys.stdout.buffer
            sys.stdout.flush()
        return
    destination, replaceable = output_target(path)
    compressed = "b" not in mode and destination.name.lower().endswith(COMPRESSED_SUFFIXES)
    if not replaceable:  # a device or a pipe: written in place
        with write_errors(path), _opened(destination, mode, compressed) as stream:
            yield stream
        return
    with temporary_file(destination, name=path) as temporary, write_errors(
            path, temporary, outcome="nothing was written"):
        with _opened(temporary, mode, compressed) as stream:
            yield stream
        sync_to_disk(temporary)
        os.replace(temporary, destination)


def write_as_set(writes: dict[Path, bytes], whose: str = "the") -> None:
    """Write every file of ``writes`` (path -> bytes) or none: all to temporary files
    first, each flushed to the device, then each renamed into place (``cmx report``'s
    page, figures and tables, say).

    Args:
        writes: The files and their content.
        whose: Whose files they are, for the message (``"the report's"``).

    Raises:
        CmxError: A write failed (naming the file and saying that no file was written).
    """
    outcome = f"none of {whose} {len(writes)} files was written"
    with contextlib.ExitStack() as stack:
        ready = []
        for path, content in writes.items():
            destination, replaceable = output_target(path)
            if not replaceable:  # a device or a pipe: nothing to rename, written last
                ready.append((path, destination, None, content))
                continue
            temporary = stack.enter_context(temporary_file(destination, name=path))
            with write_errors(path, temporary, outcome=outcome):
                with open(temporary, "wb") as stream:
                    stream.write(content)
                sync_to_disk(temporary)
            ready.append((path, destination, temporary, content))
        done: list[str] = []
        for path, destination, temporary, content in ready:
            try:
                if temporary is None:
                    with open(destination, "wb") as stream:
                        stream.write(content)
                else:
                    os.replace(temporary, destination)
            except OSError as error:
                written = ", ".join(done) or "none"
                raise write_error(path, error, f"the files replaced before it: {written}") \
                    from error
            done.append(str(path))


@contextlib.contextmanager
def _standard_output_errors() -> Iterator[None]:
    """:func:`write_errors` for standard output (``> /dev/full``, a full disk); a closed
    pipe (``| head``) passes through, as for every command."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as error:
        if error.errno is None or error.filename is not None:
            raise
        raise write_error("standard output", error,
                          "what was written to it is incomplete") from error


@contextlib.contextmanager
def _opened(path: Union[str, Path], mode: str, compressed: bool) -> Iterator[IO]:
    """A file opened for writing, BGZF-compressed when asked; closed after the block."""
    stream = BgzfText(path) if compressed else open(path, mode)
    try:
        yield stream  # type: ignore[misc]
    finally:
        stream.close()


@contextlib.contextmanager
def temporary_file(destination: Path, companions: tuple[str, ...] = (),
                   name: Union[str, Path, None] = None) -> Iterator[str]:
    """A new temporary file in ``destination``'s directory, for an output to be renamed
    into place; when the block fails, it is removed with its ``companions`` (the same name
    plus each suffix, e.g. an index), whatever else fails.

    Args:
        destination: The output's final path.
        companions: Suffixes of files made beside the temporary one.
        name: How messages name the output (default: ``destination``).

    Yields:
        The temporary file's path, with the permissions a plain ``open()`` would give.

    Raises:
        CmxError: The temporary file cannot be made (a read-only directory, say).
    """
    try:
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    except OSError as error:
        raise write_error(destination if name is None else name, error,
                          "nothing was written") from error
    os.close(descriptor)
    try:
        os.chmod(temporary, 0o666 & ~_current_umask())  # mkstemp makes 0600 files
        yield temporary
    except BaseException:
        for leftover in (temporary, *(temporary + suffix for suffix in companions)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        raise


def sync_to_disk(path: Union[str, Path]) -> None:
    """Flush a closed file's data to the device, so that a rename publishes all of it."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class BgzfText:
    """A text stream that writes a new BGZF file (UTF-8).

    Args:
        path: The file to create.
    """

    def __init__(self, path: Union[str, Path]) -> None:
        from Bio import bgzf

        self._writer = bgzf.BgzfWriter(str(path), "wb")

    def write(self, text: str) -> int:
        """Compress ``text``; returns its length, as text streams do."""
        self._writer.write(text.encode("utf-8"))
        return len(text)

    def flush(self) -> None:
        """Write out the block being filled."""
        self._writer.flush()

    def close(self) -> None:
        """Finish the file with the BGZF end-of-file block."""
        self._writer.close()


def with_indexes(path: Union[str, Path, None], *suffixes: str) -> list[str]:
    """An input file and its index files (``path`` plus each suffix, e.g. ``.fai``), which
    an output must not replace either; empty for no file."""
    return [] if path is None else [str(path), *(f"{path}{suffix}" for suffix in suffixes)]


def check_not_input(output: Union[str, Path], *inputs: Union[str, Path, None]) -> None:
    """Refuse an output that would replace one of its command's inputs.

    Paths are compared as files (symbolic links followed, ``os.path.samefile``) and, for an
    input that does not exist yet (an index cmx is about to build), by their real path.

    Raises:
        CmxError: Naming the output and the input.
    """
    if str(output) == "-":
        return
    target = Path(os.path.realpath(output))
    for given in inputs:
        if given is None:
            continue
        source = Path(given)
        same = (os.path.samefile(target, source) if target.exists() and source.exists()
                else target == Path(os.path.realpath(source)))
        if same:
            raise CmxError(f"{output}: the output would replace the input {source}",
                           "write the output under another name.")


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
